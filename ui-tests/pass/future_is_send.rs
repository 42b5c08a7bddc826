// The future of an annotated `async fn` is `Send` whenever the unannotated one is.
use std::cell::Cell;

use resilience_runtime::prelude::*;

fn assert_send<T: Send>(_: T) {}

struct Shared {
    value: u32,
}

impl Shared {
    #[with_resilience(
        timeout = "1s",
        retry(max_attempts = 3, delay = "1ms"),
        bulkhead(max_concurrent = 2)
    )]
    #[fallback = Self::zero]
    async fn get(&self, scale: u32, label: String) -> anyhow::Result<u32> {
        tokio::task::yield_now().await;
        Ok(self.value * scale + label.len() as u32)
    }

    async fn zero(&self, _scale: u32, _label: String) -> anyhow::Result<u32> {
        Ok(0)
    }

    #[with_retry(max_attempts = 2, delay = "1ms")]
    async fn bump(&mut self) -> anyhow::Result<u32> {
        tokio::task::yield_now().await;
        self.value += 1;
        Ok(self.value)
    }
}

// `Cell<u32>` is `Send` but not `Sync`: an owned one must not be held by reference
// across an await.
#[with_retry(max_attempts = 2, delay = "1ms")]
async fn owned_cell(c: Cell<u32>) -> anyhow::Result<u32> {
    tokio::task::yield_now().await;
    Ok(c.get())
}

#[with_resilience(service = key, retry(max_attempts = 2, delay = "1ms"))]
async fn keyed(key: String) -> anyhow::Result<usize> {
    tokio::task::yield_now().await;
    Ok(key.len())
}

#[tokio::main]
async fn main() {
    let mut s = Shared { value: 2 };
    assert_send(s.get(2, "ab".into()));
    assert_send(s.bump());
    assert_send(owned_cell(Cell::new(1)));
    assert_send(keyed("k".into()));
    let handle = tokio::spawn(async move {
        let v = s.get(3, String::new()).await.unwrap();
        v + s.bump().await.unwrap()
    });
    assert_eq!(handle.await.unwrap(), 9);
    assert_eq!(
        tokio::spawn(owned_cell(Cell::new(4)))
            .await
            .unwrap()
            .unwrap(),
        4
    );
}
