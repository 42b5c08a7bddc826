//! The demo: a recommendation client calls a flaky service through
//! `#[with_resilience]`. Watch the breaker open when the service goes down, refuse
//! calls (the fallback answers instead), probe after its cooldown and close when the
//! service is back.
//!
//! Run: `cargo run -p resilience-examples --example tour`

use std::time::Duration;

use resilience_examples::{init_logging, print_statuses, Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Debug, thiserror::Error)]
enum RecoError {
    #[error("recommendation service failed")]
    Unavailable,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct Recommender {
    backend: FlakyService,
}

impl Recommender {
    #[with_resilience(
        service = "recommendations",
        timeout = "200ms",
        retry(max_attempts = 2, delay = "20ms", jitter = "full"),
        circuit_breaker(failure_rate = 0.5, window = 6, min_calls = 4, cooldown = "400ms")
    )]
    #[fallback = Self::popular_items]
    async fn recommend(&self, user: &str) -> Result<Vec<String>, RecoError> {
        match self.backend.next() {
            Behaviour::Ok => Ok(vec![format!("picked for {user}: sourdough starter")]),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(vec![])
            }
            _ => Err(RecoError::Unavailable),
        }
    }

    /// Answers when the service cannot: a generic list, marked as such.
    fn popular_items(&self, _user: &str, error: RecoError) -> Result<Vec<String>, RecoError> {
        Ok(vec![format!(
            "(fallback after: {error}) popular: cast-iron pan"
        )])
    }
}

#[tokio::main]
async fn main() {
    init_logging();
    let reco = Recommender {
        backend: FlakyService::new("SSSS"),
    };

    println!("== 1. the service is healthy");
    for _ in 0..3 {
        show(&reco).await;
    }

    println!("\n== 2. the service goes down: retries, then the breaker opens");
    reco.backend.set_plan("F");
    for _ in 0..4 {
        show(&reco).await;
    }

    println!("\n== 3. open: calls are refused at once, the fallback answers");
    let reached = reco.backend.calls();
    for _ in 0..3 {
        show(&reco).await;
    }
    println!(
        "   (the service was reached {} times while open)",
        reco.backend.calls() - reached
    );

    println!("\n== 4. after the cooldown the breaker probes; the service is back");
    reco.backend.set_plan("S");
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..3 {
        show(&reco).await;
    }

    println!("\n== 5. a hanging attempt times out after 200ms (a failure); the retry answers");
    reco.backend.set_plan("HS");
    show(&reco).await;

    println!("\n== status");
    print_statuses();
}

async fn show(reco: &Recommender) {
    let r = reco.recommend("ada").await;
    let state = breaker("recommendations").map_or(CircuitState::Closed, |b| b.state());
    match r {
        Ok(items) => println!(
            "   breaker {:<9} -> {}",
            format!("{state:?}"),
            items.join(", ")
        ),
        Err(e) => println!("   breaker {:<9} -> error: {e}", format!("{state:?}")),
    }
}
