//! An async attribute that declares no timer-driven policy expands to the lean
//! future; a live configuration document may still give its service a timeout, a
//! total timeout or a rate limit, and those apply to its next call. (Its own binary:
//! the document is process-wide.)

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use resilience_runtime::prelude::*;
use resilience_runtime::{apply_config_str, clear_config, Format};

#[derive(Debug, Clone, PartialEq)]
enum E {
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

static RUNS: AtomicU32 = AtomicU32::new(0);

#[circuit_breaker(service = "lean.live", failure_threshold = 100)]
async fn slow(secs: u64) -> Result<u32, E> {
    RUNS.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(1)
}

#[tokio::test(start_paused = true)]
async fn timers_given_by_live_configuration_apply_to_a_lean_site() {
    // Nothing declared: a 20 s body runs to its end.
    assert_eq!(slow(20).await, Ok(1));

    apply_config_str("[services.\"lean.live\"]\ntimeout = \"1s\"\n", Format::Toml)
        .expect("a valid document");
    let start = tokio::time::Instant::now();
    let r = slow(20).await;
    assert!(
        matches!(&r, Err(E::R(ResilienceError::Timeout { after, .. })) if *after == Duration::from_secs(1)),
        "{r:?}"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(slow(0).await, Ok(1), "a fast body is not timed out");

    apply_config_str(
        "[services.\"lean.live\"]\ntotal_timeout = \"2s\"\n",
        Format::Toml,
    )
    .expect("a valid document");
    let r = slow(20).await;
    assert!(
        matches!(&r, Err(E::R(ResilienceError::Timeout { after, .. })) if *after == Duration::from_secs(2)),
        "{r:?}"
    );

    apply_config_str(
        "[services.\"lean.live\".rate_limit]\nrate = \"1/s\"\nburst = 1\n",
        Format::Toml,
    )
    .expect("a valid document");
    assert_eq!(slow(0).await, Ok(1));
    let runs = RUNS.load(SeqCst);
    let r = slow(0).await;
    assert!(
        matches!(&r, Err(E::R(ResilienceError::RateLimited { .. }))),
        "{r:?}"
    );
    assert_eq!(RUNS.load(SeqCst), runs, "a rate-limited call does not run");

    clear_config();
    assert_eq!(slow(20).await, Ok(1));
    let s = status("lean.live").expect("registered");
    assert_eq!((s.timeouts, s.rejections), (2, 1));
}
