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

#[circuit_breaker(service = "lean.first", failure_threshold = 100)]
async fn first_fixed(secs: u64) -> Result<u32, E> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(1)
}

#[circuit_breaker(service = format!("lean.first.{tenant}"), failure_threshold = 100)]
async fn first_keyed(tenant: &str, secs: u64) -> Result<u32, E> {
    tokio::time::sleep(Duration::from_secs(secs)).await;
    Ok(1)
}

/// A call that times out after `secs` seconds of the paused clock.
fn timed_out_after(r: &Result<u32, E>, secs: u64) -> bool {
    matches!(r, Err(E::R(ResilienceError::Timeout { after, .. })) if *after == Duration::from_secs(secs))
}

#[tokio::test(start_paused = true)]
async fn timers_given_by_live_configuration_apply_to_a_lean_site() {
    // A document in force when a service is registered gives its first policies:
    // the lean future's first poll must see their timer, for a fixed name and a
    // computed key alike (both admitted on the service's own policies).
    apply_config_str(
        "[services.\"lean.first\"]\ntimeout = \"1s\"\n\
         [services.\"lean.first.a\"]\ntimeout = \"1s\"\n",
        Format::Toml,
    )
    .expect("a valid document");
    let start = tokio::time::Instant::now();
    let r = first_fixed(20).await;
    assert!(timed_out_after(&r, 1), "{r:?}");
    let r = first_keyed("a", 20).await;
    assert!(timed_out_after(&r, 1), "{r:?}");
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(
        first_keyed("b", 20).await,
        Ok(1),
        "a key the document leaves"
    );
    assert_eq!(first_fixed(0).await, Ok(1), "a fast body is not timed out");
    clear_config();

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
