use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(half_open_calls = 0)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
