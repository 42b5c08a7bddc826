use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(delay = "2s", max_delay = "500ms")]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
