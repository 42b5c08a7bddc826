use resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
}

#[circuit_breaker(record_if = is_transient)]
fn f() -> Result<(), E> {
    Ok(())
}

fn main() {
    let _ = f();
}
