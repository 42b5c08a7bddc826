use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[fallback(cached)]
#[fallback = other]
fn f() -> Result<u32, E> {
    Ok(1)
}

fn cached() -> Result<u32, E> {
    Ok(0)
}

fn other() -> Result<u32, E> {
    Ok(0)
}

fn main() {}
