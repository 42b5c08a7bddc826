//! Heap allocations per call, after a warm-up call, counted by a global allocator
//! that counts only on the thread that armed it (tests run in parallel).
//!
//! Every path measured here allocates nothing, rejections included: a
//! `ResilienceError` shares the service's name (an `Arc<str>` inside `ServiceName`)
//! instead of copying it into a `String`.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::__private::{Site, SiteName, Spec};
use resilience_runtime::{breaker, Policy, Rate, Resilience, ResilienceError};

mod counting;
use counting::{allocations, timer_runtime, PendingOnce};

/// How many times each measured path runs.
const N: u64 = 100;

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn sync_ok(p: &Policy) -> Result<u32, E> {
    p.call_sync(|| Ok(1))
}

fn sync_fail(p: &Policy) -> Result<u32, E> {
    p.call_sync(|| Err(E::Boom))
}

/// Polls a future once with a no-op waker; it must be ready.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the future was not ready at its first poll"),
    }
}

#[test]
fn closed_breaker_sync_success_allocates_nothing() {
    let p = Resilience::builder("alloc::closed_sync")
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(sync_ok(&p), Ok(1));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(sync_ok(&p), Ok(1));
        }
    });
    assert_eq!(n, 0);
    // With the window full of successes too (the read-only path).
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(sync_ok(&p), Ok(1));
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn breaker_retry_bulkhead_rate_limit_timeout_async_success_allocates_nothing() {
    let p = Resilience::builder("alloc::all_async")
        .max_attempts(3)
        .max_concurrent(4)
        .rate(Rate::new(1_000_000, Duration::from_secs(1)))
        .timeout(Duration::from_secs(1))
        .total_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let call = || p.call(|| async { Ok::<u32, E>(1) });
    assert_eq!(ready(call()), Ok(1));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(ready(call()), Ok(1));
        }
    });
    assert_eq!(n, 0);
    assert_eq!(p.service().bulkhead_available(), Some(4));
    assert_eq!(p.service().status().successes, N + 1);
}

#[test]
fn failing_call_recorded_in_a_count_window_allocates_nothing() {
    // A window that never fills during the test, so the breaker stays closed and
    // every failure is written into it.
    let p = Resilience::builder("alloc::fail_window")
        .failure_rate(1.0)
        .window_calls(10_000)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(sync_fail(&p), Err(E::Boom));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(sync_fail(&p), Err(E::Boom));
            assert_eq!(sync_ok(&p), Ok(1));
        }
    });
    assert_eq!(n, 0);
    let s = p.service().status();
    assert_eq!((s.failures, s.successes), (N + 1, N));
}

// Heap allocations per rejection. When `ResilienceError` owned `service: String`
// (as API.md still writes it) this was 1 (the name's copy); since the error shares
// the service's `Arc<str>` (commit a056f3c) it is 0. Nothing else on these paths
// allocates.
const REJECTION_ALLOCATIONS: u64 = 0;

#[test]
fn open_breaker_rejection_allocates_nothing() {
    let name = "alloc::open";
    let p = Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(sync_fail(&p), Err(E::Boom));
    assert!(matches!(
        sync_ok(&p),
        Err(E::R(ResilienceError::CircuitOpen { .. }))
    ));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert!(matches!(
                sync_ok(&p),
                Err(E::R(ResilienceError::CircuitOpen { .. }))
            ));
        }
    });
    assert_eq!(n, N * REJECTION_ALLOCATIONS);
    // Forced open: the same.
    breaker(name).unwrap().force_open();
    assert!(sync_ok(&p).is_err());
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert!(matches!(
                sync_ok(&p),
                Err(E::R(ResilienceError::CircuitOpen { .. }))
            ));
        }
    });
    assert_eq!(n, N * REJECTION_ALLOCATIONS);
}

#[test]
fn bulkhead_rejection_allocates_nothing() {
    let p = Resilience::builder("alloc::bulkhead")
        .no_retry()
        .max_concurrent(1)
        .build()
        .unwrap();
    // The inner call runs while the outer holds the only slot.
    let measured = |count: bool| {
        p.call_sync(|| {
            let inner = || p.call_sync(|| Ok::<u32, E>(2));
            let n = if count {
                let (n, ()) = allocations(|| {
                    for _ in 0..N {
                        assert!(matches!(
                            inner(),
                            Err(E::R(ResilienceError::BulkheadFull { .. }))
                        ));
                    }
                });
                n
            } else {
                assert!(matches!(
                    inner(),
                    Err(E::R(ResilienceError::BulkheadFull { .. }))
                ));
                0
            };
            Ok::<u64, E>(n)
        })
    };
    measured(false).unwrap();
    assert_eq!(measured(true), Ok(N * REJECTION_ALLOCATIONS));
    assert_eq!(p.service().bulkhead_available(), Some(1));
}

#[test]
fn rate_limit_rejection_allocates_nothing() {
    let p = Resilience::builder("alloc::rate")
        .no_retry()
        .rate(Rate::new(1, Duration::from_secs(3600)))
        .build()
        .unwrap();
    assert_eq!(sync_ok(&p), Ok(1));
    assert!(matches!(
        sync_ok(&p),
        Err(E::R(ResilienceError::RateLimited { .. }))
    ));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert!(matches!(
                sync_ok(&p),
                Err(E::R(ResilienceError::RateLimited { .. }))
            ));
        }
    });
    assert_eq!(n, N * REJECTION_ALLOCATIONS);
}

#[test]
fn computed_key_lookup_of_an_existing_key_allocates_nothing() {
    static SITE: Site = Site::new(
        SiteName::Fixed("x"),
        Spec {
            breaker: true,
            ..Spec::EMPTY
        },
    );
    let key = String::from("alloc::tenant-42");
    let first = SITE.keyed(&key);
    assert_eq!(first.name(), key);
    drop(first);
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            let s = SITE.keyed(&key);
            assert_eq!(s.name().len(), key.len());
        }
    });
    assert_eq!(n, 0);
}

#[test]
fn the_counter_counts_this_threads_allocations() {
    let (n, b) = allocations(|| std::hint::black_box(Box::new(7u64)));
    assert_eq!((n, *b), (1, 7));
    let (n, s) = allocations(|| std::hint::black_box(String::from("a")) + "bc");
    assert_eq!((n, s.as_str()), (2, "abc"));
    let (n, ()) = allocations(|| {
        std::thread::spawn(|| drop(std::hint::black_box(vec![1u8; 16])))
            .join()
            .unwrap();
    });
    assert!(n >= 1, "spawning allocates on this thread");
    let (n, e) = allocations(|| std::hint::black_box(String::from("x")));
    assert_eq!((n, e.len()), (1, 1));
}

// ---- an async attribute whose policies need no timer (`Service::once_lean`) ----

/// Polls a future until it is ready, with a no-op waker; returns the output and how
/// many polls it took.
fn drive<F: Future>(f: F) -> (F::Output, u32) {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    let mut polls = 1;
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return (v, polls);
        }
        polls += 1;
    }
}

#[resilience_runtime::circuit_breaker(service = "alloc::lean", failure_threshold = 1000)]
#[resilience_runtime::bulkhead(max_concurrent = 4)]
async fn lean_call(pend: bool, fail: bool) -> Result<u32, E> {
    if pend {
        PendingOnce(false).await;
    }
    if fail {
        return Err(E::Boom);
    }
    Ok(1)
}

#[test]
fn a_lean_attribute_call_allocates_nothing_ready_pending_or_failing() {
    assert_eq!(drive(lean_call(false, false)), (Ok(1), 1));
    for (pend, fail, polls) in [(false, false, 1), (true, false, 2), (true, true, 2)] {
        let want = if fail { Err(E::Boom) } else { Ok(1) };
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                assert_eq!(drive(lean_call(pend, fail)), (want.clone(), polls));
            }
        });
        assert_eq!(n, 0, "pend {pend}, fail {fail}");
    }
    let s = resilience_runtime::status("alloc::lean").unwrap();
    assert_eq!((s.successes, s.failures), (2 * N + 1, N));
}

#[resilience_runtime::circuit_breaker(service = tenant, failure_threshold = 1000)]
async fn lean_keyed(tenant: &str, pend: bool) -> Result<u32, E> {
    if pend {
        PendingOnce(false).await;
    }
    Ok(1)
}

#[test]
fn a_computed_keys_lean_call_allocates_nothing_once_the_key_is_registered() {
    // The lookup of a `&str` key and the call, on the swift lane (the policies
    // word's tags) or, pending, in the lean future. Warm: each key registered by a
    // ready call. A pending success counts on the shared counts (computed keys have
    // no own lines) without claiming a line for this thread, whose first claim in
    // the process would allocate (it works out how many lines there are).
    let keys = ["alloc::lean.key.a", "alloc::lean.key.b"];
    for k in keys {
        assert_eq!(drive(lean_keyed(k, false)), (Ok(1), 1));
    }
    for (pend, polls) in [(false, 1), (true, 2)] {
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                for k in keys {
                    assert_eq!(drive(lean_keyed(k, pend)), (Ok(1), polls));
                }
            }
        });
        assert_eq!(n, 0, "pend {pend}");
    }
    for k in keys {
        assert_eq!(resilience_runtime::status(k).unwrap().successes, 2 * N + 1);
    }
}

#[resilience_runtime::circuit_breaker(service = "alloc::lean.open", failure_threshold = 1)]
#[resilience_runtime::bulkhead(max_concurrent = 1)]
async fn lean_guarded() -> Result<u32, E> {
    PendingOnce(false).await;
    Ok(2)
}

#[test]
fn lean_attribute_rejections_allocate_nothing() {
    // The bulkhead is full while one call is parked in its body.
    let mut holder = Box::pin(lean_guarded());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(holder.as_mut().poll(&mut cx).is_pending());
    let full = || {
        matches!(
            drive(lean_guarded()),
            (Err(E::R(ResilienceError::BulkheadFull { .. })), 1)
        )
    };
    assert!(full());
    let (n, ()) = allocations(|| (0..N).for_each(|_| assert!(full())));
    assert_eq!(n, N * REJECTION_ALLOCATIONS);
    assert_eq!(holder.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
    // Forced open.
    breaker("alloc::lean.open").unwrap().force_open();
    let open = || {
        matches!(
            drive(lean_guarded()),
            (Err(E::R(ResilienceError::CircuitOpen { .. })), 1)
        )
    };
    assert!(open());
    let (n, ()) = allocations(|| (0..N).for_each(|_| assert!(open())));
    assert_eq!(n, N * REJECTION_ALLOCATIONS);
}

// ---- calls through `CallFuture` that leave the lane (`Service::retry`, `Policy::call`) ----

/// A counter of body runs, so a test can fail the first attempt of each call.
static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[resilience_runtime::with_resilience(
    service = "alloc::stack",
    timeout = "1s",
    total_timeout = "5s",
    retry(max_attempts = 3, delay = "0ms"),
    circuit_breaker(failure_threshold = 5),
    bulkhead(max_concurrent = 4)
)]
async fn stack_call(pend: bool, fail_first: bool) -> Result<u32, E> {
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if pend {
        PendingOnce(false).await;
    }
    if fail_first && run % 2 == 0 {
        return Err(E::Boom);
    }
    Ok(1)
}

#[test]
fn a_call_that_leaves_the_lane_allocates_nothing_once_warm() {
    // A pending body arms the attempt's timer and the total timer: tokio's, so the
    // calls run inside a runtime's context (entered, not driven: no timer fires).
    let rt = timer_runtime();
    let _in = rt.enter();
    // Pending then ready (the call's state put in place at the first poll), and a
    // failing first attempt retried after a zero backoff (tokio's timer: driven by
    // `block_on`), then both.
    for (pend, fail_first) in [(true, false), (false, true), (true, true)] {
        RUNS.store(0, std::sync::atomic::Ordering::Relaxed);
        // Warm-up: the thread's first call off the lane takes a new block.
        assert_eq!(rt.block_on(stack_call(pend, fail_first)), Ok(1));
        RUNS.store(0, std::sync::atomic::Ordering::Relaxed);
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                assert_eq!(rt.block_on(stack_call(pend, fail_first)), Ok(1));
            }
        });
        assert_eq!(n, 0, "pend {pend}, fail_first {fail_first}");
    }
    // Polled by hand, no runtime driving it: pending once, then ready.
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(drive(stack_call(true, false)), (Ok(1), 2));
        }
    });
    assert_eq!(n, 0);
    // Through the builder, a pending body under a timeout.
    let p = Resilience::builder("alloc::builder.pending")
        .no_retry()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let call = || {
        p.call(|| async {
            PendingOnce(false).await;
            Ok::<u32, E>(1)
        })
    };
    assert_eq!(drive(call()), (Ok(1), 2));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(drive(call()), (Ok(1), 2));
        }
    });
    assert_eq!(n, 0);
    // Every call counted: the failed first attempts as failures and retries.
    let s = resilience_runtime::status("alloc::stack").unwrap();
    assert_eq!(s.successes, 4 * N + 3);
    assert_eq!((s.failures, s.retries), (2 * (N + 1), 2 * (N + 1)));
    assert_eq!(p.service().bulkhead_available(), None);
}

/// The same policies, for a function that lends an argument `&mut` to each attempt
/// (its attempts a loop of `Lend::attempt` in its own future).
#[resilience_runtime::with_resilience(
    service = "alloc::lend",
    timeout = "1s",
    total_timeout = "5s",
    retry(max_attempts = 3, delay = "0ms"),
    circuit_breaker(failure_threshold = 5),
    bulkhead(max_concurrent = 4)
)]
async fn lending_call(runs: &mut u64, pend: bool, fail_first: bool) -> Result<u32, E> {
    *runs += 1;
    if pend {
        PendingOnce(false).await;
    }
    if fail_first && *runs % 2 == 1 {
        return Err(E::Boom);
    }
    Ok(1)
}

#[test]
fn a_lending_call_allocates_nothing_once_warm() {
    let rt = timer_runtime();
    let _in = rt.enter();
    // Done on the lane; pending then ready (its state put in place at the first
    // poll); a failing first attempt retried; both.
    for (pend, fail_first) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut runs = 0;
        assert_eq!(
            rt.block_on(lending_call(&mut runs, pend, fail_first)),
            Ok(1)
        );
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                let mut runs = 0;
                assert_eq!(
                    rt.block_on(lending_call(&mut runs, pend, fail_first)),
                    Ok(1)
                );
                assert_eq!(runs, 1 + u64::from(fail_first));
            }
        });
        assert_eq!(n, 0, "pend {pend}, fail_first {fail_first}");
    }
    let s = resilience_runtime::status("alloc::lend").unwrap();
    assert_eq!(s.successes, 4 * (N + 1));
    assert_eq!((s.failures, s.retries), (2 * (N + 1), 2 * (N + 1)));
}

#[test]
fn a_lean_call_whose_service_needs_a_timer_allocates_nothing_once_warm() {
    use resilience_runtime::__private::Hooks;
    static HOOKS: Hooks<E> = Hooks {
        into_error: Some(<E as From<ResilienceError>>::from),
        ..Hooks::NONE
    };
    // A timeout the attribute did not declare (as live configuration would give
    // it): the lean future runs the call as `Service::once`'s future, boxed in a
    // block of this thread's pool.
    let p = Resilience::builder("alloc::lean.timer")
        .no_retry()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let call = || drive(p.service().once_lean(&HOOKS, || async { Ok::<u32, E>(3) }));
    assert_eq!(call(), (Ok(3), 1));
    let (n, ()) = allocations(|| {
        for _ in 0..N {
            assert_eq!(call(), (Ok(3), 1));
        }
    });
    assert_eq!(n, 0);
    assert_eq!(p.service().status().successes, N + 1);
}

#[test]
fn a_call_that_waits_for_a_bulkhead_slot_allocates_nothing_once_warm() {
    // One slot, a wait of up to a minute: the second call waits (its wake-up and
    // its deadline armed) until the first gives the slot back, then runs.
    let rt = timer_runtime();
    let _in = rt.enter();
    let p = Resilience::builder("alloc::bulkhead.wait")
        .no_retry()
        .max_concurrent(1)
        .bulkhead_max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let holder = || {
        p.call(|| async {
            PendingOnce(false).await;
            Ok::<u32, E>(1)
        })
    };
    let waiter = || p.call(|| async { Ok::<u32, E>(2) });
    let round = || {
        let mut cx = Context::from_waker(Waker::noop());
        let mut first = pin!(holder());
        let mut second = pin!(waiter());
        assert!(first.as_mut().poll(&mut cx).is_pending(), "holds the slot");
        assert!(second.as_mut().poll(&mut cx).is_pending(), "waits for it");
        assert_eq!(first.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
        assert_eq!(second.as_mut().poll(&mut cx), Poll::Ready(Ok(2)));
    };
    round();
    let (n, ()) = allocations(|| (0..N).for_each(|_| round()));
    assert_eq!(n, 0);
    assert_eq!(p.service().bulkhead_available(), Some(1));
    assert_eq!(p.service().status().successes, 2 * (N + 1));
}

// ---- a retry alone (hooks without `into_error`: no policy may refuse) ----

#[resilience_runtime::with_retry(service = "alloc::retry_alone", max_attempts = 3, delay = "0ms")]
async fn retry_alone(runs: &mut u64, fail_first: bool) -> Result<u32, E> {
    *runs += 1;
    if fail_first && *runs == 1 {
        return Err(E::Boom);
    }
    Ok(1)
}

#[resilience_runtime::with_retry(
    service = "alloc::retry_alone.sync",
    max_attempts = 3,
    delay = "0ms"
)]
fn retry_alone_sync(fail_first: bool) -> Result<u32, E> {
    let run = RUNS_SYNC.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if fail_first && run % 2 == 0 {
        return Err(E::Boom);
    }
    Ok(1)
}

static RUNS_SYNC: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[test]
fn a_retry_alone_allocates_nothing_succeeding_or_retried() {
    // The retry's zero backoff is tokio's timer: driven by `block_on`.
    let rt = timer_runtime();
    let _in = rt.enter();
    for fail_first in [false, true] {
        let mut runs = 0;
        assert_eq!(rt.block_on(retry_alone(&mut runs, fail_first)), Ok(1));
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                let mut runs = 0;
                assert_eq!(rt.block_on(retry_alone(&mut runs, fail_first)), Ok(1));
                assert_eq!(runs, 1 + u64::from(fail_first));
            }
        });
        assert_eq!(n, 0, "async, fail_first {fail_first}");
        RUNS_SYNC.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(retry_alone_sync(fail_first), Ok(1));
        RUNS_SYNC.store(0, std::sync::atomic::Ordering::Relaxed);
        let (n, ()) = allocations(|| {
            for _ in 0..N {
                assert_eq!(retry_alone_sync(fail_first), Ok(1));
            }
        });
        assert_eq!(n, 0, "sync, fail_first {fail_first}");
    }
    let s = resilience_runtime::status("alloc::retry_alone").unwrap();
    assert_eq!(
        (s.successes, s.failures, s.retries),
        (2 * (N + 1), N + 1, N + 1)
    );
    let s = resilience_runtime::status("alloc::retry_alone.sync").unwrap();
    assert_eq!(
        (s.successes, s.failures, s.retries),
        (2 * (N + 1), N + 1, N + 1)
    );
}
