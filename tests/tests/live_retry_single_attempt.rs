//! A live configuration document may give a retry to a service whose attribute has
//! none. Such a function's expansion makes one attempt (it keeps no copies of its
//! arguments for another), so the retry does not apply to it: the call returns its
//! own error after one run, and nothing panics. (Its own binary: the document is
//! process-wide.)

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use resilience_runtime::prelude::*;
use resilience_runtime::{apply_config_str, Format};

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

static SYNC_RUNS: AtomicU32 = AtomicU32::new(0);
static ASYNC_RUNS: AtomicU32 = AtomicU32::new(0);

#[circuit_breaker(service = "single.sync", failure_threshold = 100)]
fn sync_once() -> Result<u32, E> {
    SYNC_RUNS.fetch_add(1, SeqCst);
    Err(E::Boom)
}

#[circuit_breaker(service = "single.async", failure_threshold = 100)]
async fn async_once() -> Result<u32, E> {
    ASYNC_RUNS.fetch_add(1, SeqCst);
    Err(E::Boom)
}

#[tokio::test(start_paused = true)]
async fn a_retry_from_live_configuration_does_not_apply_to_a_single_attempt_site() {
    let doc = r#"
        [services."single.sync".retry]
        max_attempts = 3
        delay = "10ms"
        [services."single.async".retry]
        max_attempts = 3
        delay = "10ms"
    "#;
    apply_config_str(doc, Format::Toml).expect("a valid document");
    assert_eq!(sync_once(), Err(E::Boom));
    assert_eq!(SYNC_RUNS.load(SeqCst), 1);
    assert_eq!(async_once().await, Err(E::Boom));
    assert_eq!(ASYNC_RUNS.load(SeqCst), 1);
    for name in ["single.sync", "single.async"] {
        let s = status(name).expect("registered");
        assert_eq!((s.failures, s.retries), (1, 0), "{name}");
    }
    // The document did reach the services: a later registration would retry.
    assert!(resilience_runtime::current_config().is_some());
}
