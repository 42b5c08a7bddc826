use resilience_runtime::prelude::*;

#[circuit_breaker]
fn f() {}

fn main() {}
