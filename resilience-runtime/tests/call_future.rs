//! `Policy::call`'s future (`CallFuture`) past its lane: a body not ready at its first
//! poll, a failure retried with a fresh body, a rate limiter on the lane, and the
//! total timeout giving back what the pending attempt holds when it elapses. And
//! what `CallFuture`, `Service::once_lean`'s future (`LeanFuture`) and an attempt of
//! a `Lend` call (`LendAttempt`) hold, and drop, at every phase of a call (these run
//! under Miri too).
//! Paused clock throughout.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::{Jitter, Rate, Resilience, ResilienceError};

#[derive(Debug)]
enum E {
    Failed,
    Policy(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::Policy(e)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_body_pending_at_its_first_poll_that_fails_is_recorded_and_retried_with_a_fresh_body() {
    let p = Resilience::builder("call_future::pending_retry")
        .failure_threshold(5)
        .max_attempts(3)
        .delay(ms(100))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let started = tokio::time::Instant::now();
    let r = p
        .call(|| {
            let runs = runs.clone();
            async move {
                let n = runs.fetch_add(1, SeqCst) + 1;
                tokio::time::sleep(ms(10)).await;
                if n < 3 {
                    Err(E::Failed)
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert!(matches!(r, Ok(3)), "{r:?}");
    assert_eq!(runs.load(SeqCst), 3, "one fresh body per attempt");
    // Three 10 ms bodies and two backoffs of at least 100 ms each.
    assert!(
        started.elapsed() >= ms(3 * 10 + 2 * 100),
        "{:?}",
        started.elapsed()
    );
    let st = p.service().status();
    assert_eq!(
        (st.calls, st.failures, st.successes, st.retries),
        (3, 2, 1, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_call_takes_permits_due_now_and_refuses_the_rest_with_the_wait() {
    // 10 per second, burst 2, no wait: the lane takes the two permits due now; the
    // third call is refused through the full path with the exact wait.
    let p = Resilience::builder("call_future::rate")
        .no_circuit_breaker()
        .no_retry()
        .rate(Rate::new(10, Duration::from_secs(1)))
        .burst(2)
        .rate_max_wait(Duration::ZERO)
        .build()
        .unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let call = || {
        let runs = runs.clone();
        p.call(move || {
            let runs = runs.clone();
            async move { Ok::<u32, E>(runs.fetch_add(1, SeqCst) + 1) }
        })
    };
    assert!(matches!(call().await, Ok(1)));
    assert!(matches!(call().await, Ok(2)));
    match call().await {
        Err(E::Policy(ResilienceError::RateLimited { retry_after, .. })) => {
            assert_eq!(retry_after, ms(100))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(runs.load(SeqCst), 2, "the refused call did not run");
    assert_eq!(p.service().status().rejections, 1);
    tokio::time::advance(ms(100)).await;
    assert!(matches!(call().await, Ok(3)));
}

#[tokio::test(start_paused = true)]
async fn when_the_total_timeout_elapses_the_pending_attempt_gives_its_slot_back_at_once() {
    let p = Resilience::builder("call_future::total")
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(1)
        .total_timeout(ms(500))
        .build()
        .unwrap();
    let mut fut = Box::pin(p.call(|| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<u32, E>(1)
    }));
    assert!(futures_poll_once(fut.as_mut()).await.is_pending());
    assert_eq!(
        p.service().bulkhead_available(),
        Some(0),
        "the body holds the slot"
    );
    tokio::time::advance(ms(500)).await;
    match fut.as_mut().await {
        Err(E::Policy(ResilienceError::Timeout { after, .. })) => assert_eq!(after, ms(500)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    // The future is not dropped yet: the slot came back when the timeout elapsed.
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().timeouts, 1);
    drop(fut);
}

/// Polls `fut` once, as a caller's `select!` would.
async fn futures_poll_once<F: std::future::Future + Unpin>(
    mut fut: F,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
}

/// A hand-written body that counts its drops, and panics when polled if told to,
/// or is not ready at its first poll, or panics when dropped.
struct Counted {
    drops: Arc<AtomicU32>,
    panic: bool,
    pending: bool,
    panic_on_drop: bool,
}

impl std::future::Future for Counted {
    type Output = Result<u32, E>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        if self.panic {
            panic!("the body panics");
        }
        if std::mem::take(&mut self.pending) {
            return std::task::Poll::Pending;
        }
        std::task::Poll::Ready(Ok(7))
    }
}

impl Counted {
    fn new(drops: &Arc<AtomicU32>, panic: bool, pending: bool) -> Self {
        Counted {
            drops: drops.clone(),
            panic,
            pending,
            panic_on_drop: false,
        }
    }

    /// A body that completes at its first poll and panics when dropped.
    fn panicking_drop(drops: &Arc<AtomicU32>) -> Self {
        let mut body = Counted::new(drops, false, false);
        body.panic_on_drop = true;
        body
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.drops.fetch_add(1, SeqCst);
        if self.panic_on_drop {
            panic!("the body's drop panics");
        }
    }
}

/// A policy of one bulkhead slot, no retry (and the default breaker).
fn one_slot(name: &str) -> resilience_runtime::Policy {
    Resilience::builder(name)
        .no_retry()
        .max_concurrent(1)
        .build()
        .unwrap()
}

fn poll_now<F: std::future::Future>(fut: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    fut.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
}

/// The hooks an attribute writes for an error that converts from `ResilienceError`.
static HOOKS: resilience_runtime::Hooks<E> = resilience_runtime::Hooks::DEFAULT;

/// A panic's message.
fn message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// `fut`'s body (counting its drops in `drops`) completes at its first poll: it is
/// dropped once, as it completes, its slot is free, and it is not dropped again with
/// the future; the call is one success.
fn check_done_at_first_poll<F>(p: &resilience_runtime::Policy, drops: &AtomicU32, fut: F)
where
    F: std::future::Future<Output = Result<u32, E>>,
{
    let mut fut = Box::pin(fut);
    assert!(matches!(
        poll_now(fut.as_mut()),
        std::task::Poll::Ready(Ok(7))
    ));
    assert_eq!(
        drops.load(SeqCst),
        1,
        "the body goes as soon as it completes"
    );
    assert_eq!(p.service().bulkhead_available(), Some(1));
    drop(fut);
    assert_eq!(
        drops.load(SeqCst),
        1,
        "and is not dropped again with the future"
    );
    let st = p.service().status();
    assert_eq!((st.calls, st.successes), (1, 1));
}

/// `fut`'s body panics at its first poll: the panic reaches the caller and is one
/// failure, the slot is free, and the future still holds the body (returned, for
/// the caller to drop).
fn check_panicked_at_first_poll<F>(
    p: &resilience_runtime::Policy,
    drops: &AtomicU32,
    fut: F,
) -> std::pin::Pin<Box<F>>
where
    F: std::future::Future<Output = Result<u32, E>>,
{
    let mut fut = Box::pin(fut);
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    assert!(polled.is_err(), "the body's panic reaches the caller");
    assert_eq!(drops.load(SeqCst), 0, "the future still holds the body");
    assert_eq!(p.service().status().failures, 1, "the panic is one failure");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    fut
}

#[test]
fn a_call_dropped_before_its_first_poll_makes_no_body_and_holds_nothing() {
    let p = one_slot("call_future::never_polled");
    let (made, drops) = (AtomicU32::new(0), Arc::new(AtomicU32::new(0)));
    let fut = p.call(|| {
        made.fetch_add(1, SeqCst);
        Counted::new(&drops, false, false)
    });
    drop(fut);
    assert_eq!(
        made.load(SeqCst),
        0,
        "no body is made before the first poll"
    );
    assert_eq!(drops.load(SeqCst), 0);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().calls, 0);
}

#[test]
fn a_body_completed_at_its_first_poll_is_dropped_once_before_the_future_is() {
    let p = one_slot("call_future::dropped_once");
    let drops = Arc::new(AtomicU32::new(0));
    check_done_at_first_poll(&p, &drops, p.call(|| Counted::new(&drops, false, false)));
}

#[test]
fn a_body_panicking_at_its_first_poll_is_dropped_with_the_future() {
    let p = one_slot("call_future::first_poll_panic");
    let drops = Arc::new(AtomicU32::new(0));
    let fut =
        check_panicked_at_first_poll(&p, &drops, p.call(|| Counted::new(&drops, true, false)));
    drop(fut);
    assert_eq!(drops.load(SeqCst), 1, "dropped with the future, not leaked");
}

/// `fut`'s body completes at its first poll and its drop panics: the panic reaches
/// the caller, the slot is given back, and the body is not dropped a second time
/// with the future.
fn check_drop_panicked_at_first_poll<F>(p: &resilience_runtime::Policy, drops: &AtomicU32, fut: F)
where
    F: std::future::Future<Output = Result<u32, E>>,
{
    let mut fut = Box::pin(fut);
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    let msg = message(polled.expect_err("the drop's panic reaches the caller"));
    assert!(msg.contains("the body's drop panics"), "{msg}");
    assert_eq!(drops.load(SeqCst), 1, "dropped as it completed");
    assert_eq!(
        p.service().bulkhead_available(),
        Some(1),
        "the slot is back"
    );
    drop(fut);
    assert_eq!(
        drops.load(SeqCst),
        1,
        "and not dropped again with the future"
    );
}

#[test]
fn a_body_whose_drop_panics_is_not_dropped_again_with_the_future() {
    let p = one_slot("call_future::drop_panics");
    let drops = Arc::new(AtomicU32::new(0));
    check_drop_panicked_at_first_poll(&p, &drops, p.call(|| Counted::panicking_drop(&drops)));
}

#[test]
fn a_body_given_up_front_whose_drop_panics_is_not_dropped_again_with_the_future() {
    // `Service::once`'s future holds its body from the start (an expansion without
    // a retry): the future's drop would drop it again unless the lane says it is gone.
    let p = one_slot("call_future::once_drop_panics");
    let drops = Arc::new(AtomicU32::new(0));
    let svc = p.service();
    check_drop_panicked_at_first_poll(
        &p,
        &drops,
        svc.once(&HOOKS, Counted::panicking_drop(&drops)),
    );
}

#[test]
fn a_call_the_breaker_refuses_on_the_lane_makes_no_body() {
    let name = "call_future::refused_makes_no_body";
    let p = one_slot(name);
    resilience_runtime::breaker(name).unwrap().force_open();
    let (made, drops) = (AtomicU32::new(0), Arc::new(AtomicU32::new(0)));
    let mut fut = Box::pin(p.call(|| {
        made.fetch_add(1, SeqCst);
        Counted::new(&drops, false, false)
    }));
    let r = poll_now(fut.as_mut());
    assert!(
        matches!(
            r,
            std::task::Poll::Ready(Err(E::Policy(ResilienceError::CircuitOpen { .. })))
        ),
        "{r:?}"
    );
    drop(fut);
    assert_eq!(
        made.load(SeqCst),
        0,
        "the body is made only once the call is admitted"
    );
    assert_eq!(drops.load(SeqCst), 0);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().rejections, 1);
}

#[test]
fn a_call_polled_again_after_it_completed_panics_and_records_nothing() {
    let p = Resilience::builder("call_future::polled_again")
        .no_retry()
        .build()
        .unwrap();
    let made = AtomicU32::new(0);
    let mut fut = Box::pin(p.call(|| {
        made.fetch_add(1, SeqCst);
        async { Ok::<u32, E>(1) }
    }));
    assert!(matches!(
        poll_now(fut.as_mut()),
        std::task::Poll::Ready(Ok(1))
    ));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    let msg = message(again.expect_err("a second poll after completion panics"));
    assert!(msg.contains("polled after it completed"), "{msg}");
    assert_eq!(made.load(SeqCst), 1, "no second body");
    let st = p.service().status();
    assert_eq!((st.calls, st.successes, st.failures), (1, 1, 0));
}

#[test]
fn a_lean_call_dropped_before_its_first_poll_drops_its_maker_once_and_makes_no_body() {
    let p = one_slot("lean_future::never_polled");
    let (made, drops) = (AtomicU32::new(0), Arc::new(AtomicU32::new(0)));
    let captured = Counted::new(&drops, false, false);
    let fut = p.service().once_lean(&HOOKS, || {
        made.fetch_add(1, SeqCst);
        captured
    });
    drop(fut);
    assert_eq!(made.load(SeqCst), 0, "no body before the first poll");
    assert_eq!(drops.load(SeqCst), 1, "the maker's capture is dropped once");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().calls, 0);
}

#[test]
fn a_lean_body_completed_at_its_first_poll_is_dropped_once_before_the_future_is() {
    let p = one_slot("lean_future::dropped_once");
    let drops = Arc::new(AtomicU32::new(0));
    let fut = p
        .service()
        .once_lean(&HOOKS, || Counted::new(&drops, false, false));
    check_done_at_first_poll(&p, &drops, fut);
}

#[test]
fn a_lean_body_panicking_at_its_first_poll_is_one_failure_and_dropped_with_the_future() {
    let p = one_slot("lean_future::first_poll_panic");
    let drops = Arc::new(AtomicU32::new(0));
    let fut = p
        .service()
        .once_lean(&HOOKS, || Counted::new(&drops, true, false));
    let mut fut = check_panicked_at_first_poll(&p, &drops, fut);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    let msg = message(again.expect_err("polling it again panics"));
    assert!(msg.contains("polled after it panicked"), "{msg}");
    assert_eq!(drops.load(SeqCst), 0, "the body is not polled or dropped");
    drop(fut);
    assert_eq!(drops.load(SeqCst), 1, "dropped with the future, not leaked");
    assert_eq!(p.service().status().calls, 1);
}

#[test]
fn a_lean_maker_that_panics_drops_its_capture_once_and_frees_the_slot() {
    let p = one_slot("lean_future::maker_panics");
    let drops = Arc::new(AtomicU32::new(0));
    let captured = Counted::new(&drops, false, false);
    let mut fut = Box::pin(p.service().once_lean(&HOOKS, move || {
        let _owned = captured;
        if true {
            panic!("the maker panics");
        }
        std::future::ready(Ok::<u32, E>(1))
    }));
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    assert!(polled.is_err(), "the maker's panic reaches the caller");
    assert_eq!(drops.load(SeqCst), 1, "its capture went with its frame");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    drop(fut);
    assert_eq!(drops.load(SeqCst), 1, "and is not dropped again");
}

#[test]
fn a_lean_body_pending_at_its_first_poll_holds_its_slot_until_it_completes_or_is_dropped() {
    let p = one_slot("lean_future::pending");
    let drops = Arc::new(AtomicU32::new(0));
    let mut fut = Box::pin(
        p.service()
            .once_lean(&HOOKS, || Counted::new(&drops, false, true)),
    );
    assert!(poll_now(fut.as_mut()).is_pending());
    assert_eq!(p.service().bulkhead_available(), Some(0), "the body runs");
    assert!(matches!(
        poll_now(fut.as_mut()),
        std::task::Poll::Ready(Ok(7))
    ));
    assert_eq!(drops.load(SeqCst), 1, "the body goes as it completes");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    drop(fut);
    assert_eq!(drops.load(SeqCst), 1);

    // Cancelled while pending: the body is dropped, then the slot is free; no
    // outcome is recorded.
    let mut fut = Box::pin(
        p.service()
            .once_lean(&HOOKS, || Counted::new(&drops, false, true)),
    );
    assert!(poll_now(fut.as_mut()).is_pending());
    assert_eq!(p.service().bulkhead_available(), Some(0));
    drop(fut);
    assert_eq!(drops.load(SeqCst), 2);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    let st = p.service().status();
    assert_eq!((st.calls, st.successes, st.failures), (1, 1, 0));
}

#[test]
fn a_lean_call_whose_service_needs_a_timer_runs_boxed_and_drops_its_body_once() {
    // A per-attempt timeout: `once_lean` runs the call as `once`'s future, boxed.
    let p = Resilience::builder("lean_future::boxed")
        .no_retry()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let drops = Arc::new(AtomicU32::new(0));
    let mut fut = Box::pin(
        p.service()
            .once_lean(&HOOKS, || Counted::new(&drops, false, false)),
    );
    assert!(matches!(
        poll_now(fut.as_mut()),
        std::task::Poll::Ready(Ok(7))
    ));
    assert_eq!(drops.load(SeqCst), 1);
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poll_now(fut.as_mut())));
    let msg = message(again.expect_err("polling it again panics"));
    assert!(msg.contains("polled after it completed"), "{msg}");
    drop(fut);
    assert_eq!(drops.load(SeqCst), 1, "dropped once");
    let st = p.service().status();
    assert_eq!((st.calls, st.successes), (1, 1));
}

/// One attempt of a `Lend` call (what a function lending a `&mut` to each attempt
/// awaits), its `Break` as the output: the attempt future itself, not a wrapper, so
/// what it holds at each phase is what these tests see.
struct Ended<A>(std::pin::Pin<Box<A>>);

impl<A> std::future::Future for Ended<A>
where
    A: std::future::Future<Output = std::ops::ControlFlow<Result<u32, E>>>,
{
    type Output = Result<u32, E>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(|flow| match flow {
            std::ops::ControlFlow::Break(r) => r,
            std::ops::ControlFlow::Continue(()) => panic!("no retry is configured"),
        })
    }
}

#[test]
fn a_lent_body_completed_at_its_first_poll_is_dropped_once_before_the_attempt_is() {
    let p = one_slot("lend::dropped_once");
    let drops = Arc::new(AtomicU32::new(0));
    let mut call = p.service().lend(&HOOKS);
    let attempt = call.attempt(Counted::new(&drops, false, false));
    check_done_at_first_poll(&p, &drops, Ended(Box::pin(attempt)));
    drop(call);
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn a_lent_body_panicking_at_its_first_poll_is_dropped_with_the_attempt() {
    let p = one_slot("lend::first_poll_panic");
    let drops = Arc::new(AtomicU32::new(0));
    let mut call = p.service().lend(&HOOKS);
    let attempt = call.attempt(Counted::new(&drops, true, false));
    let fut = check_panicked_at_first_poll(&p, &drops, Ended(Box::pin(attempt)));
    drop(fut);
    assert_eq!(
        drops.load(SeqCst),
        1,
        "dropped with the attempt, not leaked"
    );
    drop(call);
    assert_eq!(drops.load(SeqCst), 1);
}

#[test]
fn a_lent_body_whose_drop_panics_is_not_dropped_again_with_the_attempt() {
    let p = one_slot("lend::drop_panics");
    let drops = Arc::new(AtomicU32::new(0));
    let mut call = p.service().lend(&HOOKS);
    let attempt = call.attempt(Counted::panicking_drop(&drops));
    check_drop_panicked_at_first_poll(&p, &drops, Ended(Box::pin(attempt)));
}

#[test]
fn a_lent_attempt_the_breaker_refuses_drops_its_body_unpolled() {
    let name = "lend::refused";
    let p = one_slot(name);
    resilience_runtime::breaker(name).unwrap().force_open();
    let drops = Arc::new(AtomicU32::new(0));
    let mut call = p.service().lend(&HOOKS);
    let mut fut = Ended(Box::pin(call.attempt(Counted::new(&drops, true, false))));
    // The body panics if polled: refused, it is dropped without a poll.
    let r = poll_now(std::pin::Pin::new(&mut fut));
    assert!(
        matches!(
            r,
            std::task::Poll::Ready(Err(E::Policy(ResilienceError::CircuitOpen { .. })))
        ),
        "{r:?}"
    );
    assert_eq!(drops.load(SeqCst), 1, "dropped as the attempt was refused");
    drop(fut);
    drop(call);
    assert_eq!(drops.load(SeqCst), 1, "and not again");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().rejections, 1);
}

#[test]
fn a_lent_body_pending_at_its_first_poll_holds_its_slot_until_it_completes_or_is_dropped() {
    let p = one_slot("lend::pending");
    let drops = Arc::new(AtomicU32::new(0));
    let mut call = p.service().lend(&HOOKS);
    let mut fut = Ended(Box::pin(call.attempt(Counted::new(&drops, false, true))));
    assert!(poll_now(std::pin::Pin::new(&mut fut)).is_pending());
    assert_eq!(p.service().bulkhead_available(), Some(0), "the body runs");
    assert!(matches!(
        poll_now(std::pin::Pin::new(&mut fut)),
        std::task::Poll::Ready(Ok(7))
    ));
    assert_eq!(drops.load(SeqCst), 1, "the body goes as it completes");
    assert_eq!(p.service().bulkhead_available(), Some(1));
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        poll_now(std::pin::Pin::new(&mut fut))
    }));
    let msg = message(again.expect_err("polling it again panics"));
    assert!(msg.contains("polled after it completed"), "{msg}");
    drop(fut);
    drop(call);
    assert_eq!(drops.load(SeqCst), 1);

    // Cancelled while pending: the body is dropped, then the slot is free (the
    // call's state, which holds it, goes with the call); no outcome is recorded.
    let mut call = p.service().lend(&HOOKS);
    let mut fut = Ended(Box::pin(call.attempt(Counted::new(&drops, false, true))));
    assert!(poll_now(std::pin::Pin::new(&mut fut)).is_pending());
    assert_eq!(p.service().bulkhead_available(), Some(0));
    drop(fut);
    assert_eq!(drops.load(SeqCst), 2);
    assert_eq!(
        p.service().bulkhead_available(),
        Some(1),
        "an attempt dropped in flight gives its slot back"
    );
    drop(call);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    let st = p.service().status();
    assert_eq!((st.calls, st.successes, st.failures), (1, 1, 0));
}
