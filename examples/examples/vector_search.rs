//! A vector-search client whose breaker opens, rejects, half-opens and recovers.
//! Transitions are logged by the runtime through `tracing` (warn when opening, info
//! when probing and closing).
//!
//! Run: `cargo run -p resilience-examples --example vector_search`

use std::time::Duration;

use resilience_examples::{init_logging, Behaviour, FlakyService};
use resilience_runtime::prelude::*;

#[derive(Debug, thiserror::Error)]
enum SearchError {
    #[error("index shard unreachable")]
    Unreachable,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

struct VectorIndex {
    shard: FlakyService,
}

impl VectorIndex {
    #[circuit_breaker(
        service = "vector-search",
        failure_rate = 0.5,
        window = 4,
        cooldown = "300ms",
        half_open_calls = 1,
        success_threshold = 2
    )]
    async fn nearest(&self, query: &[f32], k: usize) -> Result<Vec<u64>, SearchError> {
        match self.shard.next() {
            Behaviour::Ok => Ok((0..k as u64).map(|i| i + query.len() as u64).collect()),
            _ => Err(SearchError::Unreachable),
        }
    }
}

#[tokio::main]
async fn main() {
    init_logging();
    let index = VectorIndex {
        shard: FlakyService::new("SSFF"),
    };
    let q = [0.1, 0.7, 0.2];
    let step = |label: &str| println!("-- {label}");

    step("two good searches, then the shard fails twice: 2 of 4 failed -> open");
    for _ in 0..4 {
        report(index.nearest(&q, 3).await);
    }
    step("open: rejected without reaching the shard");
    let before = index.shard.calls();
    for _ in 0..2 {
        report(index.nearest(&q, 3).await);
    }
    assert_eq!(
        index.shard.calls(),
        before,
        "an open breaker does not call the shard"
    );

    step("after the cooldown: a probe fails -> open again");
    index.shard.set_plan("F");
    tokio::time::sleep(Duration::from_millis(350)).await;
    report(index.nearest(&q, 3).await);
    report(index.nearest(&q, 3).await);

    step("shard recovered: two successful probes close it");
    index.shard.set_plan("S");
    tokio::time::sleep(Duration::from_millis(350)).await;
    for _ in 0..3 {
        report(index.nearest(&q, 3).await);
    }
    let s = status("vector-search").expect("called above");
    println!(
        "final: {:?}, {} calls, {} failures, {} rejections",
        s.state, s.calls, s.failures, s.rejections
    );
}

fn report(r: Result<Vec<u64>, SearchError>) {
    let state = breaker("vector-search").map_or(CircuitState::Closed, |b| b.state());
    match r {
        Ok(ids) => println!("   [{state:?}] ids {ids:?}"),
        Err(e) => println!("   [{state:?}] {e}"),
    }
}
