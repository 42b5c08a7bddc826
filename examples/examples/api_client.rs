//! An HTTP-style API client: retries transient errors with exponential backoff and
//! full jitter, honours a server's Retry-After hint, never retries permanent errors,
//! and lets only server-side failures count against the breaker.
//!
//! Run: `cargo run -p resilience-examples --example api_client`

use std::time::Duration;

use resilience_examples::{Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("503 service unavailable")]
    Unavailable,
    #[error("429 too many requests (retry after {0:?})")]
    TooMany(Duration),
    #[error("404 not found")]
    NotFound,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

/// Worth another try.
fn is_transient(e: &ApiError) -> bool {
    matches!(e, ApiError::Unavailable | ApiError::TooMany(_))
}

/// A client mistake says nothing about the server's health.
fn is_server_fault(e: &ApiError) -> bool {
    !matches!(e, ApiError::NotFound)
}

fn server_hint(e: &ApiError) -> Option<Duration> {
    match e {
        ApiError::TooMany(d) => Some(*d),
        _ => None,
    }
}

struct Client {
    server: FlakyService,
}

impl Client {
    #[with_resilience(
        service = "orders-api",
        retry(max_attempts = 4, delay = "50ms", backoff = "exponential", multiplier = 2.0,
              max_delay = "400ms", jitter = "full", retry_if = is_transient, retry_after = server_hint),
        circuit_breaker(failure_rate = 0.6, window = 20, min_calls = 10, cooldown = "2s",
                        record_if = is_server_fault)
    )]
    async fn get_order(&self, id: u32) -> Result<String, ApiError> {
        match self.server.next() {
            Behaviour::Ok => Ok(format!("order #{id}")),
            Behaviour::Permanent => Err(ApiError::NotFound),
            Behaviour::Hang => Err(ApiError::TooMany(Duration::from_millis(120))),
            Behaviour::Transient => Err(ApiError::Unavailable),
        }
    }
}

#[tokio::main]
async fn main() {
    let c = Client {
        server: FlakyService::new("FFS"),
    };
    let t = tokio::time::Instant::now();
    println!(
        "transient failures, then success: {:?} after {:?}",
        c.get_order(1).await,
        t.elapsed()
    );

    c.server.set_plan("HS");
    let t = tokio::time::Instant::now();
    println!(
        "429 with Retry-After 120ms, then success: {:?} after {:?} (waited at least the hint)",
        c.get_order(2).await,
        t.elapsed()
    );

    c.server.set_plan("PS");
    let before = c.server.calls();
    println!(
        "permanent error: {:?}, attempts: {} (not retried)",
        c.get_order(3).await,
        c.server.calls() - before
    );

    c.server.set_plan("F");
    let before = c.server.calls();
    println!(
        "always failing: {:?}, attempts: {}",
        c.get_order(4).await,
        c.server.calls() - before
    );

    let s = status("orders-api").expect("called above");
    println!(
        "orders-api: {:?}, {} successes, {} failures, {} retries",
        s.state, s.successes, s.failures, s.retries
    );
}
