//! How much an attribute grows the future of an `async fn`: `size_of_val` of the
//! future of a macro-wrapped function against the same function unwrapped, for a
//! small body and for a body that holds 1 KiB across an await.
//!
//! Run: `cargo test -p resilience-benches --test future_size -- --nocapture`
//!
//! Two sets of bounds: the targets (`TARGET_*`: at most 64 B more than the unwrapped
//! future, the body's state held once), which every run checks for every form (the
//! stack with a retry, a timeout and a bulkhead; one attempt under a timeout;
//! `#[circuit_breaker]` alone; the stack whose arguments lend a `&mut` to each
//! attempt); and loose guards (`GUARD_*`) that every run checks for every row, so
//! the sizes cannot silently get worse.
//!
//! A call's state off the lane (its timers, admissions and retry state, 456 B) is
//! held out of line in a block recycled through a per-thread pool, so a pending
//! body under a timeout still allocates nothing once the thread has had a block
//! (`resilience-runtime/tests/alloc.rs`).

use std::mem::size_of_val;

use resilience_runtime::ResilienceError;

/// Target (the benchmark issue): at most 64 bytes more than the unwrapped future.
const TARGET_OVERHEAD_BYTES: usize = 64;
/// Target: the wrapped future holds the body's state once.
const TARGET_BODY_COPIES: usize = 1;
/// Guard (always checked): the form that lends a `&mut` measured +64 B with rustc
/// 1.95 (+184 B as a loop of `Call::attempt` under `Service::total`, +504 B with its
/// attempt's and total timeout's state inline); the stack +48 B (+464 B with its
/// state inline, +1192 B and 5.7 copies with the earlier `async fn`s);
/// `#[circuit_breaker]` alone +64 B (the lean future).
const GUARD_OVERHEAD_BYTES: usize = 256;
const GUARD_BODY_COPIES: usize = 1;

#[derive(Debug, Clone)]
pub struct TestError;

impl From<ResilienceError> for TestError {
    fn from(_: ResilienceError) -> Self {
        TestError
    }
}

async fn yield_once() {
    tokio::task::yield_now().await;
}

// --- a small body --------------------------------------------------------------------

async fn small_plain(x: u32) -> Result<u32, TestError> {
    Ok(x + 1)
}

#[resilience_macros::with_resilience(
    service = "size.small.stack",
    retry(max_attempts = 3),
    timeout = "1s",
    bulkhead(max_concurrent = 10)
)]
async fn small_stack(x: u32) -> Result<u32, TestError> {
    Ok(x + 1)
}

#[resilience_macros::circuit_breaker(service = "size.small.breaker", failure_threshold = 5)]
async fn small_breaker(x: u32) -> Result<u32, TestError> {
    Ok(x + 1)
}

// --- a body holding 1 KiB across an await --------------------------------------------

async fn big_plain(x: u32) -> Result<u32, TestError> {
    let buf = [x as u8; 1024];
    yield_once().await;
    Ok(u32::from(buf[(x as usize) % 1024]))
}

#[resilience_macros::with_resilience(
    service = "size.big.stack",
    retry(max_attempts = 3),
    timeout = "1s",
    bulkhead(max_concurrent = 10)
)]
async fn big_stack(x: u32) -> Result<u32, TestError> {
    let buf = [x as u8; 1024];
    yield_once().await;
    Ok(u32::from(buf[(x as usize) % 1024]))
}

#[resilience_macros::circuit_breaker(service = "size.big.breaker", failure_threshold = 5)]
async fn big_breaker(x: u32) -> Result<u32, TestError> {
    let buf = [x as u8; 1024];
    yield_once().await;
    Ok(u32::from(buf[(x as usize) % 1024]))
}

// --- one attempt under a timeout (`Service::once`) ------------------------------------

#[resilience_macros::with_resilience(service = "size.small.once", timeout = "1s")]
async fn small_once(x: u32) -> Result<u32, TestError> {
    Ok(x + 1)
}

#[resilience_macros::with_resilience(service = "size.big.once", timeout = "1s")]
async fn big_once(x: u32) -> Result<u32, TestError> {
    let buf = [x as u8; 1024];
    yield_once().await;
    Ok(u32::from(buf[(x as usize) % 1024]))
}

// --- an argument lent `&mut` to each attempt (the attempts' loop) ----------------------

async fn small_lend_plain(x: &mut u32) -> Result<u32, TestError> {
    *x += 1;
    Ok(*x)
}

async fn big_lend_plain(x: &mut u32) -> Result<u32, TestError> {
    let buf = [*x as u8; 1024];
    yield_once().await;
    *x += 1;
    Ok(u32::from(buf[(*x as usize) % 1024]))
}

#[resilience_macros::with_resilience(
    service = "size.small.lend",
    retry(max_attempts = 3),
    timeout = "1s",
    bulkhead(max_concurrent = 10)
)]
async fn small_lend(x: &mut u32) -> Result<u32, TestError> {
    *x += 1;
    Ok(*x)
}

#[resilience_macros::with_resilience(
    service = "size.big.lend",
    retry(max_attempts = 3),
    timeout = "1s",
    bulkhead(max_concurrent = 10)
)]
async fn big_lend(x: &mut u32) -> Result<u32, TestError> {
    let buf = [*x as u8; 1024];
    yield_once().await;
    *x += 1;
    Ok(u32::from(buf[(*x as usize) % 1024]))
}

struct Row {
    what: &'static str,
    plain: usize,
    wrapped: usize,
}

fn check(rows: &[Row], max_overhead: usize, max_copies: usize) {
    for r in rows {
        println!(
            "{:<44} unwrapped {:>6} B   wrapped {:>6} B   (+{} B, x{:.1})",
            r.what,
            r.plain,
            r.wrapped,
            r.wrapped - r.plain.min(r.wrapped),
            r.wrapped as f64 / r.plain as f64
        );
    }
    // Pairs (small, big) of the same wrapper: the growth of the wrapped future per byte
    // of body state is how many copies of the body it holds.
    for pair in rows.chunks(2) {
        let [small, big] = pair else { continue };
        let body_growth = big.plain - small.plain;
        let copies = (big.wrapped - small.wrapped) as f64 / body_growth as f64;
        println!("{:<44} holds the body's state {copies:.2} times", big.what);
        for r in pair {
            assert!(
                r.wrapped <= r.plain + max_overhead,
                "{}: {} B wrapped vs {} B unwrapped: more than {max_overhead} B of overhead",
                r.what,
                r.wrapped,
                r.plain
            );
        }
        assert!(
            big.wrapped - small.wrapped <= max_copies * body_growth,
            "{}: the wrapped future grows by {} B for {body_growth} B of body state \
             (more than {max_copies} copies)",
            big.what,
            big.wrapped - small.wrapped
        );
    }
}

/// The rows, in (small body, 1 KiB body) pairs: the stack, one attempt under a
/// timeout, `#[circuit_breaker]`, then the stack with an argument lent `&mut`.
fn rows() -> [Row; 8] {
    let sp = size_of_val(&small_plain(1));
    let bp = size_of_val(&big_plain(1));
    let mut x = 1;
    let small_lend_plain = size_of_val(&small_lend_plain(&mut x));
    let small_lend = size_of_val(&small_lend(&mut x));
    let big_lend_plain = size_of_val(&big_lend_plain(&mut x));
    let big_lend = size_of_val(&big_lend(&mut x));
    [
        Row {
            what: "#[with_resilience] stack, small body",
            plain: sp,
            wrapped: size_of_val(&small_stack(1)),
        },
        Row {
            what: "#[with_resilience] stack, 1 KiB body",
            plain: bp,
            wrapped: size_of_val(&big_stack(1)),
        },
        Row {
            what: "timeout, one attempt, small body",
            plain: sp,
            wrapped: size_of_val(&small_once(1)),
        },
        Row {
            what: "timeout, one attempt, 1 KiB body",
            plain: bp,
            wrapped: size_of_val(&big_once(1)),
        },
        Row {
            what: "#[circuit_breaker], small body",
            plain: sp,
            wrapped: size_of_val(&small_breaker(1)),
        },
        Row {
            what: "#[circuit_breaker], 1 KiB body",
            plain: bp,
            wrapped: size_of_val(&big_breaker(1)),
        },
        Row {
            what: "stack, a `&mut` argument, small body",
            plain: small_lend_plain,
            wrapped: small_lend,
        },
        Row {
            what: "stack, a `&mut` argument, 1 KiB body",
            plain: big_lend_plain,
            wrapped: big_lend,
        },
    ]
}

/// Prints the sizes; fails only if they grow past the loose guards.
#[test]
fn wrapped_future_sizes() {
    check(&rows(), GUARD_OVERHEAD_BYTES, GUARD_BODY_COPIES);
}

/// The targets, for every form: the stack with a declared timeout, one attempt
/// under a timeout, `#[circuit_breaker]` alone, and the stack whose arguments lend
/// a `&mut` to each attempt (its call's state held by `Lend`, out of line once the
/// call leaves the lane).
#[test]
fn futures_meet_the_size_target() {
    check(&rows(), TARGET_OVERHEAD_BYTES, TARGET_BODY_COPIES);
}

/// The size of `tokio::time::Timeout<F>` for a future like `f` (no runtime needed).
fn tokio_timeout_size<F: std::future::Future>(_: &F) -> usize {
    std::mem::size_of::<tokio::time::Timeout<F>>()
}

/// What `tokio::time::timeout` alone adds to the small body's future (its inline
/// timer), against the whole stack with a timeout, whose timers are out of line.
#[test]
fn the_stack_adds_less_than_tokio_timeout_alone() {
    let body = small_plain(1);
    let plain = size_of_val(&body);
    let with_timeout = tokio_timeout_size(&body);
    let stack = size_of_val(&small_stack(1));
    println!(
        "tokio::time::timeout, small body             unwrapped {plain:>6} B   wrapped {with_timeout:>6} B   (+{} B)",
        with_timeout - plain
    );
    assert!(
        stack < with_timeout,
        "stack {stack} B, tokio::time::timeout {with_timeout} B"
    );
}

/// The wrapped functions still work (so the sizes are of real, running futures).
#[tokio::test(flavor = "current_thread")]
async fn wrapped_functions_run() {
    assert_eq!(small_stack(1).await.unwrap(), 2);
    assert_eq!(small_once(1).await.unwrap(), 2);
    assert_eq!(small_breaker(1).await.unwrap(), 2);
    assert_eq!(big_stack(1).await.unwrap(), 1);
    assert_eq!(big_once(1).await.unwrap(), 1);
    assert_eq!(big_breaker(1).await.unwrap(), 1);
    let mut x = 1;
    assert_eq!(small_lend(&mut x).await.unwrap(), 2);
    // The 1 KiB body answers from its buffer, filled before the increment.
    assert_eq!(big_lend(&mut x).await.unwrap(), 2);
    assert_eq!(x, 3);
}
