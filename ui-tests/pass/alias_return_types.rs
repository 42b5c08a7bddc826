// The return type through aliases: `anyhow::Result<T>`, `io::Result<T>`, a local alias.
use std::io;

use resilience_runtime::prelude::*;

type MyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[with_resilience(retry(max_attempts = 2, delay = "1ms"))]
async fn a() -> anyhow::Result<u8> {
    Ok(1)
}

#[with_retry(max_attempts = 2, delay = "1ms")]
fn b() -> io::Result<u8> {
    Ok(2)
}

#[with_resilience(timeout = "1s")]
async fn c() -> MyResult<u8> {
    Ok(3)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(a().await.unwrap() + b().unwrap() + c().await.unwrap(), 6);
}
