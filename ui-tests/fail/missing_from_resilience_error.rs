use resilience_runtime::prelude::*;

#[derive(Debug)]
struct ApiError;

#[with_resilience(retry(max_attempts = 2))]
async fn call() -> Result<(), ApiError> {
    Ok(())
}

fn main() {
    let _ = call();
}
