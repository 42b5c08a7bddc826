use resilience_runtime::prelude::*;

#[with_retry]
struct Client;

fn main() {}
