//! Events: what each call emits, per-service and global listeners, listeners that
//! panic or block.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use resilience_runtime::events::{
    flush_events, on_event, on_service_event, remove_listener, EventKind, RejectedBy,
    TransitionReason,
};
use resilience_runtime::{breaker, CircuitState, Resilience, ResilienceError};

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

fn collect(
    service: &str,
) -> (
    Arc<Mutex<Vec<EventKind>>>,
    resilience_runtime::events::ListenerId,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let id = on_service_event(service, move |e| s.lock().unwrap().push(e.kind));
    (seen, id)
}

#[tokio::test(start_paused = true)]
async fn a_call_emits_its_outcomes_retries_transitions_rejections_and_fallback() {
    let (seen, id) = collect("ev-calls");
    let p = Resilience::builder("ev-calls")
        .failure_threshold(2)
        .max_attempts(2)
        .delay(Duration::from_millis(100))
        .jitter(resilience_runtime::Jitter::None)
        .build()
        .unwrap();
    let r: Result<(), E> = p.call(|| async { Ok(()) }).await;
    assert_eq!(r, Ok(()));
    let r: Result<(), E> = p.call(|| async { Err(E::Boom) }).await;
    assert_eq!(r, Err(E::Boom));
    let r: Result<u32, E> = p.call_or(|| async { Ok(1) }, |_| async { Ok(2) }).await;
    assert_eq!(r, Ok(2), "open: the fallback answers");
    flush_events();
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            EventKind::Succeeded { latency: None },
            EventKind::Failed { latency: None },
            EventKind::RetryScheduled {
                attempt: 1,
                delay: Duration::from_millis(100)
            },
            EventKind::Failed { latency: None },
            EventKind::StateTransition {
                from: CircuitState::Closed,
                to: CircuitState::Open,
                reason: TransitionReason::ConsecutiveFailures
            },
            EventKind::Rejected {
                by: RejectedBy::CircuitBreaker
            },
            EventKind::FallbackUsed,
        ]
    );
    remove_listener(id);
}

#[tokio::test(start_paused = true)]
async fn timeouts_slow_calls_and_latency_where_calls_are_timed() {
    let (seen, id) = collect("ev-slow");
    let p = Resilience::builder("ev-slow")
        .failure_rate(1.0)
        .window_calls(10)
        .slow_call(Duration::from_millis(50))
        .no_retry()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let r: Result<(), E> = p
        .call(|| async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            Ok(())
        })
        .await;
    assert_eq!(r, Ok(()));
    let r: Result<(), E> = p
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(E::R(ResilienceError::Timeout { .. }))));
    flush_events();
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            EventKind::Succeeded {
                latency: Some(Duration::from_millis(80))
            },
            EventKind::SlowCall {
                latency: Duration::from_millis(80)
            },
            EventKind::Timeout {
                after: Duration::from_millis(500),
                total: false
            },
            EventKind::Failed {
                latency: Some(Duration::from_millis(500))
            },
        ]
    );
    remove_listener(id);
}

#[test]
fn global_listeners_see_every_service_and_per_service_ones_only_theirs() {
    let all = Arc::new(Mutex::new(Vec::new()));
    let a = all.clone();
    let global = on_event(move |e| {
        if e.service.starts_with("ev-scope-") {
            a.lock().unwrap().push(e.service.to_string());
        }
    });
    let (only_b, id_b) = collect("ev-scope-b");
    for name in ["ev-scope-a", "ev-scope-b"] {
        let p = Resilience::builder(name).build().unwrap();
        let _ = p.call_sync(|| Ok::<(), E>(()));
    }
    flush_events();
    assert_eq!(*all.lock().unwrap(), vec!["ev-scope-a", "ev-scope-b"]);
    assert_eq!(only_b.lock().unwrap().len(), 1);
    remove_listener(global);
    remove_listener(id_b);
}

#[test]
fn a_panicking_listener_breaks_neither_the_call_nor_the_other_listeners() {
    let panicky = on_service_event("ev-panic", |_| panic!("listener bug"));
    let (seen, id) = collect("ev-panic");
    let p = Resilience::builder("ev-panic").build().unwrap();
    for _ in 0..3 {
        assert_eq!(p.call_sync(|| Ok::<u8, E>(1)), Ok(1));
    }
    breaker("ev-panic").unwrap().force_open();
    flush_events();
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert!(matches!(
        seen.lock().unwrap()[3],
        EventKind::StateTransition {
            to: CircuitState::ForcedOpen,
            reason: TransitionReason::Forced,
            ..
        }
    ));
    remove_listener(panicky);
    remove_listener(id);
}

#[test]
fn a_blocked_listener_does_not_block_calls() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let delivered = Arc::new(AtomicU32::new(0));
    let d = delivered.clone();
    let id = on_service_event("ev-blocked", move |_| {
        // Blocks the event thread until the test lets it go.
        let _ = release_rx.lock().unwrap().recv();
        d.fetch_add(1, SeqCst);
    });
    let p = Resilience::builder("ev-blocked").build().unwrap();
    for _ in 0..100 {
        assert_eq!(p.call_sync(|| Ok::<u8, E>(1)), Ok(1));
    }
    // All 100 calls returned while the listener is stuck on the first event.
    assert_eq!(delivered.load(SeqCst), 0);
    for _ in 0..100 {
        release_tx.send(()).unwrap();
    }
    flush_events();
    assert_eq!(delivered.load(SeqCst), 100);
    remove_listener(id);
}

#[test]
fn sync_rejections_of_a_tripped_and_a_forced_open_breaker_are_counted_and_emitted() {
    // Both refusals come off the sync lane, where the rejection is built inline:
    // each is still counted, reported to listeners and converted with `From`.
    let name = "ev-sync-rejections";
    let (seen, id) = collect(name);
    let p = Resilience::builder(name)
        .no_retry()
        .failure_threshold(1)
        .cooldown(Duration::from_secs(3600))
        .build()
        .unwrap();
    let r: Result<u32, E> = p.call_sync(|| Err(E::Boom));
    assert_eq!(r, Err(E::Boom), "the tripping call returns its own error");

    let r: Result<u32, E> = p.call_sync(|| Ok(1));
    match r {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => assert!(
            retry_after > Duration::from_secs(3500) && retry_after <= Duration::from_secs(3600),
            "the cooldown left: {retry_after:?}"
        ),
        other => panic!("a tripped breaker refuses: {other:?}"),
    }

    breaker(name).unwrap().force_open();
    let r: Result<u32, E> = p.call_sync(|| Ok(1));
    assert!(
        matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))),
        "forced open refuses: {r:?}"
    );

    flush_events();
    let rejected = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|k| {
            **k == EventKind::Rejected {
                by: RejectedBy::CircuitBreaker,
            }
        })
        .count();
    assert_eq!(rejected, 2, "one event per refusal");
    assert_eq!(resilience_runtime::status(name).unwrap().rejections, 2);
    remove_listener(id);
}
