use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_resilience(timeout = "1s")]
#[with_resilience(total_timeout = "5s")]
async fn f() -> Result<(), E> {
    Ok(())
}

fn main() {}
