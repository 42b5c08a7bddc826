//! `RESILIENCE_CONFIG` and `RESILIENCE_DISABLED`, read at first use (their own test
//! binary: the environment is the process's).

use resilience_runtime::{env_config_error, kill_switch, status, CircuitState, Resilience};

#[derive(Debug)]
struct E;
impl From<resilience_runtime::ResilienceError> for E {
    fn from(_: resilience_runtime::ResilienceError) -> Self {
        E
    }
}

#[test]
fn the_environment_is_read_at_first_use() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("resilience.json");
    std::fs::write(
        &path,
        r#"{"services": {"env-svc": {"circuit_breaker": {"failure_threshold": 1}}}}"#,
    )
    .unwrap();
    // Set before anything in the runtime runs (this is the binary's only test).
    std::env::set_var("RESILIENCE_CONFIG", &path);
    std::env::set_var("RESILIENCE_DISABLED", "1");
    let p = Resilience::builder("env-svc")
        .failure_threshold(5)
        .no_retry()
        .build()
        .unwrap();
    assert!(env_config_error().is_none());
    assert!(kill_switch());
    assert!(status("env-svc").unwrap().kill_switch);
    assert_eq!(
        p.service().config().breaker.unwrap().mode,
        resilience_runtime::BreakerMode::Consecutive {
            failure_threshold: 1
        }
    );
    resilience_runtime::set_kill_switch(false);
    let _ = p.call_sync(|| Err::<(), E>(E));
    assert_eq!(status("env-svc").unwrap().state, CircuitState::Open);
}
