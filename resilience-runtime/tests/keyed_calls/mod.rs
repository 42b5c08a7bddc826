//! Shared by the computed-key registry tests (`registry.rs`, `registry_holds.rs`,
//! `registry_returns.rs`): their error type, a call site with a breaker, and one
//! call on a key through the attribute protocol.

#![allow(dead_code)] // each test binary uses part of it

use std::ops::ControlFlow;

use resilience_runtime::__private::{Hooks, Site, SiteName, Spec};
use resilience_runtime::ResilienceError;

/// The body's error; rejections convert into it.
#[derive(Debug, PartialEq)]
pub struct Fail;

impl From<ResilienceError> for Fail {
    fn from(_: ResilienceError) -> Self {
        Fail
    }
}

/// A computed name's call site with a breaker of the default settings.
pub static KEYED: Site = Site::new(
    SiteName::Fixed("unused"),
    Spec {
        breaker: true,
        ..Spec::EMPTY
    },
);

/// One call on `key` of `site`'s computed name: a failure when `fail`.
pub fn call(site: &'static Site, key: &str, fail: bool) -> Result<(), Fail> {
    let svc = site.keyed(key);
    let hooks = Hooks::<Fail>::DEFAULT;
    let mut call = svc.call(&hooks);
    loop {
        if let ControlFlow::Break(r) = call.attempt_sync(|| if fail { Err(Fail) } else { Ok(()) }) {
            return r;
        }
    }
}
