//! A fleet of three processes sharing breaker state and a rate limit through Redis.
//!
//! This process starts two copies of itself (`--role instance-2`, `instance-3`),
//! then sees a dependency fail: its breaker opens, and all three report `Open`
//! (the others adopted it through Redis, without a single failing call of their
//! own). Then all three take permits from one fleet-wide limit at once, and the
//! total stays within it.
//!
//! Run: `scripts/with-redis.sh cargo run -p resilience-examples --example fleet`
//! (starts a private Redis), or with a server of your own:
//! `cargo run -p resilience-examples --example fleet -- --redis redis://127.0.0.1:6379/`
//! (or `RESILIENCE_REDIS_URL`). Without either it tries 127.0.0.1:6379.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use resilience_runtime::fleet::{Fleet, FleetOptions, FleetRateLimit, FleetRateLimiter};
use resilience_runtime::{Policy, Rate, Resilience, ResilienceError};

#[derive(Debug, thiserror::Error)]
enum PayError {
    #[error("payment provider unavailable")]
    Unavailable,
    #[error(transparent)]
    Resilience(#[from] ResilienceError),
}

const SERVICE: &str = "payments";
const LIMITER: &str = "search-api";
const RATE_WINDOW: Duration = Duration::from_secs(2);

fn limit() -> FleetRateLimit {
    FleetRateLimit::new(Rate::per_second(50))
        .burst(10)
        .batch(5)
        .expected_instances(3)
}

fn payments() -> Policy {
    Resilience::builder(SERVICE)
        .failure_threshold(3)
        .cooldown(Duration::from_secs(10))
        .no_retry()
        .build()
        .expect("valid settings")
}

struct Args {
    role: Option<String>,
    redis: Option<String>,
    namespace: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        role: None,
        redis: None,
        namespace: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--role" => a.role = it.next(),
            "--redis" => a.redis = it.next(),
            "--namespace" => a.namespace = it.next(),
            other => eprintln!("ignoring argument {other:?}"),
        }
    }
    a
}

/// The Redis to use: `--redis`, `RESILIENCE_REDIS_URL`, the one
/// `scripts/with-redis.sh` started, or a server answering on 127.0.0.1:6379.
fn redis_url(given: Option<String>) -> Option<String> {
    given
        .or_else(|| std::env::var("RESILIENCE_REDIS_URL").ok())
        .or_else(|| std::env::var("RESILIENCE_TEST_REDIS_URL").ok())
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let addr = "127.0.0.1:6379".parse().ok()?;
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300))
                .ok()
                .map(|_| "redis://127.0.0.1:6379/".to_owned())
        })
}

async fn join(url: &str, namespace: &str, name: &str) -> Option<Fleet> {
    let fleet = Fleet::connect(
        url,
        FleetOptions {
            namespace: namespace.to_owned(),
            instance_id: Some(name.to_owned()),
            ..FleetOptions::default()
        },
    );
    if fleet.wait_connected(Duration::from_secs(3)).await {
        Some(fleet)
    } else {
        eprintln!("{name}: could not reach redis at {url}");
        None
    }
}

async fn shared_limiter(fleet: &Fleet) -> FleetRateLimiter {
    let l = fleet.rate_limiter(LIMITER, limit());
    let t0 = Instant::now();
    while !l.is_shared() && t0.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    l
}

/// Takes permits as fast as two callers can ask for `window`.
async fn hammer(l: &FleetRateLimiter, window: Duration) -> u64 {
    let granted = Arc::new(AtomicU64::new(0));
    let until = tokio::time::Instant::now() + window;
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (l, granted) = (l.clone(), granted.clone());
            tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    if l.try_acquire() {
                        granted.fetch_add(1, Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    granted.load(Relaxed)
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = args();
    match a.role {
        Some(role) => {
            follower(
                &role,
                &a.redis.unwrap_or_default(),
                &a.namespace.unwrap_or_default(),
            )
            .await
        }
        None => leader(a.redis).await,
    }
}

/// One of the two other instances: joins, registers the service, then follows
/// the leader's commands on stdin, answering on stdout.
async fn follower(name: &str, url: &str, namespace: &str) {
    let Some(fleet) = join(url, namespace, name).await else {
        println!("@failed");
        return;
    };
    let policy = payments();
    let _: Result<(), PayError> = policy.call(|| async { Ok(()) }).await;
    let limiter = shared_limiter(&fleet).await;
    println!("@ready");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(cmd) = rx.recv().await {
        match cmd.as_str() {
            "check" => {
                let t0 = Instant::now();
                let mut state = policy.service().state();
                while state != resilience_runtime::CircuitState::Open
                    && t0.elapsed() < Duration::from_secs(3)
                {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    state = policy.service().state();
                }
                // A call now is rejected without reaching the provider.
                let r: Result<(), PayError> = policy.call(|| async { Ok(()) }).await;
                let rejected = matches!(r, Err(PayError::Resilience(_)));
                println!(
                    "@state {state:?} {} {rejected}",
                    policy.service().status().failures
                );
            }
            "rate" => println!("@granted {}", hammer(&limiter, RATE_WINDOW).await),
            _ => break,
        }
    }
    drop(fleet);
}

struct Follower {
    name: String,
    proc: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn spawn(name: &str, url: &str, namespace: &str) -> std::io::Result<Follower> {
        let mut proc = Command::new(std::env::current_exe()?)
            .args(["--role", name, "--redis", url, "--namespace", namespace])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = proc.stdin.take().expect("piped");
        let stdout = proc.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Follower {
            name: name.to_owned(),
            proc,
            stdin,
            lines,
        })
    }

    fn send(&mut self, cmd: &str) {
        let _ = writeln!(self.stdin, "{cmd}");
        let _ = self.stdin.flush();
    }

    /// The next `@` line, without its `@`.
    fn recv(&mut self) -> Option<String> {
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(10)).ok()?;
            if let Some(l) = line.strip_prefix('@') {
                return Some(l.to_owned());
            }
            println!("  [{}] {line}", self.name);
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.send("quit");
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.proc.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

async fn leader(redis: Option<String>) {
    let Some(url) = redis_url(redis) else {
        println!("No Redis given and none answers on 127.0.0.1:6379.");
        println!("Run it with a private Redis server:");
        println!();
        println!("    scripts/with-redis.sh cargo run -p resilience-examples --example fleet");
        println!();
        println!("or point it at yours: --redis redis://host:6379/ (or RESILIENCE_REDIS_URL).");
        return;
    };
    let namespace = format!("fleet-example-{}", std::process::id());
    println!("Fleet of three processes on {url} (namespace {namespace})");
    let Some(fleet) = join(&url, &namespace, "instance-1").await else {
        std::process::exit(1);
    };
    let mut others = Vec::new();
    for name in ["instance-2", "instance-3"] {
        match Follower::spawn(name, &url, &namespace) {
            Ok(f) => others.push(f),
            Err(e) => {
                eprintln!("could not start {name}: {e}");
                std::process::exit(1);
            }
        }
    }
    for f in &mut others {
        match f.recv().as_deref() {
            Some("ready") => println!("{} joined the fleet", f.name),
            other => {
                eprintln!("{} did not start: {other:?}", f.name);
                std::process::exit(1);
            }
        }
    }
    let policy = payments();
    let limiter = shared_limiter(&fleet).await;

    println!();
    println!("1. instance-1 calls {SERVICE}, which is down:");
    for n in 1..=3 {
        let r: Result<(), PayError> = policy.call(|| async { Err(PayError::Unavailable) }).await;
        println!(
            "   call {n}: {}",
            r.map_or_else(|e| e.to_string(), |_| "ok".into())
        );
    }
    println!("   instance-1: breaker {:?}", policy.service().state());
    for f in &mut others {
        f.send("check");
    }
    for f in &mut others {
        match f.recv() {
            Some(line) => {
                let w: Vec<&str> = line.split(' ').collect();
                match w.as_slice() {
                    ["state", state, failures, rejected] => println!(
                        "   {}: breaker {state} after {failures} failed calls of its own; next call rejected: {rejected}",
                        f.name
                    ),
                    _ => println!("   {}: {line}", f.name),
                }
            }
            None => println!("   {}: no answer", f.name),
        }
    }

    let l = limit();
    println!();
    println!(
        "2. All three take permits from {LIMITER} ({}, burst {}, leased {} at a time) for {:?}:",
        l.rate, l.burst, l.batch, RATE_WINDOW
    );
    for f in &mut others {
        f.send("rate");
    }
    let mine = hammer(&limiter, RATE_WINDOW).await;
    let mut total = mine;
    println!("   instance-1: {mine} permits");
    for f in &mut others {
        let got = f
            .recv()
            .and_then(|l| l.strip_prefix("granted ")?.parse::<u64>().ok())
            .unwrap_or(0);
        println!("   {}: {got} permits", f.name);
        total += got;
    }
    let t = RATE_WINDOW.as_secs_f64();
    let per_second = f64::from(l.rate.permits) / l.rate.per.as_secs_f64();
    let bound = per_second * t + f64::from(l.burst) + 3.0 * f64::from(l.batch);
    println!(
        "   fleet: {total} permits in {t:.0} s; the limit allows {:.0} (rate x t), at most {bound:.0} with burst and leases",
        per_second * t
    );
    drop(others);
    fleet.shutdown();
    println!();
    println!("Done.");
}
