use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(slow_call = "2s", slow_call_rate = -0.5)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
