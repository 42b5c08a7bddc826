//! The fleet (feature `redis`): breaker states, probes and rate limits shared by
//! separate processes through Redis.
//!
//! Each test starts copies of this test binary as child processes (`child_entry`,
//! driven by commands on stdin) so that every instance has its own registry, as in
//! production. They need a Redis server: run them under `scripts/with-redis.sh`,
//! which sets `RESILIENCE_TEST_REDIS_URL`; without it they are skipped.
#![cfg(feature = "redis")]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const CHILD_ENV: &str = "RESILIENCE_FLEET_CHILD";

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn redis_url() -> Option<String> {
    match std::env::var("RESILIENCE_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            // Straight to stderr: the test harness does not capture this.
            let _ = writeln!(
                std::io::stderr(),
                "note: skipping fleet test: RESILIENCE_TEST_REDIS_URL is not set \
                 (run `scripts/with-redis.sh cargo test -p resilience-runtime --features redis --test fleet`)"
            );
            None
        }
    }
}

/// A namespace of its own for each test (and run).
fn namespace(test: &str) -> String {
    format!(
        "fleet-test-{test}-{}-{}",
        std::process::id(),
        unix_ms() % 1_000_000
    )
}

/// One instance: a child process running `child_entry`.
struct Instance {
    name: String,
    proc: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// `@@ev` lines seen so far: `service from to reason unix_ms`.
    events: Vec<String>,
    /// Start times (unix ms) of the bodies run by `probe` commands.
    probes: Vec<u64>,
}

struct Setup<'a> {
    url: &'a str,
    namespace: &'a str,
    cooldown_ms: u64,
    reconnect_max_ms: u64,
}

impl Instance {
    fn spawn(name: &str, s: &Setup<'_>) -> Instance {
        let log = std::env::var_os("RESILIENCE_FLEET_TEST_LOG").is_some();
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_entry",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, "1")
            .env("FLEET_CHILD_NAME", name)
            .env("FLEET_CHILD_URL", s.url)
            .env("FLEET_CHILD_NS", s.namespace)
            .env("FLEET_CHILD_COOLDOWN_MS", s.cooldown_ms.to_string())
            .env(
                "FLEET_CHILD_RECONNECT_MAX_MS",
                s.reconnect_max_ms.to_string(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if log { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("spawn a child instance");
        let stdin = proc.stdin.take().unwrap();
        let stdout = proc.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest's "test child_entry ... " has no line break of its own.
                let Some(at) = line.find("@@") else { continue };
                if tx.send(line[at..].to_owned()).is_err() {
                    break;
                }
            }
        });
        Instance {
            name: name.to_owned(),
            proc,
            stdin,
            lines: rx,
            events: Vec::new(),
            probes: Vec::new(),
        }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn note(&mut self, line: &str) {
        if let Some(ev) = line.strip_prefix("@@ev ") {
            self.events.push(ev.to_owned());
        } else if let Some(t) = line.strip_prefix("@@probe ") {
            self.probes.push(t.parse().unwrap());
        }
    }

    /// The reply to the last command sent.
    fn recv(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => panic!("instance {}: no reply ({e:?})", self.name),
            };
            if let Some(r) = line.strip_prefix("@@r ") {
                return r.to_owned();
            }
            self.note(&line);
        }
    }

    fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.recv()
    }

    /// Collects the lines printed so far (events).
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.note(&line);
        }
    }

    fn state(&mut self, service: &str) -> String {
        self.cmd(&format!("state {service}"))
    }

    /// Polls until `service` is in `state`; returns how long it took.
    fn wait_state(&mut self, service: &str, state: &str, within: Duration) -> Duration {
        let t0 = Instant::now();
        loop {
            let s = self.state(service);
            if s == state {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < within,
                "instance {}: {service} still {s}, not {state}, after {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn wait_connected(&mut self, connected: bool, within: Duration) {
        let t0 = Instant::now();
        while self.cmd("connected") != connected.to_string() {
            assert!(
                t0.elapsed() < within,
                "instance {}: connected is not {connected} after {within:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The unix ms of the first event on `service` matching `to` and `reason`.
    fn event_at(&self, service: &str, to: &str, reason: &str) -> Option<u64> {
        self.events.iter().find_map(|e| {
            let f: Vec<&str> = e.split(' ').collect();
            (f[0] == service && f[2] == to && f[3] == reason).then(|| f[4].parse().unwrap())
        })
    }

    fn count_events(&self, service: &str, to: &str, reason: &str) -> usize {
        self.events
            .iter()
            .filter(|e| {
                let f: Vec<&str> = e.split(' ').collect();
                f[0] == service && f[2] == to && f[3] == reason
            })
            .count()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// `key=value` fields of a reply.
fn field(reply: &str, key: &str) -> u64 {
    reply
        .split(' ')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {reply:?}"))
        .parse()
        .unwrap()
}

fn spawn_fleet(names: &[&str], s: &Setup<'_>) -> Vec<Instance> {
    let mut all: Vec<Instance> = names.iter().map(|n| Instance::spawn(n, s)).collect();
    for i in &mut all {
        assert_eq!(i.cmd("wait_connected 5000"), "true", "{} connects", i.name);
    }
    all
}

#[test]
fn an_opening_reaches_the_other_processes() {
    let Some(url) = redis_url() else { return };
    let ns = namespace("open");
    let setup = Setup {
        url: &url,
        namespace: &ns,
        cooldown_ms: 5_000,
        reconnect_max_ms: 1_000,
    };
    let mut fleet = spawn_fleet(&["a", "b", "c"], &setup);
    for i in &mut fleet {
        // Registers the service on every instance.
        assert_eq!(field(&i.cmd("ok svc 1"), "ok"), 1);
        assert_eq!(i.state("svc"), "Closed");
    }
    let t0 = Instant::now();
    let r = fleet[0].cmd("fail svc 3");
    assert_eq!(field(&r, "boom"), 3);
    assert_eq!(fleet[0].state("svc"), "Open");
    for i in &mut fleet[1..] {
        i.wait_state("svc", "Open", Duration::from_secs(3));
    }
    let polled = t0.elapsed();
    for i in &mut fleet {
        i.drain();
    }
    let opened = fleet[0]
        .event_at("svc", "Open", "ConsecutiveFailures")
        .expect("a reports its own opening");
    for i in &fleet[1..] {
        let adopted = i
            .event_at("svc", "Open", "Restored")
            .expect("adopted with reason Restored");
        let latency = adopted.saturating_sub(opened);
        println!("{} adopted Open {latency} ms after a opened", i.name);
        // Documented: one pub/sub delivery plus a's event queue (ms); generous
        // for a loaded machine.
        assert!(latency < 1_000, "{}: {latency} ms", i.name);
        // Adopted states are not re-published: b and c never report an opening
        // of their own.
        assert_eq!(i.count_events("svc", "Open", "ConsecutiveFailures"), 0);
    }
    println!("b and c seen Open (polled) within {polled:?}");

    // A service b has not called yet adopts the fleet's opening when it registers.
    assert_eq!(field(&fleet[0].cmd("ok late 1"), "ok"), 1);
    assert_eq!(field(&fleet[0].cmd("fail late 3"), "boom"), 3);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fleet[1].state("late"), "none");
    fleet[1].cmd("ok late 1");
    let took = fleet[1].wait_state("late", "Open", Duration::from_secs(2));
    println!("b adopted late {took:?} after registering it");
    // An adopted opening rejects calls there without running the body.
    let r = fleet[1].cmd("ok svc 1");
    assert_eq!((field(&r, "ok"), field(&r, "resilience")), (0, 1));
}

#[test]
fn probes_are_coordinated_across_processes() {
    let Some(url) = redis_url() else { return };
    let ns = namespace("probe");
    let cooldown = 400u64;
    let half_open_calls = 2usize; // the child's setting
    let setup = Setup {
        url: &url,
        namespace: &ns,
        cooldown_ms: cooldown,
        reconnect_max_ms: 1_000,
    };
    let mut fleet = spawn_fleet(&["a", "b", "c"], &setup);
    for i in &mut fleet {
        assert_eq!(field(&i.cmd("ok svc 1"), "ok"), 1);
    }
    assert_eq!(field(&fleet[0].cmd("fail svc 3"), "boom"), 3);
    for i in &mut fleet[1..] {
        i.wait_state("svc", "Open", Duration::from_secs(3));
    }

    // Every instance calls continuously (3 concurrent callers each) and every
    // probe fails: alone, each would probe once per cooldown.
    let window = 1_600u64;
    for i in &mut fleet {
        i.send(&format!("probe svc {window} 3"));
    }
    let mut runs = 0;
    for i in &mut fleet {
        let r = i.recv();
        runs += field(&r, "runs");
        i.drain();
    }
    let mut probes: Vec<u64> = fleet.iter().flat_map(|i| i.probes.clone()).collect();
    probes.sort_unstable();
    assert_eq!(probes.len() as u64, runs);
    let per_instance: Vec<usize> = fleet.iter().map(|i| i.probes.len()).collect();
    println!("probes {probes:?} per instance {per_instance:?}");
    let max = half_open_calls * (window / cooldown + 1) as usize;
    assert!(!probes.is_empty(), "someone probed");
    assert!(
        probes.len() <= max,
        "{} probes fleet-wide in {window} ms; at most {max} expected",
        probes.len()
    );
    // No more than half_open_calls probes within any half cooldown.
    for (k, t) in probes.iter().enumerate() {
        let within = probes[k..]
            .iter()
            .take_while(|u| **u < t + cooldown / 2)
            .count();
        assert!(
            within <= half_open_calls,
            "{within} probes within {} ms of {t}",
            cooldown / 2
        );
    }

    // Now the dependency is back: one instance probes and closes, the others
    // adopt its verdict.
    for i in &mut fleet {
        i.send("okloop svc 1500 2");
    }
    for i in &mut fleet {
        i.recv();
    }
    for i in &mut fleet {
        i.wait_state("svc", "Closed", Duration::from_secs(3));
        i.drain();
    }
    let closers: Vec<&str> = fleet
        .iter()
        .filter(|i| i.count_events("svc", "Closed", "ProbesSucceeded") > 0)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(closers.len(), 1, "exactly one instance probed: {closers:?}");
    for i in fleet.iter().filter(|i| i.name != closers[0]) {
        assert!(
            i.event_at("svc", "Closed", "Restored").is_some(),
            "{} adopted the close",
            i.name
        );
        assert_eq!(i.count_events("svc", "HalfOpen", "CooldownElapsed"), 0);
    }
}

/// Sends one command to the Redis at `url` (RESP, by hand) and returns the reply line.
fn redis_command(url: &str, args: &[&str]) -> String {
    let addr = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    c.write_all(req.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    line.trim_end().to_owned()
}

#[test]
fn no_instance_probes_while_another_holds_the_lease() {
    let Some(url) = redis_url() else { return };
    let ns = namespace("lease");
    let setup = Setup {
        url: &url,
        namespace: &ns,
        cooldown_ms: 200,
        reconnect_max_ms: 1_000,
    };
    let mut fleet = spawn_fleet(&["a", "b"], &setup);
    for i in &mut fleet {
        assert_eq!(field(&i.cmd("ok svc 1"), "ok"), 1);
    }
    assert_eq!(field(&fleet[0].cmd("fail svc 3"), "boom"), 3);
    // A holder that died mid-probe: its lease outlives the cooldown.
    let lease = format!("{ns}:probe:svc");
    let expires = unix_ms() + 800;
    assert_eq!(
        redis_command(&url, &["SET", &lease, "ghost", "PX", "800"]),
        "+OK"
    );
    for i in &mut fleet {
        i.send("okloop svc 1800 2");
    }
    for i in &mut fleet {
        i.recv();
    }
    for i in &mut fleet {
        i.wait_state("svc", "Closed", Duration::from_secs(3));
        i.drain();
    }
    let probed: Vec<u64> = fleet
        .iter()
        .filter_map(|i| i.event_at("svc", "HalfOpen", "CooldownElapsed"))
        .collect();
    println!("half-open at {probed:?}, ghost lease expired at {expires}");
    assert_eq!(probed.len(), 1, "one instance probed");
    // Nobody probed while the ghost held the lease (its expiry is known to a few ms).
    assert!(
        probed[0] + 20 >= expires,
        "probed at {} before {expires}",
        probed[0]
    );
}

#[test]
fn the_fleet_rate_holds_across_processes() {
    let Some(url) = redis_url() else { return };
    let ns = namespace("rate");
    let setup = Setup {
        url: &url,
        namespace: &ns,
        cooldown_ms: 5_000,
        reconnect_max_ms: 1_000,
    };
    let (rate, burst, batch, n) = (200u64, 20u64, 10u64, 3u64);
    let mut fleet = spawn_fleet(&["a", "b", "c"], &setup);
    for i in &mut fleet {
        let r = i.cmd(&format!("limiter shared {rate} {burst} {batch} {n}"));
        assert_eq!(r, "shared=true", "{}", i.name);
    }
    for i in &mut fleet {
        i.send("rate shared 1000 2");
    }
    let (mut total, mut start, mut end) = (0, u64::MAX, 0);
    let mut each = Vec::new();
    for i in &mut fleet {
        let r = i.recv();
        total += field(&r, "granted");
        each.push(field(&r, "granted"));
        start = start.min(field(&r, "start"));
        end = end.max(field(&r, "end"));
    }
    let t = (end - start) as f64 / 1000.0;
    // Documented: rate * t + burst + instances * batch.
    let bound = rate as f64 * (t + 0.02) + (burst + n * batch) as f64;
    println!(
        "granted {total} ({each:?}) in {t:.3} s; bound {bound:.0}; rate * t = {:.0}",
        rate as f64 * t
    );
    assert!(
        (total as f64) <= bound,
        "{total} granted in {t:.3} s, bound {bound:.0}"
    );
    assert!(
        total as f64 >= 0.6 * rate as f64 * t,
        "only {total} granted in {t:.3} s at {rate}/s"
    );
    assert!(
        each.iter().all(|g| *g > 0),
        "every instance got permits: {each:?}"
    );
}

/// A redis-server of this test's own, to kill and restart.
struct Server {
    bin: String,
    port: u16,
    dir: std::path::PathBuf,
    proc: Option<Child>,
}

impl Server {
    fn start(bin: &str) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("fleet-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = Server {
            bin: bin.to_owned(),
            port,
            dir,
            proc: None,
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn restart(&mut self) {
        let proc = Command::new(&self.bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.proc = Some(proc);
        let t0 = Instant::now();
        loop {
            if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                c.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 7];
                if c.write_all(b"PING\r\n").is_ok()
                    && std::io::Read::read_exact(&mut c, &mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_redis_outage_fails_no_call_and_instances_resync() {
    let Some(_) = redis_url() else { return };
    let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
    let mut server = Server::start(&bin);
    let url = server.url();
    let ns = namespace("outage");
    let setup = Setup {
        url: &url,
        namespace: &ns,
        cooldown_ms: 10_000,
        reconnect_max_ms: 400,
    };
    let mut fleet = spawn_fleet(&["a", "b"], &setup);
    for i in &mut fleet {
        for svc in ["s1", "s2"] {
            assert_eq!(field(&i.cmd(&format!("ok {svc} 1")), "ok"), 1);
        }
        assert_eq!(i.cmd("limiter lim 100 10 5 2"), "shared=true");
    }

    server.kill();
    for i in &mut fleet {
        i.wait_connected(false, Duration::from_secs(5));
    }
    for i in &mut fleet {
        // Every call returns its body's own result, at once.
        let r = i.cmd("ok s1 20");
        assert_eq!((field(&r, "ok"), field(&r, "resilience")), (20, 0), "{r}");
        assert!(field(&r, "max_ms") < 200, "a call waited: {r}");
        let r = i.cmd("fail s1 2");
        assert_eq!((field(&r, "boom"), field(&r, "resilience")), (2, 0), "{r}");
        // The limiter falls back to its local share.
        let r = i.cmd("acquire lim 5");
        assert!(field(&r, "granted") > 0, "{r}");
    }
    // An opening while Redis is down stays local...
    assert_eq!(field(&fleet[0].cmd("fail s2 3"), "boom"), 3);
    assert_eq!(fleet[0].state("s2"), "Open");
    assert_eq!(fleet[1].state("s2"), "Closed");

    server.restart();
    for i in &mut fleet {
        i.wait_connected(true, Duration::from_secs(5));
    }
    // ...and is published when it reconnects.
    let took = fleet[1].wait_state("s2", "Open", Duration::from_secs(3));
    println!("b resynchronised s2 {took:?} after seeing the reconnection");
    // An opening after the restart propagates as usual.
    assert_eq!(field(&fleet[0].cmd("ok s1 1"), "ok"), 1);
    let r = fleet[0].cmd("fail s1 3");
    assert_eq!((field(&r, "boom"), field(&r, "resilience")), (3, 0), "{r}");
    assert_eq!(fleet[0].state("s1"), "Open");
    let took = fleet[1].wait_state("s1", "Open", Duration::from_secs(3));
    println!("b saw s1 open {took:?} after a opened it");
    // And the limiter is shared again.
    for i in &mut fleet {
        assert_eq!(i.cmd("wait_shared lim 3000"), "true");
    }
}

/// A child instance: runs commands from stdin, replies `@@r ...` on stdout.
#[test]
fn child_entry() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    child::main();
}

mod child {
    use std::collections::HashMap;
    use std::io::BufRead;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Duration;

    use resilience_runtime::events::{on_event, EventKind};
    use resilience_runtime::fleet::{Fleet, FleetOptions, FleetRateLimit, FleetRateLimiter};
    use resilience_runtime::{Policy, Rate, Resilience, ResilienceError};
    use tokio::time::Instant;

    use super::unix_ms;

    #[derive(Debug)]
    enum E {
        Boom,
        R(#[allow(dead_code)] ResilienceError),
    }
    impl From<ResilienceError> for E {
        fn from(e: ResilienceError) -> Self {
            E::R(e)
        }
    }

    fn env(k: &str) -> String {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"))
    }

    struct Child {
        fleet: Fleet,
        cooldown: Duration,
        policies: HashMap<String, Policy>,
        limiters: HashMap<String, FleetRateLimiter>,
    }

    impl Child {
        fn policy(&mut self, svc: &str) -> Policy {
            let cooldown = self.cooldown;
            self.policies
                .entry(svc.to_owned())
                .or_insert_with(|| {
                    Resilience::builder(svc)
                        .failure_threshold(3)
                        .cooldown(cooldown)
                        .half_open_calls(2)
                        .success_threshold(1)
                        .no_retry()
                        .build()
                        .unwrap()
                })
                .clone()
        }
    }

    pub(super) fn main() {
        if std::env::var_os("RESILIENCE_FLEET_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter("resilience_runtime=debug")
                .try_init();
        }
        let name = env("FLEET_CHILD_NAME");
        on_event(|e| {
            if let EventKind::StateTransition { from, to, reason } = e.kind {
                println!(
                    "@@ev {} {from:?} {to:?} {reason:?} {}",
                    e.service,
                    unix_ms()
                );
            }
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let options = FleetOptions {
            namespace: env("FLEET_CHILD_NS"),
            instance_id: Some(name),
            reconnect_max: Duration::from_millis(
                env("FLEET_CHILD_RECONNECT_MAX_MS").parse().unwrap(),
            ),
            command_timeout: Duration::from_millis(500),
            heartbeat: Duration::from_millis(200),
            ..FleetOptions::default()
        };
        let fleet = rt.block_on(async { Fleet::connect(&env("FLEET_CHILD_URL"), options) });
        let mut child = Child {
            fleet,
            cooldown: Duration::from_millis(env("FLEET_CHILD_COOLDOWN_MS").parse().unwrap()),
            policies: HashMap::new(),
            limiters: HashMap::new(),
        };
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.first() == Some(&"quit") {
                break;
            }
            let reply = rt.block_on(child.run(&words));
            println!("@@r {reply}");
        }
    }

    fn num(w: &[&str], i: usize) -> u64 {
        w[i].parse().unwrap()
    }

    impl Child {
        async fn run(&mut self, w: &[&str]) -> String {
            match w[0] {
                "wait_connected" => self
                    .fleet
                    .wait_connected(Duration::from_millis(num(w, 1)))
                    .await
                    .to_string(),
                "connected" => self.fleet.is_connected().to_string(),
                "state" => {
                    // The snapshot is taken under the breaker's transition lock,
                    // and a transition is queued for the listeners before that
                    // lock is let go: a state seen here has its event queued.
                    // (`status` reads the state word alone, which a transition
                    // stores before it queues the event.) Flushing then prints
                    // the events before the reply, so a parent that saw this
                    // state has seen the events that led to it.
                    let state = match self.policies.get(w[1]) {
                        Some(p) => p
                            .service()
                            .snapshot()
                            .breaker
                            .map_or("Closed".into(), |b| format!("{:?}", b.state)),
                        None => resilience_runtime::status(w[1])
                            .map_or("none".into(), |s| format!("{:?}", s.state)),
                    };
                    resilience_runtime::events::flush_events();
                    state
                }
                "ok" | "fail" => {
                    let p = self.policy(w[1]);
                    let fail = w[0] == "fail";
                    let (mut ok, mut boom, mut res, mut max) = (0, 0, 0, Duration::ZERO);
                    for _ in 0..num(w, 2) {
                        let t = Instant::now();
                        let r: Result<(), E> = p
                            .call(|| async move {
                                if fail {
                                    Err(E::Boom)
                                } else {
                                    Ok(())
                                }
                            })
                            .await;
                        max = max.max(t.elapsed());
                        match r {
                            Ok(()) => ok += 1,
                            Err(E::Boom) => boom += 1,
                            Err(E::R(_)) => res += 1,
                        }
                    }
                    format!(
                        "ok={ok} boom={boom} resilience={res} max_ms={}",
                        max.as_millis()
                    )
                }
                "probe" | "okloop" => {
                    // Concurrent callers for a while; a `probe` body fails after
                    // 20 ms, an `okloop` body succeeds.
                    let p = self.policy(w[1]);
                    let fail = w[0] == "probe";
                    let until = Instant::now() + Duration::from_millis(num(w, 2));
                    let runs = Arc::new(AtomicU64::new(0));
                    let rejected = Arc::new(AtomicU64::new(0));
                    let mut tasks = Vec::new();
                    for _ in 0..num(w, 3) {
                        let (p, runs, rejected) = (p.clone(), runs.clone(), rejected.clone());
                        tasks.push(tokio::spawn(async move {
                            while Instant::now() < until {
                                let runs = &runs;
                                let r: Result<(), E> = p
                                    .call(|| async move {
                                        runs.fetch_add(1, Relaxed);
                                        if fail {
                                            println!("@@probe {}", unix_ms());
                                            tokio::time::sleep(Duration::from_millis(20)).await;
                                            Err(E::Boom)
                                        } else {
                                            Ok(())
                                        }
                                    })
                                    .await;
                                if matches!(r, Err(E::R(_))) {
                                    rejected.fetch_add(1, Relaxed);
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                    format!(
                        "runs={} rejected={}",
                        runs.load(Relaxed),
                        rejected.load(Relaxed)
                    )
                }
                "limiter" => {
                    let limit = FleetRateLimit::new(Rate::per_second(num(w, 2) as u32))
                        .burst(num(w, 3) as u32)
                        .batch(num(w, 4) as u32)
                        .expected_instances(num(w, 5) as u32);
                    let l = self.fleet.rate_limiter(w[1], limit);
                    self.limiters.insert(w[1].to_owned(), l.clone());
                    let t0 = Instant::now();
                    while !l.is_shared() && t0.elapsed() < Duration::from_secs(3) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    format!("shared={}", l.is_shared())
                }
                "wait_shared" => {
                    let l = self.limiters[w[1]].clone();
                    let until = Instant::now() + Duration::from_millis(num(w, 2));
                    while !l.is_shared() && Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    l.is_shared().to_string()
                }
                "acquire" => {
                    let l = &self.limiters[w[1]];
                    let granted = (0..num(w, 2)).filter(|_| l.try_acquire()).count();
                    format!("granted={granted}")
                }
                "rate" => {
                    let l = self.limiters[w[1]].clone();
                    let start = unix_ms();
                    let until = Instant::now() + Duration::from_millis(num(w, 2));
                    let granted = Arc::new(AtomicU64::new(0));
                    let mut tasks = Vec::new();
                    for _ in 0..num(w, 3) {
                        let (l, granted) = (l.clone(), granted.clone());
                        tasks.push(tokio::spawn(async move {
                            while Instant::now() < until {
                                if l.try_acquire() {
                                    granted.fetch_add(1, Relaxed);
                                }
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                    let end = unix_ms();
                    format!("granted={} start={start} end={end}", granted.load(Relaxed))
                }
                other => format!("unknown command {other}"),
            }
        }
    }
}
