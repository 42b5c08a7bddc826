//! Prometheus metrics: the `metrics` feature with `metrics-exporter-prometheus`,
//! served on `/metrics` by a small axum server, while a background task calls a
//! flaky inventory service through `#[with_resilience]`. Its backend goes through
//! cycles of health, failure and slowness, so the call counters, rejections, the
//! breaker's state and transitions, retries, timeouts and latencies all move.
//!
//! Run: `cargo run -p resilience-examples --example prometheus`: runs for ~5 s,
//! prints the `resilience_*` series of a scrape and exits.
//!
//! `cargo run -p resilience-examples --example prometheus -- --serve` keeps serving
//! (and calling) until Ctrl-C: `curl -s localhost:9000/metrics | grep resilience_`
//! (port 9000, or `PORT`; a free one if 9000 is taken).

use std::sync::Arc;
use std::time::Duration;

use resilience_examples::ops;
use resilience_examples::{init_logging, print_statuses, Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Debug, thiserror::Error)]
enum InventoryError {
    #[error("inventory backend unavailable")]
    Unavailable,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct Inventory {
    backend: FlakyService,
}

impl Inventory {
    #[with_resilience(
        service = "inventory",
        timeout = "100ms",
        retry(max_attempts = 2, delay = "10ms", jitter = "full"),
        circuit_breaker(
            failure_rate = 0.5,
            window = 10,
            min_calls = 5,
            cooldown = "500ms",
            slow_call = "30ms",
            slow_call_rate = 1.0
        )
    )]
    async fn stock(&self, sku: u32) -> Result<u32, InventoryError> {
        match self.backend.next() {
            Behaviour::Ok => {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(sku % 17)
            }
            // Slow but answers: counted as a slow call.
            Behaviour::Permanent => {
                tokio::time::sleep(Duration::from_millis(40)).await;
                Ok(sku % 17)
            }
            // Hangs: the 100ms timeout cuts it.
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(0)
            }
            Behaviour::Transient => Err(InventoryError::Unavailable),
        }
    }
}

/// One cycle of the backend, repeated: healthy with one slow answer (`P` here)
/// and one hang, then an outage long enough to open the breaker and fail a probe.
const CYCLE: &str = concat!(
    "SSSSSSSSSSSSSSSSSSSS",
    "P",
    "SSSSSSSSSSSSSSS",
    "H",
    "SSSSSSSSSSSSSSSSSSSS",
    "FFFFFF",
    "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSSS",
);

/// Calls the service every 25 ms; the plan restarts each time the backend has been
/// reached `CYCLE.len()` times (rejected calls do not reach it).
async fn drive(inventory: Arc<Inventory>) {
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let mut next_cycle = 0;
    for sku in 0u32.. {
        if inventory.backend.calls() >= next_cycle {
            inventory.backend.set_plan(CYCLE);
            next_cycle = inventory.backend.calls() + CYCLE.len() as u32;
        }
        tick.tick().await;
        let _ = inventory.stock(sku).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    // Before the first call, so services bind to it (see `resilience_runtime::metrics`).
    let handle = ops::install_prometheus()?;
    ops::spawn_upkeep(handle.clone(), Duration::from_secs(5));

    let listener = ops::bind(9000).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(ops::serve(listener, ops::metrics_router(handle)));
    println!("Prometheus metrics on http://{addr}/metrics");

    let inventory = Arc::new(Inventory {
        backend: FlakyService::new(CYCLE),
    });
    tokio::spawn(drive(inventory));

    if ops::serve_requested() {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    let scrape = ops::http_get(addr, "/metrics").await?;
    println!(
        "\nGET /metrics -> {} ({}), resilience_* series without buckets:",
        scrape.status,
        scrape.header("content-type").unwrap_or("?")
    );
    for line in ops::resilience_lines(&scrape.body) {
        println!("  {line}");
    }
    println!();
    print_statuses();
    Ok(())
}
