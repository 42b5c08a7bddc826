// The user crate shadows `core`, `std`, `Result`, `Option`, `Some`, `Ok`, `Err`,
// `Clone`, `AsRef` and `Duration`: the expansion uses absolute paths only.
#![allow(dead_code, non_camel_case_types, clippy::all)]

mod core {}
mod std {}
type Result = ();
type Option = ();
struct Some;
struct Ok;
struct Err;
trait Clone {}
trait AsRef {}
struct Duration;
mod resilience_runtime {}

use ::resilience_runtime::prelude::*;

#[derive(Debug)]
struct E;

impl From<ResilienceError> for E {
    fn from(_: ResilienceError) -> Self {
        E
    }
}

#[with_resilience(
    timeout = "1s",
    retry(max_attempts = 2, delay = "1ms"),
    crate = "::resilience_runtime"
)]
#[fallback = fb]
async fn shadowed(name: ::std::string::String) -> ::core::result::Result<usize, E> {
    ::core::result::Result::Ok(name.len())
}

fn fb(name: ::std::string::String) -> ::core::result::Result<usize, E> {
    ::core::result::Result::Ok(name.len())
}

#[with_retry(service = ::std::format!("svc-{}", n), max_attempts = 2, delay = "1ms", crate = "::resilience_runtime")]
fn computed(n: u32) -> ::core::result::Result<u32, E> {
    ::core::result::Result::Ok(n)
}

#[::tokio::main(flavor = "current_thread")]
async fn main() {
    ::core::assert_eq!(shadowed("ab".into()).await.unwrap(), 2);
    ::core::assert_eq!(computed(1).unwrap(), 1);
}
