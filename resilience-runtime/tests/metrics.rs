//! The `metrics` feature: every series named in `src/metrics.rs`, with exact values,
//! read from a capturing recorder installed globally once for this test binary.
//!
//! Run: `cargo test -p resilience-runtime --features metrics --test metrics`
//!
//! Each test uses its own service names (the registry is global). Values are read
//! without draining them (unlike `metrics_util::debugging::Snapshotter`, whose
//! snapshot resets every series and would race between tests running in parallel).
//! The one test that binds handles to a thread-local recorder (`rebind`) takes the
//! gate exclusively, so no other test records meanwhile.

#![cfg(feature = "metrics")]

use std::collections::HashMap;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_util::registry::{AtomicStorage, Registry};
use resilience_runtime::metrics::{
    describe, rebind, refresh, CALLS_TOTAL, CALL_DURATION_SECONDS, CIRCUIT_STATE,
    CIRCUIT_TRANSITIONS_TOTAL, FAILURE_RATE, FALLBACKS_TOTAL, NOT_PERMITTED_CALLS_TOTAL,
    RATE_LIMITER_WAITS_TOTAL, RATE_LIMITER_WAIT_SECONDS, RETRIES_TOTAL, SLOW_CALLS_TOTAL,
    SLOW_CALL_RATE, TIMEOUTS_TOTAL,
};
use resilience_runtime::{
    apply_config_str, breaker, Format, Hooks, Rate, Resilience, ResilienceError,
};
use tokio::sync::{RwLock, RwLockReadGuard};

/// Captures every series; reads never reset them.
struct Capture {
    registry: Registry<Key, AtomicStorage>,
    units: Mutex<HashMap<String, (Option<Unit>, String)>>,
}

impl Capture {
    fn new() -> Self {
        Self {
            registry: Registry::atomic(),
            units: Mutex::new(HashMap::new()),
        }
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.units
            .lock()
            .unwrap()
            .insert(key.as_str().to_owned(), (unit, description.into_owned()));
    }
}

impl Recorder for Capture {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description)
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.registry.get_or_create_counter(key, Arc::clone))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.registry.get_or_create_gauge(key, Arc::clone))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.registry.get_or_create_histogram(key, Arc::clone))
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(k.to_string(), v.to_string()))
        .collect();
    Key::from_parts(name.to_owned(), labels)
}

impl Capture {
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.registry
            .get_counter(&key(name, labels))
            .map(|c| c.load(SeqCst))
    }
    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.registry
            .get_gauge(&key(name, labels))
            .map(|g| f64::from_bits(g.load(SeqCst)))
    }
    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Vec<f64>> {
        self.registry
            .get_histogram(&key(name, labels))
            .map(|h| h.data())
    }
}

/// The global recorder of this binary.
fn capture() -> &'static Capture {
    static C: OnceLock<Arc<Capture>> = OnceLock::new();
    C.get_or_init(|| {
        let c = Arc::new(Capture::new());
        metrics::set_global_recorder(c.clone()).expect("no other recorder in this binary");
        // Services registered by tests that started first are bound to it too.
        rebind();
        c
    })
}

/// Tests share the recorder; the `rebind` test needs to be alone. (An async
/// lock: async tests hold it across their awaits.)
static GATE: RwLock<()> = RwLock::const_new(());

async fn shared() -> (RwLockReadGuard<'static, ()>, &'static Capture) {
    let c = capture();
    (GATE.read().await, c)
}

/// [`shared`] for the tests that run outside a runtime.
fn shared_sync() -> (RwLockReadGuard<'static, ()>, &'static Capture) {
    let c = capture();
    (GATE.blocking_read(), c)
}

#[derive(Debug, Clone, PartialEq)]
enum E {
    Boom,
    Ignored,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn is_ignored(e: &E) -> bool {
    *e == E::Ignored
}

const IGNORING: Hooks<E> = Hooks {
    ignore_if: Some(is_ignored),
    ..Hooks::DEFAULT
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn calls(c: &Capture, svc: &str) -> [Option<u64>; 3] {
    ["successful", "failed", "ignored"]
        .map(|k| c.counter(CALLS_TOTAL, &[("service", svc), ("kind", k)]))
}

fn not_permitted(c: &Capture, svc: &str) -> [Option<u64>; 3] {
    ["circuit_breaker", "bulkhead", "rate_limiter"]
        .map(|by| c.counter(NOT_PERMITTED_CALLS_TOTAL, &[("service", svc), ("by", by)]))
}

fn state_gauges(c: &Capture, svc: &str) -> [Option<f64>; 5] {
    ["closed", "open", "half_open", "forced_open", "disabled"]
        .map(|s| c.gauge(CIRCUIT_STATE, &[("service", svc), ("state", s)]))
}

fn transitions(c: &Capture, svc: &str, from: &str, to: &str) -> Option<u64> {
    c.counter(
        CIRCUIT_TRANSITIONS_TOTAL,
        &[("service", svc), ("from", from), ("to", to)],
    )
}

#[test]
fn outcomes_are_counted_by_kind_and_every_counter_starts_at_zero() {
    let (_g, c) = shared_sync();
    let svc = "m::outcomes";
    let p = Resilience::builder(svc)
        .no_retry()
        .no_circuit_breaker()
        .build()
        .unwrap();
    for out in [
        Ok(()),
        Err(E::Boom),
        Ok(()),
        Err(E::Ignored),
        Ok(()),
        Err(E::Boom),
    ] {
        let _ = p.call_sync_with(&IGNORING, || out.clone());
    }
    assert_eq!(calls(c, svc), [Some(3), Some(2), Some(1)]);
    // Made with the first event, at 0: a first increment is visible to `rate()`.
    assert_eq!(not_permitted(c, svc), [Some(0), Some(0), Some(0)]);
    for (name, labels) in [
        (SLOW_CALLS_TOTAL, vec![("service", svc)]),
        (RETRIES_TOTAL, vec![("service", svc)]),
        (FALLBACKS_TOTAL, vec![("service", svc)]),
        (RATE_LIMITER_WAITS_TOTAL, vec![("service", svc)]),
        (TIMEOUTS_TOTAL, vec![("service", svc), ("kind", "attempt")]),
        (TIMEOUTS_TOTAL, vec![("service", svc), ("kind", "total")]),
    ] {
        assert_eq!(c.counter(name, &labels), Some(0), "{name} {labels:?}");
    }
    // The service does not time its calls: no clock read, no histogram.
    for kind in ["successful", "failed"] {
        assert_eq!(
            c.histogram(CALL_DURATION_SECONDS, &[("service", svc), ("kind", kind)]),
            None
        );
    }
    // No breaker: no state series.
    refresh();
    assert_eq!(state_gauges(c, svc), [None; 5]);
    // The status counters agree.
    let s = p.service().status();
    assert_eq!((s.successes, s.failures, s.ignored), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn breaker_rejections_transitions_and_state_gauge() {
    let (_g, c) = shared().await;
    let svc = "m::breaker";
    let p = Resilience::builder(svc)
        .failure_threshold(2)
        .cooldown(Duration::from_secs(10))
        .no_retry()
        .build()
        .unwrap();
    refresh();
    assert_eq!(
        state_gauges(c, svc),
        [Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(0.0)],
        "closed, set by refresh before any transition"
    );
    assert_eq!(
        c.gauge(FAILURE_RATE, &[("service", svc)]),
        None,
        "consecutive mode has no rate"
    );

    for _ in 0..2 {
        assert_eq!(
            p.call(|| async { Err::<(), _>(E::Boom) }).await,
            Err(E::Boom)
        );
    }
    for _ in 0..3 {
        let r = p.call(|| async { Ok::<_, E>(()) }).await;
        assert!(
            matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))),
            "{r:?}"
        );
    }
    assert_eq!(calls(c, svc), [Some(0), Some(2), Some(0)]);
    assert_eq!(not_permitted(c, svc), [Some(3), Some(0), Some(0)]);
    assert_eq!(transitions(c, svc, "closed", "open"), Some(1));
    assert_eq!(
        state_gauges(c, svc),
        [Some(0.0), Some(1.0), Some(0.0), Some(0.0), Some(0.0)],
        "open, set by the transition itself"
    );

    // Cooldown over: the next call is a probe, and its success closes the breaker.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(p.call(|| async { Ok::<_, E>(()) }).await, Ok(()));
    assert_eq!(transitions(c, svc, "open", "half_open"), Some(1));
    assert_eq!(transitions(c, svc, "half_open", "closed"), Some(1));
    assert_eq!(state_gauges(c, svc)[0], Some(1.0));

    let h = breaker(svc).unwrap();
    h.force_open();
    assert_eq!(transitions(c, svc, "closed", "forced_open"), Some(1));
    assert_eq!(
        state_gauges(c, svc),
        [Some(0.0), Some(0.0), Some(0.0), Some(1.0), Some(0.0)]
    );
    let r = p.call(|| async { Ok::<_, E>(()) }).await;
    assert!(matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))));
    assert_eq!(not_permitted(c, svc)[0], Some(4));
    h.reset();
    assert_eq!(transitions(c, svc, "forced_open", "closed"), Some(1));
    refresh();
    assert_eq!(
        state_gauges(c, svc),
        [Some(1.0), Some(0.0), Some(0.0), Some(0.0), Some(0.0)]
    );
    // Prometheus counters never go back: a reset zeroes `status()` only.
    assert_eq!(calls(c, svc), [Some(1), Some(2), Some(0)]);
    assert_eq!(p.service().status().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_rejections_and_slot_gauges() {
    let (_g, c) = shared().await;
    let svc = "m::bulkhead";
    let p = Resilience::builder(svc)
        .no_retry()
        .no_circuit_breaker()
        .max_concurrent(1)
        .bulkhead_max_wait(Duration::ZERO)
        .build()
        .unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let rx = Mutex::new(Some(rx));
    let holder = p.call(|| {
        let rx = rx.lock().unwrap().take();
        async move {
            if let Some(rx) = rx {
                let _ = rx.await;
            }
            Ok::<_, E>(())
        }
    });
    let refused = async {
        // Polled after `holder` took the only slot.
        p.call(|| async { Ok::<_, E>(()) }).await
    };
    let release = async {
        refresh();
        let inside = (
            c.gauge(
                resilience_runtime::metrics::BULKHEAD_AVAILABLE_SLOTS,
                &[("service", svc)],
            ),
            c.gauge(
                resilience_runtime::metrics::BULKHEAD_MAX_SLOTS,
                &[("service", svc)],
            ),
        );
        let _ = tx.send(());
        inside
    };
    let (held, refused, inside) = tokio::join!(holder, refused, release);
    assert_eq!(held, Ok(()));
    assert!(
        matches!(refused, Err(E::R(ResilienceError::BulkheadFull { .. }))),
        "{refused:?}"
    );
    assert_eq!(inside, (Some(0.0), Some(1.0)));
    assert_eq!(not_permitted(c, svc), [Some(0), Some(1), Some(0)]);
    assert_eq!(calls(c, svc), [Some(1), Some(0), Some(0)]);
    refresh();
    assert_eq!(
        c.gauge(
            resilience_runtime::metrics::BULKHEAD_AVAILABLE_SLOTS,
            &[("service", svc)]
        ),
        Some(1.0)
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_rejections_and_waits() {
    let (_g, c) = shared().await;
    let svc = "m::rate_reject";
    let p = Resilience::builder(svc)
        .no_retry()
        .no_circuit_breaker()
        .rate(Rate::new(1, Duration::from_secs(1)))
        .burst(1)
        .build()
        .unwrap();
    for _ in 0..3 {
        let _ = p.call(|| async { Ok::<_, E>(()) }).await;
    }
    assert_eq!(not_permitted(c, svc), [Some(0), Some(0), Some(2)]);
    assert_eq!(calls(c, svc)[0], Some(1));
    assert_eq!(
        c.counter(RATE_LIMITER_WAITS_TOTAL, &[("service", svc)]),
        Some(0)
    );

    let svc = "m::rate_wait";
    let p = Resilience::builder(svc)
        .no_retry()
        .no_circuit_breaker()
        .rate(Rate::new(2, Duration::from_secs(1)))
        .burst(2)
        .rate_max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    for _ in 0..4 {
        assert_eq!(p.call(|| async { Ok::<_, E>(()) }).await, Ok(()));
    }
    assert_eq!(
        c.counter(RATE_LIMITER_WAITS_TOTAL, &[("service", svc)]),
        Some(2)
    );
    assert_eq!(
        c.histogram(RATE_LIMITER_WAIT_SECONDS, &[("service", svc)]),
        Some(vec![0.5, 0.5])
    );
    assert_eq!(not_permitted(c, svc), [Some(0), Some(0), Some(0)]);
}

#[tokio::test(start_paused = true)]
async fn attempt_and_total_timeouts_and_retries() {
    let (_g, c) = shared().await;
    let svc = "m::timeouts";
    let p = Resilience::builder(svc)
        .no_circuit_breaker()
        .max_attempts(3)
        .delay(ms(10))
        .jitter(resilience_runtime::Jitter::None)
        .timeout(ms(50))
        .build()
        .unwrap();
    let r = p
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, E>(())
        })
        .await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { .. }))),
        "{r:?}"
    );
    let labels = |k| [("service", svc), ("kind", k)];
    assert_eq!(c.counter(TIMEOUTS_TOTAL, &labels("attempt")), Some(3));
    assert_eq!(c.counter(TIMEOUTS_TOTAL, &labels("total")), Some(0));
    assert_eq!(c.counter(RETRIES_TOTAL, &[("service", svc)]), Some(2));
    assert_eq!(
        calls(c, svc),
        [Some(0), Some(3), Some(0)],
        "a timed-out attempt is a failure"
    );

    let svc = "m::total_timeout";
    let p = Resilience::builder(svc)
        .no_circuit_breaker()
        .no_retry()
        .total_timeout(ms(100))
        .build()
        .unwrap();
    let r = p
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, E>(())
        })
        .await;
    assert!(
        matches!(r, Err(E::R(ResilienceError::Timeout { .. }))),
        "{r:?}"
    );
    assert_eq!(c.counter(TIMEOUTS_TOTAL, &labels_of(svc, "total")), Some(1));
    assert_eq!(
        c.counter(TIMEOUTS_TOTAL, &labels_of(svc, "attempt")),
        Some(0)
    );
    assert_eq!(
        calls(c, svc),
        [Some(0), Some(0), Some(0)],
        "the cancelled attempt has no outcome"
    );
}

fn labels_of<'a>(svc: &'a str, kind: &'a str) -> [(&'a str, &'a str); 2] {
    [("service", svc), ("kind", kind)]
}

#[tokio::test]
async fn fallbacks_are_counted() {
    let (_g, c) = shared().await;
    let svc = "m::fallback";
    let p = Resilience::builder(svc).no_retry().build().unwrap();
    for _ in 0..2 {
        let r = p
            .call_or(|| async { Err::<u32, _>(E::Boom) }, |_| async { Ok(7) })
            .await;
        assert_eq!(r, Ok(7));
    }
    assert_eq!(
        p.call_or(|| async { Ok::<u32, E>(1) }, |_| async { Ok(7) })
            .await,
        Ok(1)
    );
    assert_eq!(c.counter(FALLBACKS_TOTAL, &[("service", svc)]), Some(2));
    assert_eq!(calls(c, svc), [Some(1), Some(2), Some(0)]);
}

#[tokio::test(start_paused = true)]
async fn slow_call_times_calls_into_the_duration_histogram() {
    let (_g, c) = shared().await;
    let svc = "m::slow";
    let p = Resilience::builder(svc)
        .failure_rate(0.5)
        .window_calls(10)
        .min_calls(4)
        .slow_call(ms(100))
        .slow_call_rate(1.0)
        .no_retry()
        .build()
        .unwrap();
    refresh();
    assert_eq!(
        c.gauge(FAILURE_RATE, &[("service", svc)]),
        Some(-1.0),
        "not computable yet"
    );
    assert_eq!(c.gauge(SLOW_CALL_RATE, &[("service", svc)]), Some(-1.0));

    for (sleep, out) in [
        (200, Ok(())),
        (20, Ok(())),
        (30, Err(E::Boom)),
        (40, Ok(())),
    ] {
        let r = p
            .call(|| {
                let out = out.clone();
                async move {
                    tokio::time::sleep(ms(sleep)).await;
                    out
                }
            })
            .await;
        assert_eq!(r, out);
    }
    assert_eq!(c.counter(SLOW_CALLS_TOTAL, &[("service", svc)]), Some(1));
    assert_eq!(
        c.histogram(CALL_DURATION_SECONDS, &labels_of(svc, "successful")),
        Some(vec![0.2, 0.02, 0.04])
    );
    assert_eq!(
        c.histogram(CALL_DURATION_SECONDS, &labels_of(svc, "failed")),
        Some(vec![0.03])
    );
    refresh();
    assert_eq!(c.gauge(FAILURE_RATE, &[("service", svc)]), Some(0.25));
    assert_eq!(c.gauge(SLOW_CALL_RATE, &[("service", svc)]), Some(0.25));
}

#[tokio::test(start_paused = true)]
async fn record_latency_times_calls_without_a_breaker() {
    let (_g, c) = shared().await;
    let svc = "m::record_latency";
    apply_config_str(
        "[services.\"m::record_latency\"]\nrecord_latency = true\n",
        Format::Toml,
    )
    .unwrap();
    let p = Resilience::builder(svc)
        .no_circuit_breaker()
        .no_retry()
        .build()
        .unwrap();
    let r = p
        .call(|| async {
            tokio::time::sleep(ms(75)).await;
            Ok::<_, E>(())
        })
        .await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        c.histogram(CALL_DURATION_SECONDS, &labels_of(svc, "successful")),
        Some(vec![0.075])
    );
    assert_eq!(
        c.histogram(CALL_DURATION_SECONDS, &labels_of(svc, "failed")),
        None
    );
    assert_eq!(c.counter(SLOW_CALLS_TOTAL, &[("service", svc)]), Some(0));
}

#[test]
fn describe_registers_help_and_units() {
    let (_g, c) = shared_sync();
    describe();
    let units = c.units.lock().unwrap();
    for (name, unit) in [
        (CALLS_TOTAL, Some(Unit::Count)),
        (NOT_PERMITTED_CALLS_TOTAL, Some(Unit::Count)),
        (CIRCUIT_TRANSITIONS_TOTAL, Some(Unit::Count)),
        (CALL_DURATION_SECONDS, Some(Unit::Seconds)),
        (RATE_LIMITER_WAIT_SECONDS, Some(Unit::Seconds)),
        (CIRCUIT_STATE, None),
        (FAILURE_RATE, None),
    ] {
        let (u, help) = units
            .get(name)
            .unwrap_or_else(|| panic!("{name} not described"));
        assert_eq!(*u, unit, "{name}");
        assert!(!help.is_empty(), "{name}");
    }
    assert_eq!(units.len(), 15, "{:?}", units.keys());
}

/// Handles are bound to the recorder in force when they were made: a new recorder
/// sees nothing until `rebind`.
#[test]
fn rebind_moves_handles_to_the_recorder_installed_now() {
    let c = capture();
    let _alone = GATE.blocking_write();
    let svc = "m::rebind";
    let p = Resilience::builder(svc)
        .no_retry()
        .no_circuit_breaker()
        .build()
        .unwrap();
    let ok = || Ok::<_, E>(());
    p.call_sync(ok).unwrap();
    assert_eq!(calls(c, svc)[0], Some(1));

    let local = Capture::new();
    metrics::with_local_recorder(&local, || {
        p.call_sync(ok).unwrap();
        assert_eq!(
            calls(&local, svc)[0],
            None,
            "still bound to the global recorder"
        );
        rebind();
        p.call_sync(ok).unwrap();
    });
    assert_eq!(calls(c, svc)[0], Some(2));
    assert_eq!(calls(&local, svc)[0], Some(1));
    // Every registered service was rebound, at 0 for a new recorder.
    assert_eq!(
        local.counter(
            CALLS_TOTAL,
            &[("service", "m::outcomes"), ("kind", "successful")]
        ),
        capture()
            .counter(
                CALLS_TOTAL,
                &[("service", "m::outcomes"), ("kind", "successful")]
            )
            .map(|_| 0)
    );

    // Back to the global recorder; its series keep their values.
    rebind();
    p.call_sync(ok).unwrap();
    assert_eq!(calls(c, svc)[0], Some(3));
    assert_eq!(calls(&local, svc)[0], Some(1));
}
