// Stacked attributes make one policy whatever their order, also with paths.
use resilience_runtime::prelude::*;

#[with_retry(max_attempts = 3, delay = "1ms")]
#[circuit_breaker(failure_threshold = 5)]
#[timeout("1s")]
#[bulkhead(max_concurrent = 3)]
#[rate_limit(rate = "1000/s")]
async fn one(n: u32) -> anyhow::Result<u32> {
    Ok(n)
}

#[rate_limit(rate = "1000/s")]
#[bulkhead(max_concurrent = 3)]
#[timeout("1s")]
#[resilience_runtime::circuit_breaker(failure_threshold = 5)]
#[resilience_runtime::prelude::with_retry(max_attempts = 3, delay = "1ms", service = "two")]
async fn two(n: u32) -> anyhow::Result<u32> {
    Ok(n)
}

#[timeout("1s", total_timeout = "2s")]
#[with_resilience(strategy = "critical")]
#[fallback = fallback_three]
async fn three() -> anyhow::Result<u32> {
    anyhow::bail!("down")
}

fn fallback_three() -> anyhow::Result<u32> {
    Ok(3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(
        one(1).await.unwrap() + two(2).await.unwrap() + three().await.unwrap(),
        6
    );
    assert_eq!(status("two").unwrap().successes, 1);
    assert_eq!(
        status(concat!(module_path!(), "::three"))
            .unwrap()
            .fallbacks,
        1
    );
}
