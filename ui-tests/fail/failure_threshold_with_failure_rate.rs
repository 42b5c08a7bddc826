use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(failure_threshold = 5, failure_rate = 0.5)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
