//! Breaker state kept across restarts (feature `sqlite`): a real second process
//! finds an open breaker still open, a writer killed at any moment leaves a complete
//! snapshot, unusable files are set aside, the periodic save follows tokio's clock,
//! and a snapshot waits for its service's registration.
//!
//! The "second process" is this test binary run again with `--exact child_entry`
//! and an environment variable saying what the child does; it prints its findings as
//! JSON lines that begin with [`MARK`].
#![cfg(feature = "sqlite")]

mod captured;
use captured::Captured;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use resilience_runtime::persist::{self, PersistError, Persistence};
use resilience_runtime::{
    status, BreakerSnapshot, CircuitState, CounterSnapshot, Policy, Resilience, ResilienceError,
    ServiceSnapshot, WindowSnapshot,
};
use serde_json::{json, Value};

const MARK: &str = "PERSIST-CHILD ";
const CHILD_ENV: &str = "PERSIST_TEST_CHILD";
const FILE_ENV: &str = "PERSIST_TEST_FILE";
const BASE_ENV: &str = "PERSIST_TEST_BASE";
/// Services the crash test's writer saves in every round.
const CRASH_SERVICES: usize = 40;

#[derive(Debug, PartialEq)]
struct Fail;
impl From<ResilienceError> for Fail {
    fn from(_: ResilienceError) -> Self {
        Fail
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn open_breaker(name: &str) -> Policy {
    Resilience::builder(name)
        .failure_threshold(1)
        .cooldown(Duration::from_secs(60))
        .no_retry()
        .build()
        .unwrap()
}

fn crash_policies() -> Vec<Policy> {
    (0..CRASH_SERVICES)
        .map(|i| {
            Resilience::builder(format!("p-crash-{i}"))
                .failure_threshold(5)
                .no_retry()
                .build()
                .unwrap()
        })
        .collect()
}

fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    // On a line of its own: the harness has written `test child_entry ... `.
    writeln!(out, "\n{MARK}{v}").unwrap();
    out.flush().unwrap();
}

/// Runs this binary's `child_entry` test in a child process, in `mode`.
fn child(mode: &str, file: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(FILE_ENV, file)
        .stderr(Stdio::inherit());
    c
}

/// Runs a child to its end and returns the JSON lines it printed.
fn run_child(cmd: &mut Command) -> Vec<Value> {
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {stdout}");
    stdout
        .lines()
        .filter_map(|l| l.split_once(MARK).map(|(_, v)| v))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The entry point of child processes; returns at once in a normal test run.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let file = PathBuf::from(std::env::var(FILE_ENV).unwrap());
    match mode.as_str() {
        "roundtrip" => child_roundtrip(&file),
        "writer" => child_writer(&file),
        "env" => child_env(),
        other => panic!("unknown child mode {other}"),
    }
}

/// Loads the file as an application would at start, then reports `p-open`.
fn child_roundtrip(file: &Path) {
    let p = persist::init(file).unwrap();
    assert!(p.recovered_from().is_none());
    // Registered after the load: restored at registration.
    let policy = open_breaker("p-open");
    let svc = policy.service();
    let st = svc.status();
    let left = svc.snapshot().breaker.unwrap().cooldown_left;
    let rejected = policy.call_sync(|| Ok::<(), Fail>(())).is_err();
    emit(json!({
        "state": format!("{:?}", st.state),
        "cooldown_left_ms": left.as_millis() as u64,
        "successes": st.successes,
        "failures": st.failures,
        "rejected": rejected,
    }));
}

/// Saves round after round until killed (or 30 s): in round `r` every service's
/// `successes` is `r`. Says `ready` once the first round is saved.
fn child_writer(file: &Path) {
    let base: u64 = std::env::var(BASE_ENV).unwrap().parse().unwrap();
    let policies = crash_policies();
    let p = Persistence::open(file).unwrap();
    let started = Instant::now();
    for round in base.. {
        for policy in &policies {
            let svc = policy.service();
            svc.reset();
            svc.restore(&ServiceSnapshot {
                service: svc.name().to_owned(),
                breaker: None,
                counters: CounterSnapshot {
                    successes: round,
                    ..CounterSnapshot::default()
                },
            });
        }
        p.persist_now().unwrap();
        if round == base {
            emit(json!({ "ready": round }));
        }
        if started.elapsed() > Duration::from_secs(30) {
            return; // The parent is gone.
        }
    }
}

/// `init_from_env` inside a runtime, as configured by the parent's environment.
fn child_env() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let v = match persist::init_from_env() {
            None => json!({ "none": true }),
            Some(Ok(p)) => json!({ "path": p.path(), "ok": p.persist_now().is_ok() }),
            Some(Err(e)) => json!({ "error": e.to_string() }),
        };
        emit(v);
    });
}

#[test]
fn an_open_breaker_is_still_open_in_the_next_process() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let policy = open_breaker("p-open");
    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Ok(()));
    assert_eq!(policy.call_sync(|| Err::<(), _>(Fail)), Err(Fail));
    assert_eq!(status("p-open").unwrap().state, CircuitState::Open);
    let p = Persistence::open(&file).unwrap();
    assert!(p.persist_now().unwrap() >= 1);
    drop(p);

    let found = run_child(&mut child("roundtrip", &file));
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0];
    assert_eq!(r["state"], "Open", "{r}");
    let left = r["cooldown_left_ms"].as_u64().unwrap();
    // 60 s less the time the child took to start (seconds at most).
    assert!((45_000..=60_000).contains(&left), "{r}");
    assert_eq!(r["successes"], 1, "{r}");
    assert_eq!(r["failures"], 1, "{r}");
    assert_eq!(r["rejected"], true, "{r}");
}

#[test]
fn an_open_breaker_whose_cooldown_passed_while_down_lets_a_probe_through() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let policy = open_breaker("p-expired");
    assert_eq!(policy.call_sync(|| Err::<(), _>(Fail)), Err(Fail));
    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Err(Fail)); // rejected
    let p = Persistence::open(&file).unwrap();
    p.persist_now().unwrap();
    // As if saved two minutes ago: the 60 s cooldown passed while "down".
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute(
        "UPDATE snapshots SET saved_at = saved_at - 120000 WHERE service = 'p-expired'",
        [],
    )
    .unwrap();
    drop(db);
    assert!(p.load().unwrap() >= 1);
    let svc = policy.service();
    assert_eq!(svc.state(), CircuitState::Open);
    assert_eq!(
        svc.snapshot().breaker.unwrap().cooldown_left,
        Duration::ZERO
    );
    assert_eq!(
        policy.call_sync(|| Ok::<(), Fail>(())),
        Ok(()),
        "probe admitted"
    );
}

#[test]
fn a_writer_killed_at_any_moment_leaves_one_complete_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let policies = crash_policies();
    for i in 0..12u64 {
        let base = (i + 1) * 1_000_000;
        let mut c = child("writer", &file)
            .env(BASE_ENV, base.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        let ready = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.split_once(MARK).map(|(_, v)| v.to_owned()));
        assert!(ready.is_some(), "the writer ended before saving (kill {i})");
        // Real time is fine: any kill point must leave a loadable file.
        std::thread::sleep(Duration::from_millis(20 + (i * 97) % 180));
        c.kill().unwrap();
        c.wait().unwrap();
        drop(lines);

        for policy in &policies {
            policy.service().reset();
        }
        let p = Persistence::open(&file)
            .unwrap_or_else(|e| panic!("kill {i}: the file does not open: {e}"));
        assert_eq!(p.load().unwrap(), CRASH_SERVICES, "kill {i}");
        let rounds: Vec<u64> = policies
            .iter()
            .map(|p| p.service().status().successes)
            .collect();
        assert!(
            rounds.iter().all(|r| *r == rounds[0]),
            "kill {i}: a mixed snapshot {rounds:?}"
        );
        assert!(
            (base..base + 1_000_000).contains(&rounds[0]),
            "kill {i}: round {} is not of this writer (from {base})",
            rounds[0]
        );
    }
}

/// `open` refuses the file untouched with a message naming it and `what`; `init`
/// moves it aside (bytes intact), logs both paths, and starts fresh.
fn assert_set_aside(file: &Path, what: &str) {
    let original = std::fs::read(file).unwrap();
    let err = Persistence::open(file).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PersistError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&file.display().to_string()), "{msg}");
    assert!(msg.contains(what), "expected {what:?} in: {msg}");
    assert_eq!(
        std::fs::read(file).unwrap(),
        original,
        "open changed the file"
    );

    let logs = Captured::default();
    let p = tracing::subscriber::with_default(logs.subscriber(), || persist::init(file))
        .unwrap_or_else(|e| panic!("init failed for {what}: {e}"));
    let r = p.recovered_from().expect("recovery reported").clone();
    assert!(r.reason.contains(what), "{}", r.reason);
    assert_eq!(std::fs::read(&r.moved_to).unwrap(), original);
    let name = r
        .moved_to
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("state.db.corrupt-"), "{name}");
    let log = logs.text();
    assert!(log.contains("ERROR"), "{log}");
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains(&r.moved_to.display().to_string()), "{log}");
    // A fresh file in its place, holding nothing, that works.
    assert_eq!(p.load().unwrap(), 0);
    p.persist_now().unwrap();
    assert!(Persistence::open(file).is_ok());
}

fn write_rows(file: &Path, sql: &str) {
    let db = rusqlite::Connection::open(file).unwrap();
    db.execute_batch(sql).unwrap();
}

#[test]
fn unusable_files_are_refused_by_open_and_set_aside_by_init() {
    let dir = tempfile::tempdir().unwrap();
    let case = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir(&d).unwrap();
        d.join("state.db")
    };

    let f = case("random");
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&f, bytes).unwrap();
    assert_set_aside(&f, "not an SQLite database");

    let f = case("text");
    std::fs::write(&f, "[service]\nname = \"not a database\"\n").unwrap();
    assert_set_aside(&f, "not an SQLite database");

    let f = case("foreign");
    write_rows(
        &f,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO users (name) VALUES ('ada');",
    );
    assert_set_aside(&f, "another program");

    let f = case("marker");
    write_rows(
        &f,
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
         INSERT INTO meta VALUES ('format', 'someone else'), ('schema_version', '1');",
    );
    assert_set_aside(&f, "someone else");

    let f = case("newer");
    Persistence::open(&f).unwrap();
    write_rows(
        &f,
        "UPDATE meta SET value = '7' WHERE key = 'schema_version';",
    );
    assert_set_aside(&f, "newer version");

    let f = case("truncated");
    Persistence::open(&f).unwrap().persist_now().unwrap();
    write_rows(&f, "PRAGMA wal_checkpoint(TRUNCATE);");
    let whole = std::fs::read(&f).unwrap();
    std::fs::write(&f, &whole[..100]).unwrap();
    assert_set_aside(&f, "SQLite");

    let f = case("damaged");
    Persistence::open(&f).unwrap();
    let big = "x".repeat(3000);
    let mut sql = String::from("BEGIN;");
    for i in 0..60 {
        sql.push_str(&format!(
            "INSERT INTO snapshots VALUES ('s{i}', '{big}', 0);"
        ));
    }
    sql.push_str("COMMIT; PRAGMA wal_checkpoint(TRUNCATE);");
    write_rows(&f, &sql);
    let mut bytes = std::fs::read(&f).unwrap();
    assert!(bytes.len() > 40_000);
    let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
    for b in &mut bytes[page..page * 5] {
        *b = 0xa5;
    }
    std::fs::write(&f, bytes).unwrap();
    assert_set_aside(&f, "SQLite");
}

#[test]
fn a_row_that_does_not_parse_is_skipped_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    Persistence::open(&file).unwrap();
    let good = serde_json::to_string(&ServiceSnapshot {
        service: "p-row-good".into(),
        breaker: None,
        counters: CounterSnapshot {
            successes: 7,
            ..CounterSnapshot::default()
        },
    })
    .unwrap();
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute(
        "INSERT INTO snapshots VALUES ('p-row-good', ?1, ?2), ('p-row-bad', '{\"service\": 3', ?2)",
        rusqlite::params![good, unix_ms()],
    )
    .unwrap();
    drop(db);

    let logs = Captured::default();
    let p = tracing::subscriber::with_default(logs.subscriber(), || persist::init(&file)).unwrap();
    assert!(
        p.recovered_from().is_none(),
        "a bad row is no reason to set the file aside"
    );
    let log = logs.text();
    assert!(log.contains("WARN") && log.contains("p-row-bad"), "{log}");
    let policy = Resilience::builder("p-row-good")
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(policy.service().status().successes, 7);
    // The next save drops the bad row.
    p.persist_now().unwrap();
    let db = rusqlite::Connection::open(&file).unwrap();
    let bad: i64 = db
        .query_row(
            "SELECT count(*) FROM snapshots WHERE service = 'p-row-bad'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0);
}

/// The saved `successes` of `service`, if the file has a row for it.
fn saved(file: &Path, service: &str) -> Option<(u64, i64)> {
    let db = rusqlite::Connection::open(file).unwrap();
    let row: Option<(String, i64)> = db
        .query_row(
            "SELECT snapshot, saved_at FROM snapshots WHERE service = ?1",
            [service],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    row.map(|(json, at)| {
        let s: ServiceSnapshot = serde_json::from_str(&json).unwrap();
        (s.counters.successes, at)
    })
}

/// Lets the periodic task run its save: a blocking task in flight keeps the paused
/// clock from jumping, so each short sleep ends only once the save is done.
async fn settle() {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_periodic_task_saves_at_each_interval() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let policy = Resilience::builder("p-periodic")
        .no_retry()
        .build()
        .unwrap();
    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Ok(()));
    let p = Arc::new(Persistence::open(&file).unwrap());
    let task = p.spawn_periodic(Duration::from_secs(30));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_secs(29)).await;
    settle().await;
    assert_eq!(
        saved(&file, "p-periodic"),
        None,
        "saved before the interval"
    );

    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert_eq!(saved(&file, "p-periodic").map(|s| s.0), Some(1));

    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Ok(()));
    tokio::time::advance(Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(saved(&file, "p-periodic").map(|s| s.0), Some(2));

    // Shutdown: a last save, and the task ends.
    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Ok(()));
    p.shutdown().unwrap();
    assert_eq!(saved(&file, "p-periodic").map(|s| s.0), Some(3));
    assert!(task.await.unwrap_err().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_failing_save_is_logged_once_per_distinct_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    Resilience::builder("p-failing").no_retry().build().unwrap();
    let logs = Captured::default();
    let _guard = tracing::subscriber::set_default(logs.subscriber());
    let p = Arc::new(Persistence::open(&file).unwrap());
    let _task = p.spawn_periodic(Duration::from_secs(10));
    write_rows(&file, "DROP TABLE snapshots;");
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    let log = logs.text();
    assert_eq!(log.matches("ERROR").count(), 1, "{log}");
    assert!(log.contains("no such table"), "{log}");

    write_rows(
        &file,
        "CREATE TABLE snapshots (service TEXT PRIMARY KEY NOT NULL, snapshot TEXT NOT NULL, saved_at INTEGER NOT NULL);",
    );
    for _ in 0..2 {
        tokio::time::advance(Duration::from_secs(10)).await;
        settle().await;
    }
    let log = logs.text();
    assert_eq!(log.matches("saves work again").count(), 1, "{log}");
    assert_eq!(log.matches("ERROR").count(), 1, "{log}");
    assert!(saved(&file, "p-failing").is_some());
}

#[test]
fn a_snapshot_waits_for_its_service_to_register() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    Persistence::open(&file).unwrap();
    let snap = ServiceSnapshot {
        service: "p-later".into(),
        breaker: Some(BreakerSnapshot {
            state: CircuitState::Open,
            cooldown_left: Duration::from_secs(40),
            cooldown: Duration::from_secs(60),
            probe_successes: 0,
            since_transition: Some(Duration::from_secs(20)),
            window: WindowSnapshot::Consecutive { run: 0 },
        }),
        counters: CounterSnapshot {
            failures: 3,
            ..CounterSnapshot::default()
        },
    };
    let saved_at = unix_ms() - 10_000;
    let db = rusqlite::Connection::open(&file).unwrap();
    db.execute(
        "INSERT INTO snapshots VALUES ('p-later', ?1, ?2)",
        rusqlite::params![serde_json::to_string(&snap).unwrap(), saved_at],
    )
    .unwrap();
    drop(db);

    let p = Persistence::open(&file).unwrap();
    assert_eq!(p.load().unwrap(), 1);
    assert!(
        status("p-later").is_none(),
        "nothing registered by the load"
    );
    // Saves before the registration keep the snapshot as it was.
    p.persist_now().unwrap();
    assert_eq!(saved(&file, "p-later"), Some((0, saved_at)));

    let policy = Resilience::builder("p-later")
        .failure_threshold(3)
        .cooldown(Duration::from_secs(60))
        .no_retry()
        .build()
        .unwrap();
    let st = policy.service().status();
    assert_eq!(st.state, CircuitState::Open);
    assert_eq!(st.failures, 3);
    let left = policy.service().snapshot().breaker.unwrap().cooldown_left;
    // 40 s less the 10 s since the save (and this test's own run time).
    assert!(
        left <= Duration::from_secs(30) && left > Duration::from_secs(20),
        "{left:?}"
    );
    assert_eq!(
        policy.call_sync(|| Ok::<(), Fail>(())),
        Err(Fail),
        "rejected while open"
    );
    // Registered now: saves write its live state.
    p.persist_now().unwrap();
    let (_, at) = saved(&file, "p-later").unwrap();
    assert!(at > saved_at);
}

#[test]
fn init_twice_for_one_file_loads_once() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    let policy = Resilience::builder("p-twice").no_retry().build().unwrap();
    assert_eq!(policy.call_sync(|| Ok::<(), Fail>(())), Ok(()));
    Persistence::open(&file).unwrap().persist_now().unwrap();
    policy.service().reset();
    let a = persist::init(&file).unwrap();
    let b = persist::init(&file).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(policy.service().status().successes, 1, "loaded once");
}

#[test]
fn init_from_env_reads_the_path_and_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("env.db");
    let none = run_child(
        child("env", &file)
            .env_remove(persist::PATH_ENV)
            .env_remove(persist::INTERVAL_ENV),
    );
    assert_eq!(none, vec![json!({ "none": true })]);

    let ok = run_child(
        child("env", &file)
            .env(persist::PATH_ENV, &file)
            .env(persist::INTERVAL_ENV, "250ms"),
    );
    assert_eq!(ok, vec![json!({ "path": file, "ok": true })]);
    assert!(Persistence::open(&file).is_ok());

    let bad = run_child(
        child("env", &file)
            .env(persist::PATH_ENV, &file)
            .env(persist::INTERVAL_ENV, "soon"),
    );
    let msg = bad[0]["error"].as_str().unwrap();
    assert!(
        msg.contains("RESILIENCE_PERSIST_INTERVAL") && msg.contains("soon"),
        "{msg}"
    );
}
