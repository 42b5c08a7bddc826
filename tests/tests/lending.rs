//! An async function whose arguments lend a `&mut` to each attempt (`&mut self`
//! included) runs its attempts as a loop of `Lend::attempt` in its own future, not
//! through `Service::retry`'s closure. These tests hold it to the same behaviour:
//! the same script of outcomes through both forms gives the same results, times,
//! attempts and counters; and what a lending call holds (its bulkhead slot, its
//! half-open probe) is given back when it is dropped mid-flight.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use resilience_runtime::prelude::*;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

/// What one attempt's body does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Succeeds at its first poll with 1.
    Ok,
    /// Fails at its first poll.
    Fail,
    /// Sleeps this many milliseconds, then succeeds with 2.
    Slow(u64),
    /// Never completes.
    Hang,
}

/// The steps of the attempts to come, one per attempt, shared by the caller.
#[derive(Default)]
struct Script(Mutex<VecDeque<Step>>);

impl Script {
    fn set(&self, steps: &[Step]) {
        let mut q = self.0.lock().unwrap();
        assert!(q.is_empty(), "steps left over from the last call: {q:?}");
        q.extend(steps.iter().copied());
    }

    fn left(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    async fn run(&self) -> Result<u32, E> {
        let step = self
            .0
            .lock()
            .unwrap()
            .pop_front()
            .expect("a step for every attempt");
        match step {
            Step::Ok => Ok(1),
            Step::Fail => Err(E::Boom),
            Step::Slow(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(2)
            }
            Step::Hang => std::future::pending().await,
        }
    }
}

// The same policies twice: the first function lends `attempts` to each attempt, the
// second takes only shared references (its attempts come from a closure).

#[with_resilience(
    service = "lending::same.lend",
    timeout = "1s",
    total_timeout = "3s",
    retry(max_attempts = 3, delay = "100ms", backoff = "fixed", jitter = "none"),
    circuit_breaker(failure_threshold = 6, cooldown = "10s"),
    bulkhead(max_concurrent = 2)
)]
async fn lending(script: &Script, attempts: &mut u32) -> Result<u32, E> {
    *attempts += 1;
    script.run().await
}

#[with_resilience(
    service = "lending::same.closure",
    timeout = "1s",
    total_timeout = "3s",
    retry(max_attempts = 3, delay = "100ms", backoff = "fixed", jitter = "none"),
    circuit_breaker(failure_threshold = 6, cooldown = "10s"),
    bulkhead(max_concurrent = 2)
)]
async fn by_closure(script: &Script, attempts: &AtomicU32) -> Result<u32, E> {
    attempts.fetch_add(1, SeqCst);
    script.run().await
}

/// A result without the service's name, so the two forms' can be compared.
fn shape(r: &Result<u32, E>) -> String {
    match r {
        Ok(v) => format!("Ok({v})"),
        Err(E::Boom) => "Boom".to_owned(),
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            format!("CircuitOpen({retry_after:?})")
        }
        Err(E::R(ResilienceError::Timeout { after, .. })) => format!("Timeout({after:?})"),
        Err(E::R(e)) => format!("{e:?}"),
    }
}

/// What one call did: its result, how long it took, how many attempts ran.
type Seen = (String, Duration, u32);

async fn through_lending(script: &Script, steps: &[Step]) -> Seen {
    script.set(steps);
    let t0 = Instant::now();
    let mut attempts = 0;
    let r = lending(script, &mut attempts).await;
    assert_eq!(script.left(), 0, "every step ran: {steps:?}");
    (shape(&r), t0.elapsed(), attempts)
}

async fn through_closure(script: &Script, steps: &[Step]) -> Seen {
    script.set(steps);
    let t0 = Instant::now();
    let attempts = AtomicU32::new(0);
    let r = by_closure(script, &attempts).await;
    assert_eq!(script.left(), 0, "every step ran: {steps:?}");
    (shape(&r), t0.elapsed(), attempts.load(SeqCst))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_lending_call_behaves_as_the_closure_form_does() {
    use Step::*;
    let script = Script::default();
    // Each call's steps, and what it must give (the closure form is held to it too).
    let calls: Vec<(&[Step], Seen)> = vec![
        // Done at the first poll, on the lane.
        (&[Ok], ("Ok(1)".into(), ms(0), 1)),
        // A failure, the backoff, a success.
        (&[Fail, Ok], ("Ok(1)".into(), ms(100), 2)),
        // Pending at the first poll: the call leaves the lane.
        (&[Slow(500)], ("Ok(2)".into(), ms(500), 1)),
        // The first attempt times out (1 s), the second succeeds after 200 ms.
        (&[Hang, Slow(200)], ("Ok(2)".into(), ms(1300), 2)),
        // Two attempts time out; the total timeout (3 s) ends the third.
        (&[Hang, Hang, Hang], ("Timeout(3s)".into(), ms(3000), 3)),
        // Every attempt fails: the last error.
        (&[Fail, Fail, Fail], ("Boom".into(), ms(200), 3)),
        // Two timeouts and three failures before: the sixth in a row opens the
        // breaker; the retry, after its backoff, is refused by the open breaker.
        (&[Fail], ("CircuitOpen(9.9s)".into(), ms(100), 1)),
        // Open: refused at once, no body runs.
        (&[], ("CircuitOpen(9.9s)".into(), ms(0), 0)),
    ];
    // Each form runs the whole sequence on its own (the breaker's times are its own).
    let mut lent = Vec::new();
    for (steps, _) in &calls {
        lent.push(through_lending(&script, steps).await);
    }
    let mut closure = Vec::new();
    for (steps, _) in &calls {
        closure.push(through_closure(&script, steps).await);
    }
    for (i, (steps, want)) in calls.iter().enumerate() {
        assert_eq!(lent[i], *want, "the lending form, steps {steps:?}");
        assert_eq!(closure[i], *want, "the closure form, steps {steps:?}");
    }
    // After the cooldown, a probe closes each breaker again.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(through_lending(&script, &[Ok]).await.0, "Ok(1)");
    assert_eq!(through_closure(&script, &[Ok]).await.0, "Ok(1)");

    let (a, b) = (
        status("lending::same.lend").unwrap(),
        status("lending::same.closure").unwrap(),
    );
    let counts = |s: &ServiceStatus| {
        (
            s.state,
            s.calls,
            s.successes,
            s.failures,
            s.rejections,
            s.timeouts,
            s.retries,
        )
    };
    assert_eq!(counts(&a), counts(&b), "the same counters");
    assert_eq!(
        counts(&a),
        // Successes: 4 calls and the probe; failures: 1, 1 timeout, 2 timeouts (the
        // third attempt, ended by the total timeout, has no outcome), 3, 1;
        // rejections: the retry of the tripping call and the call refused open;
        // timeouts: 3 attempts and 1 total; retries: 1 + 1 + 2 + 2 + 1.
        (CircuitState::Closed, 13, 5, 8, 2, 4, 7)
    );
}

/// Polls `fut` once with the current task's waker.
async fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = Some(fut);
    std::future::poll_fn(move |cx| Poll::Ready(fut.take().unwrap().poll(cx))).await
}

#[with_resilience(
    service = "lending::dropped",
    retry(max_attempts = 2, delay = "100ms", jitter = "none"),
    circuit_breaker(failure_threshold = 1, cooldown = "10s", half_open_calls = 1),
    bulkhead(max_concurrent = 1)
)]
async fn dropped(script: &Script, attempts: &mut u32) -> Result<u32, E> {
    *attempts += 1;
    script.run().await
}

#[tokio::test(start_paused = true)]
async fn a_lending_call_dropped_in_its_body_frees_its_slot_and_its_probe() {
    let script = Script::default();
    let mut attempts = 0;
    // The first failure opens the breaker; the retry, after its backoff, is refused.
    script.set(&[Step::Fail]);
    assert_eq!(
        shape(&dropped(&script, &mut attempts).await),
        "CircuitOpen(9.9s)"
    );
    tokio::time::advance(Duration::from_secs(10)).await;

    // The probe hangs in its body, holding the probe slot and the bulkhead's slot.
    script.set(&[Step::Hang]);
    let mut probe = Box::pin(dropped(&script, &mut attempts));
    assert!(poll_once(probe.as_mut()).await.is_pending());
    assert_eq!(
        status("lending::dropped").unwrap().state,
        CircuitState::HalfOpen
    );
    let mut other = 0;
    let refused = shape(&dropped(&script, &mut other).await);
    assert!(
        refused.starts_with("CircuitOpen"),
        "the only probe slot is taken: {refused}"
    );
    assert_eq!(other, 0, "a refused call runs no body");
    tokio::time::advance(ms(500)).await;
    assert!(poll_once(probe.as_mut()).await.is_pending());
    drop(probe);

    // Both slots are free: the next call is admitted as the probe and closes the
    // breaker; a dropped call is no outcome.
    script.set(&[Step::Ok]);
    assert_eq!(shape(&dropped(&script, &mut other).await), "Ok(1)");
    assert_eq!(other, 1);
    let s = status("lending::dropped").unwrap();
    assert_eq!(
        (s.state, s.calls, s.failures, s.successes, s.timeouts),
        (CircuitState::Closed, 2, 1, 1, 0)
    );
    assert_eq!(attempts, 2);
}

#[with_resilience(
    service = "lending::backoff",
    retry(max_attempts = 3, delay = "2s", backoff = "fixed", jitter = "none"),
    circuit_breaker(failure_threshold = 10),
    bulkhead(max_concurrent = 1)
)]
async fn in_backoff(script: &Script, attempts: &mut u32) -> Result<u32, E> {
    *attempts += 1;
    script.run().await
}

#[tokio::test(start_paused = true)]
async fn a_lending_call_dropped_in_its_backoff_runs_no_retry_and_holds_no_slot() {
    let script = Script::default();
    let mut attempts = 0;
    script.set(&[Step::Fail]);
    let mut call = Box::pin(in_backoff(&script, &mut attempts));
    // The first attempt failed; the call sleeps its backoff.
    assert!(poll_once(call.as_mut()).await.is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(poll_once(call.as_mut()).await.is_pending());
    drop(call);
    assert_eq!(attempts, 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    let s = status("lending::backoff").unwrap();
    assert_eq!((s.calls, s.failures, s.retries), (1, 1, 0), "no retry ran");
    // The bulkhead's one slot is free: a call is admitted at once.
    let mut more = 0;
    script.set(&[Step::Ok]);
    assert_eq!(shape(&in_backoff(&script, &mut more).await), "Ok(1)");
    assert_eq!(more, 1);
}

#[with_resilience(
    service = "lending::wait",
    retry(max_attempts = 2),
    bulkhead(max_concurrent = 1, max_wait = "5s")
)]
async fn waits(script: Arc<Script>, attempts: &mut u32) -> Result<u32, E> {
    *attempts += 1;
    script.run().await
}

#[tokio::test(start_paused = true)]
async fn a_lending_call_waits_for_a_bulkhead_slot() {
    let script = Arc::new(Script::default());
    // The holder takes the only slot for 2 s; the second call waits for it.
    script.set(&[Step::Slow(2000), Step::Ok]);
    let holder = {
        let script = script.clone();
        tokio::spawn(async move {
            let mut n = 0;
            (waits(script, &mut n).await, n)
        })
    };
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    let mut n = 0;
    assert_eq!(waits(script.clone(), &mut n).await, Ok(1));
    assert_eq!((t0.elapsed(), n), (Duration::from_secs(2), 1));
    assert_eq!(holder.await.unwrap(), (Ok(2), 1));
}

/// The fallback of a lending function: it is lent the same `&mut` after the last
/// attempt.
async fn lent_fallback(tenant: &str, script: &Script, attempts: &mut u32, e: E) -> Result<u32, E> {
    let _ = script;
    assert_eq!(e, E::Boom, "the last attempt's error");
    *attempts += 100;
    Ok(tenant.len() as u32)
}

#[with_resilience(
    service = format!("lending::keyed.{tenant}"),
    retry(max_attempts = 2, delay = "10ms", jitter = "none"),
    circuit_breaker(failure_threshold = 10)
)]
#[fallback = lent_fallback]
async fn keyed_with_fallback(tenant: &str, script: &Script, attempts: &mut u32) -> Result<u32, E> {
    *attempts += 1;
    script.run().await
}

#[tokio::test(start_paused = true)]
async fn a_lending_call_with_a_computed_name_and_a_fallback_lends_to_both() {
    let script = Script::default();
    let mut attempts = 0;
    // A failure, then a pending attempt that succeeds: no fallback.
    script.set(&[Step::Fail, Step::Slow(5)]);
    assert_eq!(
        keyed_with_fallback("a", &script, &mut attempts).await,
        Ok(2),
        "the second attempt succeeds"
    );
    assert_eq!(attempts, 2);
    // Both attempts fail: the fallback runs, lent the same counter, under another key.
    script.set(&[Step::Fail, Step::Fail]);
    assert_eq!(
        keyed_with_fallback("bb", &script, &mut attempts).await,
        Ok(2)
    );
    assert_eq!(attempts, 104, "two attempts, then the fallback");
    let (a, b) = (
        status("lending::keyed.a").unwrap(),
        status("lending::keyed.bb").unwrap(),
    );
    assert_eq!((a.successes, a.failures, a.fallbacks), (1, 1, 0));
    assert_eq!((b.successes, b.failures, b.fallbacks), (0, 2, 1));
}
