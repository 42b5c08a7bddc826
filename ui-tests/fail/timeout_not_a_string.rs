use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[timeout(5)]
async fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
