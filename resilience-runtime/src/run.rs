//! The futures of an async call, written by hand: an attempt is a small state
//! machine that holds the body's future once, polls it in place, and arms a timer
//! only when the body is not ready at its first poll. (Written as `async fn`s they
//! held the body several times over and were copied on every call.)

use std::future::Future;
use std::marker::PhantomData;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

use crate::bulkhead::{Full, Permit};
use crate::clock::Instant;
use crate::events::EventKind;
use crate::rate_limit::Reservation;
use crate::service::{Admitted, Call, Gate, IntoError, Lane, LaneGuard, Next, OwnBody, Service};

/// The permit of a bulkhead that had to be waited for (boxed: only a full bulkhead
/// with a `max_wait` gets here).
type Acquire<'a> = Pin<Box<dyn Future<Output = Result<Permit<'a>, Full>> + Send + 'a>>;

/// Where an attempt is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
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

pin_project_lite::pin_project! {
    /// One attempt of a call: see [`Call::attempt`].
    ///
    /// Every piece of state is a field of its own, so moving between phases writes
    /// only what changes: the body stays where it was pinned, and nothing is copied
    /// on the way through.
    #[project = AttemptProj]
    #[must_use = "futures do nothing unless polled"]
    pub struct Attempt<'c, 'a, T, E, F> {
        call: &'c mut Call<'a, E>,
        phase: Phase,
        #[pin]
        body: Option<OwnBody<F>>,
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
        _out: PhantomData<fn() -> T>,
    }
}

impl<'c, 'a, T, E, F> Attempt<'c, 'a, T, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    #[inline]
    pub(crate) fn new(call: &'c mut Call<'a, E>, body: F) -> Self {
        Self {
            call,
            phase: Phase::Start,
            body: Some(OwnBody { fut: body }),
            admitted: None,
            reservation: None,
            permit: None,
            acquire: None,
            lane: None,
            began: None,
            limit: None,
            timer: None,
            _out: PhantomData,
        }
    }
}

type Projection<'p, 'c, 'a, T, E, F> = AttemptProj<'p, 'c, 'a, T, E, F>;

/// The body runs next: under the per-attempt timeout, unless the call bypasses
/// policies.
#[inline(always)]
fn enter_run<T, E, F>(this: &mut Projection<'_, '_, '_, T, E, F>) {
    let call = &**this.call;
    *this.limit = match (call.p.config.timeout, call.hooks.into_error) {
        (Some(limit), Some(_)) if !call.bypass => Some(limit),
        _ => None,
    };
    if this.lane.is_none() {
        *this.began = call.timing();
    }
    if let Some(r) = this.reservation.take() {
        r.used();
    }
    *this.phase = Phase::Run;
}

/// What follows a poll of the body: `Pending` arms the per-attempt timeout; an
/// outcome (or the timeout) is recorded and decides the retry. `Continue` here
/// means the backoff began (the caller polls on); `Break` ends the attempt.
fn after_body<T, E, F>(
    this: &mut Projection<'_, '_, '_, T, E, F>,
    polled: Poll<Result<T, E>>,
    cx: &mut Context<'_>,
) -> Poll<ControlFlow<Result<T, E>>> {
    let (result, timed_out) = match polled {
        Poll::Ready(r) => (r, false),
        Poll::Pending => {
            let Some(limit) = *this.limit else {
                return Poll::Pending;
            };
            if this.timer.is_none() {
                this.timer.set(Some(tokio::time::sleep(limit)));
            }
            match this.timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                Some(Poll::Ready(())) => {
                    let into = this
                        .call
                        .hooks
                        .into_error
                        .expect("a timeout is armed only with into_error");
                    (Err(this.call.timed_out(limit, into)), true)
                }
                _ => return Poll::Pending,
            }
        }
    };
    // The body and its timer go first, then the slot is given back.
    this.body.set(None);
    if this.timer.is_some() {
        this.timer.set(None);
    }
    drop(this.permit.take());
    *this.phase = Phase::Done;
    let admitted = this.admitted.take().expect("admitted before running");
    if let (Some(lane), Ok(_)) = (*this.lane, &result) {
        // A closed admission holds nothing to give back.
        std::mem::forget(admitted);
        this.call.lane_success(lane);
        return Poll::Ready(ControlFlow::Break(result));
    }
    match this.call.finish(admitted, result, timed_out, *this.began) {
        Next::Done(r) => Poll::Ready(ControlFlow::Break(r)),
        Next::Retry(_, delay) => {
            this.timer.set(Some(tokio::time::sleep(delay)));
            *this.phase = Phase::Backoff;
            Poll::Ready(ControlFlow::Continue(()))
        }
    }
}

/// Admission through the bulkhead (breaker and rate limiter are passed): a slot now,
/// a wait for one, or a refusal.
fn enter_bulkhead<T, E, F>(
    this: &mut Projection<'_, '_, '_, T, E, F>,
) -> Option<Poll<ControlFlow<Result<T, E>>>> {
    let Some((b, into)) = this.call.bulkhead() else {
        enter_run(this);
        return None;
    };
    if let Some(permit) = b.try_acquire() {
        *this.permit = Some(permit);
        enter_run(this);
        return None;
    }
    if b.waits() {
        *this.acquire = Some(Box::pin(b.acquire_slow()));
        *this.phase = Phase::BulkheadWait;
        return None;
    }
    Some(refuse_full(this, into))
}

/// The bulkhead refused the call: the unused rate-limit permit is given back and the
/// probe freed.
fn refuse_full<T, E, F>(
    this: &mut Projection<'_, '_, '_, T, E, F>,
    into: IntoError<E>,
) -> Poll<ControlFlow<Result<T, E>>> {
    drop(this.reservation.take());
    *this.phase = Phase::Done;
    let admitted = this.admitted.take().expect("admitted before the bulkhead");
    Poll::Ready(ControlFlow::Break(Err(this
        .call
        .bulkhead_full(admitted, into))))
}

impl<T, E, F> Future for Attempt<'_, '_, T, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = ControlFlow<Result<T, E>>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.phase == Phase::Start {
            if let Some(done) = self.as_mut().poll_lane(cx) {
                return done;
            }
        }
        self.poll_steps(cx)
    }
}

impl<T, E, F> Attempt<'_, '_, T, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    /// A first attempt through the lane: admitted without bookkeeping and the body
    /// polled at once; a success at that poll is counted and done. `None`: the lane
    /// is closed to this call, nothing was done.
    #[inline(always)]
    fn poll_lane(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Option<Poll<ControlFlow<Result<T, E>>>> {
        let mut this = self.project();
        let call = &mut **this.call;
        let lane = match call.gate() {
            Gate::Lane(lane) => lane,
            Gate::Refused(r) => {
                *this.phase = Phase::Done;
                return Some(Poll::Ready(ControlFlow::Break(Err(call.refuse(r)))));
            }
            Gate::Full => return None,
        };
        let permit = match call.p.bulkhead.as_deref() {
            None => None,
            Some(b) => Some(b.try_acquire()?),
        };
        call.attempt = 1;
        let body = this.body.as_mut().as_pin_mut()?.project().fut;
        let guard = LaneGuard {
            svc: call.svc,
            lane,
        };
        let polled = body.poll(cx);
        std::mem::forget(guard);
        if let Poll::Ready(Ok(_)) = &polled {
            // The body goes first, then the slot is given back.
            this.body.set(None);
            drop(permit);
            *this.phase = Phase::Done;
            call.lane_success(lane);
            return Some(polled.map(ControlFlow::Break));
        }
        // Not ready, or an error: from here the attempt goes as any other.
        *this.admitted = Some(lane.admitted(call.svc));
        *this.permit = permit;
        *this.lane = Some(lane);
        enter_run(&mut this);
        match after_body(&mut this, polled, cx) {
            // The backoff began: `poll_steps` sleeps it.
            Poll::Ready(ControlFlow::Continue(())) => None,
            other => Some(other),
        }
    }

    #[inline(never)]
    fn poll_steps(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ControlFlow<Result<T, E>>> {
        let mut this = self.project();
        loop {
            match *this.phase {
                Phase::Start => {
                    let call = &mut **this.call;
                    let (admitted, reservation) = match call.begin() {
                        Ok(a) => a,
                        Err(e) => {
                            *this.phase = Phase::Done;
                            return Poll::Ready(ControlFlow::Break(Err(e)));
                        }
                    };
                    *this.admitted = Some(admitted);
                    if let Some(r) = reservation {
                        let delay = r.delay();
                        *this.reservation = Some(r);
                        if let Some(wait) = delay {
                            call.svc.emit(EventKind::RateLimitWaited { wait });
                            this.timer.set(Some(tokio::time::sleep(wait)));
                            *this.phase = Phase::RateWait;
                            continue;
                        }
                    }
                    if let Some(done) = enter_bulkhead(&mut this) {
                        return done;
                    }
                }
                Phase::RateWait => {
                    if let Some(t) = this.timer.as_mut().as_pin_mut() {
                        ready!(t.poll(cx));
                    }
                    this.timer.set(None);
                    if let Some(done) = enter_bulkhead(&mut this) {
                        return done;
                    }
                }
                Phase::BulkheadWait => {
                    let got = match this.acquire.as_mut() {
                        Some(a) => ready!(a.as_mut().poll(cx)),
                        None => Err(Full),
                    };
                    *this.acquire = None;
                    match got {
                        Ok(permit) => {
                            *this.permit = Some(permit);
                            enter_run(&mut this);
                        }
                        Err(Full) => {
                            let into = this
                                .call
                                .hooks
                                .into_error
                                .expect("the bulkhead applies only with into_error");
                            return refuse_full(&mut this, into);
                        }
                    }
                }
                Phase::Run => {
                    let polled = match this.body.as_mut().as_pin_mut() {
                        Some(body) => body.poll(cx),
                        None => panic!("`Attempt` polled after it completed"),
                    };
                    match after_body(&mut this, polled, cx) {
                        Poll::Ready(ControlFlow::Continue(())) => {}
                        other => return other,
                    }
                }
                Phase::Backoff => {
                    if let Some(t) = this.timer.as_mut().as_pin_mut() {
                        ready!(t.poll(cx));
                    }
                    this.timer.set(None);
                    *this.phase = Phase::Done;
                    return Poll::Ready(ControlFlow::Continue(()));
                }
                Phase::Done => panic!("`Attempt` polled after it completed"),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A whole call under its `total_timeout`: see [`Service::total`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Total<'a, E, F> {
        svc: &'a Service,
        limit: Option<(Duration, IntoError<E>)>,
        #[pin]
        fut: F,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<'a, E, F> Total<'a, E, F> {
    pub(crate) fn new(svc: &'a Service, limit: Option<(Duration, IntoError<E>)>, fut: F) -> Self {
        Self {
            svc,
            limit,
            fut,
            timer: None,
        }
    }
}

impl<T, E, F> Future for Total<'_, E, F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(r) = this.fut.poll(cx) {
            return Poll::Ready(r);
        }
        let Some((limit, into)) = *this.limit else {
            return Poll::Pending;
        };
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(limit)));
        }
        match this.timer.as_pin_mut().map(|t| t.poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Err(this.svc.total_timed_out(limit, into))),
            _ => Poll::Pending,
        }
    }
}
