use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_resilience(timeout = "1s", retry(max_attempts = 2))]
#[with_retry(max_attempts = 3)]
async fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
