use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(strategy = "aggressive", min_calls = 15)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
