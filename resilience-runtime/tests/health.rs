//! Health reports: the services' entries, custom checks, composites, timeouts,
//! panics, concurrency and the JSON shape.
//!
//! The registry is global to this test binary and tests run in parallel, so every
//! test uses its own service names. Only `overall_status_follows_the_breakers`
//! opens, forces or disables breakers; it runs its steps in sequence and is the
//! only test that asserts a healthy overall status. The others register closed
//! services at most and assert the overall status only where their checks decide
//! it. The overall rule itself is unit-tested in `src/health.rs` on constructed
//! inputs.
//!
//! Time-dependent tests run on tokio's paused clock: no real sleeps.

use std::time::Duration;

use resilience_runtime::{
    breaker, health, health_with, status, BoxFuture, CircuitState, HealthCheck, HealthChecks,
    HealthReport, HealthStatus, Resilience, ResilienceError, ServiceHealth, Strategy,
};
use tokio::time::Instant;

#[derive(Debug)]
enum E {
    Boom,
    #[allow(dead_code)]
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn entry(report: &HealthReport, name: &str) -> ServiceHealth {
    report
        .service(name)
        .unwrap_or_else(|| panic!("no entry for {name} in {report:#?}"))
        .clone()
}

async fn ok() -> Result<(), String> {
    Ok(())
}

async fn sleep_then_ok(d: Duration) -> Result<(), String> {
    tokio::time::sleep(d).await;
    Ok(())
}

/// A hand-written check.
struct Disk {
    free_percent: u32,
}

impl HealthCheck for Disk {
    fn name(&self) -> &str {
        "disk"
    }
    fn critical(&self) -> bool {
        true
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.free_percent < 10 {
                Err(format!("only {}% free under /var", self.free_percent))
            } else {
                Ok(())
            }
        })
    }
}

/// A check that panics before it even returns its future.
struct PanicsEarly;

impl HealthCheck for PanicsEarly {
    fn name(&self) -> &str {
        "panics-early"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        panic!("no future for you")
    }
}

#[tokio::test(start_paused = true)]
async fn overall_status_follows_the_breakers() {
    let plain = "health::seq::plain";
    let crit = "health::seq::critical";
    let bare = "health::seq::no-breaker";
    let p = Resilience::builder(plain)
        .failure_rate(0.5)
        .window_calls(4)
        .min_calls(4)
        .cooldown(secs(30))
        .no_retry()
        .build()
        .unwrap();
    let c = Resilience::builder(crit)
        .strategy(Strategy::Critical)
        .failure_threshold(1)
        .cooldown(secs(10))
        .no_retry()
        .build()
        .unwrap();
    let b = Resilience::builder(bare)
        .no_circuit_breaker()
        .no_retry()
        .build()
        .unwrap();
    for _ in 0..3 {
        p.call(|| async { Ok::<_, E>(()) }).await.unwrap();
    }
    c.call(|| async { Ok::<_, E>(()) }).await.unwrap();
    b.call_sync(|| Err::<(), _>(E::Boom)).unwrap_err();

    // All closed: healthy.
    let r = health();
    assert_eq!(r.status, HealthStatus::Healthy, "{r:#?}");
    assert!(r.is_healthy());
    assert_eq!(r.http_status_code(), 200);
    assert!(!r.kill_switch);
    assert!(r.checks.is_empty());
    let names: Vec<_> = r.services.iter().map(|s| s.service.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "services are sorted by name");
    for name in [plain, crit, bare] {
        let e = entry(&r, name);
        assert_eq!(
            (e.state, e.status),
            (CircuitState::Closed, HealthStatus::Healthy)
        );
        assert_eq!(e.since_transition, None, "{name} never changed state");
    }
    assert!(entry(&r, crit).critical);
    assert!(!entry(&r, plain).critical);
    assert!(!entry(&r, bare).critical);

    // A failure in the window: still closed, the rate is reported.
    p.call_sync(|| Err::<(), _>(E::Boom)).unwrap_err();
    let e = entry(&health(), plain);
    assert_eq!(e.state, CircuitState::Closed);
    assert_eq!(e.failure_rate, Some(0.25));
    assert_eq!(e.status, HealthStatus::Healthy);

    // A non-critical breaker opens: degraded, still 200.
    p.call_sync(|| Err::<(), _>(E::Boom)).unwrap_err();
    tokio::time::advance(secs(4)).await;
    let r = health();
    let e = entry(&r, plain);
    assert_eq!(e.state, CircuitState::Open);
    assert_eq!(e.status, HealthStatus::Degraded);
    assert_eq!(e.failure_rate, status(plain).unwrap().failure_rate);
    assert_eq!(e.since_transition, Some(secs(4)));
    assert_eq!(r.status, HealthStatus::Degraded);
    assert!(!r.is_healthy());
    assert_eq!(r.http_status_code(), 200);
    breaker(plain).unwrap().reset();
    assert_eq!(health().status, HealthStatus::Healthy);

    // A critical breaker opens: unhealthy, 503.
    c.call_sync(|| Err::<(), _>(E::Boom)).unwrap_err();
    let r = health();
    let e = entry(&r, crit);
    assert_eq!(
        (e.state, e.status),
        (CircuitState::Open, HealthStatus::Unhealthy)
    );
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert_eq!(r.http_status_code(), 503);

    // Half-open (the critical preset needs 2 successful probes): still unhealthy.
    tokio::time::advance(secs(10)).await;
    c.call(|| async { Ok::<_, E>(()) }).await.unwrap();
    let r = health();
    let e = entry(&r, crit);
    assert_eq!(
        (e.state, e.status),
        (CircuitState::HalfOpen, HealthStatus::Unhealthy)
    );
    assert_eq!(r.http_status_code(), 503);
    breaker(crit).unwrap().reset();
    assert_eq!(health().status, HealthStatus::Healthy);

    // Forced open: degraded for a plain service, unhealthy for a critical one.
    breaker(plain).unwrap().force_open();
    let r = health();
    let e = entry(&r, plain);
    assert_eq!(
        (e.state, e.status),
        (CircuitState::ForcedOpen, HealthStatus::Degraded)
    );
    assert_eq!(r.status, HealthStatus::Degraded);
    breaker(crit).unwrap().force_open();
    let r = health();
    let e = entry(&r, crit);
    assert_eq!(
        (e.state, e.status),
        (CircuitState::ForcedOpen, HealthStatus::Unhealthy)
    );
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert_eq!(r.http_status_code(), 503);
    breaker(plain).unwrap().reset();
    breaker(crit).unwrap().reset();

    // Disabled: protection turned off, degraded (also for a critical service).
    breaker(crit).unwrap().disable();
    let r = health();
    let e = entry(&r, crit);
    assert_eq!(
        (e.state, e.status),
        (CircuitState::Disabled, HealthStatus::Degraded)
    );
    assert_eq!(r.status, HealthStatus::Degraded);
    assert_eq!(r.http_status_code(), 200);
    breaker(crit).unwrap().reset();

    let r = health();
    assert_eq!(r.status, HealthStatus::Healthy, "{r:#?}");

    // Custom checks add to it.
    let failing = HealthChecks::new().check_fn("optional", false, || async {
        Err("optional: down".to_owned())
    });
    assert_eq!(health_with(&failing).await.status, HealthStatus::Degraded);
    let passing = HealthChecks::new().check_fn("fine", true, ok);
    let r = health_with(&passing).await;
    assert_eq!(r.status, HealthStatus::Healthy, "{r:#?}");
    assert!(
        r.service(plain).is_some(),
        "health_with reports services too"
    );
}

#[tokio::test(start_paused = true)]
async fn passing_failing_and_panicking_checks() {
    let checks = HealthChecks::new()
        .check_fn("pass", false, ok)
        .check_fn("fail", false, || async {
            Err("db: connection refused".to_owned())
        })
        .check_fn("panic", false, || async { panic!("kaboom") })
        .check(PanicsEarly)
        .check(Disk { free_percent: 50 });
    assert_eq!(checks.len(), 5);
    let r = health_with(&checks).await;
    let names: Vec<_> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["pass", "fail", "panic", "panics-early", "disk"]);

    let pass = r.check("pass").unwrap();
    assert_eq!(pass.status, HealthStatus::Healthy);
    assert_eq!(pass.error, None);
    assert!(!pass.failed() && !pass.critical);
    assert_eq!(pass.duration, Duration::ZERO);

    let fail = r.check("fail").unwrap();
    assert_eq!(fail.status, HealthStatus::Degraded);
    assert_eq!(fail.error.as_deref(), Some("db: connection refused"));
    assert!(fail.failed());

    let panic = r.check("panic").unwrap();
    assert_eq!(panic.status, HealthStatus::Degraded);
    assert_eq!(panic.error.as_deref(), Some("panicked: kaboom"));
    let early = r.check("panics-early").unwrap();
    assert_eq!(early.status, HealthStatus::Degraded);
    assert_eq!(early.error.as_deref(), Some("panicked: no future for you"));

    let disk = r.check("disk").unwrap();
    assert!(disk.critical);
    assert_eq!(disk.status, HealthStatus::Healthy);

    // Non-critical failures: at least degraded (another test may make it worse).
    assert!(r.status >= HealthStatus::Degraded);
    assert!(!r.is_healthy());
}

#[tokio::test(start_paused = true)]
async fn a_critical_failing_check_is_unhealthy() {
    let r = health_with(&HealthChecks::new().check(Disk { free_percent: 3 })).await;
    let disk = r.check("disk").unwrap();
    assert_eq!(disk.status, HealthStatus::Unhealthy);
    assert_eq!(disk.error.as_deref(), Some("only 3% free under /var"));
    assert_eq!(r.status, HealthStatus::Unhealthy);
    assert_eq!(r.http_status_code(), 503);

    // A critical check that times out or panics is unhealthy too.
    let checks = HealthChecks::new()
        .check_fn("slow", true, || sleep_then_ok(secs(60)))
        .check_fn("panics", true, || async { panic!("critical bug") });
    let r = health_with(&checks).await;
    assert_eq!(r.check("slow").unwrap().status, HealthStatus::Unhealthy);
    assert_eq!(r.check("panics").unwrap().status, HealthStatus::Unhealthy);
    assert_eq!(r.status, HealthStatus::Unhealthy);
}

#[tokio::test(start_paused = true)]
async fn a_slow_check_times_out() {
    let checks = HealthChecks::new()
        .check_fn("slow", false, || sleep_then_ok(secs(60)))
        .check_with_timeout(
            HealthChecks::named("own-timeout").check_fn("inner", false, ok),
            secs(1),
        )
        .check_fn("quick", false, || sleep_then_ok(Duration::from_millis(250)));
    let t0 = Instant::now();
    let r = health_with(&checks).await;
    assert_eq!(t0.elapsed(), secs(5), "the default timeout is 5s");
    let slow = r.check("slow").unwrap();
    assert_eq!(slow.status, HealthStatus::Degraded);
    assert_eq!(slow.error.as_deref(), Some("did not answer within 5s"));
    assert_eq!(slow.duration, secs(5));
    let quick = r.check("quick").unwrap();
    assert_eq!(quick.status, HealthStatus::Healthy);
    assert_eq!(quick.duration, Duration::from_millis(250));

    // A set-wide default, and a check with its own timeout.
    let checks = HealthChecks::new()
        .check_fn("slow", false, || sleep_then_ok(secs(60)))
        .check_with_timeout(
            HealthChecks::named("slow-own").check_fn("inner", false, || sleep_then_ok(secs(60))),
            Duration::from_millis(1500),
        )
        .timeout(secs(2));
    let t0 = Instant::now();
    let r = health_with(&checks).await;
    assert_eq!(t0.elapsed(), secs(2));
    assert_eq!(
        r.check("slow").unwrap().error.as_deref(),
        Some("did not answer within 2s")
    );
    let own = r.check("slow-own").unwrap();
    assert_eq!(own.error.as_deref(), Some("did not answer within 1s500ms"));
    assert_eq!(own.duration, Duration::from_millis(1500));
    assert!(own.failed());
}

#[tokio::test(start_paused = true)]
async fn checks_run_concurrently() {
    let checks = HealthChecks::new()
        .check_fn("a", false, || sleep_then_ok(secs(3)))
        .check_fn("b", false, || sleep_then_ok(secs(3)))
        .check(
            HealthChecks::named("group")
                .check_fn("c", false, || sleep_then_ok(secs(3)))
                .check_fn("d", false, || sleep_then_ok(secs(3))),
        );
    let t0 = Instant::now();
    let r = health_with(&checks).await;
    assert_eq!(
        t0.elapsed(),
        secs(3),
        "not 6s or 12s: the checks ran together"
    );
    for c in &r.checks {
        assert_eq!(
            (c.status, c.duration),
            (HealthStatus::Healthy, secs(3)),
            "{c:?}"
        );
    }
    assert_eq!(r.check("group").unwrap().checks.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn composites_nest() {
    let db = HealthChecks::named("db")
        .check_fn("primary", true, ok)
        .check_fn("replica", false, || async { Err("lag 30s".to_owned()) });
    let queues = HealthChecks::named("queues").critical(false).check(
        HealthChecks::named("orders")
            .check_fn("broker", true, || async { Err("down".to_owned()) })
            .check_fn("dlq", false, ok),
    );
    let checks = HealthChecks::new().check(db.clone()).check(queues.clone());
    let r = health_with(&checks).await;

    // A non-critical child fails: the set passes, degraded; critical by default
    // because a child is.
    let db_r = r.check("db").unwrap();
    assert!(db_r.critical);
    assert!(!db_r.failed());
    assert_eq!(db_r.status, HealthStatus::Degraded);
    assert_eq!(db_r.error.as_deref(), Some("replica: lag 30s"));
    assert_eq!(db_r.checks.len(), 2);
    assert_eq!(db_r.checks[0].status, HealthStatus::Healthy);
    assert_eq!(db_r.checks[1].status, HealthStatus::Degraded);

    // A critical grandchild fails: its set fails (unhealthy, as it is critical), and
    // so does the set around it, which was declared non-critical: degraded.
    let queues_r = r.check("queues").unwrap();
    assert!(queues_r.failed());
    assert!(!queues_r.critical);
    assert_eq!(queues_r.status, HealthStatus::Degraded);
    assert_eq!(queues_r.error.as_deref(), Some("orders: broker: down"));
    let orders = &queues_r.checks[0];
    assert_eq!(orders.name, "orders");
    assert!(orders.critical && orders.failed());
    assert_eq!(orders.status, HealthStatus::Unhealthy);
    assert_eq!(orders.checks[0].error.as_deref(), Some("down"));
    assert!(r.status >= HealthStatus::Degraded);

    // Used as a plain HealthCheck, a set fails only when a critical child fails.
    assert_eq!(HealthCheck::name(&db), "db");
    assert_eq!(HealthCheck::check(&db).await, Ok(()));
    assert_eq!(
        HealthCheck::check(&queues).await,
        Err("orders: broker: down".to_owned())
    );

    // The critical set at the top makes the report unhealthy.
    let r = health_with(&HealthChecks::new().check(queues.critical(true))).await;
    assert_eq!(r.check("queues").unwrap().status, HealthStatus::Unhealthy);
    assert_eq!(r.status, HealthStatus::Unhealthy);
}

#[tokio::test(start_paused = true)]
async fn the_report_serializes_with_the_documented_names() {
    let name = "health::json";
    let p = Resilience::builder(name).no_retry().build().unwrap();
    p.call(|| async { Ok::<_, E>(()) }).await.unwrap();
    let checks = HealthChecks::new()
        .check_fn("cache", false, || async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Err("cache: connection refused".to_owned())
        })
        .check(HealthChecks::named("group").check_fn("inner", false, ok));
    let r = health_with(&checks).await;
    let v = serde_json::to_value(&r).unwrap();

    let status = v["status"].as_str().unwrap();
    assert!(["degraded", "unhealthy"].contains(&status), "{status}");
    assert_eq!(v["kill_switch"], false);

    let svc = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap();
    let mut keys: Vec<_> = svc.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "critical",
            "failure_rate",
            "service",
            "since_transition_secs",
            "state",
            "status"
        ]
    );
    assert_eq!(svc["state"], "Closed");
    assert_eq!(svc["status"], "healthy");
    assert_eq!(svc["critical"], false);
    assert!(svc["since_transition_secs"].is_null());
    assert!(svc["failure_rate"].is_null());

    let cache = &v["checks"][0];
    let mut keys: Vec<_> = cache.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["critical", "duration_ms", "error", "name", "status"],
        "no `checks` key for a plain check"
    );
    assert_eq!(cache["name"], "cache");
    assert_eq!(cache["status"], "degraded");
    assert_eq!(cache["duration_ms"], 1500.0);
    assert_eq!(cache["error"], "cache: connection refused");

    let group = &v["checks"][1];
    assert_eq!(group["status"], "healthy");
    assert!(group["error"].is_null());
    assert_eq!(group["checks"][0]["name"], "inner");
}

#[test]
fn since_transition_serializes_in_seconds() {
    let e = ServiceHealth {
        service: "x".into(),
        state: CircuitState::Open,
        failure_rate: Some(0.5),
        since_transition: Some(Duration::from_millis(2500)),
        critical: true,
        status: HealthStatus::Unhealthy,
    };
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(v["since_transition_secs"], 2.5);
    assert_eq!(v["state"], "Open");
    assert_eq!(v["status"], "unhealthy");
    assert_eq!(
        serde_json::to_value(HealthStatus::Degraded).unwrap(),
        "degraded"
    );
}
