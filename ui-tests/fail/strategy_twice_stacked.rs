use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_resilience(strategy = "critical")]
#[with_retry(strategy = "aggressive")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
