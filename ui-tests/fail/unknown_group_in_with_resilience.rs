use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_resilience(circuit_braker(failure_rate = 0.5))]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
