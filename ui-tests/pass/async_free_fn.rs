// An async free function with every policy, generated service name.
use resilience_runtime::prelude::*;

#[derive(Debug)]
#[allow(dead_code)]
enum FetchError {
    Down,
    Resilience(ResilienceError),
}

impl From<ResilienceError> for FetchError {
    fn from(e: ResilienceError) -> Self {
        FetchError::Resilience(e)
    }
}

#[with_resilience(
    strategy = "aggressive",
    timeout = "1s",
    total_timeout = "5s",
    retry(max_attempts = 2, delay = "1ms", backoff = "fixed", jitter = "none"),
    circuit_breaker(failure_rate = 0.5, window = 10, min_calls = 5, cooldown = "10s"),
    bulkhead(max_concurrent = 4, max_wait = "10ms"),
    rate_limit(rate = "1000/s", burst = 10)
)]
async fn fetch(url: &str, up: bool) -> Result<usize, FetchError> {
    if up {
        Ok(url.len())
    } else {
        Err(FetchError::Down)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(fetch("abc", true).await.unwrap(), 3);
    assert!(matches!(fetch("abc", false).await, Err(FetchError::Down)));
    let s =
        status(concat!(module_path!(), "::fetch")).expect("registered under the generated name");
    assert_eq!(s.retries, 1);
    let _ = FetchError::Resilience;
}
