// A method inside an `#[async_trait]` impl: async_trait expands first and boxes the
// future; the attribute wraps the boxed body.
use async_trait::async_trait;
use resilience_runtime::prelude::*;

#[async_trait]
trait Repo {
    async fn load(&self, id: u32, tag: String) -> anyhow::Result<String>;
    async fn store(&mut self, value: String) -> anyhow::Result<usize>;
}

struct Memory {
    items: Vec<String>,
}

#[async_trait]
impl Repo for Memory {
    #[with_resilience(timeout = "1s", retry(max_attempts = 2, delay = "1ms"))]
    #[fallback = Self::cached]
    async fn load(&self, id: u32, tag: String) -> anyhow::Result<String> {
        self.items
            .get(id as usize)
            .map(|s| format!("{tag}:{s}"))
            .ok_or_else(|| anyhow::anyhow!("no {id}"))
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn store(&mut self, value: String) -> anyhow::Result<usize> {
        self.items.push(value);
        Ok(self.items.len())
    }
}

impl Memory {
    fn cached(&self, id: u32, tag: String, _e: anyhow::Error) -> anyhow::Result<String> {
        Ok(format!("{tag}:cached {id} of {}", self.items.len()))
    }
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut m = Memory { items: vec![] };
    assert_eq!(m.store("a".into()).await.unwrap(), 1);
    assert_eq!(m.load(0, "t".into()).await.unwrap(), "t:a");
    assert_eq!(m.load(5, "t".into()).await.unwrap(), "t:cached 5 of 1");
    let fut = m.load(0, "t".into());
    assert_send(&fut);
    fut.await.unwrap();
}
