//! The kill switch (its own test binary: it is global).

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience_runtime::{
    apply_config_str, breaker, kill_switch, set_kill_switch, status, Format, Resilience,
    ResilienceError,
};

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

#[resilience_runtime::circuit_breaker(service = "kill.lean", failure_threshold = 1)]
#[resilience_runtime::bulkhead(max_concurrent = 1)]
async fn lean_site() -> Result<u32, E> {
    tokio::task::yield_now().await;
    Ok(9)
}

fn bulkhead_of(name: &str) -> Option<u32> {
    Resilience::builder(name)
        .build()
        .unwrap()
        .service()
        .bulkhead_available()
}

#[tokio::test(start_paused = true)]
async fn every_policy_but_fallback_passes_through_while_it_is_on() {
    let p = Resilience::builder("kill")
        .failure_threshold(1)
        .max_attempts(3)
        .delay(Duration::from_millis(100))
        .timeout(Duration::from_millis(50))
        .max_concurrent(1)
        .rate(resilience_runtime::Rate::per_second(1))
        .burst(1)
        .build()
        .unwrap();
    breaker("kill").unwrap().force_open();
    assert_eq!(
        lean_site().await,
        Ok(9),
        "registers the lean site's service"
    );
    let runs = AtomicU32::new(0);
    let r: Result<u32, E> = p
        .call(|| async {
            runs.fetch_add(1, SeqCst);
            Ok(1)
        })
        .await;
    assert!(matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))));
    assert_eq!(runs.load(SeqCst), 0);
    assert!(!status("kill").unwrap().kill_switch);

    assert!(!set_kill_switch(true));
    assert!(kill_switch());
    assert!(status("kill").unwrap().kill_switch);
    // Forced open, rate 1/s and a 50ms timeout: all pass through now.
    for _ in 0..3 {
        let r: Result<u32, E> = p
            .call(|| async {
                runs.fetch_add(1, SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(1)
            })
            .await;
        assert_eq!(r, Ok(1));
    }
    // No retry: one attempt for a failing call.
    let before = runs.load(SeqCst);
    let r: Result<u32, E> = p
        .call(|| async {
            runs.fetch_add(1, SeqCst);
            Err(E::Boom)
        })
        .await;
    assert_eq!(r, Err(E::Boom));
    assert_eq!(runs.load(SeqCst), before + 1);
    // The fallback still runs.
    let r: Result<u32, E> = p
        .call_or(|| async { Err(E::Boom) }, |_e| async { Ok(7) })
        .await;
    assert_eq!(r, Ok(7));
    let s = status("kill").unwrap();
    assert_eq!((s.successes, s.failures, s.fallbacks), (3, 2, 1));
    assert_eq!(s.state, resilience_runtime::CircuitState::ForcedOpen);

    // Sync calls pass through too: the forced-open breaker runs the body, and a
    // closed breaker that one failure would trip records nothing.
    let q = Resilience::builder("kill.sync")
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(p.call_sync(|| Ok::<u32, E>(2)), Ok(2));
    for _ in 0..2 {
        assert_eq!(q.call_sync(|| Err::<u32, E>(E::Boom)), Err(E::Boom));
    }
    assert_eq!(
        status("kill.sync").unwrap().state,
        resilience_runtime::CircuitState::Closed
    );
    assert_eq!(q.call_sync(|| Ok::<u32, E>(3)), Ok(3));

    // An async attribute with no timer-driven policy (the lean future) passes
    // through too: its forced-open breaker runs the body.
    breaker("kill.lean").unwrap().force_open();
    assert_eq!(lean_site().await, Ok(9));
    assert!(bulkhead_of("kill.lean").is_some_and(|free| free == 1));

    // Off again: the forced-open breaker rejects.
    assert!(set_kill_switch(false));
    assert!(matches!(
        lean_site().await,
        Err(E::R(ResilienceError::CircuitOpen { .. }))
    ));
    assert!(matches!(
        p.call_sync(|| Ok::<u32, E>(2)),
        Err(E::R(ResilienceError::CircuitOpen { .. }))
    ));
    let r: Result<u32, E> = p.call(|| async { Ok(1) }).await;
    assert!(matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))));

    // A document can turn it on, and one without the key leaves it alone.
    let c = apply_config_str("kill_switch = true\n", Format::Toml).unwrap();
    assert_eq!(c.kill_switch, Some((false, true)));
    assert!(kill_switch());
    apply_config_str("[defaults]\n", Format::Toml).unwrap();
    assert!(kill_switch());
    apply_config_str("kill_switch = false\n", Format::Toml).unwrap();
    assert!(!kill_switch());
}
