use resilience_runtime::prelude::*;

#[with_retry(max_attempts = 3)]
fn f() -> u32 {
    1
}

fn main() {}
