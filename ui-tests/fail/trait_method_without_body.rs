use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

trait Store {
    #[with_retry(max_attempts = 3)]
    fn get(&self) -> Result<u32, E>;
}

fn main() {}
