use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(max_attempts = 3)]
#[circuit_breaker(failure_threshold = 2)]
#[with_retry(delay = "1s")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
