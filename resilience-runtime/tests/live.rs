//! Live configuration: precedence, applying to live services, invalid documents,
//! file watching. Every test takes `LOCK`: a document replaces the one in force for
//! the whole process.

use std::sync::Mutex;
use std::time::Duration;

use resilience_runtime::{
    apply_config_str, breaker, clear_config, status, watch_config_file, BreakerMode, CircuitState,
    Format, Policy, Resilience, ResilienceError, Strategy, Window,
};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

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

fn fail(p: &Policy) -> Result<(), E> {
    p.call_sync(|| Err(E::Boom))
}
fn succeed(p: &Policy) -> Result<(), E> {
    p.call_sync(|| Ok(()))
}

fn toml(doc: &str) -> resilience_runtime::ConfigChanges {
    apply_config_str(doc, Format::Toml).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn precedence_runtime_over_arguments_over_defaults_over_preset_over_builtin() {
    let _g = lock();
    // Arguments: a consecutive breaker with threshold 3 and its own cooldown; no
    // slow_call, half_open_calls or success_threshold written.
    let p = Resilience::builder("live-precedence")
        .strategy(Strategy::Conservative)
        .failure_threshold(3)
        .cooldown(Duration::from_secs(7))
        .no_retry()
        .bulkhead()
        .build()
        .unwrap();
    let preset = Strategy::Conservative.preset().breaker.unwrap();
    let b = p.service().config().breaker.unwrap();
    assert_eq!(b.half_open_calls, preset.half_open_calls, "preset fills");

    toml(
        r#"
        [defaults.circuit_breaker]
        cooldown = "99s"          # the argument wins
        half_open_calls = 4       # beats the preset
        [services.live-precedence.circuit_breaker]
        failure_threshold = 2     # beats the argument
        "#,
    );
    let c = p.service().config();
    let b = c.breaker.unwrap();
    assert_eq!(
        b.mode,
        BreakerMode::Consecutive {
            failure_threshold: 2
        }
    );
    assert_eq!(b.cooldown, Duration::from_secs(7));
    assert_eq!(b.half_open_calls, 4);
    assert_eq!(b.success_threshold, preset.success_threshold);
    // Built-in default: nobody set max_concurrent.
    assert_eq!(
        c.bulkhead.unwrap().max_concurrent,
        resilience_runtime::DEFAULT_MAX_CONCURRENT
    );
    // Defaults never add a policy: the retry stays off.
    toml("[defaults.retry]\nmax_attempts = 5\n");
    assert!(p.service().config().retry.is_none());
    // A service entry may add one.
    toml("[services.live-precedence.retry]\nmax_attempts = 5\n");
    assert_eq!(p.service().config().retry.unwrap().max_attempts, 5);
    // Dropping the document restores the arguments.
    clear_config();
    let b = p.service().config().breaker.unwrap();
    assert_eq!(
        b.mode,
        BreakerMode::Consecutive {
            failure_threshold: 3
        }
    );
    assert!(p.service().config().retry.is_none());
}

#[test]
fn a_service_registered_after_the_document_uses_it() {
    let _g = lock();
    toml(
        r#"
        [services.live-late.circuit_breaker]
        failure_threshold = 1
        "#,
    );
    let p = Resilience::builder("live-late")
        .failure_threshold(5)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(fail(&p), Err(E::Boom));
    assert_eq!(status("live-late").unwrap().state, CircuitState::Open);
    clear_config();
}

#[test]
fn an_open_breaker_stays_open_and_counters_are_kept_across_a_change() {
    let _g = lock();
    let p = Resilience::builder("live-open")
        .failure_threshold(2)
        .cooldown(Duration::from_secs(60))
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(succeed(&p), Ok(()));
    assert_eq!(fail(&p), Err(E::Boom));
    assert_eq!(fail(&p), Err(E::Boom));
    assert_eq!(status("live-open").unwrap().state, CircuitState::Open);
    let before = status("live-open").unwrap();

    let changes = toml(
        r#"
        [services.live-open.circuit_breaker]
        failure_threshold = 4
        cooldown = "120s"
        "#,
    );
    assert!(changes.services.contains_key("live-open"), "{changes}");
    let after = status("live-open").unwrap();
    assert_eq!(after.state, CircuitState::Open);
    assert_eq!(
        (after.successes, after.failures, after.rejections),
        (before.successes, before.failures, before.rejections)
    );
    // Still rejecting, with at most the old cooldown left.
    match fail(&p) {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            assert!(retry_after <= Duration::from_secs(60), "{retry_after:?}");
            assert!(retry_after > Duration::from_secs(50), "{retry_after:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(
        status("live-open").unwrap().rejections,
        before.rejections + 1
    );
    // The new threshold applies after a reset.
    breaker("live-open").unwrap().reset();
    for _ in 0..3 {
        assert_eq!(fail(&p), Err(E::Boom));
    }
    assert_eq!(status("live-open").unwrap().state, CircuitState::Closed);
    assert_eq!(fail(&p), Err(E::Boom));
    assert_eq!(status("live-open").unwrap().state, CircuitState::Open);
    clear_config();
}

#[test]
fn a_change_that_leaves_the_breaker_alone_keeps_the_very_breaker() {
    let _g = lock();
    let p = Resilience::builder("live-same-breaker")
        .failure_threshold(3)
        .cooldown(Duration::from_secs(60))
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(fail(&p), Err(E::Boom));
    // A bulkhead added, the breaker's settings untouched: the failure counted
    // before the change still counts after it.
    toml("[services.live-same-breaker.bulkhead]\nmax_concurrent = 4\n");
    assert_eq!(p.service().bulkhead_available(), Some(4));
    assert_eq!(fail(&p), Err(E::Boom));
    // Changed again (policies put in force over policies put in force): still the
    // same breaker, and the third failure opens it.
    toml("[services.live-same-breaker.bulkhead]\nmax_concurrent = 2\n");
    assert_eq!(p.service().bulkhead_available(), Some(2));
    assert_eq!(
        status("live-same-breaker").unwrap().state,
        CircuitState::Closed
    );
    assert_eq!(fail(&p), Err(E::Boom));
    assert_eq!(
        status("live-same-breaker").unwrap().state,
        CircuitState::Open
    );
    assert!(matches!(
        fail(&p),
        Err(E::R(ResilienceError::CircuitOpen { .. }))
    ));
    // Control through the registry reaches the breaker in force.
    breaker("live-same-breaker").unwrap().reset();
    assert_eq!(succeed(&p), Ok(()));
    assert_eq!(
        status("live-same-breaker").unwrap().state,
        CircuitState::Closed
    );
    // Back to the first settings: the breaker is still the one the calls use.
    clear_config();
    for _ in 0..3 {
        assert_eq!(fail(&p), Err(E::Boom));
    }
    assert_eq!(
        status("live-same-breaker").unwrap().state,
        CircuitState::Open
    );
    breaker("live-same-breaker").unwrap().reset();
}

#[test]
fn a_resized_window_keeps_what_still_fits() {
    let _g = lock();
    let p = Resilience::builder("live-window")
        .failure_rate(0.9)
        .window_calls(4)
        .no_retry()
        .build()
        .unwrap();
    for r in [fail(&p), fail(&p), succeed(&p), succeed(&p)] {
        let _ = r;
    }
    assert_eq!(status("live-window").unwrap().failure_rate, Some(0.5));
    // Wider: all four outcomes kept.
    toml("[services.live-window.circuit_breaker]\nwindow = 6\nmin_calls = 4\n");
    assert_eq!(status("live-window").unwrap().failure_rate, Some(0.5));
    let _ = fail(&p);
    assert_eq!(status("live-window").unwrap().failure_rate, Some(0.6));
    // Narrower: the newest two (S, F) kept.
    toml("[services.live-window.circuit_breaker]\nwindow = 2\nmin_calls = 2\n");
    assert_eq!(status("live-window").unwrap().failure_rate, Some(0.5));
    // To consecutive mode: the trailing run of failures (one) is kept, so one more
    // failure trips a threshold of 2.
    toml("[services.live-window.circuit_breaker]\nfailure_threshold = 2\n");
    assert_eq!(status("live-window").unwrap().state, CircuitState::Closed);
    let _ = fail(&p);
    assert_eq!(status("live-window").unwrap().state, CircuitState::Open);
    clear_config();
}

#[test]
fn an_invalid_document_changes_nothing_and_reports_every_problem() {
    let _g = lock();
    let p = Resilience::builder("live-invalid")
        .failure_rate(0.5)
        .window_calls(10)
        .cooldown(Duration::from_secs(30))
        .no_retry()
        .build()
        .unwrap();
    toml("[services.live-invalid]\ntimeout = \"3s\"\n");
    let before = *p.service().config();
    let err = apply_config_str(
        r#"
        [services.live-invalid]
        timeout = "1s"
        [services.live-invalid.circuit_breaker]
        failure_rate = 1.7
        cooldwn = "10s"
        [services.other.retry]
        delay = "soon"
        "#,
        Format::Toml,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("services.live-invalid.circuit_breaker.failure_rate: 1.7 is not in (0, 1]"),
        "{text}"
    );
    assert!(text.contains("cooldwn"), "{text}");
    assert!(text.contains("did you mean `cooldown`"), "{text}");
    assert!(text.contains("services.other.retry.delay"), "{text}");
    assert!(err.problems().len() >= 3, "{text}");
    assert_eq!(*p.service().config(), before, "nothing changed");

    // Valid alone, but not with the live service's own settings: cooldown_max
    // below the service's cooldown of 30s.
    let err = apply_config_str(
        "[services.live-invalid.circuit_breaker]\ncooldown_max = \"5s\"\n",
        Format::Toml,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("services.live-invalid.circuit_breaker.cooldown_max"),
        "{err}"
    );
    assert_eq!(*p.service().config(), before, "nothing changed");
    assert_eq!(before.timeout, Some(Duration::from_secs(3)));
    clear_config();
}

#[test]
fn json_documents_apply_like_toml() {
    let _g = lock();
    let p = Resilience::builder("live-json")
        .no_circuit_breaker()
        .no_retry()
        .rate_limit()
        .build()
        .unwrap();
    apply_config_str(
        r#"{"services": {"live-json": {"rate_limit": {"rate": "2/s", "burst": 2}}}}"#,
        Format::Json,
    )
    .unwrap();
    let rl = p.service().config().rate_limit.unwrap();
    assert_eq!((rl.rate.permits, rl.burst), (2, 2));
    assert_eq!(succeed(&p), Ok(()));
    assert_eq!(succeed(&p), Ok(()));
    assert!(matches!(
        succeed(&p),
        Err(E::R(ResilienceError::RateLimited { .. }))
    ));
    clear_config();
}

#[test]
fn a_shrunk_bulkhead_keeps_the_calls_inside() {
    let _g = lock();
    let p = Resilience::builder("live-bulkhead")
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(3)
        .build()
        .unwrap();
    let svc = p.service();
    let inner = std::cell::Cell::new(None);
    // Two calls inside (nested sync calls hold their slots), then shrink to 1.
    let r: Result<(), E> = p.call_sync(|| {
        p.call_sync(|| {
            toml("[services.live-bulkhead.bulkhead]\nmax_concurrent = 1\n");
            inner.set(Some(svc.bulkhead_available()));
            // A third call is refused: two are inside, the limit is now one.
            match p.call_sync(|| Ok::<(), E>(())) {
                Err(E::R(ResilienceError::BulkheadFull { .. })) => Ok(()),
                other => panic!("expected BulkheadFull, got {other:?}"),
            }
        })
    });
    assert_eq!(r, Ok(()));
    assert_eq!(inner.get(), Some(Some(0)));
    assert_eq!(svc.bulkhead_available(), Some(1), "both slots came back");
    clear_config();
}

/// `depth` sync calls, each inside the one before; the depth reached.
fn nest(p: &Policy, depth: u32) -> Result<u32, E> {
    if depth == 0 {
        return Ok(0);
    }
    p.call_sync(|| nest(p, depth - 1).map(|n| n + 1))
}

#[test]
fn a_bulkhead_resized_across_sixteen_slots_keeps_its_limit_exact() {
    // From 16 slots a bulkhead counts slots given back on the threads' own
    // lines, below on a shared count: slots taken on one side of a resize and
    // given back on the other still count, and the limit stays exact.
    let _g = lock();
    let p = Resilience::builder("live-bulkhead-lines")
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(20)
        .build()
        .unwrap();
    let svc = p.service();
    for _ in 0..50 {
        assert_eq!(succeed(&p), Ok(()));
    }
    let r: Result<(), E> = p.call_sync(|| {
        p.call_sync(|| {
            toml("[services.live-bulkhead-lines.bulkhead]\nmax_concurrent = 4\n");
            assert_eq!(svc.bulkhead_available(), Some(2));
            Ok(())
        })
    });
    assert_eq!(r, Ok(()));
    assert_eq!(svc.bulkhead_available(), Some(4), "both slots came back");
    assert_eq!(nest(&p, 4), Ok(4));
    assert!(matches!(
        nest(&p, 5),
        Err(E::R(ResilienceError::BulkheadFull { .. }))
    ));
    let r: Result<(), E> = p.call_sync(|| {
        toml("[services.live-bulkhead-lines.bulkhead]\nmax_concurrent = 20\n");
        assert_eq!(svc.bulkhead_available(), Some(19));
        Ok(())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(svc.bulkhead_available(), Some(20), "the slot came back");
    assert_eq!(nest(&p, 20), Ok(20));
    assert!(matches!(
        nest(&p, 21),
        Err(E::R(ResilienceError::BulkheadFull { .. }))
    ));
    assert_eq!(svc.bulkhead_available(), Some(20));
    clear_config();
}

// The guard serialises this test with the other tests' threads; nothing else on this
// test's own single-threaded runtime takes it.
#[allow(clippy::await_holding_lock)]
#[tokio::test(start_paused = true)]
async fn a_watched_file_reloads_on_change_and_skips_invalid_versions() {
    let _g = lock();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resilience.toml");
    std::fs::write(&path, "[services.live-watch]\ntimeout = \"2s\"\n").unwrap();
    let p = Resilience::builder("live-watch")
        .no_circuit_breaker()
        .no_retry()
        .build()
        .unwrap();
    let watcher = watch_config_file(&path, Duration::from_secs(5));
    let settle = || async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    settle().await;
    assert_eq!(p.service().config().timeout, Some(Duration::from_secs(2)));

    std::fs::write(&path, "[services.live-watch]\ntimeout = \"nope\"\n").unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(p.service().config().timeout, Some(Duration::from_secs(2)));

    std::fs::write(&path, "[services.live-watch]\ntimeout = \"4s\"\n").unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert_eq!(p.service().config().timeout, Some(Duration::from_secs(4)));
    watcher.abort();
    clear_config();
}

#[test]
fn critical_and_record_latency_come_from_the_document() {
    let _g = lock();
    let p = Resilience::builder("live-critical").build().unwrap();
    assert!(!p.service().is_critical());
    toml("[services.live-critical]\ncritical = true\n");
    assert!(p.service().is_critical());
    clear_config();
    assert!(!p.service().is_critical());
    let q = Resilience::builder("live-critical-strategy")
        .strategy(Strategy::Critical)
        .build()
        .unwrap();
    assert!(q.service().is_critical());
    let _ = Window::Calls(1);
}
