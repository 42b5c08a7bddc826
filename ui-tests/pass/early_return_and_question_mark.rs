// `return` and `?` inside the body end the attempt, as they ended the function.
use resilience_runtime::prelude::*;

#[derive(Debug)]
#[allow(dead_code)]
enum AppError {
    Parse(std::num::ParseIntError),
    Negative,
    Resilience(ResilienceError),
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

impl From<ResilienceError> for AppError {
    fn from(e: ResilienceError) -> Self {
        AppError::Resilience(e)
    }
}

#[with_resilience(retry(max_attempts = 2, delay = "1ms"), timeout = "1s")]
async fn parse_positive(text: &str) -> Result<i64, AppError> {
    let n: i64 = text.parse()?;
    if n < 0 {
        return Err(AppError::Negative);
    }
    if n == 0 {
        return Ok(Default::default());
    }
    Ok(n)
}

#[with_resilience(retry(max_attempts = 2, delay = "1ms"))]
fn parse_sync(text: String) -> Result<i64, AppError> {
    let n: i64 = text.parse()?;
    if n < 0 {
        return Err(AppError::Negative);
    }
    Ok(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(parse_positive("5").await.unwrap(), 5);
    assert_eq!(parse_positive("0").await.unwrap(), 0);
    assert!(matches!(
        parse_positive("-5").await,
        Err(AppError::Negative)
    ));
    assert!(matches!(parse_positive("x").await, Err(AppError::Parse(_))));
    assert_eq!(parse_sync("7".into()).unwrap(), 7);
    let _ = AppError::Resilience;
}
