use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[fallback]
fn f() -> Result<u32, E> {
    Ok(1)
}

fn main() {}
