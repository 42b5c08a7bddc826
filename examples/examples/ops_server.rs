//! An operations server: `/health` (the application's health from its breakers,
//! 200 or 503), `/health/circuits` (every service's status) and `/metrics`
//! (Prometheus text), next to two dependencies under load:
//!
//! - `payments`, critical (`Strategy::Critical`): while its breaker is open the
//!   instance is unhealthy and `/health` answers 503;
//! - `recommendations`, optional, with a fallback: its outages only degrade health.
//!
//! Run: `cargo run -p resilience-examples --example ops_server`: runs the load for
//! ~5 s, prints each endpoint as a client sees it, forces `payments` open to show
//! the 503, and exits.
//!
//! `cargo run -p resilience-examples --example ops_server -- --serve` keeps serving
//! (and calling) until Ctrl-C, on port 8080 (or `PORT`; a free one if 8080 is taken):
//!
//! ```text
//! curl -si localhost:8080/health
//! curl -s  localhost:8080/health/circuits
//! curl -s  localhost:8080/metrics | grep resilience_
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use resilience_examples::ops;
use resilience_examples::{init_logging, Behaviour, FlakyService};
use resilience_runtime::{breaker, Policy, Resilience, ResilienceError, Strategy};

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("dependency failed")]
    Dependency,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct App {
    payments: Policy,
    payments_backend: FlakyService,
    recommendations: Policy,
    recommendations_backend: FlakyService,
}

impl App {
    fn new() -> Result<Self, resilience_runtime::ConfigError> {
        Ok(Self {
            payments: Resilience::builder("payments")
                .strategy(Strategy::Critical)
                .timeout(Duration::from_millis(200))
                .max_concurrent(8)
                .build()?,
            payments_backend: FlakyService::new("S"),
            recommendations: Resilience::builder("recommendations")
                .failure_rate(0.5)
                .window_calls(10)
                .min_calls(5)
                .cooldown(Duration::from_millis(500))
                .slow_call(Duration::from_millis(50))
                .max_attempts(2)
                .delay(Duration::from_millis(10))
                .build()?,
            // Healthy, then down for longer than the first run lasts (so `/health` shows
            // `degraded`), then back: with `--serve` the breaker closes again.
            recommendations_backend: FlakyService::new(concat!(
                "SSSSSSSSSSSSSSSSSSSSSSSSSSSSSS",
                "FFFFFFFFFFFFFFFFFF",
                "S"
            )),
        })
    }

    async fn pay(&self) -> Result<(), AppError> {
        self.payments
            .call(|| async {
                match self.payments_backend.next() {
                    Behaviour::Ok => Ok(()),
                    _ => Err(AppError::Dependency),
                }
            })
            .await
    }

    async fn recommend(&self) -> Result<Vec<&'static str>, AppError> {
        self.recommendations
            .call_or(
                || async {
                    match self.recommendations_backend.next() {
                        Behaviour::Ok => Ok(vec!["tea", "scones"]),
                        _ => Err(AppError::Dependency),
                    }
                },
                |_| async { Ok(vec!["bestsellers"]) },
            )
            .await
    }
}

async fn drive(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    loop {
        tick.tick().await;
        let _ = tokio::join!(app.pay(), app.recommend());
    }
}

async fn show(addr: SocketAddr, path: &str) -> std::io::Result<()> {
    let r = ops::http_get(addr, path).await?;
    println!("\nGET {path} -> {}", r.status);
    if path == "/metrics" {
        for line in ops::resilience_lines(&r.body) {
            println!("  {line}");
        }
    } else {
        match serde_json::from_str::<serde_json::Value>(&r.body) {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(r.body)),
            Err(_) => println!("{}", r.body),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let handle = ops::install_prometheus()?;
    ops::spawn_upkeep(handle.clone(), Duration::from_secs(5));

    let app = Arc::new(App::new()?);
    let listener = ops::bind(8080).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(ops::serve(listener, ops::router(handle)));
    println!("operations endpoints on http://{addr}: /health, /health/circuits, /metrics");
    tokio::spawn(drive(app));

    if ops::serve_requested() {
        println!("serving until Ctrl-C");
        tokio::signal::ctrl_c().await?;
        return Ok(());
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    show(addr, "/health").await?;
    show(addr, "/health/circuits").await?;
    show(addr, "/metrics").await?;

    println!("\nforcing the critical `payments` breaker open:");
    let payments = breaker("payments").ok_or("payments has no breaker")?;
    payments.force_open();
    let r = ops::http_get(addr, "/health").await?;
    let status = serde_json::from_str::<serde_json::Value>(&r.body)?["status"].clone();
    println!("GET /health -> {} (status {status})", r.status);
    payments.reset();
    let r = ops::http_get(addr, "/health").await?;
    let status = serde_json::from_str::<serde_json::Value>(&r.body)?["status"].clone();
    println!("after reset: GET /health -> {} (status {status})", r.status);
    Ok(())
}
