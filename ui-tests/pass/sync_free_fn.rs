// Sync free functions: standalone attributes, each alone and stacked.
use resilience_runtime::prelude::*;

#[derive(Debug)]
struct DbError(#[allow(dead_code)] Option<ResilienceError>);

impl From<ResilienceError> for DbError {
    fn from(e: ResilienceError) -> Self {
        DbError(Some(e))
    }
}

#[circuit_breaker(
    failure_threshold = 3,
    cooldown = "30s",
    half_open_calls = 2,
    success_threshold = 2
)]
fn lookup(key: &str) -> Result<String, DbError> {
    Ok(key.to_uppercase())
}

#[with_retry(
    max_attempts = 3,
    delay = "1ms",
    max_delay = "2ms",
    multiplier = 1.5,
    jitter = "equal"
)]
fn parse(text: String) -> Result<u32, std::num::ParseIntError> {
    text.trim().parse()
}

#[bulkhead(max_concurrent = 2)]
fn guarded(n: u32) -> Result<u32, DbError> {
    Ok(n + 1)
}

#[rate_limit(rate = "100/s", burst = 5, max_wait = "5ms")]
fn limited() -> Result<(), DbError> {
    Ok(())
}

#[with_retry(max_attempts = 1)]
fn once(v: Vec<u8>) -> Result<usize, std::io::Error> {
    Ok(v.len())
}

fn main() {
    assert_eq!(lookup("a").unwrap(), "A");
    assert_eq!(parse(" 42 ".into()).unwrap(), 42);
    assert!(parse("x".into()).is_err());
    assert_eq!(guarded(1).unwrap(), 2);
    limited().unwrap();
    assert_eq!(once(vec![1, 2]).unwrap(), 2);
}
