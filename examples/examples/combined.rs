//! Everything on one function — timeout, retry, breaker, bulkhead, rate limit and
//! fallback — then the registry's status of every service, and a reset of all.
//!
//! Run: `cargo run -p resilience-examples --example combined`

use resilience_examples::{print_statuses, Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Debug, thiserror::Error)]
enum PayError {
    #[error("provider declined to answer")]
    Provider,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct Payments {
    provider: FlakyService,
}

impl Payments {
    #[with_resilience(
        service = "payments",
        timeout = "250ms",
        total_timeout = "2s",
        retry(max_attempts = 3, delay = "10ms", jitter = "equal"),
        circuit_breaker(failure_threshold = 4, cooldown = "5s"),
        bulkhead(max_concurrent = 2, max_wait = "50ms"),
        rate_limit(rate = "50/s", burst = 10)
    )]
    #[fallback = Self::queue_for_later]
    async fn charge(&self, cents: u64) -> Result<String, PayError> {
        match self.provider.next() {
            Behaviour::Ok => Ok(format!("charged {cents} cents")),
            _ => Err(PayError::Provider),
        }
    }

    fn queue_for_later(&self, cents: u64, e: PayError) -> Result<String, PayError> {
        Ok(format!("queued {cents} cents for later ({e})"))
    }

    #[with_retry(max_attempts = 2, delay = "5ms")]
    fn refund(&self, cents: u64) -> Result<String, PayError> {
        match self.provider.next() {
            Behaviour::Ok => Ok(format!("refunded {cents} cents")),
            _ => Err(PayError::Provider),
        }
    }
}

#[tokio::main]
async fn main() {
    let p = Payments {
        provider: FlakyService::new("SFSFFFFFFFFFFFS"),
    };
    for cents in [100, 250, 999, 1200, 80] {
        println!(
            "{}",
            p.charge(cents).await.expect("the fallback always answers")
        );
    }
    p.provider.set_plan("FS");
    println!("{:?}", p.refund(100));
    println!("\nregistry:");
    print_statuses();
    reset_all();
    println!("\nafter reset_all():");
    print_statuses();
}
