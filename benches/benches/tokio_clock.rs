//! The items whose cost is a clock reading, with the process on tokio's clock
//! (`set_clock_source(ClockSource::Tokio)`, chosen before the first call), against
//! the same peers as in `compare.rs`: governor reads the time-stamp counter
//! (through `quanta`), recloser the system's monotonic clock.
//!
//! tokio's clock is the default of a build whose tokio has `test-util` (so its
//! clock can be paused) or of a CPU whose counter does not keep time, and any
//! process may choose it. `compare.rs` measures the same items on the default of
//! this crate's build, the CPU's counter. The source is fixed per process, so these
//! rows have a bench target of their own.
//!
//! Run: `cargo bench -p resilience-benches -- --warm-up-time 1
//! --measurement-time 3`, then `python3 scripts/bench-table.py`.

use criterion::{criterion_group, criterion_main, Criterion};
use resilience_runtime::ClockSource;

mod common;
use common::{governor_direct, ok_sync, rate_limited, recloser_open, tripped, Tight};

fn tokio_clock() {
    resilience_runtime::set_clock_source(ClockSource::Tokio)
        .expect("tokio's clock is chosen before any call reads the time");
}

fn rate_limiter(c: &mut Criterion) {
    tokio_clock();
    let mut g = c.benchmark_group("rate_limiter_tokio_clock");
    let ours = rate_limited("bench.tokio.rate_limit");
    assert!(ours.call_sync(ok_sync).is_ok(), "a permit is due");
    g.bench_function("resilience", |b| b.tight(|| ours.call_sync(ok_sync)));

    let gov = governor_direct();
    g.bench_function("governor", |b| b.tight(|| gov.check()));
    g.finish();
}

fn open_rejection(c: &mut Criterion) {
    tokio_clock();
    let mut g = c.benchmark_group("open_rejection_tokio_clock");
    let tripped = tripped("bench.tokio.open.tripped");
    g.bench_function("resilience_tripped", |b| {
        b.tight(|| tripped.call_sync(ok_sync))
    });

    let rc = recloser_open();
    g.bench_function("recloser", |b| b.tight(|| rc.call(ok_sync)));
    g.finish();
}

criterion_group!(benches, rate_limiter, open_rejection);
criterion_main!(benches);
