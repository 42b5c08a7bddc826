// A trait-impl method with a native `async fn`, and a default method in a trait.
use resilience_runtime::prelude::*;

#[derive(Debug)]
struct StoreError(#[allow(dead_code)] ResilienceError);

impl From<ResilienceError> for StoreError {
    fn from(e: ResilienceError) -> Self {
        StoreError(e)
    }
}

trait Store {
    async fn get(&self, key: u32) -> Result<String, StoreError>;

    #[with_retry(max_attempts = 2, delay = "1ms")]
    fn describe(&self) -> Result<String, StoreError> {
        Ok("a store".to_owned())
    }
}

struct Memory;

impl Store for Memory {
    #[with_resilience(timeout = "1s", retry(max_attempts = 2, delay = "1ms"))]
    async fn get(&self, key: u32) -> Result<String, StoreError> {
        Ok(format!("value {key}"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(Memory.get(7).await.unwrap(), "value 7");
    assert_eq!(Memory.describe().unwrap(), "a store");
}
