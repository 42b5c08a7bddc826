use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(record_if = |_e: &E| true)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
