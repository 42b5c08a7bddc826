use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(service = "")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
