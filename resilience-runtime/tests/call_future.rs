//! `Policy::call`'s future (`CallFuture`) past its lane: a body not ready at its first
//! poll, a failure retried with a fresh body, a rate limiter on the lane, and the
//! total timeout giving back what the pending attempt holds when it elapses.
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
