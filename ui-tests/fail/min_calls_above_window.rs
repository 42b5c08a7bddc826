use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(window = 10, min_calls = 20)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
