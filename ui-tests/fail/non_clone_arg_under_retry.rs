use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

struct Payload;

#[with_retry(max_attempts = 3)]
fn send(id: u32, payload: Payload) -> Result<(), E> {
    let _ = (id, payload);
    Ok(())
}

fn main() {
    let _ = send(1, Payload);
}
