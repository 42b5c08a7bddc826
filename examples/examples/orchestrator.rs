//! An orchestrator that picks a strategy per operation — `aggressive` for a
//! nice-to-have call, `balanced` by default, `conservative` for a batch job,
//! `critical` for payments — and prints each service's metrics and health.
//!
//! Run: `cargo run -p resilience-examples --example orchestrator`

use resilience_examples::{print_statuses, Behaviour, FlakyService};
use resilience_runtime::prelude::*;
use resilience_runtime::Strategy;

#[derive(Debug, thiserror::Error)]
enum OpError {
    #[error("dependency failed")]
    Failed,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct Orchestrator {
    recommendations: FlakyService,
    search: FlakyService,
    reports: FlakyService,
    payments: FlakyService,
}

fn outcome(b: Behaviour) -> Result<(), OpError> {
    match b {
        Behaviour::Ok => Ok(()),
        _ => Err(OpError::Failed),
    }
}

impl Orchestrator {
    /// Nice to have: give up early, stay away long.
    #[with_resilience(
        service = "orchestrator.recommendations",
        strategy = "aggressive",
        retry(delay = "1ms")
    )]
    async fn recommendations(&self) -> Result<(), OpError> {
        outcome(self.recommendations.next())
    }

    #[with_resilience(
        service = "orchestrator.search",
        strategy = "balanced",
        retry(delay = "1ms")
    )]
    async fn search(&self) -> Result<(), OpError> {
        outcome(self.search.next())
    }

    /// A batch job: tolerate errors, keep trying.
    #[with_resilience(
        service = "orchestrator.reports",
        strategy = "conservative",
        retry(delay = "1ms", max_delay = "5ms")
    )]
    async fn reports(&self) -> Result<(), OpError> {
        outcome(self.reports.next())
    }

    /// The business depends on it: retry hard, come back fast.
    #[with_resilience(
        service = "orchestrator.payments",
        strategy = "critical",
        retry(delay = "1ms", max_delay = "5ms")
    )]
    async fn payments(&self) -> Result<(), OpError> {
        outcome(self.payments.next())
    }
}

#[tokio::main]
async fn main() {
    let o = Orchestrator {
        recommendations: FlakyService::new("SFSFFFFFFFFFFFFFFFFFFFFF"),
        search: FlakyService::new("SSFSSSFSSSSSSFSSSSSSSSSS"),
        reports: FlakyService::new("FFSFFSFFSSSSSSSSSSSSSSSS"),
        payments: FlakyService::new("SSSSFFSSSSSSSSSSSSSSSSSS"),
    };
    for s in Strategy::ALL {
        let p = s.preset();
        let (b, r) = (
            p.breaker.expect("presets have a breaker"),
            p.retry.expect("presets have a retry"),
        );
        println!(
            "{:<13} breaker {:?}, cooldown {:?}; retry {} attempts from {:?}, jitter {:?}",
            s.name(),
            b.mode,
            b.cooldown,
            r.max_attempts,
            r.delay,
            r.jitter
        );
    }
    for _ in 0..12 {
        let _ = o.recommendations().await;
        let _ = o.search().await;
        let _ = o.reports().await;
        let _ = o.payments().await;
    }
    println!("\nmetrics:");
    print_statuses();
    println!("\nhealth:");
    for s in statuses() {
        let health = match s.state {
            CircuitState::Closed | CircuitState::Disabled => "healthy",
            CircuitState::HalfOpen => "recovering",
            CircuitState::Open | CircuitState::ForcedOpen => "unhealthy",
        };
        let rate = s
            .failure_rate
            .map_or("n/a".to_owned(), |r| format!("{:.0}%", r * 100.0));
        println!("  {:<32} {:<10} failure rate {}", s.service, health, rate);
    }
}
