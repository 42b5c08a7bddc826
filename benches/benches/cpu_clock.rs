//! The items whose cost is a clock reading, with the process on the CPU's clock
//! (`set_clock_source(ClockSource::Cpu)`, chosen before the first call), against
//! the same peers as in `compare.rs`: governor reads the time-stamp counter too
//! (through `quanta`), recloser the system's monotonic clock.
//!
//! The source is fixed per process, so these rows have a bench target of their
//! own; `compare.rs` measures the same items on tokio's clock (the default).
//!
//! Run: `cargo bench -p resilience-benches -- --warm-up-time 1
//! --measurement-time 3`, then `python3 scripts/bench-table.py`.

use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use resilience_runtime::{ClockSource, Rate, Resilience};

mod common;
use common::{build, ok_sync, BenchError, Tight};

fn cpu_clock() {
    resilience_runtime::set_clock_source(ClockSource::Cpu)
        .expect("the CPU clock is chosen before any call reads the time");
}

fn rate_limiter(c: &mut Criterion) {
    cpu_clock();
    const PER_SECOND: u32 = 1_000_000_000; // one permit per nanosecond, burst 1e9
    let mut g = c.benchmark_group("rate_limiter_cpu_clock");
    let ours = build(
        Resilience::builder("bench.cpu.rate_limit")
            .no_circuit_breaker()
            .no_retry()
            .rate(Rate::new(PER_SECOND, Duration::from_secs(1))),
    );
    assert!(ours.call_sync(ok_sync).is_ok(), "a permit is due");
    g.bench_function("resilience", |b| b.tight(|| ours.call_sync(ok_sync)));

    let gov = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(PER_SECOND).unwrap(),
    ));
    g.bench_function("governor", |b| b.tight(|| gov.check()));
    g.finish();
}

fn open_rejection(c: &mut Criterion) {
    cpu_clock();
    let mut g = c.benchmark_group("open_rejection_cpu_clock");
    // A breaker that really tripped (Open with a cooldown): the rejection reads the
    // clock to know the cooldown is not over and to say when it will be.
    let tripped = build(
        Resilience::builder("bench.cpu.open.tripped")
            .no_retry()
            .failure_threshold(1)
            .cooldown(Duration::from_secs(3600)),
    );
    let _ = tripped.call_sync(|| Err::<u32, _>(BenchError));
    assert!(
        tripped.call_sync(ok_sync).is_err(),
        "tripped breaker must reject"
    );
    g.bench_function("resilience_tripped", |b| {
        b.tight(|| tripped.call_sync(ok_sync))
    });

    let rc = recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(2)
        .open_wait(Duration::from_secs(3600))
        .build();
    for _ in 0..4 {
        let _ = rc.call(|| Err::<u32, _>(BenchError));
    }
    assert!(
        matches!(rc.call(ok_sync), Err(recloser::Error::Rejected)),
        "recloser must be open"
    );
    g.bench_function("recloser", |b| b.tight(|| rc.call(ok_sync)));
    g.finish();
}

criterion_group!(benches, rate_limiter, open_rejection);
criterion_main!(benches);
