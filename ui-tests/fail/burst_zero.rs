use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[rate_limit(rate = "10/s", burst = 0)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
