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

use criterion::{criterion_group, criterion_main, Criterion};
use resilience_runtime::ClockSource;

mod common;
use common::{governor_direct, ok_sync, rate_limited, recloser_open, tripped, Tight};

fn cpu_clock() {
    resilience_runtime::set_clock_source(ClockSource::Cpu)
        .expect("the CPU clock is chosen before any call reads the time");
}

fn rate_limiter(c: &mut Criterion) {
    cpu_clock();
    let mut g = c.benchmark_group("rate_limiter_cpu_clock");
    let ours = rate_limited("bench.cpu.rate_limit");
    assert!(ours.call_sync(ok_sync).is_ok(), "a permit is due");
    g.bench_function("resilience", |b| b.tight(|| ours.call_sync(ok_sync)));

    let gov = governor_direct();
    g.bench_function("governor", |b| b.tight(|| gov.check()));
    g.finish();
}

fn open_rejection(c: &mut Criterion) {
    cpu_clock();
    let mut g = c.benchmark_group("open_rejection_cpu_clock");
    let tripped = tripped("bench.cpu.open.tripped");
    g.bench_function("resilience_tripped", |b| {
        b.tight(|| tripped.call_sync(ok_sync))
    });

    let rc = recloser_open();
    g.bench_function("recloser", |b| b.tight(|| rc.call(ok_sync)));
    g.finish();
}

criterion_group!(benches, rate_limiter, open_rejection);
criterion_main!(benches);
