// `service = <expr>`: a name computed per call from the arguments or `self`.
use resilience_runtime::prelude::*;

struct Tenant {
    id: String,
}

impl Tenant {
    #[with_resilience(service = self.id.as_str(), retry(max_attempts = 2, delay = "1ms"))]
    async fn call(&self) -> anyhow::Result<usize> {
        Ok(self.id.len())
    }
}

#[circuit_breaker(service = format!("endpoint-{}", endpoint), failure_threshold = 3)]
fn hit(endpoint: &str) -> anyhow::Result<()> {
    let _ = endpoint;
    Ok(())
}

#[with_retry(service = name, max_attempts = 2, delay = "1ms")]
fn by_string(name: String) -> anyhow::Result<String> {
    Ok(name)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    Tenant {
        id: "tenant-a".into(),
    }
    .call()
    .await
    .unwrap();
    hit("x").unwrap();
    by_string("named".into()).unwrap();
    assert_eq!(status("tenant-a").unwrap().successes, 1);
    assert_eq!(status("endpoint-x").unwrap().successes, 1);
    assert_eq!(status("named").unwrap().successes, 1);
}
