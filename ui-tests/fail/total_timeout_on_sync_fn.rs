use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[timeout(total_timeout = "30s")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
