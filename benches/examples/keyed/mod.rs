//! What the computed-key examples share: the bench's shuffled 100,000-key row as
//! plain loops, ours and governor's keyed `check_key`.

use std::ops::ControlFlow;

use resilience_runtime::__private::{Hooks, Site, SiteName, Spec};

use super::common::{ok_sync, BenchError};

/// Live keys, as in the bench's row.
pub const KEYS: usize = 100_000;

pub static SITE: Site = Site::new(
    SiteName::Fixed("example.keyed"),
    Spec {
        breaker: true,
        ..Spec::EMPTY
    },
);
pub static HOOKS: Hooks<BenchError> = Hooks::DEFAULT;

pub use super::common::count_from_env;

/// The first `n` keys as the bench names them (it makes [`KEYS`]).
pub fn keys_of(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-{i:06}")).collect()
}

/// What the bench's row calls: the lookup and a closed breaker's call.
#[inline(never)]
pub fn call_keyed(key: &str) -> Result<u32, BenchError> {
    let svc = SITE.keyed(key);
    let mut call = svc.call(&HOOKS);
    loop {
        if let ControlFlow::Break(r) = call.attempt_sync(ok_sync) {
            return r;
        }
    }
}

/// Registers every key and calls each 25 times, as the bench's key-order row does
/// before the shuffled one: a breaker's count window (20 calls in the default
/// preset) records each success until it is full, and a full window of successes
/// is the closed breaker's steady state.
pub fn warm(keys: &[String]) -> Result<(), String> {
    resilience_runtime::set_key_capacity(2 * keys.len());
    for _ in 0..25 {
        for k in keys {
            call_keyed(k).map_err(|_| "a closed breaker refused a call".to_owned())?;
        }
    }
    Ok(())
}

/// `n` calls of ours, going round `keys`; how many succeeded.
#[inline(never)]
pub fn ours_loop(keys: &[String], n: usize) -> usize {
    calls_loop(keys, n, call_keyed)
}

/// `n` calls of `call`, going round `keys`; how many succeeded. Inlined into
/// each loop of its own, which valgrind's `--toggle-collect` names.
#[inline(always)]
pub fn calls_loop(
    keys: &[String],
    n: usize,
    call: impl Fn(&str) -> Result<u32, BenchError>,
) -> usize {
    let mut i = 0;
    (0..n)
        .filter(|_| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            call(&keys[i]).is_ok()
        })
        .count()
}

/// `n` permits of governor's keyed limiter, going round `keys`; how many were given.
#[inline(never)]
pub fn governor_loop(
    gov: &governor::DefaultKeyedRateLimiter<String>,
    keys: &[String],
    n: usize,
) -> usize {
    let mut i = 0;
    (0..n)
        .filter(|_| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            gov.check_key(&keys[i]).is_ok()
        })
        .count()
}
