//! The operations endpoints over loopback: each test starts the server of
//! `resilience_examples::ops` on `127.0.0.1:0` and reads it with a plain HTTP/1.1
//! GET. The Prometheus recorder is global: installed once for this binary.
//!
//! Run: `cargo test -p resilience-examples --test ops`
//!
//! Only `health_follows_the_critical_breaker` touches a critical service, so the
//! other tests (whose forced-open breakers only degrade health) cannot make its
//! `/health` answer 503.

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::PrometheusHandle;
use resilience_examples::ops::{self, http_get, sample};
use resilience_runtime::{breaker, Resilience, ResilienceError, Strategy};

fn handle() -> PrometheusHandle {
    static H: OnceLock<PrometheusHandle> = OnceLock::new();
    H.get_or_init(|| ops::install_prometheus().expect("the only recorder of this binary"))
        .clone()
}

async fn start() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ops::serve(listener, ops::router(handle())));
    addr
}

#[derive(Debug, PartialEq)]
enum E {
    Boom,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

#[tokio::test]
async fn metrics_lists_calls_and_rejections_by_service() {
    let addr = start().await;
    let svc = "ops-test::metrics";
    let p = Resilience::builder(svc).no_retry().build().unwrap();
    for _ in 0..2 {
        assert_eq!(p.call(|| async { Ok::<_, E>(()) }).await, Ok(()));
    }
    assert_eq!(
        p.call(|| async { Err::<(), _>(E::Boom) }).await,
        Err(E::Boom)
    );

    let r = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(ops::PROMETHEUS_CONTENT_TYPE));
    let line = r
        .body
        .lines()
        .find(|l| {
            l.starts_with("resilience_calls_total{")
                && l.contains(&format!("service=\"{svc}\""))
                && l.contains("kind=\"successful\"")
        })
        .unwrap_or_else(|| panic!("no successful-calls series in\n{}", r.body));
    assert!(line.ends_with(" 2"), "{line}");
    let labels = |kind| [("service", svc), ("kind", kind)];
    assert_eq!(
        sample(&r.body, "resilience_calls_total", &labels("failed")),
        Some(1.0)
    );
    assert!(
        r.body.contains("# TYPE resilience_calls_total counter"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("# HELP resilience_calls_total "),
        "described"
    );
    assert_eq!(
        sample(
            &r.body,
            "resilience_not_permitted_calls_total",
            &[("service", svc), ("by", "circuit_breaker")]
        ),
        Some(0.0),
        "at 0 before the first rejection"
    );
    let state = |body: &str, s| {
        sample(
            body,
            "resilience_circuit_state",
            &[("service", svc), ("state", s)],
        )
    };
    assert_eq!(state(&r.body, "closed"), Some(1.0), "set by refresh()");

    breaker(svc).unwrap().force_open();
    for _ in 0..3 {
        let r = p.call(|| async { Ok::<_, E>(()) }).await;
        assert!(
            matches!(r, Err(E::R(ResilienceError::CircuitOpen { .. }))),
            "{r:?}"
        );
    }
    let r = http_get(addr, "/metrics").await.unwrap();
    let not_permitted = r
        .body
        .lines()
        .find(|l| {
            l.starts_with("resilience_not_permitted_calls_total{")
                && l.contains(&format!("service=\"{svc}\""))
                && l.contains("by=\"circuit_breaker\"")
        })
        .unwrap_or_else(|| panic!("no not-permitted series in\n{}", r.body));
    assert!(not_permitted.ends_with(" 3"), "{not_permitted}");
    assert_eq!(state(&r.body, "forced_open"), Some(1.0));
    assert_eq!(state(&r.body, "closed"), Some(0.0));
    assert_eq!(
        sample(
            &r.body,
            "resilience_circuit_transitions_total",
            &[("service", svc), ("from", "closed"), ("to", "forced_open")]
        ),
        Some(1.0)
    );
    breaker(svc).unwrap().reset();
}

#[tokio::test]
async fn circuits_lists_every_service_as_json() {
    let addr = start().await;
    let svc = "ops-test::circuits";
    let p = Resilience::builder(svc).no_retry().build().unwrap();
    assert_eq!(p.call(|| async { Ok::<_, E>(()) }).await, Ok(()));

    let r = http_get(addr, "/health/circuits").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let all: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let entry = all
        .as_array()
        .expect("an array")
        .iter()
        .find(|s| s["service"] == svc)
        .unwrap_or_else(|| panic!("{svc} missing from {all}"));
    assert_eq!(entry["state"], "Closed");
    assert_eq!(entry["successes"], 1);
    assert_eq!(entry["failures"], 0);
}

#[tokio::test]
async fn health_follows_the_critical_breaker() {
    let addr = start().await;
    let svc = "ops-test::payments";
    let p = Resilience::builder(svc)
        .strategy(Strategy::Critical)
        .build()
        .unwrap();
    assert_eq!(p.call(|| async { Ok::<_, E>(()) }).await, Ok(()));
    assert!(p.service().is_critical());

    // Healthy, or degraded by another test's forced-open optional service: 200.
    let r = http_get(addr, "/health").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_ne!(report["status"], "unhealthy", "{report}");

    let h = breaker(svc).unwrap();
    h.force_open();
    let r = http_get(addr, "/health").await.unwrap();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("unhealthy"), "{}", r.body);
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["status"], "unhealthy");

    h.reset();
    let r = http_get(addr, "/health").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let addr = start().await;
    assert_eq!(http_get(addr, "/nope").await.unwrap().status, 404);
}

#[tokio::test]
async fn metrics_router_serves_only_metrics() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ops::serve(listener, ops::metrics_router(handle())));
    assert_eq!(http_get(addr, "/metrics").await.unwrap().status, 200);
    assert_eq!(http_get(addr, "/health").await.unwrap().status, 404);
}
