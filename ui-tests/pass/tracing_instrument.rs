// `#[tracing::instrument]` above or below the attribute keeps working.
use resilience_runtime::prelude::*;

#[derive(Clone, Debug)]
struct Client {
    base: String,
}

impl Client {
    #[tracing::instrument(skip(self), err(Debug))]
    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn get(&self, path: String) -> Result<String, std::io::Error> {
        Ok(format!("{}{}", self.base, path))
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    #[tracing::instrument(level = "debug")]
    async fn head(&self, path: &str) -> Result<usize, std::io::Error> {
        Ok(self.base.len() + path.len())
    }
}

#[tracing::instrument]
#[circuit_breaker(failure_threshold = 2)]
fn sync_call(n: u32) -> Result<u32, anyhow::Error> {
    Ok(n * 2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let c = Client {
        base: "http://x".into(),
    };
    assert_eq!(c.get("/a".into()).await.unwrap(), "http://x/a");
    assert_eq!(c.head("/ab").await.unwrap(), 11);
    assert_eq!(sync_call(2).unwrap(), 4);
}
