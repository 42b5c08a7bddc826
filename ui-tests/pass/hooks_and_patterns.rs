// `record_if`, `ignore_if`, `retry_if`, `retry_after`; destructuring and `mut` arguments.
use std::time::Duration;

use resilience_runtime::prelude::*;

#[derive(Debug)]
#[allow(dead_code)]
enum HttpError {
    TooMany(u64),
    NotFound,
    Resilience(ResilienceError),
}

impl From<ResilienceError> for HttpError {
    fn from(e: ResilienceError) -> Self {
        HttpError::Resilience(e)
    }
}

fn is_server_side(e: &HttpError) -> bool {
    matches!(e, HttpError::TooMany(_))
}
fn is_not_found(e: &HttpError) -> bool {
    matches!(e, HttpError::NotFound)
}
fn hint(e: &HttpError) -> Option<Duration> {
    match e {
        HttpError::TooMany(ms) => Some(Duration::from_millis(*ms)),
        _ => None,
    }
}

#[with_resilience(
    circuit_breaker(failure_threshold = 3, record_if = is_server_side, ignore_if = is_not_found),
    retry(max_attempts = 3, delay = "1ms", retry_if = is_server_side, retry_after = hint)
)]
async fn get(
    (a, b): (u32, u32),
    Point { x, .. }: Point,
    mut tries: u32,
    _: u8,
) -> Result<u32, HttpError> {
    tries += 1;
    if a == 0 {
        return Err(HttpError::NotFound);
    }
    Ok(a + b + x + tries)
}

#[derive(Clone, Copy)]
struct Point {
    x: u32,
    y: u32,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let p = Point { x: 1, y: 2 };
    assert_eq!(get((1, 2), p, 0, 0).await.unwrap(), 5);
    assert!(matches!(
        get((0, 2), p, 0, 0).await,
        Err(HttpError::NotFound)
    ));
    let _ = (p.y, HttpError::TooMany(1), HttpError::Resilience);
}
