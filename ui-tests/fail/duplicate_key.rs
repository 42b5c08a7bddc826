use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(max_attempts = 3, delay = "1s", max_attempts = 4)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
