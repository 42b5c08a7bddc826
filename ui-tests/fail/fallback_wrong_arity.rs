use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_retry(max_attempts = 2)]
#[fallback = cached]
fn f(key: u32) -> Result<u32, E> {
    Ok(key)
}

fn cached(a: u32, b: u32, c: u32) -> Result<u32, E> {
    Ok(a + b + c)
}

fn main() {
    let _ = f(1);
}
