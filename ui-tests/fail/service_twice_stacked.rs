use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(service = "db", failure_threshold = 3)]
#[with_retry(service = "database", max_attempts = 3)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
