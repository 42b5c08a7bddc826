//! Breaker state and counters kept across restarts in an SQLite file (feature
//! `sqlite`).
//!
//! A restart otherwise forgets that a dependency was failing: every breaker comes
//! back closed and the first calls after the restart hit the broken dependency
//! again. With persistence, the state of every registered service
//! ([`crate::snapshot_all`]) is written to a file now and then, and read back at
//! start ([`crate::restore_all`]):
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::time::Duration;
//! use resilience_runtime::persist;
//!
//! // At start: open (or create) the file, restore what it holds, and save every 10 s.
//! let state = persist::init_with("/var/lib/myapp/breakers.db", Some(Duration::from_secs(10)))
//!     .expect("breaker state file");
//! if let Some(r) = state.recovered_from() {
//!     eprintln!("the old state file was unusable ({}); kept as {}", r.reason, r.moved_to.display());
//! }
//! // ... the application runs ...
//! // At shutdown: a last save, so the next start sees the latest state.
//! let _ = state.shutdown();
//! # }
//! ```
//!
//! Or, configured from the environment, [`init_from_env`]: `RESILIENCE_PERSIST_PATH`
//! (the file) and `RESILIENCE_PERSIST_INTERVAL` (how often to save, `10s` unless set).
//!
//! # What is kept, and how time is counted
//!
//! One row per service: its [`ServiceSnapshot`] as JSON and when it was saved
//! (`saved_at`, wall-clock Unix milliseconds). At load, the time the process was
//! down counts: an open breaker's remaining cooldown is reduced by the wall-clock
//! time since `saved_at` (floored at zero, so a breaker whose cooldown passed while
//! the process was down comes back ready to let a probe through), and a time
//! window's buckets age by as much. Counters are added to the current ones.
//!
//! Snapshots of services that are not registered yet are restored when they
//! register (their first call), and until then are carried over unchanged into
//! every save, so a service not called between two restarts keeps its state.
//!
//! # Crash safety
//!
//! The file is in WAL journal mode and every save is one transaction that replaces
//! all rows, so whatever moment the process dies at, the file holds one complete
//! snapshot: the last committed one. `synchronous = NORMAL`: in WAL mode that never
//! corrupts the file and never loses a commit when only the process dies; a power
//! loss or an OS crash may lose the last few commits (the file stays consistent,
//! with an older snapshot). That is the right trade for state re-saved every few
//! seconds, and saves no `fsync` per commit (`FULL` would do one each time).
//!
//! # Unusable files
//!
//! A file that is not SQLite, an SQLite database of another program (no `meta`
//! table with this crate's marker), one written by a newer schema version, or one
//! SQLite finds damaged is refused by [`Persistence::open`] with
//! [`PersistError::Corrupt`]. [`init`] instead moves it (with its `-wal` and `-shm`)
//! aside to `<path>.corrupt-<unix-ms>`, logs an error naming both paths, and starts
//! with a fresh file: the service starts, with fresh state, and the old file is kept
//! for a person to look at ([`Persistence::recovered_from`]).
//!
//! A single row whose JSON does not parse (a hand edit, or a snapshot format this
//! build does not know) is skipped with a warning naming the service; the other
//! rows load, and the next save drops the bad row.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use tokio::task::{AbortHandle, JoinHandle};

use crate::breaker::{CircuitState, WindowSnapshot};
use crate::service::ServiceSnapshot;

/// The value of the `format` key in the `meta` table: marks a file as this crate's.
pub const FORMAT_MARKER: &str = "resilience-runtime breaker state";

/// The schema version this build writes, and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The environment variable naming the state file for [`init_from_env`].
pub const PATH_ENV: &str = "RESILIENCE_PERSIST_PATH";

/// The environment variable giving the save interval for [`init_from_env`] (a
/// duration such as `10s` or `1m30s`, see [`crate::parse_duration`]).
pub const INTERVAL_ENV: &str = "RESILIENCE_PERSIST_INTERVAL";

/// How often [`init_from_env`] saves when [`INTERVAL_ENV`] is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// What [`Persistence::spawn_periodic`] uses instead of a zero interval.
const ZERO_INTERVAL_FALLBACK: Duration = Duration::from_secs(1);

/// How long a save or a load waits for another connection's lock on the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why persistence could not do what was asked. Every message names the file,
/// what is wrong, and what was (or was not) done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The file could not be opened or created (missing directory, permissions, a
    /// lock held by another program, ...). Nothing was loaded or changed.
    #[error(
        "cannot open or create the breaker state file `{}`: {source}; nothing was loaded \
         (check that the path is writable and that no other program holds the file)",
        path.display()
    )]
    Open {
        /// The state file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A file-system operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done, e.g. "read the header of".
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a state file this build can use: not SQLite, another
    /// program's SQLite database, a newer schema version, or damaged. It was not
    /// changed; [`init`] sets such a file aside and starts fresh.
    #[error(
        "`{}` is not a usable breaker state file: {reason}; it was left untouched and nothing \
         was loaded (`persist::init` moves such a file aside and starts with fresh state; \
         or move it away yourself)",
        path.display()
    )]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An unusable file could not be moved aside.
    #[error(
        "`{}` is not a usable breaker state file ({reason}) and could not be moved aside to \
         `{}`: {source}; move or delete it by hand",
        path.display(),
        moved_to.display()
    )]
    SetAside {
        /// The state file.
        path: PathBuf,
        /// Where it was to go.
        moved_to: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The error of the move.
        source: std::io::Error,
    },
    /// Reading the snapshots failed. Nothing was restored.
    #[error(
        "cannot read the breaker state from `{}`: {source}; nothing was restored",
        path.display()
    )]
    Read {
        /// The state file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// Saving the snapshots failed. The file still holds the previous complete
    /// snapshot.
    #[error(
        "cannot save the breaker state to `{}`: {source}; the file still holds the previous \
         complete snapshot",
        path.display()
    )]
    Write {
        /// The state file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// A service's snapshot could not be turned into JSON. Nothing was saved.
    #[error("cannot encode the state of service `{service}`: {source}; nothing was saved")]
    Encode {
        /// The service.
        service: String,
        /// The encoder's error.
        source: serde_json::Error,
    },
    /// The save interval setting is invalid. Persistence was not started.
    #[error("invalid save interval {setting}=`{value}`: {reason}; persistence was not started")]
    InvalidInterval {
        /// Where the setting came from (e.g. the environment variable).
        setting: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// What [`init`] did with a state file it could not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Where the unusable file now is (its `-wal` and `-shm`, if any, beside it with
    /// those suffixes).
    pub moved_to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// A breaker state file: saves the state of every registered service to it and
/// restores from it. See the [module docs](self).
///
/// Shared as an `Arc` between the periodic task and the code that shuts down.
pub struct Persistence {
    conn: Mutex<Connection>,
    path: PathBuf,
    recovered: Option<RecoveryInfo>,
    /// Loaded rows (JSON, `saved_at`) of services not registered at the last save:
    /// written again unchanged until the service registers.
    carried: Mutex<HashMap<String, (String, i64)>>,
    /// The last error the periodic task (or `shutdown`) logged.
    latch: ErrorLatch,
    /// Set by `shutdown`: periodic tasks end.
    closed: AtomicBool,
    /// The periodic tasks, stopped by `shutdown`.
    tasks: Mutex<Vec<AbortHandle>>,
    /// The task `init_with` started and its interval.
    managed: Mutex<Option<(Duration, AbortHandle)>>,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("path", &self.path)
            .field("recovered", &self.recovered)
            .field("closed", &self.closed.load(Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// What an existing file's schema says.
enum Found {
    /// No tables: a new (or empty) database.
    Empty,
    /// This crate's schema, of this version or older.
    Ours,
}

impl Persistence {
    /// Opens the state file at `path`, creating it (and its directory) with the
    /// schema when it does not exist. Nothing is loaded: see [`Persistence::load`],
    /// or [`init`] for both.
    ///
    /// A file that is not a usable state file (not SQLite, another program's
    /// database, a newer schema version, damaged) is left untouched and refused with
    /// [`PersistError::Corrupt`].
    pub fn open(path: impl AsRef<Path>) -> Result<Persistence, PersistError> {
        let path = path.as_ref().to_path_buf();
        let corrupt = |reason: String| PersistError::Corrupt {
            path: path.clone(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| PersistError::Io {
                path: dir.to_path_buf(),
                action: "create the directory",
                source,
            })?;
        }
        check_header(&path)?;
        let conn = Connection::open(&path).map_err(|source| PersistError::Open {
            path: path.clone(),
            source,
        })?;
        let sql = |source: rusqlite::Error| {
            if is_corruption(&source) {
                corrupt(format!("SQLite reports: {source}"))
            } else {
                PersistError::Open {
                    path: path.clone(),
                    source,
                }
            }
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(sql)?;
        // Only reads until the file is known to be ours: a foreign file stays as it was.
        let found = check_schema(&conn).map_err(|e| match e {
            SchemaProblem::Sql(e) => sql(e),
            SchemaProblem::Foreign(reason) => corrupt(reason),
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        if let Found::Empty = found {
            create_schema(&conn).map_err(sql)?;
        }
        Ok(Persistence {
            conn: Mutex::new(conn),
            path,
            recovered: None,
            carried: Mutex::new(HashMap::new()),
            latch: ErrorLatch::default(),
            closed: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
            managed: Mutex::new(None),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When [`init`] found the file unusable: where it moved it and why. `None` when
    /// the file was fine (or new).
    pub fn recovered_from(&self) -> Option<&RecoveryInfo> {
        self.recovered.as_ref()
    }

    /// Saves the state of every registered service ([`crate::snapshot_all`]), in one
    /// transaction that replaces the previous snapshot: the file holds either the old
    /// snapshot or the new one, whenever the process dies. Snapshots loaded for
    /// services not registered since are written again unchanged. Returns how many
    /// rows the file now holds.
    ///
    /// Blocking file I/O (a few milliseconds): from async code, call it through
    /// `spawn_blocking`, as [`Persistence::spawn_periodic`] does.
    pub fn persist_now(&self) -> Result<usize, PersistError> {
        let mut conn = lock(&self.conn);
        // Taken under the lock, so saves are written in the order they were taken.
        let snaps = crate::registry::snapshot_all();
        let saved_at = unix_ms(SystemTime::now());
        let mut rows = Vec::with_capacity(snaps.len());
        for s in &snaps {
            let json = serde_json::to_string(s).map_err(|source| PersistError::Encode {
                service: s.service.clone(),
                source,
            })?;
            rows.push((s.service.as_str(), json, saved_at));
        }
        let mut carried = lock(&self.carried);
        carried.retain(|name, _| {
            snaps
                .binary_search_by(|s| s.service.as_str().cmp(name))
                .is_err()
        });
        rows.extend(
            carried
                .iter()
                .map(|(n, (j, at))| (n.as_str(), j.clone(), *at)),
        );
        let write = |source| PersistError::Write {
            path: self.path.clone(),
            source,
        };
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(write)?;
        tx.execute("DELETE FROM snapshots", []).map_err(write)?;
        {
            let mut insert = tx
                .prepare("INSERT INTO snapshots (service, snapshot, saved_at) VALUES (?1, ?2, ?3)")
                .map_err(write)?;
            for (name, json, at) in &rows {
                insert.execute(params![name, json, at]).map_err(write)?;
            }
        }
        tx.commit().map_err(write)?;
        Ok(rows.len())
    }

    /// Reads the saved snapshots and restores them ([`crate::restore_all`]): at once
    /// for registered services, at their registration for the others. An open
    /// breaker's remaining cooldown is reduced by the wall-clock time since it was
    /// saved (see the [module docs](self)). Rows whose JSON does not parse are skipped
    /// with a warning. Returns how many snapshots were restored or queued.
    ///
    /// Counters are *added* to the current ones: load once, at start ([`init`] does).
    pub fn load(&self) -> Result<usize, PersistError> {
        let rows = self.read_rows()?;
        let now = unix_ms(SystemTime::now());
        let mut snaps = Vec::with_capacity(rows.len());
        let mut carried = lock(&self.carried);
        for (name, json, saved_at) in rows {
            let mut snap = match serde_json::from_str::<ServiceSnapshot>(&json) {
                Ok(s) if s.service == name => s,
                Ok(s) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        service = %name,
                        snapshot_of = %s.service,
                        "breaker state row skipped: its snapshot is of another service; \
                         the next save drops it"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::warn!(
                        path = %self.path.display(),
                        service = %name,
                        error = %e,
                        "breaker state row skipped: its JSON does not parse as a snapshot; \
                         the service starts with fresh state and the next save drops the row"
                    );
                    continue;
                }
            };
            let down =
                Duration::from_millis(u64::try_from(now.saturating_sub(saved_at)).unwrap_or(0));
            age(&mut snap, down);
            carried.insert(name, (json, saved_at));
            snaps.push(snap);
        }
        drop(carried);
        let n = snaps.len();
        let now_restored = crate::registry::restore_all(snaps);
        tracing::info!(
            path = %self.path.display(),
            restored = now_restored,
            queued = n - now_restored,
            "breaker state loaded"
        );
        Ok(n)
    }

    fn read_rows(&self) -> Result<Vec<(String, String, i64)>, PersistError> {
        let conn = lock(&self.conn);
        let read = |source: rusqlite::Error| {
            if is_corruption(&source) {
                PersistError::Corrupt {
                    path: self.path.clone(),
                    reason: format!("SQLite reports: {source}"),
                }
            } else {
                PersistError::Read {
                    path: self.path.clone(),
                    source,
                }
            }
        };
        let mut stmt = conn
            .prepare("SELECT service, snapshot, saved_at FROM snapshots ORDER BY service")
            .map_err(read)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(read)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read)?;
        Ok(rows)
    }

    /// Saves every `every` on a tokio task (the first save one interval from now),
    /// the file I/O on tokio's blocking pool. A failing save is logged with
    /// `tracing` at error level once per distinct error (and its recovery once at
    /// info level); the task never panics. It ends at [`Persistence::shutdown`] or
    /// with the runtime. A zero `every` is taken as one second.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn_periodic(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let every = if every.is_zero() {
            tracing::warn!(
                path = %self.path.display(),
                "breaker state save interval is zero: saving every second instead"
            );
            ZERO_INTERVAL_FALLBACK
        } else {
            every
        };
        let this = Arc::clone(self);
        let handle = tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await; // The first tick is now: nothing new to save yet.
            loop {
                interval.tick().await;
                if this.closed.load(Relaxed) {
                    return;
                }
                let p = Arc::clone(&this);
                match tokio::task::spawn_blocking(move || p.persist_now()).await {
                    Ok(result) => this.report(&result),
                    // The runtime is shutting down.
                    Err(_) => return,
                }
            }
        });
        lock(&self.tasks).push(handle.abort_handle());
        handle
    }

    /// Logs a save's outcome: an error once per distinct error, a recovery once.
    fn report(&self, result: &Result<usize, PersistError>) {
        match result {
            Ok(_) => {
                if self.latch.succeeded() {
                    tracing::info!(path = %self.path.display(), "breaker state saves work again");
                }
            }
            Err(e) => {
                if self.latch.failed(e.to_string()) {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %e,
                        "breaker state save failed; retrying at the next interval \
                         (logged again only if the error changes)"
                    );
                }
            }
        }
    }

    /// A last save, and the periodic tasks stop. Call it when the application shuts
    /// down (after the last calls), so the next start sees the latest state rather
    /// than the one of the last periodic save. A failure is logged (once per
    /// distinct error) and returned.
    pub fn shutdown(&self) -> Result<usize, PersistError> {
        self.closed.store(true, Relaxed);
        for t in lock(&self.tasks).drain(..) {
            t.abort();
        }
        lock(&self.managed).take();
        let result = self.persist_now();
        self.report(&result);
        result
    }
}

/// Refuses a non-empty file that does not begin with SQLite's header.
fn check_header(path: &Path) -> Result<(), PersistError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(PersistError::Io {
                path: path.to_path_buf(),
                action: "read the header of",
                source,
            })
        }
    };
    let mut head = Vec::with_capacity(64);
    file.by_ref()
        .take(64)
        .read_to_end(&mut head)
        .map_err(|source| PersistError::Io {
            path: path.to_path_buf(),
            action: "read the header of",
            source,
        })?;
    if head.is_empty() || head.starts_with(SQLITE_HEADER) {
        return Ok(());
    }
    Err(PersistError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("not an SQLite database (it begins with {})", preview(&head)),
    })
}

/// The start of a file, for a person: as text when it is text, else in hex.
fn preview(head: &[u8]) -> String {
    let text = String::from_utf8_lossy(&head[..head.len().min(24)]);
    if !text.contains('\u{fffd}') && text.chars().all(|c| !c.is_control() || c.is_whitespace()) {
        format!("the text {:?}", text)
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("the bytes {}", hex.join(" "))
    }
}

enum SchemaProblem {
    Sql(rusqlite::Error),
    Foreign(String),
}

impl From<rusqlite::Error> for SchemaProblem {
    fn from(e: rusqlite::Error) -> Self {
        SchemaProblem::Sql(e)
    }
}

/// Whether the database is empty or ours (of a version this build reads); reads only.
fn check_schema(conn: &Connection) -> Result<Found, SchemaProblem> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(Found::Empty);
    }
    if !tables.iter().any(|t| t == "meta") {
        return Err(SchemaProblem::Foreign(format!(
            "an SQLite database without this crate's `meta` table, probably another \
             program's (its tables: {})",
            tables.join(", ")
        )));
    }
    let meta = |key: &str| -> Result<Option<String>, SchemaProblem> {
        match conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, String>(0)
            })
            .optional()
        {
            Ok(v) => Ok(v),
            Err(e) if is_corruption(&e) => Err(SchemaProblem::Sql(e)),
            Err(e) => Err(SchemaProblem::Foreign(format!(
                "its `meta` table is not this crate's ({e})"
            ))),
        }
    };
    match meta("format")? {
        Some(f) if f == FORMAT_MARKER => {}
        Some(f) => {
            return Err(SchemaProblem::Foreign(format!(
                "its `meta` table marks it as `{f}`, not `{FORMAT_MARKER}`"
            )))
        }
        None => {
            return Err(SchemaProblem::Foreign(format!(
                "its `meta` table has no `format` marker (`{FORMAT_MARKER}` expected)"
            )))
        }
    }
    let version = meta("schema_version")?;
    match version.as_deref().map(str::parse::<u32>) {
        Some(Ok(v)) if v == SCHEMA_VERSION => {}
        Some(Ok(v)) if v > SCHEMA_VERSION => {
            return Err(SchemaProblem::Foreign(format!(
                "it was written by a newer version of resilience-runtime (schema version {v}; \
                 this build reads versions up to {SCHEMA_VERSION})"
            )))
        }
        _ => {
            return Err(SchemaProblem::Foreign(format!(
                "its schema version is {} (this build reads version {SCHEMA_VERSION})",
                version
                    .as_deref()
                    .map_or("missing".to_owned(), |v| format!("`{v}`"))
            )))
        }
    }
    if let Err(e) = conn.prepare("SELECT service, snapshot, saved_at FROM snapshots LIMIT 0") {
        if is_corruption(&e) {
            return Err(SchemaProblem::Sql(e));
        }
        return Err(SchemaProblem::Foreign(format!(
            "its `snapshots` table is missing or not this crate's ({e})"
        )));
    }
    let check: String = conn.query_row("PRAGMA quick_check(1)", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(SchemaProblem::Foreign(format!(
            "SQLite's integrity check fails: {check}"
        )));
    }
    Ok(Found::Ours)
}

fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE;
         CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);
         INSERT INTO meta (key, value) VALUES ('format', '{FORMAT_MARKER}'),
                                              ('schema_version', '{SCHEMA_VERSION}');
         CREATE TABLE snapshots (
             service  TEXT PRIMARY KEY NOT NULL,
             snapshot TEXT NOT NULL,
             saved_at INTEGER NOT NULL
         );
         COMMIT;"
    ))
}

/// Ages a snapshot by `down`, the wall-clock time since it was saved: an open
/// breaker's cooldown runs on (floored at zero), the time since its last transition
/// grows, and a time window's buckets get older.
fn age(snap: &mut ServiceSnapshot, down: Duration) {
    let Some(b) = &mut snap.breaker else {
        return;
    };
    if b.state == CircuitState::Open {
        b.cooldown_left = b.cooldown_left.saturating_sub(down);
    }
    b.since_transition = b.since_transition.map(|d| d.saturating_add(down));
    if let WindowSnapshot::Time { buckets } = &mut b.window {
        let ns = u64::try_from(down.as_nanos()).unwrap_or(u64::MAX);
        for bucket in buckets {
            bucket.age_ns = bucket.age_ns.saturating_add(ns);
        }
    }
}

/// Remembers the last error logged, so a failure repeating every interval is
/// logged once.
#[derive(Default)]
struct ErrorLatch(Mutex<Option<String>>);

impl ErrorLatch {
    /// Records an error; true when it differs from the last one (log it).
    fn failed(&self, msg: String) -> bool {
        let mut last = lock(&self.0);
        if last.as_deref() == Some(msg.as_str()) {
            return false;
        }
        *last = Some(msg);
        true
    }

    /// Records a success; true when the previous outcome was an error.
    fn succeeded(&self) -> bool {
        lock(&self.0).take().is_some()
    }
}

/// Where an unusable file goes: `<path>.corrupt-<unix-ms>` (with a counter when
/// taken).
fn aside_path(path: &Path, ms: i64) -> PathBuf {
    let mut n = 0;
    loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".corrupt-{ms}"));
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Moves `path` and its `-wal` and `-shm` aside; returns where the file went.
fn set_aside(path: &Path, reason: &str) -> Result<PathBuf, PersistError> {
    let moved_to = aside_path(path, unix_ms(SystemTime::now()));
    let fail = |to: &Path, source| PersistError::SetAside {
        path: path.to_path_buf(),
        moved_to: to.to_path_buf(),
        reason: reason.to_owned(),
        source,
    };
    for suffix in ["-wal", "-shm"] {
        let from = with_suffix(path, suffix);
        let to = with_suffix(&moved_to, suffix);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(&to, e)),
        }
    }
    std::fs::rename(path, &moved_to).map_err(|e| fail(&moved_to, e))?;
    Ok(moved_to)
}

/// Open files by path, so a second `init` of one file returns the first instance
/// rather than loading (and adding counters) again.
fn opened() -> &'static Mutex<HashMap<PathBuf, Weak<Persistence>>> {
    static OPENED: OnceLock<Mutex<HashMap<PathBuf, Weak<Persistence>>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

fn key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The one-call setup: opens (or creates) the state file at `path` and restores
/// what it holds ([`Persistence::load`]).
///
/// A file that is not a usable state file (see [`PersistError::Corrupt`]) does not
/// stop the application: it is moved (with its `-wal` and `-shm`) to
/// `<path>.corrupt-<unix-ms>`, an error naming both paths is logged, and a fresh
/// file is created; [`Persistence::recovered_from`] tells what happened. Other
/// failures (the file cannot be created, or read) are returned.
///
/// Called again for a file already in use in this process, it returns the same
/// instance without loading again (a load adds counters).
pub fn init(path: impl AsRef<Path>) -> Result<Arc<Persistence>, PersistError> {
    let path = path.as_ref();
    let mut opened = lock(opened());
    opened.retain(|_, w| w.strong_count() > 0);
    if let Some(p) = opened.get(&key(path)).and_then(Weak::upgrade) {
        return Ok(p);
    }
    let p = match open_and_load(path) {
        Ok(p) => p,
        Err(PersistError::Corrupt { reason, .. }) => {
            let moved_to = set_aside(path, &reason)?;
            tracing::error!(
                path = %path.display(),
                moved_to = %moved_to.display(),
                reason = %reason,
                "breaker state file unusable: moved aside, starting with fresh state"
            );
            let mut p = Persistence::open(path)?;
            p.recovered = Some(RecoveryInfo { moved_to, reason });
            p
        }
        Err(e) => return Err(e),
    };
    let p = Arc::new(p);
    opened.insert(key(path), Arc::downgrade(&p));
    Ok(p)
}

fn open_and_load(path: &Path) -> Result<Persistence, PersistError> {
    let p = Persistence::open(path)?;
    p.load()?;
    Ok(p)
}

/// [`init`], then, when `interval` is given, saves every `interval`
/// ([`Persistence::spawn_periodic`]). The periodic task needs a tokio runtime: when
/// called outside one, a warning says it was not started (call
/// [`Persistence::spawn_periodic`] from within one later).
///
/// Called again for the same file (e.g. when the configuration is applied again),
/// it keeps the state loaded the first time and, when the interval changed,
/// restarts the periodic task with the new one. A zero interval is refused.
pub fn init_with(
    path: impl AsRef<Path>,
    interval: Option<Duration>,
) -> Result<Arc<Persistence>, PersistError> {
    if interval.is_some_and(|i| i.is_zero()) {
        return Err(PersistError::InvalidInterval {
            setting: "interval".into(),
            value: "0s".into(),
            reason: "it must be more than zero".into(),
        });
    }
    let p = init(path)?;
    let Some(every) = interval else {
        return Ok(p);
    };
    let mut managed = lock(&p.managed);
    if managed.as_ref().is_some_and(|(d, _)| *d == every) || p.closed.load(Relaxed) {
        return Ok(Arc::clone(&p));
    }
    if tokio::runtime::Handle::try_current().is_err() {
        tracing::warn!(
            path = %p.path.display(),
            "not in a tokio runtime: breaker state is not saved periodically \
             (call `Persistence::spawn_periodic` from within a runtime)"
        );
        return Ok(Arc::clone(&p));
    }
    if let Some((_, old)) = managed.take() {
        old.abort();
    }
    let handle = p.spawn_periodic(every);
    *managed = Some((every, handle.abort_handle()));
    drop(managed);
    Ok(p)
}

/// Persistence configured by the environment: `None` when [`PATH_ENV`]
/// (`RESILIENCE_PERSIST_PATH`) is unset or empty; otherwise [`init_with`] that path
/// and the interval of [`INTERVAL_ENV`] (`RESILIENCE_PERSIST_INTERVAL`, e.g. `30s`;
/// [`DEFAULT_INTERVAL`] when unset). An invalid interval is an error and nothing is
/// done.
pub fn init_from_env() -> Option<Result<Arc<Persistence>, PersistError>> {
    let path = std::env::var_os(PATH_ENV).filter(|p| !p.is_empty())?;
    let invalid = |value: String, reason: String| PersistError::InvalidInterval {
        setting: INTERVAL_ENV.into(),
        value,
        reason,
    };
    let every = match std::env::var(INTERVAL_ENV) {
        Err(std::env::VarError::NotPresent) => DEFAULT_INTERVAL,
        Err(std::env::VarError::NotUnicode(v)) => {
            return Some(Err(invalid(
                v.to_string_lossy().into_owned(),
                "it is not valid UTF-8".into(),
            )))
        }
        Ok(v) if v.trim().is_empty() => DEFAULT_INTERVAL,
        Ok(v) => match crate::config::parse_duration(&v) {
            Ok(d) if d.is_zero() => {
                return Some(Err(invalid(v, "it must be more than zero".into())))
            }
            Ok(d) => d,
            Err(reason) => return Some(Err(invalid(v, reason))),
        },
    };
    Some(init_with(path, Some(every)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::{BreakerSnapshot, BucketSnapshot};
    use crate::counters::CounterSnapshot;

    fn snap(state: CircuitState, left: Duration, window: WindowSnapshot) -> ServiceSnapshot {
        ServiceSnapshot {
            service: "s".into(),
            breaker: Some(BreakerSnapshot {
                state,
                cooldown_left: left,
                cooldown: Duration::from_secs(60),
                probe_successes: 0,
                since_transition: Some(Duration::from_secs(1)),
                window,
            }),
            counters: CounterSnapshot::default(),
        }
    }

    #[test]
    fn age_runs_the_cooldown_down_to_zero() {
        let mut s = snap(
            CircuitState::Open,
            Duration::from_secs(50),
            WindowSnapshot::Consecutive { run: 0 },
        );
        age(&mut s, Duration::from_secs(20));
        let b = s.breaker.as_ref().unwrap();
        assert_eq!(b.cooldown_left, Duration::from_secs(30));
        assert_eq!(b.since_transition, Some(Duration::from_secs(21)));
        age(&mut s, Duration::from_secs(3600));
        assert_eq!(s.breaker.unwrap().cooldown_left, Duration::ZERO);
    }

    #[test]
    fn age_ages_time_buckets_and_leaves_closed_cooldowns() {
        let bucket = BucketSnapshot {
            age_ns: 5,
            calls: 3,
            failures: 1,
            slow: 0,
        };
        let mut s = snap(
            CircuitState::Closed,
            Duration::ZERO,
            WindowSnapshot::Time {
                buckets: vec![bucket],
            },
        );
        age(&mut s, Duration::from_nanos(10));
        let b = s.breaker.unwrap();
        assert_eq!(b.cooldown_left, Duration::ZERO);
        let WindowSnapshot::Time { buckets } = b.window else {
            panic!("time window expected")
        };
        assert_eq!(buckets[0].age_ns, 15);
        assert_eq!(buckets[0].calls, 3);
    }

    #[test]
    fn latch_reports_each_distinct_error_once() {
        let l = ErrorLatch::default();
        assert!(!l.succeeded());
        assert!(l.failed("a".into()));
        assert!(!l.failed("a".into()));
        assert!(l.failed("b".into()));
        assert!(l.succeeded());
        assert!(!l.succeeded());
        assert!(l.failed("b".into()));
    }

    #[test]
    fn preview_shows_text_as_text_and_binary_as_hex() {
        assert_eq!(preview(b"hello\nworld"), "the text \"hello\\nworld\"");
        assert_eq!(preview(&[0, 1, 0xff]), "the bytes 00 01 ff");
    }

    #[test]
    fn aside_path_avoids_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        let a = aside_path(&p, 42);
        assert_eq!(a, dir.path().join("state.db.corrupt-42"));
        std::fs::write(&a, b"x").unwrap();
        assert_eq!(aside_path(&p, 42), dir.path().join("state.db.corrupt-42-1"));
    }

    #[test]
    fn zero_interval_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = init_with(dir.path().join("z.db"), Some(Duration::ZERO)).unwrap_err();
        assert!(e.to_string().contains("more than zero"), "{e}");
        assert!(!dir.path().join("z.db").exists());
    }
}
