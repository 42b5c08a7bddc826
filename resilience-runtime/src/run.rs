//! The futures of an async call, written by hand: an attempt is a small state
//! machine that holds the body's future once, polls it in place, and arms a timer
//! only when the body is not ready at its first poll. (Written as `async fn`s they
//! held the body several times over and were copied on every call.)

use std::future::Future;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use crate::breaker::Rejected;
use crate::bulkhead::{AcquireSlow, Bulkhead, Full, Permit};
use crate::clock::Instant;
use crate::events::EventKind;
use crate::pool::PoolBox;
use crate::rate_limit::Reservation;
use crate::service::{
    swift_admit, swift_count, Admitted, Call, Gate, Hooks, IntoError, Lane, LaneGuard, Next,
    OwnBody, Policies, PollGuard, Service, SwiftAdmit,
};

/// The wait for a slot of a full bulkhead with a `max_wait`, in a pool block of
/// its own (only such a bulkhead gets here; a call's state and this wait together
/// are larger than a block).
type Acquire<'a> = PoolBox<AcquireSlow<'a>>;

/// Where an attempt is.
///
/// A [`CallFuture`] keeps its body and its [`Rest`] without discriminants of their
/// own ([`Held`]): its phase says what it holds. The first three phases are its
/// alone, and only those hold no `Rest` ([`Phase::holds_rest`]); a [`LendAttempt`]
/// uses `FreshBody` (not polled yet) and `Over` (done on the lane) too, and is past
/// them only once its [`Lend`] holds the call's `Rest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// A [`CallFuture`] not yet polled, its body not yet made: it holds nothing.
    Fresh,
    /// A [`CallFuture`] at its first poll, its body in place (or the one given
    /// to [`CallFuture::once`]).
    FreshBody,
    /// A [`CallFuture`] that completed on the lane: its body slot holds nothing
    /// to drop (the body was dropped in place, or the slot is `None`).
    Over,
    Start,
    /// The rate limiter granted a permit due later: `timer` sleeps until then.
    RateWait,
    /// The bulkhead is full: `acquire` waits up to its `max_wait`.
    BulkheadWait,
    /// The body runs; `timer` is the per-attempt timeout once armed.
    Run,
    /// `timer` sleeps the backoff before the next attempt.
    Backoff,
    Done,
}

impl Phase {
    /// Whether a [`CallFuture`] in this phase holds its [`Rest`] (every phase
    /// after [`Phase::Over`], so one comparison).
    #[inline(always)]
    fn holds_rest(self) -> bool {
        self as u8 > Phase::Over as u8
    }

    /// Whether a [`CallFuture`] in this phase is at its first poll (one
    /// comparison).
    #[inline(always)]
    fn first_poll(self) -> bool {
        (self as u8) < Phase::Over as u8
    }
}

pin_project_lite::pin_project! {
    /// The state of an attempt off the lane (or one that left it): every piece a
    /// field of its own, so moving between phases writes only what changes.
    #[project = SlowProj]
    struct Slow<'a> {
        admitted: Option<Admitted<'a>>,
        reservation: Option<Reservation<'a>>,
        permit: Option<Permit<'a>>,
        acquire: Option<Acquire<'a>>,
        // Admitted through the lane: a success needs only counting.
        lane: Option<Lane<'a>>,
        began: Option<Instant>,
        // The per-attempt timeout, armed at the body's first `Pending`.
        limit: Option<Duration>,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl Slow<'_> {
    const EMPTY: Self = Self {
        admitted: None,
        reservation: None,
        permit: None,
        acquire: None,
        lane: None,
        began: None,
        limit: None,
        timer: None,
    };
}

/// An attempt's pieces, its [`Slow`] state in place.
struct Steps<'p, 'a, E, F> {
    call: &'p mut Call<'a, E>,
    phase: &'p mut Phase,
    body: Pin<&'p mut Option<OwnBody<F>>>,
    s: SlowProj<'p, 'a>,
}

/// The body runs next: under the per-attempt timeout, unless the call bypasses
/// policies.
#[inline(always)]
fn enter_run<E, F>(st: &mut Steps<'_, '_, E, F>) {
    let call = &*st.call;
    *st.s.limit = match (call.p.config.timeout, call.hooks.into_error) {
        (Some(limit), Some(_)) if !call.bypass => Some(limit),
        _ => None,
    };
    if st.s.lane.is_none() {
        *st.s.began = call.timing();
    }
    if let Some(r) = st.s.reservation.take() {
        r.used();
    }
    *st.phase = Phase::Run;
}

/// What follows a poll of the body: `Pending` arms the per-attempt timeout; an
/// outcome (or the timeout) is recorded and decides the retry. `Continue` here
/// means the backoff began (the caller polls on); `Break` ends the attempt.
fn after_body<T, E, F>(
    st: &mut Steps<'_, '_, E, F>,
    polled: Poll<Result<T, E>>,
    cx: &mut Context<'_>,
) -> Poll<ControlFlow<Result<T, E>>> {
    let (result, timed_out) = match polled {
        Poll::Ready(r) => (r, false),
        Poll::Pending => {
            let Some(limit) = *st.s.limit else {
                return Poll::Pending;
            };
            if st.s.timer.is_none() {
                st.s.timer.set(Some(tokio::time::sleep(limit)));
            }
            match st.s.timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                Some(Poll::Ready(())) => {
                    let into = st
                        .call
                        .hooks
                        .into_error
                        .expect("a timeout is armed only with into_error");
                    (Err(st.call.timed_out(limit, into)), true)
                }
                _ => return Poll::Pending,
            }
        }
    };
    // The body and its timer go first, then the slot is given back.
    st.body.set(None);
    if st.s.timer.is_some() {
        st.s.timer.set(None);
    }
    drop(st.s.permit.take());
    *st.phase = Phase::Done;
    let admitted = st.s.admitted.take().expect("admitted before running");
    if let (Some(lane), Ok(_)) = (*st.s.lane, &result) {
        // A closed admission holds nothing to give back.
        std::mem::forget(admitted);
        st.call.lane_success(lane);
        return Poll::Ready(ControlFlow::Break(result));
    }
    match st.call.finish(admitted, result, timed_out, *st.s.began) {
        Next::Done(r) => Poll::Ready(ControlFlow::Break(r)),
        Next::Retry(_, delay) => {
            st.s.timer.set(Some(tokio::time::sleep(delay)));
            *st.phase = Phase::Backoff;
            Poll::Ready(ControlFlow::Continue(()))
        }
    }
}

/// Admission through the bulkhead (breaker and rate limiter are passed): a slot now,
/// a wait for one, or a refusal.
fn enter_bulkhead<T, E, F>(
    st: &mut Steps<'_, '_, E, F>,
) -> Option<Poll<ControlFlow<Result<T, E>>>> {
    let Some((b, into)) = st.call.bulkhead() else {
        enter_run(st);
        return None;
    };
    if let Some(permit) = b.try_acquire() {
        *st.s.permit = Some(permit);
        enter_run(st);
        return None;
    }
    if b.waits() {
        *st.s.acquire = Some(PoolBox::new(b.acquire_slow()));
        *st.phase = Phase::BulkheadWait;
        return None;
    }
    Some(refuse_full(st, into))
}

/// The bulkhead refused the call: the unused rate-limit permit is given back and the
/// probe freed.
fn refuse_full<T, E, F>(
    st: &mut Steps<'_, '_, E, F>,
    into: IntoError<E>,
) -> Poll<ControlFlow<Result<T, E>>> {
    drop(st.s.reservation.take());
    *st.phase = Phase::Done;
    let admitted = st.s.admitted.take().expect("admitted before the bulkhead");
    Poll::Ready(ControlFlow::Break(Err(st
        .call
        .bulkhead_full(admitted, into))))
}

/// How a first attempt through the lane went ([`swift_poll`], [`gate_lane_poll`]).
enum LanePoll<'a, T, E> {
    /// The body succeeded at its first poll; the success is counted.
    Done(T),
    /// The body failed or is not ready: the attempt goes on as any other.
    Left(Lane<'a>, Option<Permit<'a>>, Poll<Result<T, E>>),
    /// The breaker refuses outright; the body was not polled.
    Refused(Rejected),
    /// The lane is closed to this call; nothing was done.
    Off,
}

/// A [`CallFuture`]'s body panicked at its first poll, before the future's
/// phase said it holds the body (it says so only when the body did not complete
/// there, to spare the common path a store): now it does, so the body is dropped
/// with the future. Forgotten when the poll returns; its drop is inlined into the
/// unwinding path, so it writes nothing on the common one.
struct FreshGuard<'p>(&'p mut Phase);

impl Drop for FreshGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if *self.0 == Phase::Fresh {
            *self.0 = Phase::FreshBody;
        }
    }
}

/// What [`swift_poll`] did.
enum Swifted<'a, T, E, B> {
    /// The first attempt went through the swift lane, was refused outright (its
    /// body not made), or has no body (`Off`, the slot holding `None`).
    Polled(LanePoll<'a, T, E>),
    /// The breaker is not closed but does not refuse outright (nothing was
    /// taken): the body, not made yet, back for the call's full path.
    Unplaced(B),
    /// The swift lane is closed to this call (nothing was done): the body, not
    /// made yet, back.
    Off(B),
}

/// Where [`swift_poll`] finds the body of a first attempt: made only once the
/// attempt is admitted, so that a refused call makes none and the slot is written
/// after the lane's ordered loads (the compiler then knows, at the body's first
/// poll, the state it was made in).
trait FirstBody<'b, F> {
    /// The slot is known to hold a body once placed.
    const SOME: bool;
    /// The body's slot, with the body in place (or `None`: there is no body).
    fn place(self) -> Pin<&'b mut Option<OwnBody<F>>>;
}

/// A body in place already ([`LendAttempt`]'s), known to be there.
impl<'b, F> FirstBody<'b, F> for Pin<&'b mut Option<OwnBody<F>>> {
    const SOME: bool = true;
    #[inline(always)]
    fn place(self) -> Pin<&'b mut Option<OwnBody<F>>> {
        self
    }
}

/// A [`CallFuture`]'s first body: made by its [`Bodies`] into the slot when the
/// future is `Fresh`, or given up front ([`CallFuture::once`], `FreshBody`).
struct MakeFirst<'b, F, Fut> {
    slot: Pin<&'b mut Held<Option<OwnBody<Fut>>>>,
    bodies: &'b mut F,
    fresh: bool,
}

impl<'b, F: Bodies<Fut>, Fut> FirstBody<'b, Fut> for MakeFirst<'b, F, Fut> {
    const SOME: bool = false;
    #[inline(always)]
    fn place(self) -> Pin<&'b mut Option<OwnBody<Fut>>> {
        if self.fresh {
            self.slot
                .put(self.bodies.next_body().map(|fut| OwnBody { fut }))
        } else {
            // SAFETY: `FreshBody`: the body slot is in place.
            unsafe { self.slot.pinned() }
        }
    }
}

/// A future's phase to write if what runs now unwinds (a maker, a body, or a
/// body's drop that panics), so that the future's drop drops what it holds and
/// nothing twice. Forgotten when it returns; its drop is inlined into the
/// unwinding path, so it writes nothing on the common one.
struct PhaseGuard<'p, P: Copy>(&'p mut P, P);

impl<P: Copy> Drop for PhaseGuard<'_, P> {
    #[inline(always)]
    fn drop(&mut self) {
        *self.0 = self.1;
    }
}

/// A first attempt on the swift lane: admitted by [`swift_admit`] without
/// bookkeeping, the body polled at once, and a success at that poll counted on
/// this thread's own counter line ([`swift_count`]), without the attempt's
/// [`Slow`] state. It takes the call's parts, so the caller builds nothing in
/// memory for it.
///
/// # Safety
/// When `B::SOME`, `body` holds a body: the caller checks, before it loads
/// anything that orders memory (the policies), so the test is not made again
/// after it.
#[inline(always)]
unsafe fn swift_poll<'a, 'b, T, E, F, B>(
    svc: &&'a Service,
    p: &'a Policies,
    hooks: &Hooks<E>,
    body: B,
    phase: &mut Phase,
    done: Phase,
    cx: &mut Context<'_>,
) -> Swifted<'a, T, E, B>
where
    F: Future<Output = Result<T, E>> + 'b,
    B: FirstBody<'b, F>,
{
    match swift_admit(svc, p, hooks) {
        // The commonest shape runs in a copy of its own, which knows there is no
        // bulkhead slot to give back.
        // SAFETY: the caller's word.
        SwiftAdmit::Bare(lane) => unsafe { swift_run(svc, lane, None, body, phase, done, cx) },
        // SAFETY: the caller's word.
        SwiftAdmit::In(lane, permit) => unsafe {
            swift_run(svc, lane, permit, body, phase, done, cx)
        },
        SwiftAdmit::NotClosed(b, ctl) => match b.refusal_from(ctl) {
            Some(r) => Swifted::Polled(LanePoll::Refused(r)),
            None => Swifted::Unplaced(body),
        },
        SwiftAdmit::Off => Swifted::Off(body),
    }
}

/// [`swift_poll`] once admitted: the body placed and polled, a success counted.
///
/// # Safety
/// As [`swift_poll`]'s.
#[inline(always)]
unsafe fn swift_run<'a, 'b, T, E, F, B>(
    svc: &&'a Service,
    lane: Lane<'a>,
    permit: Option<Permit<'a>>,
    body: B,
    phase: &mut Phase,
    done: Phase,
    cx: &mut Context<'_>,
) -> Swifted<'a, T, E, B>
where
    F: Future<Output = Result<T, E>> + 'b,
    B: FirstBody<'b, F>,
{
    let mut body = body.place();
    if !B::SOME && body.is_none() {
        drop(permit);
        return Swifted::Polled(LanePoll::Off);
    }
    // SAFETY: checked above, or the caller's word; nothing here has touched the
    // slot since.
    let fut = unsafe { body.as_mut().as_pin_mut().unwrap_unchecked() };
    let guard = PollGuard { svc, lane };
    let held = FreshGuard(&mut *phase);
    let mut fut = fut;
    let polled = fut.as_mut().project().fut.poll(cx);
    std::mem::forget(held);
    std::mem::forget(guard);
    let svc: &Service = svc;
    Swifted::Polled(match polled {
        Poll::Ready(Ok(v)) => {
            // The body goes first, then the slot is given back.
            if done == Phase::Over {
                // A `CallFuture`, whose `Over` says its body slot holds nothing
                // to drop: the body is dropped in place and nothing written over
                // it. The phase is written last, when nothing that could read it
                // follows before the future's own drop (which then knows it); if
                // anything before unwinds, the guard writes it, so the body is not
                // dropped again with the future.
                let over = PhaseGuard(&mut *phase, Phase::Over);
                // SAFETY: the body is not used again (`Over`); dropped in place.
                unsafe { std::ptr::drop_in_place(fut.get_unchecked_mut()) };
                swift_succeeded(svc, lane, permit);
                std::mem::forget(over);
                *phase = done;
            } else {
                body.set(None);
                *phase = done;
                swift_succeeded(svc, lane, permit);
            }
            LanePoll::Done(v)
        }
        polled => LanePoll::Left(lane, permit, polled),
    })
}

/// A body succeeded at its first poll on the swift lane: its slot is given back
/// and the success counted ([`swift_count`], or [`swift_success_rest`]).
#[inline(always)]
fn swift_succeeded(svc: &Service, lane: Lane<'_>, permit: Option<Permit<'_>>) {
    let wake = permit.and_then(Permit::release_quiet);
    if wake.is_some() || !swift_count(svc, lane.breaker) {
        swift_success_rest(svc, wake, lane);
    }
}

/// A swift-lane success that [`swift_count`] did not count: the bulkhead's
/// waiter is woken (`wake`), and the success counted as [`Call::lane_success`] does.
#[cold]
#[inline(never)]
fn swift_success_rest(svc: &Service, wake: Option<&Bulkhead>, lane: Lane<'_>) {
    if let Some(b) = wake {
        b.wake();
    }
    Call::<()>::lane_success_of(svc, lane);
}

/// The lane of [`Call::gate`] for a first attempt the swift lane is closed to (a
/// listener for every call's events, policies [`swift_admit`] does not
/// take): admitted without bookkeeping and the body polled at once.
#[inline(never)]
fn gate_lane_poll<'a, T, E, F>(
    call: &mut Call<'a, E>,
    mut body: Pin<&mut Option<OwnBody<F>>>,
    phase: &mut Phase,
    done: Phase,
    cx: &mut Context<'_>,
) -> LanePoll<'a, T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let lane = match call.gate() {
        Gate::Lane(lane) => lane,
        Gate::Refused(r) => return LanePoll::Refused(r),
        Gate::Full => return LanePoll::Off,
    };
    // The body first: a slot or permit taken for a call that cannot run would be
    // spent for nothing.
    if body.is_none() {
        return LanePoll::Off;
    }
    let Some(permit) = call.lane_admit() else {
        return LanePoll::Off;
    };
    let Some(fut) = body.as_mut().as_pin_mut() else {
        unreachable!("the body was checked above")
    };
    call.attempt = 1;
    let guard = LaneGuard {
        svc: call.svc,
        lane,
    };
    let polled = fut.project().fut.poll(cx);
    std::mem::forget(guard);
    match polled {
        Poll::Ready(Ok(v)) => {
            // The body goes first, then the slot is given back.
            body.set(None);
            drop(permit);
            *phase = done;
            call.lane_success(lane);
            LanePoll::Done(v)
        }
        polled => LanePoll::Left(lane, permit, polled),
    }
}

/// A lane attempt whose body failed or is not ready goes on as any other: its
/// admission and permit are put in its [`Slow`] state. `None`: the backoff began
/// ([`poll_steps`] sleeps it).
fn leave_lane<'a, T, E, F>(
    st: &mut Steps<'_, 'a, E, F>,
    lane: Lane<'a>,
    permit: Option<Permit<'a>>,
    polled: Poll<Result<T, E>>,
    cx: &mut Context<'_>,
) -> Option<Poll<ControlFlow<Result<T, E>>>> {
    *st.s.admitted = Some(lane.admitted(st.call.svc));
    *st.s.permit = permit;
    *st.s.lane = Some(lane);
    enter_run(st);
    match after_body(st, polled, cx) {
        Poll::Ready(ControlFlow::Continue(())) => None,
        other => Some(other),
    }
}

/// Every step of an attempt off the lane: admission, waits, the body under its
/// timeout, the outcome and the backoff. `Continue`: the backoff was slept, the
/// next attempt may begin.
#[inline(never)]
fn poll_steps<T, E, F>(
    st: &mut Steps<'_, '_, E, F>,
    cx: &mut Context<'_>,
) -> Poll<ControlFlow<Result<T, E>>>
where
    F: Future<Output = Result<T, E>>,
{
    loop {
        match *st.phase {
            Phase::Start => {
                let (admitted, reservation) = match st.call.begin() {
                    Ok(a) => a,
                    Err(e) => {
                        *st.phase = Phase::Done;
                        return Poll::Ready(ControlFlow::Break(Err(e)));
                    }
                };
                *st.s.admitted = Some(admitted);
                if let Some(r) = reservation {
                    let delay = r.delay();
                    *st.s.reservation = Some(r);
                    if let Some(wait) = delay {
                        st.call.svc.emit(EventKind::RateLimitWaited { wait });
                        st.s.timer.set(Some(tokio::time::sleep(wait)));
                        *st.phase = Phase::RateWait;
                        continue;
                    }
                }
                if let Some(done) = enter_bulkhead(st) {
                    return done;
                }
            }
            Phase::RateWait => {
                if let Some(t) = st.s.timer.as_mut().as_pin_mut() {
                    ready!(t.poll(cx));
                }
                st.s.timer.set(None);
                if let Some(done) = enter_bulkhead(st) {
                    return done;
                }
            }
            Phase::BulkheadWait => {
                let got = match st.s.acquire.as_mut() {
                    Some(a) => ready!(a.pinned().poll(cx)),
                    None => Err(Full),
                };
                *st.s.acquire = None;
                match got {
                    Ok(permit) => {
                        *st.s.permit = Some(permit);
                        enter_run(st);
                    }
                    Err(Full) => {
                        let into = st
                            .call
                            .hooks
                            .into_error
                            .expect("the bulkhead applies only with into_error");
                        return refuse_full(st, into);
                    }
                }
            }
            Phase::Run => {
                let polled = match st.body.as_mut().as_pin_mut() {
                    Some(body) => body.poll(cx),
                    None => panic!("an attempt polled after it completed"),
                };
                match after_body(st, polled, cx) {
                    Poll::Ready(ControlFlow::Continue(())) => {}
                    other => return other,
                }
            }
            Phase::Backoff => {
                if let Some(t) = st.s.timer.as_mut().as_pin_mut() {
                    ready!(t.poll(cx));
                }
                st.s.timer.set(None);
                *st.phase = Phase::Done;
                return Poll::Ready(ControlFlow::Continue(()));
            }
            Phase::Done => panic!("an attempt polled after it completed"),
            Phase::Fresh | Phase::FreshBody | Phase::Over => {
                unreachable!("a `CallFuture`'s own phases are not an attempt's")
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A whole async call through a [`Policy`](crate::Policy): every attempt and
    /// the total timeout in one future written by hand. A first attempt through the
    /// lane builds nothing but its body; the call's state ([`Rest`]) is put in place
    /// only when the call leaves the lane.
    #[project = CallProj]
    #[must_use = "futures do nothing unless polled"]
    pub struct CallFuture<'a, T, E, F, Fut, H = &'a Hooks<E>> {
        svc: &'a Service,
        // Nothing for `Policy::call`'s default hooks (`DefaultHooks`).
        hooks: H,
        f: F,
        // Says what `body` and `rest` hold: a call through the lane writes no
        // discriminant for either.
        phase: Phase,
        // Declared before `rest`: a cancelled call drops its body first, then
        // frees its slot and probe.
        #[pin]
        body: Held<Option<OwnBody<Fut>>>,
        // Out of line, in a block of this thread's pool: a call done on the
        // lane never touches it, and inline it was most of the future's size.
        #[pin]
        rest: Held<PoolBox<Rest<'a, E>>>,
        _out: PhantomData<fn() -> T>,
    }

    impl<'a, T, E, F, Fut, H> PinnedDrop for CallFuture<'a, T, E, F, Fut, H> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let phase = *this.phase;
            if phase == Phase::Over || phase == Phase::Fresh {
                // Nothing to drop: no body made yet, or a call done on the lane,
                // whose body was dropped there (or its slot is `None`).
                return;
            }
            // SAFETY: past `Fresh` the body slot is in place (`None` once the
            // body is gone), and `rest` is as `holds_rest` says; each is dropped
            // once, here, in place.
            unsafe {
                let body = this.body.pinned();
                if body.is_some() {
                    drop_pinned(body);
                }
                if phase.holds_rest() {
                    drop_pinned(this.rest.pinned());
                }
            }
        }
    }
}

/// Where a [`CallFuture`] finds its call's hooks: a reference to them, or
/// [`DefaultHooks`], which the future holds no word for.
pub trait CallHooks<'a, E>: Copy {
    /// The hooks.
    fn get(self) -> &'a Hooks<E>;
}

impl<'a, E> CallHooks<'a, E> for &'a Hooks<E> {
    #[inline(always)]
    fn get(self) -> &'a Hooks<E> {
        self
    }
}

/// [`Hooks::DEFAULT`], known from the type: what [`Policy::call`](crate::Policy::call)'s
/// future uses, so that it keeps no pointer to them.
pub struct DefaultHooks<E>(PhantomData<fn() -> E>);

impl<E> DefaultHooks<E> {
    /// The default hooks.
    pub const NEW: Self = DefaultHooks(PhantomData);
}

impl<E> Clone for DefaultHooks<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for DefaultHooks<E> {}

impl<E> std::fmt::Debug for DefaultHooks<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DefaultHooks")
    }
}

impl<'a, E: From<crate::ResilienceError>> CallHooks<'a, E> for DefaultHooks<E> {
    #[inline(always)]
    fn get(self) -> &'a Hooks<E> {
        &const { Hooks::DEFAULT }
    }
}

/// A field of [`CallFuture`] that holds something or not as the future's
/// [`Phase`] says, with no discriminant of its own to write.
struct Held<T>(MaybeUninit<T>);

impl<T> Held<T> {
    #[inline(always)]
    fn empty() -> Self {
        Held(MaybeUninit::uninit())
    }

    #[inline(always)]
    fn new(content: T) -> Self {
        Held(MaybeUninit::new(content))
    }

    /// The content, pinned with its holder.
    ///
    /// # Safety
    /// The content is in place.
    #[inline(always)]
    unsafe fn pinned(self: Pin<&mut Self>) -> Pin<&mut T> {
        // SAFETY: in place (the caller's word), and pinned structurally: never
        // moved out, dropped in place by `CallFuture`'s drop.
        unsafe { self.map_unchecked_mut(|h| h.0.assume_init_mut()) }
    }

    /// Puts `content` in place, over nothing (what was there is not dropped).
    #[inline(always)]
    fn put(self: Pin<&mut Self>, content: T) -> Pin<&mut T> {
        // SAFETY: written in place, never moved.
        unsafe {
            let h = self.get_unchecked_mut();
            Pin::new_unchecked(h.0.write(content))
        }
    }
}

/// Drops pinned content in place (out of line: the drop glue of a body or a
/// call's state is no part of a common path).
///
/// # Safety
/// Called once; the content is not used again.
#[inline(never)]
unsafe fn drop_pinned<T>(content: Pin<&mut T>) {
    // SAFETY: the caller's word; dropping in place keeps the pin's promise.
    unsafe { std::ptr::drop_in_place(content.get_unchecked_mut()) }
}

/// A [`Lend`]'s state off the lane, dropped in place (as pinning requires) when
/// the `Lend` is dropped; out of line, so the `Lend`'s drop is inlined down to the
/// test of whether it holds anything.
#[inline(never)]
fn drop_slot<T>(content: &mut ManuallyDrop<T>) {
    // SAFETY: called once, from `Lend::drop`; the content is not used again.
    unsafe { ManuallyDrop::drop(content) }
}

pin_project_lite::pin_project! {
    /// A [`CallFuture`] off the lane: the call, its total timeout and the attempt's state.
    #[project = RestProj]
    struct Rest<'a, E> {
        call: Call<'a, E>,
        total: Option<(Duration, IntoError<E>)>,
        #[pin]
        total_timer: Option<Sleep>,
        #[pin]
        slow: Slow<'a>,
    }
}

impl<'a, E> Rest<'a, E> {
    /// The state of a call leaving the lane (or never taking it), in a pool block:
    /// the call under policies `p` (`single`: one attempt only; `ran`: the lane ran
    /// its first attempt), the total timeout it runs under, no timer armed yet.
    fn off_lane(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        ran: bool,
    ) -> PoolBox<Self> {
        let mut call = Call::with(svc, p, hooks);
        if single {
            call = call.single_attempt();
        }
        if ran {
            call.attempt = 1;
        }
        PoolBox::new(Rest {
            call,
            total: svc.total_limit(hooks),
            total_timer: None,
            slow: Slow::EMPTY,
        })
    }
}

/// Where a [`CallFuture`] gets the body of each attempt: a closure called once per
/// attempt ([`Policy::call`](crate::Policy::call)), or [`OneAttempt`].
pub trait Bodies<Fut> {
    /// The call makes one attempt only: a retry that live configuration gives the
    /// service does not apply to it.
    const SINGLE: bool;
    /// The body of the next attempt (`None`: no other attempt).
    fn next_body(&mut self) -> Option<Fut>;
}

impl<F, Fut> Bodies<Fut> for F
where
    F: FnMut() -> Fut,
{
    const SINGLE: bool = false;
    #[inline(always)]
    fn next_body(&mut self) -> Option<Fut> {
        Some(self())
    }
}

/// A call of one attempt, its body given up front ([`Service::once`]).
#[derive(Clone, Copy, Debug)]
pub struct OneAttempt;

impl<Fut> Bodies<Fut> for OneAttempt {
    const SINGLE: bool = true;
    #[inline(always)]
    fn next_body(&mut self) -> Option<Fut> {
        None
    }
}

impl<'a, T, E, Fut> CallFuture<'a, T, E, OneAttempt, Fut>
where
    Fut: Future<Output = Result<T, E>>,
{
    /// One attempt of `body`: see [`Service::once`].
    #[inline]
    pub(crate) fn once(svc: &'a Service, hooks: &'a Hooks<E>, body: Fut) -> Self {
        Self {
            svc,
            hooks,
            f: OneAttempt,
            phase: Phase::FreshBody,
            body: Held::new(Some(OwnBody { fut: body })),
            rest: Held::empty(),
            _out: PhantomData,
        }
    }
}

impl<'a, T, E, F, Fut, H> CallFuture<'a, T, E, F, Fut, H>
where
    F: Bodies<Fut>,
    Fut: Future<Output = Result<T, E>>,
    H: CallHooks<'a, E>,
{
    #[inline]
    pub(crate) fn new(svc: &'a Service, hooks: H, f: F) -> Self {
        Self {
            svc,
            hooks,
            f,
            phase: Phase::Fresh,
            body: Held::empty(),
            rest: Held::empty(),
            _out: PhantomData,
        }
    }

    /// A first poll the swift lane is closed to: the lane of [`Call::gate`], then,
    /// unless the call ended there, its state is put in place ([`Self::settle`]).
    #[inline(never)]
    fn gate_lane(
        mut self: Pin<&mut Self>,
        p: &'a Policies,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        let this = self.as_mut().project();
        let (svc, hooks) = (*this.svc, this.hooks.get());
        let mut call = Call::with(svc, p, hooks);
        // SAFETY: the first poll put the body slot in place (`FreshBody`).
        let mut body = unsafe { this.body.pinned() };
        let left = match gate_lane_poll(&mut call, body.as_mut(), this.phase, Phase::Over, cx) {
            LanePoll::Done(v) => return Poll::Ready(Ok(v)),
            LanePoll::Refused(r) => {
                body.set(None);
                *this.phase = Phase::Over;
                return Poll::Ready(Err(Call::refused(svc, hooks, r)));
            }
            LanePoll::Off => None,
            LanePoll::Left(lane, permit, polled) => Some((lane, permit, polled)),
        };
        self.settle(p, left, cx)
    }

    /// Puts the call's state in place: the call leaves the lane (`left`: what its
    /// attempt left to do), or never took it. The call is made again from its
    /// policies, so the lane never writes it to memory.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn settle(
        mut self: Pin<&mut Self>,
        p: &'a Policies,
        left: Option<(Lane<'a>, Option<Permit<'a>>, Poll<Result<T, E>>)>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        let this = self.as_mut().project();
        let rest = Rest::off_lane(this.svc, p, this.hooks.get(), F::SINGLE, left.is_some());
        this.rest.put(rest);
        // Now the future holds its `Rest`.
        *this.phase = Phase::Start;
        Self::poll_rest(self.project(), left, cx)
    }

    /// Every poll after the lane (`left`: what the lane's attempt left to do):
    /// attempts until one breaks, a fresh body for each, under the total timeout.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn poll_rest(
        this: CallProj<'_, 'a, T, E, F, Fut, H>,
        left: Option<(Lane<'a>, Option<Permit<'a>>, Poll<Result<T, E>>)>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        if !this.phase.holds_rest() {
            panic!("`CallFuture` polled after it completed")
        }
        // SAFETY: a phase that holds the `Rest` is past `Fresh`, so both are in place.
        let (rest, body) = unsafe {
            let rest = this.rest.pinned().get_mut().pinned().project();
            (rest, this.body.pinned())
        };
        let mut st = Steps {
            call: rest.call,
            phase: this.phase,
            body,
            s: rest.slow.project(),
        };
        let mut polled = match left {
            None => None,
            Some((lane, permit, polled)) => leave_lane(&mut st, lane, permit, polled, cx),
        };
        loop {
            let step = match polled.take() {
                Some(p) => p,
                None => poll_steps(&mut st, cx),
            };
            match step {
                Poll::Ready(ControlFlow::Break(r)) => return Poll::Ready(r),
                Poll::Ready(ControlFlow::Continue(())) => {
                    // The backoff was slept: the next attempt, with a fresh body.
                    st.s.clear();
                    let Some(body) = this.f.next_body() else {
                        unreachable!("a single-attempt call does not retry")
                    };
                    st.body.set(Some(OwnBody { fut: body }));
                    *st.phase = Phase::Start;
                }
                Poll::Pending => break,
            }
        }
        poll_total(&mut st, *rest.total, rest.total_timer, cx).map(Err)
    }
}

/// A call's total timeout (`total`: its limit, if any), polled while its attempt
/// is pending; the timer is armed at the first such poll. `Ready`: it elapsed, and
/// the attempt has given back what it held (its body first, then its slot and
/// probe): the error to end the call with.
fn poll_total<E, F>(
    st: &mut Steps<'_, '_, E, F>,
    total: Option<(Duration, IntoError<E>)>,
    mut timer: Pin<&mut Option<Sleep>>,
    cx: &mut Context<'_>,
) -> Poll<E> {
    let Some((limit, into)) = total else {
        return Poll::Pending;
    };
    if timer.is_none() {
        timer.set(Some(tokio::time::sleep(limit)));
    }
    match timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
        Some(Poll::Ready(())) => {
            st.body.set(None);
            st.s.clear();
            timer.set(None);
            *st.phase = Phase::Done;
            Poll::Ready(st.call.svc.total_timed_out(limit, into))
        }
        _ => Poll::Pending,
    }
}

impl SlowProj<'_, '_> {
    /// Gives back what an attempt held (an admission is abandoned, a permit
    /// released) and readies the state for the next attempt.
    fn clear(&mut self) {
        self.timer.set(None);
        *self.admitted = None;
        *self.reservation = None;
        *self.permit = None;
        *self.acquire = None;
        *self.lane = None;
        *self.began = None;
        *self.limit = None;
    }
}

impl<'a, T, E, F, Fut, H> Future for CallFuture<'a, T, E, F, Fut, H>
where
    F: Bodies<Fut>,
    Fut: Future<Output = Result<T, E>>,
    H: CallHooks<'a, E>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.phase.first_poll() {
            // The first poll: a fresh body through the swift lane.
            let this = self.as_mut().project();
            let (svc, hooks) = (*this.svc, this.hooks.get());
            // Read before the policies are loaded (an ordered load), so the
            // compiler knows it from the future's making.
            let fresh = *this.phase == Phase::Fresh;
            let first = MakeFirst {
                slot: this.body,
                bodies: this.f,
                fresh,
            };
            let p = svc.policies();
            // SAFETY: `MakeFirst` is not `SOME`: `swift_poll` checks the slot.
            // Still `Fresh` in memory when fresh: `swift_poll` says otherwise
            // only on the ways that keep the body (see `FreshGuard`).
            let swifted =
                unsafe { swift_poll(this.svc, p, hooks, first, this.phase, Phase::Over, cx) };
            let left = match swifted {
                Swifted::Polled(LanePoll::Done(v)) => return Poll::Ready(Ok(v)),
                Swifted::Polled(LanePoll::Refused(r)) => {
                    // A fresh future made no body; one given up front is dropped.
                    let this = self.as_mut().project();
                    if !fresh {
                        // SAFETY: `FreshBody`: the body slot is in place.
                        unsafe { this.body.pinned() }.set(None);
                    }
                    *this.phase = Phase::Over;
                    return Poll::Ready(Err(Call::refused(svc, hooks, r)));
                }
                Swifted::Polled(LanePoll::Off) => None,
                Swifted::Polled(LanePoll::Left(lane, permit, polled)) => {
                    Some((lane, permit, polled))
                }
                Swifted::Unplaced(first) => {
                    first.place();
                    None
                }
                Swifted::Off(first) => {
                    first.place();
                    *self.as_mut().project().phase = Phase::FreshBody;
                    return self.gate_lane(p, cx);
                }
            };
            *self.as_mut().project().phase = Phase::FreshBody;
            return self.settle(p, left, cx);
        }
        Self::poll_rest(self.project(), None, cx)
    }
}

/// A call whose attempts borrow through their caller: an async expansion that
/// lends an argument `&mut` to each attempt runs its attempts as a loop of
/// [`Lend::attempt`] (see [`Service::lend`]). Until the call leaves the lane it
/// holds the service and the hooks; then its state (the call, the total timeout,
/// the attempt's admissions and timers), out of line, in a block of the pool, as
/// [`CallFuture`] does. A first attempt done on the lane builds nothing
/// but its body. Two words either way (the enum needs no word for its tag: the
/// layout puts it in a pointer's null niche), so a function's future holds two
/// words for its call.
pub struct Lend<'a, E> {
    // Dropped by `Lend::drop`: the test inlined, the state's drop out of line.
    state: ManuallyDrop<LendState<'a, E>>,
}

// What the function's future holds for its call (the size target counts on it).
const _: () = assert!(std::mem::size_of::<Lend<'static, ()>>() == 2 * std::mem::size_of::<usize>());

enum LendState<'a, E> {
    /// No attempt has left the lane.
    Lane {
        svc: &'a Service,
        hooks: &'a Hooks<E>,
    },
    /// The call left the lane: its state, which names the service and hooks.
    Off(PoolBox<Rest<'a, E>>),
}

impl<E> Drop for Lend<'_, E> {
    #[inline(always)]
    fn drop(&mut self) {
        if let LendState::Off(_) = *self.state {
            drop_slot(&mut self.state);
        }
    }
}

impl<E> std::fmt::Debug for Lend<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (svc, off) = match &*self.state {
            LendState::Lane { svc, .. } => (*svc, false),
            LendState::Off(rest) => (rest.get().call.svc, true),
        };
        f.debug_struct("Lend")
            .field("service", &svc.name())
            .field("left_lane", &off)
            .finish()
    }
}

impl<'a, E> Lend<'a, E> {
    #[inline(always)]
    pub(crate) fn new(svc: &'a Service, hooks: &'a Hooks<E>) -> Self {
        Lend {
            state: ManuallyDrop::new(LendState::Lane { svc, hooks }),
        }
    }

    /// One attempt of the call, `body` its body: breaker, rate limit and bulkhead
    /// admission, the body under the per-attempt timeout, the outcome recorded and
    /// the retry decided, all under the call's total timeout. `Break` ends the call
    /// with its result; `Continue` comes after the backoff was slept: the caller
    /// makes the next attempt's body and calls this again. After `Break` the call
    /// is over: the expansions drop the `Lend` (an attempt made after it would not
    /// be one the call's retry policy granted).
    #[inline]
    pub fn attempt<T, F>(&mut self, body: F) -> LendAttempt<'_, 'a, T, E, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        LendAttempt {
            call: self,
            phase: Phase::FreshBody,
            body: Held::new(Some(OwnBody { fut: body })),
            _out: PhantomData,
        }
    }
}

pin_project_lite::pin_project! {
    /// One attempt of a [`Lend`] call: see [`Lend::attempt`]. It holds its body;
    /// what the attempt needs off the lane is in the call's [`Rest`].
    #[project = LendProj]
    #[must_use = "futures do nothing unless polled"]
    pub struct LendAttempt<'c, 'a, T, E, F> {
        call: &'c mut Lend<'a, E>,
        // `FreshBody` until the first poll; `Over` once done on the lane (the body
        // was dropped in place); past it, as an attempt's steps say.
        phase: Phase,
        #[pin]
        body: Held<Option<OwnBody<F>>>,
        _out: PhantomData<fn() -> T>,
    }

    impl<'c, 'a, T, E, F> PinnedDrop for LendAttempt<'c, 'a, T, E, F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let phase = *this.phase;
            if phase == Phase::Over {
                return;
            }
            // SAFETY: the body slot is in place from the attempt's making; `Over`
            // (its body dropped in place) is handled above.
            unsafe {
                let body = this.body.pinned();
                if body.is_some() {
                    drop_pinned(body);
                }
            }
            // An attempt dropped in flight: the body went first, then its
            // admission, slot and timers go, so a call that goes on starts its
            // next attempt afresh.
            if phase != Phase::FreshBody && phase != Phase::Done {
                if let LendState::Off(rest) = &mut *this.call.state {
                    rest.pinned().project().slow.project().clear();
                }
            }
        }
    }
}

impl<'c, 'a, T, E, F> Future for LendAttempt<'c, 'a, T, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = ControlFlow<Result<T, E>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        if *this.phase == Phase::FreshBody {
            let LendState::Lane { svc, hooks } = *this.call.state else {
                // A later attempt: the call's state is in place.
                *this.phase = Phase::Start;
                return Self::poll_rest(self.project(), None, cx);
            };
            // The call's first attempt: through the swift lane.
            let p = svc.policies();
            // SAFETY: the body slot is in place and holds the body (`FreshBody`);
            // nothing has touched it since.
            let body = unsafe { this.body.pinned() };
            let swifted = unsafe { swift_poll(&svc, p, hooks, body, this.phase, Phase::Over, cx) };
            let left = match swifted {
                Swifted::Polled(LanePoll::Done(v)) => {
                    return Poll::Ready(ControlFlow::Break(Ok(v)))
                }
                Swifted::Polled(LanePoll::Refused(r)) => {
                    return Poll::Ready(ControlFlow::Break(Err(self.refused(svc, hooks, r))))
                }
                Swifted::Polled(LanePoll::Off) | Swifted::Unplaced(_) => None,
                Swifted::Polled(LanePoll::Left(lane, permit, polled)) => {
                    Some((lane, permit, polled))
                }
                Swifted::Off(_) => return self.gate_lane(svc, p, hooks, cx),
            };
            return self.settle(svc, p, hooks, left, cx);
        }
        Self::poll_rest(self.project(), None, cx)
    }
}

impl<'c, 'a, T, E, F> LendAttempt<'c, 'a, T, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    /// A first attempt refused outright: its body is dropped unpolled.
    #[inline(never)]
    fn refused(self: Pin<&mut Self>, svc: &Service, hooks: &Hooks<E>, r: Rejected) -> E {
        let this = self.project();
        // SAFETY: `FreshBody`: the body slot is in place.
        unsafe { this.body.pinned() }.set(None);
        *this.phase = Phase::Done;
        Call::refused(svc, hooks, r)
    }

    /// A first attempt the swift lane is closed to: the lane of [`Call::gate`],
    /// then, unless the attempt ended there, the call's state is put in place.
    #[inline(never)]
    fn gate_lane(
        mut self: Pin<&mut Self>,
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        cx: &mut Context<'_>,
    ) -> Poll<ControlFlow<Result<T, E>>> {
        let this = self.as_mut().project();
        let mut call = Call::with(svc, p, hooks);
        // SAFETY: `FreshBody`: the body slot is in place.
        let body = unsafe { this.body.pinned() };
        let left = match gate_lane_poll(&mut call, body, this.phase, Phase::Over, cx) {
            LanePoll::Done(v) => return Poll::Ready(ControlFlow::Break(Ok(v))),
            LanePoll::Refused(r) => {
                return Poll::Ready(ControlFlow::Break(Err(self.refused(svc, hooks, r))))
            }
            LanePoll::Off => None,
            LanePoll::Left(lane, permit, polled) => Some((lane, permit, polled)),
        };
        self.settle(svc, p, hooks, left, cx)
    }

    /// Puts the call's state in place (`left`: what the lane's attempt left to
    /// do, or `None`: the attempt never took the lane), then goes on off the lane.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn settle(
        self: Pin<&mut Self>,
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        left: Option<(Lane<'a>, Option<Permit<'a>>, Poll<Result<T, E>>)>,
        cx: &mut Context<'_>,
    ) -> Poll<ControlFlow<Result<T, E>>> {
        let this = self.project();
        // Over the service and hooks, which need no drop: the call names them.
        *this.call.state = LendState::Off(Rest::off_lane(svc, p, hooks, false, left.is_some()));
        *this.phase = Phase::Start;
        Self::poll_rest(this, left, cx)
    }

    /// Every poll off the lane: the attempt's steps, under the call's total
    /// timeout. `Continue` once the backoff was slept.
    #[inline(never)]
    #[allow(clippy::type_complexity)]
    fn poll_rest(
        this: LendProj<'_, 'c, 'a, T, E, F>,
        left: Option<(Lane<'a>, Option<Permit<'a>>, Poll<Result<T, E>>)>,
        cx: &mut Context<'_>,
    ) -> Poll<ControlFlow<Result<T, E>>> {
        let (LendState::Off(rest), true) = (&mut *this.call.state, this.phase.holds_rest()) else {
            panic!("`LendAttempt` polled after it completed")
        };
        let rest = rest.pinned().project();
        // SAFETY: the body slot is in place from the attempt's making, and past
        // `Over` it was not dropped in place.
        let body = unsafe { this.body.pinned() };
        let mut st = Steps {
            call: rest.call,
            phase: this.phase,
            body,
            s: rest.slow.project(),
        };
        let polled = match left {
            None => None,
            Some((lane, permit, polled)) => leave_lane(&mut st, lane, permit, polled, cx),
        };
        let step = match polled {
            Some(p) => p,
            None => poll_steps(&mut st, cx),
        };
        match step {
            Poll::Ready(ControlFlow::Continue(())) => {
                // The backoff was slept: the caller makes the next attempt.
                st.s.clear();
                return Poll::Ready(ControlFlow::Continue(()));
            }
            Poll::Ready(done) => return Poll::Ready(done),
            Poll::Pending => {}
        }
        poll_total(&mut st, *rest.total, rest.total_timer, cx).map(|e| ControlFlow::Break(Err(e)))
    }
}

/// Where a [`LeanFuture`] is, and so what its body slot ([`LeanSlot`]) and its
/// admission slot hold: no discriminant of their own is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum LeanPhase {
    /// Not polled yet: the slot holds the maker.
    Make,
    /// The body runs: the slot holds it, and the admission slot its admission.
    Run,
    /// The body panicked at its first poll, on the lane: the slot holds it (its
    /// admission was recorded as a failure on the way out).
    Panicked,
    /// The service's policies need timers (configured live): the slot holds the
    /// call as a boxed [`CallFuture`].
    Boxed,
    /// Done (or the maker panicked): nothing is held.
    Gone,
}

/// The body slot of a [`LeanFuture`]: the maker, the body or the boxed call, as
/// the future's [`LeanPhase`] says; none of them has a discriminant to write.
union LeanSlot<M, Fut, B> {
    make: ManuallyDrop<M>,
    fut: ManuallyDrop<OwnBody<Fut>>,
    boxed: ManuallyDrop<B>,
}

impl<M, Fut, B> LeanSlot<M, Fut, B> {
    /// The maker, moved out (the slot is left holding nothing).
    ///
    /// # Safety
    /// The slot holds the maker, and the caller's phase no longer says so before
    /// anything that can unwind, or the maker is not used after it.
    #[inline(always)]
    unsafe fn take_make(self: Pin<&mut Self>) -> M {
        // SAFETY: the maker is not pinned (it is never polled); read once.
        unsafe { ManuallyDrop::take(&mut self.get_unchecked_mut().make) }
    }

    /// Puts the body in place, over nothing, pinned with the future.
    #[inline(always)]
    fn put_fut(self: Pin<&mut Self>, fut: Fut) -> Pin<&mut OwnBody<Fut>> {
        // SAFETY: written in place and never moved out: dropped in place by
        // `LeanFuture`'s drop or `drop_fut`.
        unsafe {
            let s = self.get_unchecked_mut();
            s.fut = ManuallyDrop::new(OwnBody { fut });
            Pin::new_unchecked(&mut *s.fut)
        }
    }

    /// The body, pinned.
    ///
    /// # Safety
    /// The slot holds the body.
    #[inline(always)]
    unsafe fn fut(self: Pin<&mut Self>) -> Pin<&mut OwnBody<Fut>> {
        // SAFETY: pinned structurally (see `put_fut`); the caller's word.
        unsafe { self.map_unchecked_mut(|s| &mut *s.fut) }
    }

    /// The boxed call.
    ///
    /// # Safety
    /// The slot holds it.
    #[inline(always)]
    unsafe fn boxed(self: Pin<&mut Self>) -> &mut ManuallyDrop<B> {
        // SAFETY: the caller's word; a box is not pinned by its holder.
        unsafe { &mut self.get_unchecked_mut().boxed }
    }
}

/// The boxed call a [`LeanFuture`] runs as when live configuration gave its
/// service a timer: in a block of this thread's pool when it fits one (a body
/// of up to about 480 bytes), so such calls do not allocate once warm.
type BoxedCall<'a, T, E, Fut> = PoolBox<CallFuture<'a, T, E, OneAttempt, Fut>>;

/// An admission and the bulkhead slot it holds.
type LeanHeld<'a> = (Admitted<'a>, Option<Permit<'a>>);

pin_project_lite::pin_project! {
    /// One attempt of an async attribute whose policies need no timer (no timeout,
    /// no total timeout, no rate limit, no bulkhead wait, no slow-call or latency
    /// timing): see [`Service::once_lean`]. Beyond its body it holds the service,
    /// the hooks, and while the body runs its admission and bulkhead slot, so it
    /// adds a few words to the function's future, not the timers and retry state
    /// of a [`CallFuture`].
    ///
    /// The maker, the body and the boxed call share one slot, and a phase byte
    /// says what the slots hold: a call through the lane writes the phase once,
    /// when it is done, and no discriminant.
    #[project = LeanProj]
    #[must_use = "futures do nothing unless polled"]
    pub struct LeanFuture<'a, T, E, M, Fut> {
        svc: &'a Service,
        hooks: &'a Hooks<E>,
        phase: LeanPhase,
        // Dropped before `held`: a cancelled call drops its body first, then
        // frees its slot and probe.
        #[pin]
        body: LeanSlot<M, Fut, BoxedCall<'a, T, E, Fut>>,
        // Held while the body runs (`Run`).
        held: MaybeUninit<LeanHeld<'a>>,
        _out: PhantomData<fn() -> T>,
    }

    impl<'a, T, E, M, Fut> PinnedDrop for LeanFuture<'a, T, E, M, Fut> {
        fn drop(this: Pin<&mut Self>) {
            // A call done holds nothing: one test, inlined where the future is
            // dropped.
            if this.phase != LeanPhase::Gone {
                this.drop_held();
            }
        }
    }
}

impl<'a, T, E, M, Fut> LeanFuture<'a, T, E, M, Fut> {
    /// Drops what the slots hold, as the phase says: each once, in place, the
    /// body before the admission.
    #[inline(never)]
    fn drop_held(self: Pin<&mut Self>) {
        let this = self.project();
        let body = this.body;
        // SAFETY: each slot holds what the phase says; the future is being
        // dropped, so nothing is used again.
        unsafe {
            match *this.phase {
                LeanPhase::Gone => {}
                LeanPhase::Make => drop(body.take_make()),
                LeanPhase::Panicked => drop_pinned(body.fut()),
                LeanPhase::Run => {
                    drop_pinned(body.fut());
                    this.held.assume_init_drop();
                }
                LeanPhase::Boxed => ManuallyDrop::drop(body.boxed()),
            }
        }
    }
}

impl<'a, T, E, M, Fut> LeanFuture<'a, T, E, M, Fut>
where
    M: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    #[inline]
    pub(crate) fn new(svc: &'a Service, hooks: &'a Hooks<E>, make: M) -> Self {
        Self {
            svc,
            hooks,
            phase: LeanPhase::Make,
            body: LeanSlot {
                make: ManuallyDrop::new(make),
            },
            held: MaybeUninit::uninit(),
            _out: PhantomData,
        }
    }

    /// The admission through breaker and bulkhead. `Err`: the call ends here
    /// (refused). `Ok(None)`: the service's policies need timers (live
    /// configuration gave it a timer-driven policy): the call runs as a boxed
    /// [`CallFuture`].
    #[inline(always)]
    fn admit(svc: &'a Service, hooks: &'a Hooks<E>) -> Result<Option<LeanHeld<'a>>, E> {
        let p = svc.policies();
        // Without `into_error` no policy but timing applies (see `Call::begin`).
        let timers = match hooks.into_error {
            Some(_) => !p.untimed || p.bulkhead.as_deref().is_some_and(|b| b.waits()),
            None => p.timed,
        };
        if timers {
            return Ok(None);
        }
        let mut call = Call::with(svc, p, hooks).single_attempt();
        let admitted = match call.gate() {
            Gate::Lane(lane) => lane.admitted(svc),
            Gate::Refused(r) => return Err(Call::refused(svc, hooks, r)),
            // Half-open, the kill switch: every step of the admission.
            Gate::Full => {
                // No rate limiter (checked above): no reservation comes back.
                let (admitted, _none) = call.begin()?;
                admitted
            }
        };
        let permit = match call.bulkhead() {
            None => None,
            Some((b, into)) => match b.try_acquire() {
                Some(permit) => Some(permit),
                None => return Err(call.bulkhead_full(admitted, into)),
            },
        };
        Ok(Some((admitted, permit)))
    }

    /// The first poll on the swift lane, admitted: the body made and polled at
    /// once, a success counted on this thread's own line; a body that is not ready
    /// stays in this future with its admission.
    #[inline(always)]
    fn lane_poll(
        mut this: LeanProj<'_, 'a, T, E, M, Fut>,
        lane: Lane<'a>,
        permit: Option<Permit<'a>>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<T, E>> {
        let (svc, hooks) = (*this.svc, *this.hooks);
        // SAFETY: `Make`: the slot holds the maker. Until the body is in place the
        // guard says `Gone` if the maker unwinds; the phase is written only then.
        let make = unsafe { this.body.as_mut().take_make() };
        let made = PhaseGuard(&mut *this.phase, LeanPhase::Gone);
        let fut = make();
        std::mem::forget(made);
        let mut fut = this.body.as_mut().put_fut(fut);
        let guard = PollGuard {
            svc: this.svc,
            lane,
        };
        // A body that unwinds here is dropped with the future.
        let running = PhaseGuard(&mut *this.phase, LeanPhase::Panicked);
        let polled = fut.as_mut().poll(cx);
        std::mem::forget(running);
        std::mem::forget(guard);
        match polled {
            Poll::Ready(result) => {
                // The body goes first (the phase before it, so a body whose drop
                // panics is not dropped again), then the slot is given back, then
                // the outcome is recorded.
                *this.phase = LeanPhase::Gone;
                // SAFETY: the body is in place and not used again.
                unsafe { std::ptr::drop_in_place(fut.get_unchecked_mut()) };
                match result {
                    Ok(v) => {
                        swift_succeeded(svc, lane, permit);
                        Poll::Ready(Ok(v))
                    }
                    Err(e) => {
                        drop(permit);
                        let admitted = lane.admitted(svc);
                        Poll::Ready(Self::finish_other(svc, hooks, admitted, Err(e)))
                    }
                }
            }
            Poll::Pending => {
                this.held.write((lane.admitted(svc), permit));
                *this.phase = LeanPhase::Run;
                Poll::Pending
            }
        }
    }

    /// The first poll off the swift lane: admission through every policy, then the
    /// body made (or the call boxed as a [`CallFuture`] when live configuration
    /// gave the service a timer). `Err`: refused.
    #[inline(always)]
    fn start(self: Pin<&mut Self>) -> Result<(), E> {
        let mut this = self.project();
        let (svc, hooks) = (*this.svc, *this.hooks);
        // The maker leaves the slot: from here until the slot holds something
        // again, the future holds nothing.
        *this.phase = LeanPhase::Gone;
        // SAFETY: `Make`: the slot holds the maker, and the phase says `Gone` now.
        let make = unsafe { this.body.as_mut().take_make() };
        match Self::admit(svc, hooks)? {
            Some(held) => {
                // Made before anything is put in place: a maker that panics drops
                // the admission with its own frame.
                let fut = make();
                this.held.write(held);
                this.body.as_mut().put_fut(fut);
                *this.phase = LeanPhase::Run;
            }
            None => {
                let boxed = PoolBox::new(CallFuture::once(svc, hooks, make()));
                // SAFETY: the slot holds nothing (`Gone`); written in place.
                unsafe { this.body.as_mut().get_unchecked_mut().boxed = ManuallyDrop::new(boxed) };
                *this.phase = LeanPhase::Boxed;
            }
        }
        Ok(())
    }

    /// The body is done: recorded as a single attempt's outcome (its slot given
    /// back first).
    #[inline(always)]
    fn finish(
        svc: &'a Service,
        hooks: &'a Hooks<E>,
        (admitted, permit): LeanHeld<'a>,
        result: Result<T, E>,
    ) -> Result<T, E> {
        drop(permit);
        if let (Ok(_), Some(lane)) = (&result, admitted.as_lane()) {
            // A closed admission holds nothing to give back.
            std::mem::forget(admitted);
            Call::<E>::lane_success_of(svc, lane);
            return result;
        }
        Self::finish_other(svc, hooks, admitted, result)
    }

    #[inline(never)]
    fn finish_other(
        svc: &'a Service,
        hooks: &'a Hooks<E>,
        admitted: Admitted<'a>,
        result: Result<T, E>,
    ) -> Result<T, E> {
        let mut call = svc.call(hooks).single_attempt();
        call.attempt = 1;
        match call.finish(admitted, result, false, None) {
            Next::Done(r) => r,
            // A single attempt does not retry.
            Next::Retry(e, _) => Err(e),
        }
    }
}

impl<T, E, M, Fut> Future for LeanFuture<'_, T, E, M, Fut>
where
    M: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (svc, hooks) = (self.svc, self.hooks);
        if self.phase == LeanPhase::Make {
            let mut this = self.as_mut().project();
            let p = svc.policies();
            // The swift lane: the body made and polled at once, a success counted
            // on this thread's own line. Only when no policy needs a timer: a body
            // that is not ready stays in this future. The policies word says so for
            // the commonest shape, and the policies are then not read here (a
            // computed key's lie past the 64 bytes of its entry the lane reads).
            if svc.lane_untimed() || p.untimed {
                match swift_admit(svc, p, hooks) {
                    // The commonest shape runs in a copy of its own, which knows
                    // there is no bulkhead slot to give back.
                    SwiftAdmit::Bare(lane) => return Self::lane_poll(this, lane, None, cx),
                    SwiftAdmit::In(lane, permit) => return Self::lane_poll(this, lane, permit, cx),
                    SwiftAdmit::NotClosed(b, ctl) => {
                        if let Some(r) = b.refusal_from(ctl) {
                            *this.phase = LeanPhase::Gone;
                            // SAFETY: `Make` until just now; dropped once.
                            drop(unsafe { this.body.as_mut().take_make() });
                            return Poll::Ready(Err(Call::refused(svc, hooks, r)));
                        }
                    }
                    SwiftAdmit::Off => {}
                }
            }
            return self.poll_off_lane(cx);
        }
        self.poll_held(cx)
    }
}

impl<'a, T, E, M, Fut> LeanFuture<'a, T, E, M, Fut>
where
    M: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    /// A first poll the swift lane is closed to: every step of the admission
    /// ([`Self::start`]), then the body's first poll.
    #[cold]
    #[inline(never)]
    fn poll_off_lane(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        if let Err(refused) = self.as_mut().start() {
            return Poll::Ready(Err(refused));
        }
        self.poll_held(cx)
    }

    /// A poll after the first, or the first off the lane: the body, or the boxed
    /// call. Out of line, so the poll that the attribute's `async fn` inlines is
    /// the swift lane and little else.
    #[inline(never)]
    fn poll_held(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, E>> {
        let (svc, hooks) = (self.svc, self.hooks);
        let mut this = self.project();
        match *this.phase {
            LeanPhase::Run => {
                // SAFETY: `Run`: the slot holds the body.
                let mut fut = unsafe { this.body.as_mut().fut() };
                let result = ready!(fut.as_mut().poll(cx));
                // SAFETY: `Run`: the admission is in place; read once (the phase
                // says `Gone` from here).
                let held = unsafe { this.held.assume_init_read() };
                // The body goes first, then the slot is given back, then the
                // outcome is recorded. A body whose drop panics is not dropped
                // again, and the admission is dropped with this frame.
                *this.phase = LeanPhase::Gone;
                // SAFETY: the body is in place and not used again.
                unsafe { std::ptr::drop_in_place(fut.get_unchecked_mut()) };
                Poll::Ready(Self::finish(svc, hooks, held, result))
            }
            LeanPhase::Boxed => {
                // SAFETY: `Boxed`: the slot holds the boxed call.
                let boxed = unsafe { this.body.as_mut().boxed() };
                let r = ready!(boxed.pinned().poll(cx));
                *this.phase = LeanPhase::Gone;
                // SAFETY: not used again (`Gone`); dropped once.
                unsafe { ManuallyDrop::drop(boxed) };
                Poll::Ready(r)
            }
            LeanPhase::Panicked => panic!("`LeanFuture` polled after it panicked"),
            LeanPhase::Make | LeanPhase::Gone => {
                panic!("`LeanFuture` polled after it completed")
            }
        }
    }
}
