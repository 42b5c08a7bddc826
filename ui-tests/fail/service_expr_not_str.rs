use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(service = tenant, max_attempts = 2)]
fn f(tenant: u64) -> Result<u64, E> {
    Ok(tenant)
}

fn main() {
    let _ = f(1);
}
