// Fallbacks: sync or async, with or without the error, for async and sync functions;
// `#[fallback(path)]` alone; owned arguments reach the fallback.
use resilience_runtime::prelude::*;

#[derive(Debug, PartialEq)]
struct E(u8);

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E(0)
    }
}

#[with_resilience(retry(max_attempts = 2, delay = "1ms"), fallback = sync_no_err)]
async fn a(name: String, n: &u8) -> Result<String, E> {
    Err(E(*n + name.len() as u8))
}
fn sync_no_err(name: String, n: &u8) -> Result<String, E> {
    Ok(format!("{name}{n}"))
}

#[with_retry(max_attempts = 2, delay = "1ms")]
#[fallback = async_with_err]
async fn b(name: String) -> Result<String, E> {
    Err(E(name.len() as u8))
}
async fn async_with_err(name: String, e: E) -> Result<String, E> {
    Ok(format!("{name}{}", e.0))
}

#[fallback(async_no_err)]
async fn c(v: Vec<u8>) -> Result<usize, E> {
    Err(E(v.len() as u8))
}
async fn async_no_err(v: Vec<u8>) -> Result<usize, E> {
    Ok(v.len() * 10)
}

#[with_retry(max_attempts = 2, delay = "1ms")]
#[fallback = sync_with_err]
fn d(name: String, count: &mut u32) -> Result<String, E> {
    *count += 1;
    Err(E(name.len() as u8))
}
fn sync_with_err(name: String, count: &mut u32, e: E) -> Result<String, E> {
    Ok(format!("{name}{count}{}", e.0))
}

struct S(u8);
impl S {
    #[fallback(Self::cached)]
    async fn get(&self, k: u8) -> Result<u8, E> {
        Err(E(k))
    }
    async fn cached(&self, k: u8, e: E) -> Result<u8, E> {
        Ok(self.0 + k + e.0)
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    assert_eq!(a("x".into(), &1).await.unwrap(), "x1");
    assert_eq!(b("ab".into()).await.unwrap(), "ab2");
    assert_eq!(c(vec![1, 2]).await.unwrap(), 20);
    let mut count = 0;
    assert_eq!(d("abc".into(), &mut count).unwrap(), "abc23");
    assert_eq!(S(1).get(2).await.unwrap(), 5);
}
