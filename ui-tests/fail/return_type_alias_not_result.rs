use resilience_runtime::prelude::*;

type Answer = Option<u32>;

#[with_retry(max_attempts = 3)]
fn f() -> Answer {
    Some(1)
}

fn main() {
    let _ = f();
}
