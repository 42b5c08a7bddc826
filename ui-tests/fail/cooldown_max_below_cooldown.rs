use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[circuit_breaker(cooldown = "30s", cooldown_max = "10s")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
