//! Operations endpoints for the examples: Prometheus metrics and health over HTTP,
//! served by a small axum app on a listener the caller binds (a fixed port in the
//! examples, `127.0.0.1:0` in tests).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /metrics` | Prometheus text (gauges refreshed first) |
//! | `GET /health` | [`resilience_runtime::health()`] as JSON; 200 healthy or degraded, 503 unhealthy |
//! | `GET /health/circuits` | [`resilience_runtime::statuses()`] as JSON |
//!
//! Also a plain HTTP/1.1 GET over a `TcpStream` ([`http_get`]), so the examples can
//! print what a scraper would see and the tests need no HTTP client crate.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bucket bounds (seconds) of the `*_seconds` histograms: 1 ms to 10 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Installs the Prometheus recorder as the process's global `metrics` recorder
/// (possible once per process), with real histograms (buckets
/// [`SECONDS_BUCKETS`]) for the `*_seconds` metrics, then binds the services
/// registered so far to it ([`resilience_runtime::metrics::rebind`]) and registers
/// the metric descriptions.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .install_recorder()?;
    resilience_runtime::metrics::rebind();
    resilience_runtime::metrics::describe();
    Ok(handle)
}

/// Drains histogram samples into their buckets every `every`, as the exporter asks
/// of a recorder installed with `install_recorder` (a scrape does it too).
pub fn spawn_upkeep(handle: PrometheusHandle, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// `GET /metrics` only.
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(handle)
}

/// `GET /metrics`, `GET /health` and `GET /health/circuits`.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/health/circuits", get(circuits))
        .with_state(handle)
}

/// Serves `router` on `listener` until the task is dropped or the listener fails.
pub async fn serve(listener: TcpListener, router: Router) -> io::Result<()> {
    axum::serve(listener, router).await
}

async fn metrics(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    resilience_runtime::metrics::refresh();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        handle.render(),
    )
}

async fn health() -> impl IntoResponse {
    let report = resilience_runtime::health();
    let code = StatusCode::from_u16(report.http_status_code())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(report))
}

async fn circuits() -> Json<Vec<resilience_runtime::ServiceStatus>> {
    Json(resilience_runtime::statuses())
}

/// Binds `127.0.0.1` on the port in `PORT`, else `default_port`; if the default
/// port is taken, on a free one (the log says which).
pub async fn bind(default_port: u16) -> io::Result<TcpListener> {
    if let Ok(p) = std::env::var("PORT") {
        let port: u16 = p
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("PORT={p:?}: {e}")))?;
        return TcpListener::bind(("127.0.0.1", port)).await;
    }
    match TcpListener::bind(("127.0.0.1", default_port)).await {
        Ok(l) => Ok(l),
        Err(e) => {
            tracing::warn!(port = default_port, error = %e, "port taken: using a free one");
            TcpListener::bind(("127.0.0.1", 0)).await
        }
    }
}

/// Whether the program was started with `--serve` (keep serving until Ctrl-C).
pub fn serve_requested() -> bool {
    std::env::args().skip(1).any(|a| a == "--serve")
}

/// An HTTP response as [`http_get`] read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` on `addr` with a plain HTTP/1.1 request (`Connection: close`), read to
/// the end.
pub async fn http_get(addr: SocketAddr, path: &str) -> io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn parse_response(raw: &[u8]) -> io::Result<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|e| bad(e.to_string()))?;
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let decoded;
    if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        decoded = dechunk(body)?;
        body = &decoded;
    } else if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body = body
            .get(..len)
            .ok_or_else(|| bad("body shorter than content-length"))?;
    }
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(body).into_owned(),
        headers,
    })
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| bad("truncated chunk size"))?;
        let size = std::str::from_utf8(&rest[..eol]).map_err(|e| bad(e.to_string()))?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|e| bad(format!("chunk size: {e}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest.get(..size).ok_or_else(|| bad("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or_else(|| bad("truncated chunk"))?;
    }
}

/// The lines of a Prometheus scrape about `resilience_*` series, without the
/// histogram buckets: what the examples print.
pub fn resilience_lines(scrape: &str) -> impl Iterator<Item = &str> {
    scrape
        .lines()
        .filter(|l| l.starts_with("resilience_") && !l.contains("_bucket{"))
}

/// The value of the series `name` whose labels include every `labels` pair, in a
/// Prometheus text scrape.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (series_labels, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| {
                series_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            })
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\nX-A: b\r\n\r\nokEXTRA";
        let r = parse_response(plain).unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.header("x-a")),
            (503, "ok", Some("b"))
        );
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body, "abcde");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn finds_samples_by_name_and_labels() {
        let text = "# TYPE resilience_calls_total counter\n\
                    resilience_calls_total{service=\"a\",kind=\"successful\"} 3\n\
                    resilience_calls_total{service=\"a\",kind=\"failed\"} 1\n\
                    resilience_calls_total_x{service=\"a\"} 9\n\
                    up 1\n";
        let calls = "resilience_calls_total";
        assert_eq!(sample(text, calls, &[("kind", "failed")]), Some(1.0));
        assert_eq!(
            sample(text, calls, &[("service", "a"), ("kind", "successful")]),
            Some(3.0)
        );
        assert_eq!(sample(text, calls, &[("service", "b")]), None);
        assert_eq!(sample(text, "up", &[]), Some(1.0));
        assert_eq!(resilience_lines(text).count(), 3);
    }
}
