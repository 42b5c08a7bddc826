use resilience_runtime::prelude::*;

#[with_resilience]
async fn f() -> () {}

fn main() {}
