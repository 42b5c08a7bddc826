use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(3)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
