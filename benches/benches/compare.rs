//! `resilience` against its peers, one criterion group per item, ours and the peer
//! side by side (`<group>/resilience*` vs `<group>/<peer>`).
//!
//! Every async body here is ready at its first poll, so async calls are driven by a
//! single manual poll with a no-op waker (`poll_once`), the same way for ours and
//! the peer. Where a peer needs a tokio runtime context (tower's `Timeout`,
//! `tokio::time::timeout`), both sides run inside the same entered current-thread
//! runtime.
//!
//! Run: `cargo bench -p resilience-benches -- --warm-up-time 1 --measurement-time 3`,
//! then `python3 scripts/bench-table.py` for the Markdown table.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use resilience_runtime::__private::{attempt_body, Hooks, Site, SiteName, Spec};
use resilience_runtime::{Resilience, ResilienceError};

mod common;
use common::{
    build, governor_direct, keep, ok_sync, poll_once, rate_limited, recloser_open,
    settled_default_clock, tripped, BenchError, Tight,
};

/// A value alone on its cache lines.
#[repr(align(128))]
struct CacheLine<T>(T);

// ---------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------

fn time_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime")
}

fn recloser_closed() -> recloser::Recloser {
    // The default configuration: error rate 0.5 over a ring of 100 calls.
    recloser::Recloser::default()
}

fn failsafe_consecutive() -> failsafe::StateMachine<
    failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::Constant>,
    (),
> {
    let backoff = failsafe::backoff::constant(Duration::from_secs(30));
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(5, backoff))
        .build()
}

// ---------------------------------------------------------------------------------
// The attribute protocol by hand (docs/EXPANSION.md): a `static Site`, constant
// hooks, and what an expansion with a retry runs (one without a retry takes a
// shorter way, measured by the `#[circuit_breaker]` rows), here under a breaker
// alone: `Service::retry`'s future, or, for a function lending an argument `&mut`
// to each attempt, the loop of `Lend::attempt` on the call `Service::lend` starts.
// ---------------------------------------------------------------------------------

const SITE_HOOKS: Hooks<BenchError> = Hooks {
    into_error: Some(<BenchError as From<ResilienceError>>::from),
    ..Hooks::NONE
};

/// `#[circuit_breaker(failure_threshold = 5)] fn f() -> Result<u32, BenchError>`, by hand.
fn site_closed_sync() -> Result<u32, BenchError> {
    static SITE: Site = Site::new(
        SiteName::Fixed("bench.site.closed_sync"),
        Spec {
            breaker: true,
            failure_threshold: Some(5),
            ..Spec::EMPTY
        },
    );
    // A reference to a constant, promoted to a static, as the expansions write it
    // (`&const { Hooks { .. } }`): nothing is copied per call.
    let hooks = &SITE_HOOKS;
    let svc = SITE.service();
    // As a sync expansion with a retry runs it: every attempt through one call
    // taken by value, each attempt's body in `attempt_body`.
    svc.call(hooks).retry_sync(|| attempt_body(ok_sync))
}

/// `#[circuit_breaker(failure_threshold = 5)] async fn f() -> Result<u32, BenchError>`, by hand.
async fn site_closed_async() -> Result<u32, BenchError> {
    static SITE: Site = Site::new(
        SiteName::Fixed("bench.site.closed_async"),
        Spec {
            breaker: true,
            failure_threshold: Some(5),
            ..Spec::EMPTY
        },
    );
    // A reference to a constant, promoted to a static, as the expansions write it
    // (`&const { Hooks { .. } }`): nothing is copied per call.
    let hooks = &SITE_HOOKS;
    let svc = SITE.service();
    // Each attempt's body from a closure, all attempts in one future.
    svc.retry(hooks, move || async move { ok_sync() }).await
}

/// `#[with_resilience(retry(max_attempts = 3), circuit_breaker(failure_threshold = 5))]
/// async fn f(n: &mut u32) -> Result<u32, BenchError>`, by hand: an argument lent `&mut`
/// to each attempt of a retry keeps the attempts in a loop. (Without a retry the
/// function has one attempt, whose body may borrow freely, and the expansion takes
/// the shorter way of `macro_closed_async_lending`.)
async fn site_retry_async_lending(n: &mut u32) -> Result<u32, BenchError> {
    static SITE: Site = Site::new(
        SiteName::Fixed("bench.site.retry_async_lending"),
        Spec {
            breaker: true,
            failure_threshold: Some(5),
            retry: true,
            max_attempts: Some(3),
            ..Spec::EMPTY
        },
    );
    let hooks = &SITE_HOOKS;
    let svc = SITE.service();
    let mut call = svc.lend(hooks);
    loop {
        let n = &mut *n;
        match call.attempt(async move { ok_sync().map(|v| v + *n) }).await {
            ControlFlow::Break(r) => break r,
            ControlFlow::Continue(()) => {}
        }
    }
}

/// `#[with_resilience(retry(max_attempts = 3), timeout = "1s", bulkhead(max_concurrent = 1000))]
/// async fn f() -> Result<u32, BenchError>`, by hand.
async fn site_stack() -> Result<u32, BenchError> {
    static SITE: Site = Site::new(
        SiteName::Fixed("bench.site.stack"),
        Spec {
            breaker: true,
            retry: true,
            max_attempts: Some(3),
            timeout: Some(Duration::from_secs(1)),
            bulkhead: true,
            max_concurrent: Some(1000),
            ..Spec::EMPTY
        },
    );
    // A reference to a constant, promoted to a static, as the expansions write it
    // (`&const { Hooks { .. } }`): nothing is copied per call.
    let hooks = &SITE_HOOKS;
    let svc = SITE.service();
    svc.retry(hooks, move || async move { ok_sync() }).await
}

// ---------------------------------------------------------------------------------
// The attribute macros themselves (used through `resilience_macros` directly until
// the runtime re-exports them).
// ---------------------------------------------------------------------------------

#[resilience_macros::circuit_breaker(service = "bench.macro.closed_sync", failure_threshold = 5)]
fn macro_closed_sync() -> Result<u32, BenchError> {
    ok_sync()
}

#[resilience_macros::circuit_breaker(service = "bench.macro.closed_async", failure_threshold = 5)]
async fn macro_closed_async() -> Result<u32, BenchError> {
    ok_sync()
}

/// A breaker alone around a function that takes an argument `&mut`: one attempt,
/// whose body borrows the argument directly.
#[resilience_macros::circuit_breaker(
    service = "bench.macro.closed_async_lending",
    failure_threshold = 5
)]
async fn macro_closed_async_lending(n: &mut u32) -> Result<u32, BenchError> {
    ok_sync().map(|v| v + *n)
}

/// A retry alone: no policy that can refuse, so the hooks have no `into_error`.
#[resilience_macros::with_retry(service = "bench.macro.retry_sync", max_attempts = 3)]
fn macro_retry_sync() -> Result<u32, BenchError> {
    ok_sync()
}

/// A retry alone, async.
#[resilience_macros::with_retry(service = "bench.macro.retry_async", max_attempts = 3)]
async fn macro_retry_async() -> Result<u32, BenchError> {
    ok_sync()
}

/// A retry alone around a function that lends an argument `&mut` to each attempt:
/// the attempts are a loop of `Lend::attempt` in the function's own future.
#[resilience_macros::with_retry(service = "bench.macro.retry_async_lending", max_attempts = 3)]
async fn macro_retry_async_lending(n: &mut u32) -> Result<u32, BenchError> {
    ok_sync().map(|v| v + *n)
}

/// A bulkhead alone, as `bulkhead/resilience_sync` has it through the builder.
#[resilience_macros::bulkhead(service = "bench.macro.bulkhead_sync", max_concurrent = 1000)]
fn macro_bulkhead_sync() -> Result<u32, BenchError> {
    ok_sync()
}

/// A bulkhead alone, async.
#[resilience_macros::bulkhead(service = "bench.macro.bulkhead_async", max_concurrent = 1000)]
async fn macro_bulkhead_async() -> Result<u32, BenchError> {
    ok_sync()
}

/// The same policies as `stack/resilience`: the preset's breaker, 3 attempts, a 1 s
/// timeout per attempt, a bulkhead of 1000.
#[resilience_macros::with_resilience(
    service = "bench.macro.stack",
    retry(max_attempts = 3),
    timeout = "1s",
    bulkhead(max_concurrent = 1000)
)]
async fn macro_stack() -> Result<u32, BenchError> {
    ok_sync()
}

// ---------------------------------------------------------------------------------
// 11. The floor
// ---------------------------------------------------------------------------------

fn plain_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("plain_call");
    g.bench_function("sync", |b| {
        let f = black_box(ok_sync);
        b.tight(f)
    });
    g.bench_function("async", |b| {
        b.tight(|| poll_once(async { Ok::<u32, BenchError>(black_box(1)) }))
    });
    // What the contract forces on every protected call: `status()` counters must be
    // exact across threads (one atomic read-modify-write per outcome), and a
    // cooldown or a permit reads the clock (API.md, "Time"; the default of this
    // build reads the CPU's counter).
    let counter = std::sync::atomic::AtomicU64::new(0);
    g.bench_function("atomic_fetch_add", |b| {
        b.tight(|| counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    });
    // What any bulkhead shared by threads does at least: one atomic read-modify-write
    // to take a slot and one to give it back (ours: a compare-and-swap and a
    // subtraction). The floor under the bulkhead rows.
    let slots = std::sync::atomic::AtomicUsize::new(0);
    g.bench_function("atomic_take_and_give_back", |b| {
        b.tight(|| {
            let taken = slots.fetch_add(1, std::sync::atomic::Ordering::Acquire);
            slots.fetch_sub(1, std::sync::atomic::Ordering::Release);
            taken
        })
    });
    // The same with the acquire a bulkhead needs to never hold more than its limit:
    // a compare-and-swap under the limit (a load, then the locked instruction, which
    // may fail and go round again), where the row above adds blindly.
    let bounded = std::sync::atomic::AtomicUsize::new(0);
    let limit = black_box(1_000);
    g.bench_function("atomic_bounded_take_and_give_back", |b| {
        b.tight(|| {
            let mut cur = bounded.load(std::sync::atomic::Ordering::Relaxed);
            while cur < limit {
                match bounded.compare_exchange_weak(
                    cur,
                    cur + 1,
                    std::sync::atomic::Ordering::Acquire,
                    std::sync::atomic::Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
            bounded.fetch_sub(1, std::sync::atomic::Ordering::Release);
            cur
        })
    });
    // What the bulkhead does since it gives slots back on the thread's own line:
    // the compare-and-swap under the limit (slots taken less slots given back),
    // then a plain load and store of the count given back, a compiler fence and a
    // load of the waiters' count (the asymmetric fence's cheap side).
    let taken = std::sync::atomic::AtomicU64::new(0);
    let given = CacheLine(std::sync::atomic::AtomicU64::new(0));
    let waiters = std::sync::atomic::AtomicU32::new(0);
    g.bench_function("atomic_bounded_take_plain_give_back", |b| {
        b.tight(|| {
            use std::sync::atomic::Ordering::{Relaxed, Release, SeqCst};
            let back = given.0.load(Relaxed);
            let mut cur = taken.load(Relaxed);
            while cur - back < limit as u64 {
                match taken.compare_exchange_weak(cur, cur + 1, SeqCst, Relaxed) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
            given.0.store(back + 1, Release);
            std::sync::atomic::compiler_fence(SeqCst);
            waiters.load(Relaxed) + cur as u32
        })
    });
    g.bench_function("tokio_instant_now", |b| b.tight(tokio::time::Instant::now));
    // The CPU's counter alone: what the default clock of this build reads for a
    // cooldown or a permit, and what governor's clock reads for `check()`.
    #[cfg(target_arch = "x86_64")]
    g.bench_function("cpu_counter", |b| {
        // SAFETY: `rdtsc` is part of x86_64.
        b.tight(|| unsafe { std::arch::x86_64::_rdtsc() })
    });
    // The least an exact rate-limit permit can be (see `common::permit`).
    #[cfg(target_arch = "x86_64")]
    g.bench_function("cpu_counter_permit", |b| b.tight(common::permit::permit));
    g.finish();
}

// ---------------------------------------------------------------------------------
// 1. Closed breaker, successful call
// ---------------------------------------------------------------------------------

fn closed_breaker_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_breaker_sync");

    let consecutive = build(
        Resilience::builder("bench.closed_sync.consecutive")
            .no_retry()
            .failure_threshold(5),
    );
    g.bench_function("resilience_consecutive", |b| {
        b.tight(|| consecutive.call_sync(ok_sync))
    });

    let rate = build(Resilience::builder("bench.closed_sync.rate").no_retry());
    g.bench_function("resilience_rate", |b| b.tight(|| rate.call_sync(ok_sync)));

    g.bench_function("resilience_site", |b| b.tight(site_closed_sync));
    g.bench_function("resilience_macro", |b| b.tight(macro_closed_sync));

    let rc = recloser_closed();
    g.bench_function("recloser", |b| b.tight(|| rc.call(ok_sync)));

    let fs = failsafe_consecutive();
    g.bench_function("failsafe_consecutive", |b| {
        b.tight(|| failsafe::CircuitBreaker::call(&fs, ok_sync))
    });

    let fsd = failsafe::Config::new().build();
    g.bench_function("failsafe_default", |b| {
        b.tight(|| failsafe::CircuitBreaker::call(&fsd, ok_sync))
    });
    g.finish();
}

fn closed_breaker_async(c: &mut Criterion) {
    let mut g = c.benchmark_group("closed_breaker_async");

    let consecutive = build(
        Resilience::builder("bench.closed_async.consecutive")
            .no_retry()
            .failure_threshold(5),
    );
    g.bench_function("resilience_consecutive", |b| {
        b.tight(|| poll_once(consecutive.call(|| async { ok_sync() })))
    });

    let rate = build(Resilience::builder("bench.closed_async.rate").no_retry());
    g.bench_function("resilience_rate", |b| {
        b.tight(|| poll_once(rate.call(|| async { ok_sync() })))
    });

    g.bench_function("resilience_site", |b| {
        b.tight(|| poll_once(site_closed_async()))
    });
    let mut lent = 0u32;
    g.bench_function("resilience_site_retry_lending", |b| {
        b.tight(|| poll_once(site_retry_async_lending(&mut lent)))
    });
    g.bench_function("resilience_macro", |b| {
        b.tight(|| poll_once(macro_closed_async()))
    });
    g.bench_function("resilience_macro_lending", |b| {
        b.tight(|| poll_once(macro_closed_async_lending(&mut lent)))
    });

    let rc = recloser::AsyncRecloser::from(recloser_closed());
    g.bench_function("recloser", |b| {
        b.tight(|| poll_once(rc.call(async { ok_sync() })))
    });

    let fs = failsafe_consecutive();
    g.bench_function("failsafe_consecutive", |b| {
        b.tight(|| {
            poll_once(failsafe::futures::CircuitBreaker::call(&fs, async {
                ok_sync()
            }))
        })
    });

    let fsd = failsafe::Config::new().build();
    g.bench_function("failsafe_default", |b| {
        b.tight(|| {
            poll_once(failsafe::futures::CircuitBreaker::call(&fsd, async {
                ok_sync()
            }))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------
// 2. Open-state rejection
// ---------------------------------------------------------------------------------

fn open_rejection(c: &mut Criterion) {
    eprintln!("the default clock: {:?}", settled_default_clock());
    let mut g = c.benchmark_group("open_rejection");

    let forced = build(
        Resilience::builder("bench.open.forced")
            .no_retry()
            .failure_threshold(1),
    );
    resilience_runtime::breaker("bench.open.forced")
        .expect("registered")
        .force_open();
    assert!(
        forced.call_sync(ok_sync).is_err(),
        "forced open must reject"
    );
    g.bench_function("resilience", |b| b.tight(|| forced.call_sync(ok_sync)));

    let tripped = tripped("bench.open.tripped");
    g.bench_function("resilience_tripped", |b| {
        b.tight(|| tripped.call_sync(ok_sync))
    });

    let rc = recloser_open();
    g.bench_function("recloser", |b| b.tight(|| rc.call(ok_sync)));
    g.finish();
}

// ---------------------------------------------------------------------------------
// 3. Timeout around a body ready at its first poll
// ---------------------------------------------------------------------------------

fn timeout(c: &mut Criterion) {
    let mut g = c.benchmark_group("timeout");
    let rt = time_rt();
    let _entered = rt.enter();

    let ours = build(
        Resilience::builder("bench.timeout")
            .no_circuit_breaker()
            .no_retry()
            .timeout(Duration::from_secs(1)),
    );
    g.bench_function("resilience", |b| {
        b.tight(|| poll_once(ours.call(|| async { ok_sync() })))
    });

    g.bench_function("tokio", |b| {
        b.tight(|| {
            poll_once(tokio::time::timeout(Duration::from_secs(1), async {
                ok_sync()
            }))
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------
// 4. Retry, success at the first attempt
// ---------------------------------------------------------------------------------

fn retry(c: &mut Criterion) {
    use backon::{BlockingRetryable, ExponentialBuilder, Retryable};

    let ours = build(
        Resilience::builder("bench.retry")
            .no_circuit_breaker()
            .max_attempts(3),
    );

    let mut g = c.benchmark_group("retry_sync");
    g.bench_function("resilience", |b| b.tight(|| ours.call_sync(ok_sync)));
    g.bench_function("resilience_macro", |b| b.tight(macro_retry_sync));
    g.bench_function("backon", |b| {
        b.tight(|| ok_sync.retry(ExponentialBuilder::default()).call())
    });
    g.finish();

    let mut g = c.benchmark_group("retry_async");
    g.bench_function("resilience", |b| {
        b.tight(|| poll_once(ours.call(|| async { ok_sync() })))
    });
    g.bench_function("resilience_macro", |b| {
        b.tight(|| poll_once(macro_retry_async()))
    });
    let mut lent = 0u32;
    g.bench_function("resilience_macro_lending", |b| {
        b.tight(|| poll_once(macro_retry_async_lending(&mut lent)))
    });
    g.bench_function("backon", |b| {
        b.tight(|| poll_once((|| async { ok_sync() }).retry(ExponentialBuilder::default())))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------
// 5. Bulkhead acquire + release
// ---------------------------------------------------------------------------------

fn bulkhead(c: &mut Criterion) {
    use tower::{Service as _, ServiceExt as _};

    let mut g = c.benchmark_group("bulkhead");
    let ours = build(
        Resilience::builder("bench.bulkhead")
            .no_circuit_breaker()
            .no_retry()
            .max_concurrent(1000),
    );
    g.bench_function("resilience", |b| {
        b.tight(|| poll_once(ours.call(|| async { ok_sync() })))
    });
    g.bench_function("resilience_sync", |b| b.tight(|| ours.call_sync(ok_sync)));
    g.bench_function("resilience_macro", |b| {
        b.tight(|| poll_once(macro_bulkhead_async()))
    });
    g.bench_function("resilience_macro_sync", |b| b.tight(macro_bulkhead_sync));

    let mut svc = tower::limit::ConcurrencyLimit::new(
        tower::service_fn(|x: u32| std::future::ready(Ok::<u32, BenchError>(x))),
        1000,
    );
    g.bench_function("tower_concurrency_limit", |b| {
        b.tight(|| {
            let svc = &mut svc;
            poll_once(async move {
                svc.ready().await?;
                svc.call(black_box(1)).await
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------
// 6. Rate limiter permit
// ---------------------------------------------------------------------------------

fn rate_limiter(c: &mut Criterion) {
    eprintln!("the default clock: {:?}", settled_default_clock());
    let mut g = c.benchmark_group("rate_limiter");
    let ours = rate_limited("bench.rate_limit");
    g.bench_function("resilience", |b| b.tight(|| ours.call_sync(ok_sync)));

    let gov = governor_direct();
    g.bench_function("governor", |b| b.tight(|| gov.check()));
    g.finish();
}

// ---------------------------------------------------------------------------------
// 7. Computed service name with 100,000 live keys
// ---------------------------------------------------------------------------------

const KEYS: usize = 100_000;

fn keyed(c: &mut Criterion) {
    static SITE: Site = Site::new(
        SiteName::Fixed("bench.keyed"),
        Spec {
            breaker: true,
            ..Spec::EMPTY
        },
    );
    static HOOKS: Hooks<BenchError> = Hooks::DEFAULT;

    fn call_keyed(key: &str) -> Result<u32, BenchError> {
        let svc = SITE.keyed(key);
        let mut call = svc.call(&HOOKS);
        loop {
            if let std::ops::ControlFlow::Break(r) = call.attempt_sync(ok_sync) {
                return r;
            }
        }
    }

    // The same call as a `#[with_resilience]` async fn with a computed name and no
    // retry makes it (`once_lean`), polled once.
    fn call_keyed_async(key: &str) -> Result<u32, BenchError> {
        let svc = SITE.keyed(key);
        poll_once(svc.once_lean(&HOOKS, || async { ok_sync() }))
    }

    // Criterion calls a bench closure once per sample and only when the filter selects
    // it: the 100,000 keys are made on the first call, so a filtered run (callgrind)
    // does not pay for the other side's setup.
    fn keys() -> &'static Vec<String> {
        static KEYS_MADE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        KEYS_MADE.get_or_init(|| {
            (0..KEYS)
                .map(|i| format!("tenant-{i:06}"))
                .collect::<Vec<_>>()
        })
    }
    // The same keys in a shuffled order (a fixed seed): traffic from many tenants
    // does not arrive in the order their keys were first seen, and a run in that
    // order lets the CPU's stride prefetchers follow objects allocated one key
    // after another.
    fn shuffled() -> &'static Vec<String> {
        static SHUFFLED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        SHUFFLED.get_or_init(|| {
            let mut v = keys().clone();
            common::shuffle(&mut v);
            v
        })
    }

    // Governor's map is made before our keys, whichever side runs first, and sized
    // for its keys up front (`common::governor_keyed`): made after them, its small
    // allocations (the keys' strings) fill the gaps our keys' objects leave in the
    // heap, spread over their 100 MB, which slowed governor's calls by 30-60% in the
    // same process once a key's service lived in the map's entry (its rows alone:
    // 145 and 315 ns; after ours: 242 and 423); growing, it would free tables that
    // our keys then fill. Made first and sized, each side's memory is as it would
    // be in a process of its own.
    let gov = std::cell::OnceCell::new();
    let gov = || gov.get_or_init(|| common::governor_keyed(keys()));
    let mut g = c.benchmark_group("keyed_100k");
    let mut ours_ready = false;
    let ready = |ours_ready: &mut bool| {
        if !*ours_ready {
            gov();
            resilience_runtime::set_key_capacity(200_000);
            for k in keys() {
                call_keyed(k).expect("closed");
            }
            assert!(resilience_runtime::key_count() >= KEYS, "every key is live");
            *ours_ready = true;
        }
    };
    for (name, order) in [
        ("resilience", keys as fn() -> &'static Vec<String>),
        ("resilience_shuffled", shuffled),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            ready(&mut ours_ready);
            let keys = order();
            b.tight(|| {
                i = if i + 1 == KEYS { 0 } else { i + 1 };
                call_keyed(&keys[i])
            });
            assert!(
                resilience_runtime::key_count() >= KEYS,
                "no key was evicted"
            );
        });
    }

    {
        let mut i = 0usize;
        g.bench_function("resilience_async_shuffled", |b| {
            ready(&mut ours_ready);
            let keys = shuffled();
            b.tight(|| {
                i = if i + 1 == KEYS { 0 } else { i + 1 };
                call_keyed_async(&keys[i])
            });
            assert!(
                resilience_runtime::key_count() >= KEYS,
                "no key was evicted"
            );
        });
    }

    // The floor under the shuffled rows (`common::floor`): the key hashed, an
    // index word, the entry's line, where one atomic add stands for what a call
    // counts there. No key is compared and nothing else is read.
    {
        let floor = std::cell::OnceCell::new();
        let mut i = 0usize;
        g.bench_function("floor_shuffled", |b| {
            let f = floor.get_or_init(|| common::floor::Floor::<64>::new(keys()));
            let keys = shuffled();
            b.tight(|| {
                i = if i + 1 == KEYS { 0 } else { i + 1 };
                f.find(&keys[i], |_| true).map_or(0, |l| {
                    l.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                })
            })
        });
    }

    for (name, order) in [
        ("governor", keys as fn() -> &'static Vec<String>),
        ("governor_shuffled", shuffled),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            let gov = gov();
            let keys = order();
            b.tight(|| {
                i = if i + 1 == KEYS { 0 } else { i + 1 };
                gov.check_key(&keys[i])
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------
// 8. Two threads on one shared breaker
// ---------------------------------------------------------------------------------

/// Runs `iters` calls in all, split over `threads` threads that start together; the
/// time is the wall time from the start signal to the last join, so the reported
/// time per iteration is the wall time per call (lower = more total throughput).
fn run_threads<S, F>(iters: u64, threads: u64, shared: &Arc<S>, call: F) -> Duration
where
    S: Send + Sync + 'static,
    F: Fn(&S) + Send + Sync + Copy + 'static,
{
    let per_thread = iters.div_ceil(threads);
    let start = Arc::new(Barrier::new(threads as usize + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = Arc::clone(shared);
            let start = Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                for _ in 0..per_thread {
                    call(&s);
                }
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    for h in handles {
        h.join().expect("bench thread");
    }
    t0.elapsed()
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    let ours = Arc::new(build(
        Resilience::builder("bench.threads.consecutive")
            .no_retry()
            .failure_threshold(5),
    ));
    g.bench_function("resilience_1t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 1, &ours, |p| {
                keep(p.call_sync(ok_sync));
            })
        })
    });
    g.bench_function("resilience_2t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 2, &ours, |p| {
                keep(p.call_sync(ok_sync));
            })
        })
    });

    let rate = Arc::new(build(Resilience::builder("bench.threads.rate").no_retry()));
    g.bench_function("resilience_rate_2t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 2, &rate, |p| {
                keep(p.call_sync(ok_sync));
            })
        })
    });

    let rc = Arc::new(recloser_closed());
    g.bench_function("recloser_1t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 1, &rc, |r| {
                keep(r.call(ok_sync));
            })
        })
    });
    g.bench_function("recloser_2t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 2, &rc, |r| {
                keep(r.call(ok_sync));
            })
        })
    });
    g.finish();
}

/// One call in `FAIL_EVERY` fails: a count window of 20 then always holds a
/// failure, so every success is written into it (a full window of successes
/// writes nothing; the closed-breaker rows above measure that).
const FAIL_EVERY: u32 = 20;

/// The body of the rows with failures: fails on every `FAIL_EVERY`-th call, by a
/// counter of the caller's thread.
fn sometimes_failing(n: &std::cell::Cell<u32>) -> Result<u32, BenchError> {
    let i = n.get() + 1;
    n.set(if i == FAIL_EVERY { 0 } else { i });
    if i == FAIL_EVERY {
        Err(BenchError)
    } else {
        ok_sync()
    }
}

thread_local! {
    static CALLS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// A rate-mode breaker (window of 20 calls, opens at half of them failed) whose
/// calls fail one in 20: no target; ours against recloser's of the same settings,
/// on one thread and on two sharing the breaker.
fn breaker_with_failures(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_with_failures");
    let ours = Arc::new(build(
        Resilience::builder("bench.with_failures")
            .no_retry()
            .failure_rate(0.5)
            .window_calls(20),
    ));
    let rc = Arc::new(
        recloser::Recloser::custom()
            .error_rate(0.5)
            .closed_len(20)
            .build(),
    );
    let n = std::cell::Cell::new(0);
    g.bench_function("resilience", |b| {
        b.tight(|| ours.call_sync(|| sometimes_failing(&n)))
    });
    g.bench_function("recloser", |b| {
        b.tight(|| rc.call(|| sometimes_failing(&n)))
    });
    g.bench_function("resilience_2t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 2, &ours, |p| {
                keep(CALLS.with(|n| p.call_sync(|| sometimes_failing(n))));
            })
        })
    });
    g.bench_function("recloser_2t", |b| {
        b.iter_custom(|iters| {
            run_threads(iters, 2, &rc, |r| {
                keep(CALLS.with(|n| r.call(|| sometimes_failing(n))));
            })
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------
// 9. The whole stack: tower vs ours
// ---------------------------------------------------------------------------------

/// Retry up to `0` more times on any error, no backoff (tower's documented example).
#[derive(Clone)]
struct Attempts(usize);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _req: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(std::future::ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn stack(c: &mut Criterion) {
    use tower::{Service as _, ServiceExt as _};

    let mut g = c.benchmark_group("stack");
    let rt = time_rt();
    let _entered = rt.enter();

    // Ours: breaker (default rate mode) -> retry (3 attempts) -> bulkhead -> timeout.
    let ours = build(
        Resilience::builder("bench.stack")
            .max_attempts(3)
            .max_concurrent(1000)
            .timeout(Duration::from_secs(1)),
    );
    g.bench_function("resilience", |b| {
        b.tight(|| poll_once(ours.call(|| async { ok_sync() })))
    });
    g.bench_function("resilience_site", |b| b.tight(|| poll_once(site_stack())));
    g.bench_function("macro", |b| b.tight(|| poll_once(macro_stack())));

    // tower: retry (2 retries) -> concurrency limit -> timeout -> service.
    let mut svc = tower::ServiceBuilder::new()
        .retry(Attempts(2))
        .concurrency_limit(1000)
        .timeout(Duration::from_secs(1))
        .service_fn(|x: u32| std::future::ready(Ok::<u32, BenchError>(x)));
    g.bench_function("tower", |b| {
        b.tight(|| {
            let svc = &mut svc;
            poll_once(async move {
                svc.ready().await?;
                svc.call(black_box(1)).await
            })
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    plain_call,
    closed_breaker_sync,
    closed_breaker_async,
    open_rejection,
    timeout,
    retry,
    bulkhead,
    rate_limiter,
    keyed,
    two_threads,
    breaker_with_failures,
    stack
);
criterion_main!(benches);
