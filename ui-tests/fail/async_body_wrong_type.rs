// An async body of the wrong type is reported where it is, not at the attribute.
use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(max_attempts = 3)]
async fn retried(id: u32) -> Result<u32, E> {
    Ok(u64::from(id))
}

#[circuit_breaker(failure_threshold = 3)]
async fn guarded(id: u32) -> Result<u32, E> {
    Ok(u64::from(id))
}

fn main() {
    let _ = retried(1);
    let _ = guarded(1);
}
