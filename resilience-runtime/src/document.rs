//! Live configuration documents, in TOML or JSON: a `defaults` layer, per-service
//! settings and a kill switch, parsed and checked with every problem reported at
//! once, each with its dotted path (`services.payments.retry.max_attempts`).
//!
//! ```
//! use resilience_runtime::{ConfigDocument, Format, Spec};
//! let doc = ConfigDocument::parse(
//!     r#"
//!     [defaults]
//!     timeout = "2s"
//!     [services.payments.retry]
//!     max_attempts = 5
//!     "#,
//!     Format::Toml,
//! )
//! .unwrap();
//! let mut spec = Spec::EMPTY;
//! doc.defaults.as_ref().unwrap().fill_under(&mut spec);
//! doc.services["payments"].apply_over(&mut spec);
//! let config = spec.resolve().unwrap();
//! assert_eq!(config.retry.unwrap().max_attempts, 5);
//! assert_eq!(config.timeout, Some(std::time::Duration::from_secs(2)));
//! ```
//!
//! The document is walked by hand (not with serde's derive) so that every problem
//! is found in one pass: unknown keys (with a suggestion), wrong types, values out
//! of range and keys that contradict each other within one table.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use crate::config::{
    check_count, check_positive, check_ratio, format_duration, parse_duration, problem, Backoff,
    Jitter, Rate, Spec, Strategy, MAX_WINDOW_CALLS,
};
use crate::error::{ConfigError, ConfigProblem};

/// The syntax a configuration document is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// TOML.
    Toml,
    /// JSON.
    Json,
}

impl Format {
    /// The format a file's extension names: `.toml` or `.json` (any case); `None`
    /// for anything else.
    pub fn from_path(path: &Path) -> Option<Format> {
        let ext = path.extension()?.to_str()?;
        if ext.eq_ignore_ascii_case("toml") {
            Some(Format::Toml)
        } else if ext.eq_ignore_ascii_case("json") {
            Some(Format::Json)
        } else {
            None
        }
    }
}

/// A parsed and checked configuration document.
///
/// Applying it to a service's [`Spec`] (the keys its attribute or builder wrote)
/// is two layers: [`ServiceSettings::fill_under`] with `defaults` fills the keys
/// the spec left out, and [`ServiceSettings::apply_over`] with the service's own
/// entry replaces the keys the document writes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigDocument {
    /// `true` turns every policy but fallback into a pass-through; `None` when not
    /// written.
    pub kill_switch: Option<bool>,
    /// The `[defaults]` table: fills keys that a service's attribute or builder
    /// leaves out.
    pub defaults: Option<ServiceSettings>,
    /// The `[services.NAME]` tables, by service name; they win over the
    /// attribute's arguments.
    pub services: BTreeMap<String, ServiceSettings>,
    /// The `[persistence]` table: where breaker state is kept across restarts
    /// (feature `sqlite`).
    pub persistence: Option<PersistenceSettings>,
}

/// Where and how often breaker state is saved (feature `sqlite`; see `persist`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PersistenceSettings {
    /// The SQLite file; required.
    pub path: std::path::PathBuf,
    /// How often to save; `None`: every 10s.
    pub interval: Option<Duration>,
}

/// The settings of one service (or of `defaults`), `None` where not written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceSettings {
    /// The preset the service's keys are laid over.
    pub strategy: Option<Strategy>,
    /// Health: an open breaker on this service makes the application unhealthy.
    pub critical: Option<bool>,
    /// Record call latency (a metrics histogram) for this service.
    pub record_latency: Option<bool>,
    /// The limit on each attempt.
    pub timeout: Option<Duration>,
    /// The limit on the whole call, retries and waits included.
    pub total_timeout: Option<Duration>,
    /// The `circuit_breaker` table.
    pub circuit_breaker: Option<BreakerSettings>,
    /// The `retry` table.
    pub retry: Option<RetrySettings>,
    /// The `bulkhead` table.
    pub bulkhead: Option<BulkheadSettings>,
    /// The `rate_limit` table.
    pub rate_limit: Option<RateLimitSettings>,
}

/// A `circuit_breaker` table, `None` where a key is not written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BreakerSettings {
    /// `false` removes the breaker from the service.
    pub enabled: Option<bool>,
    /// Consecutive mode: open on the N-th consecutive failure.
    pub failure_threshold: Option<u32>,
    /// Rate mode: the failure ratio that opens the breaker, in (0, 1].
    pub failure_rate: Option<f64>,
    /// Rate mode: `window` written as a number of calls.
    pub window_calls: Option<u32>,
    /// Rate mode: `window` written as a duration.
    pub window_time: Option<Duration>,
    /// Rate mode: no decision before this many outcomes are in the window.
    pub min_calls: Option<u32>,
    /// A success slower than this is a slow call.
    pub slow_call: Option<Duration>,
    /// Rate mode: open when slow / recorded reaches this, in (0, 1].
    pub slow_call_rate: Option<f64>,
    /// Time spent open before probing.
    pub cooldown: Option<Duration>,
    /// The cap on a cooldown that doubles after each failed probe.
    pub cooldown_max: Option<Duration>,
    /// Probes admitted at once in half-open.
    pub half_open_calls: Option<u32>,
    /// Successful probes needed to close.
    pub success_threshold: Option<u32>,
}

/// A `retry` table, `None` where a key is not written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetrySettings {
    /// `false` removes the retry from the service.
    pub enabled: Option<bool>,
    /// Attempts in all, the first included.
    pub max_attempts: Option<u32>,
    /// The first delay.
    pub delay: Option<Duration>,
    /// How delays grow.
    pub backoff: Option<Backoff>,
    /// The growth factor of exponential backoff.
    pub multiplier: Option<f64>,
    /// The cap on one delay.
    pub max_delay: Option<Duration>,
    /// Randomisation of each delay.
    pub jitter: Option<Jitter>,
    /// No attempt starts later than this after the first began.
    pub max_elapsed: Option<Duration>,
}

/// A `bulkhead` table, `None` where a key is not written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BulkheadSettings {
    /// `false` removes the bulkhead from the service.
    pub enabled: Option<bool>,
    /// Calls inside at once.
    pub max_concurrent: Option<u32>,
    /// How long a call waits for a slot.
    pub max_wait: Option<Duration>,
}

/// A `rate_limit` table, `None` where a key is not written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RateLimitSettings {
    /// `false` removes the rate limit from the service.
    pub enabled: Option<bool>,
    /// The sustained rate, written `"100/s"`.
    pub rate: Option<Rate>,
    /// Permits that may be taken at once after a quiet period.
    pub burst: Option<u32>,
    /// How long a call may wait for its permit.
    pub max_wait: Option<Duration>,
}

impl ConfigDocument {
    /// Parses and checks a document; every problem at once.
    ///
    /// A syntax error is one problem whose path is `line L, column C`; every other
    /// problem's path is the dotted key at fault, e.g.
    /// `services.payments.circuit_breaker.failure_rate` (a service name with
    /// characters other than letters, digits, `_` and `-` is quoted:
    /// `services."a.b".timeout`). An empty (or blank) text is an empty document.
    pub fn parse(text: &str, format: Format) -> Result<ConfigDocument, ConfigError> {
        if text.trim().is_empty() {
            return Ok(ConfigDocument::default());
        }
        let mut walker = Walker::default();
        let doc = match format {
            Format::Json => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(root) => walker.document(Node::Json(&root)),
                Err(e) => {
                    let full = e.to_string();
                    let suffix = format!(" at line {} column {}", e.line(), e.column());
                    let message = full.strip_suffix(&suffix).unwrap_or(&full);
                    return Err(syntax_error(e.line(), e.column(), message));
                }
            },
            Format::Toml => match text.parse::<toml::Table>() {
                Ok(table) => {
                    let root = toml::Value::Table(table);
                    walker.document(Node::Toml(&root))
                }
                Err(e) => {
                    let (line, column) = match e.span() {
                        Some(span) => position(text, span.start),
                        None => (1, 1),
                    };
                    return Err(syntax_error(line, column, e.message().trim()));
                }
            },
        };
        if walker.problems.is_empty() {
            Ok(doc)
        } else {
            Err(ConfigError::new(walker.problems))
        }
    }

    /// Reads `path` (format by extension; an unknown extension or an I/O error is a
    /// problem with path = the file name) and parses it with [`ConfigDocument::parse`].
    pub fn from_path(path: &Path) -> Result<ConfigDocument, ConfigError> {
        let name = path.display().to_string();
        let one = |message: String| ConfigError::new(vec![problem(&name, message)]);
        let Some(format) = Format::from_path(path) else {
            return Err(one(
                "unknown configuration format: the file name must end in `.toml` or `.json`"
                    .to_owned(),
            ));
        };
        let text =
            std::fs::read_to_string(path).map_err(|e| one(format!("cannot read the file: {e}")))?;
        ConfigDocument::parse(&text, format)
    }
}

impl ServiceSettings {
    /// The top layer: every key written here replaces the spec's. A policy table adds that policy
    /// (spec.breaker = true etc.) unless `enabled = false`, which removes it (spec.breaker = false).
    /// `strategy` replaces spec.strategy. Writing failure_threshold clears the spec's rate-mode keys
    /// (failure_rate, window_calls, window_time, min_calls, slow_call_rate) and writing any rate-mode key
    /// clears spec.failure_threshold, so a document can switch a breaker's mode. Writing window_calls clears
    /// window_time and vice versa.
    ///
    /// `critical` and `record_latency` are not part of a [`Spec`] and are left to
    /// their readers.
    pub fn apply_over(&self, spec: &mut Spec) {
        set(&mut spec.strategy, self.strategy);
        set(&mut spec.timeout, self.timeout);
        set(&mut spec.total_timeout, self.total_timeout);
        if let Some(b) = &self.circuit_breaker {
            if b.enabled == Some(false) {
                spec.breaker = false;
            } else {
                spec.breaker = true;
                let rate_written = b.rate_keys_written();
                if b.failure_threshold.is_some() && !rate_written {
                    spec.failure_rate = None;
                    spec.window_calls = None;
                    spec.window_time = None;
                    spec.min_calls = None;
                    spec.slow_call_rate = None;
                }
                if rate_written && b.failure_threshold.is_none() {
                    spec.failure_threshold = None;
                }
                if b.window_calls.is_some() && b.window_time.is_none() {
                    spec.window_time = None;
                }
                if b.window_time.is_some() && b.window_calls.is_none() {
                    spec.window_calls = None;
                }
                set(&mut spec.failure_threshold, b.failure_threshold);
                set(&mut spec.failure_rate, b.failure_rate);
                set(&mut spec.window_calls, b.window_calls);
                set(&mut spec.window_time, b.window_time);
                set(&mut spec.min_calls, b.min_calls);
                set(&mut spec.slow_call, b.slow_call);
                set(&mut spec.slow_call_rate, b.slow_call_rate);
                set(&mut spec.cooldown, b.cooldown);
                set(&mut spec.cooldown_max, b.cooldown_max);
                set(&mut spec.half_open_calls, b.half_open_calls);
                set(&mut spec.success_threshold, b.success_threshold);
            }
        }
        if let Some(r) = &self.retry {
            if r.enabled == Some(false) {
                spec.retry = false;
            } else {
                spec.retry = true;
                set(&mut spec.max_attempts, r.max_attempts);
                set(&mut spec.delay, r.delay);
                set(&mut spec.backoff, r.backoff);
                set(&mut spec.multiplier, r.multiplier);
                set(&mut spec.max_delay, r.max_delay);
                set(&mut spec.jitter, r.jitter);
                set(&mut spec.max_elapsed, r.max_elapsed);
            }
        }
        if let Some(b) = &self.bulkhead {
            if b.enabled == Some(false) {
                spec.bulkhead = false;
            } else {
                spec.bulkhead = true;
                set(&mut spec.max_concurrent, b.max_concurrent);
                set(&mut spec.bulkhead_max_wait, b.max_wait);
            }
        }
        if let Some(l) = &self.rate_limit {
            if l.enabled == Some(false) {
                spec.rate_limit = false;
            } else {
                spec.rate_limit = true;
                set(&mut spec.rate, l.rate);
                set(&mut spec.burst, l.burst);
                set(&mut spec.rate_max_wait, l.max_wait);
            }
        }
    }

    /// The defaults layer: fills only keys the spec leaves `None`, only for policies the spec already has
    /// (defaults never add a policy); `strategy` fills spec.strategy if None; timeout/total_timeout fill only
    /// if None. Must not fill a key that would conflict with the spec's mode (no failure_threshold into a rate-mode
    /// spec and no rate keys into a consecutive spec; no window_time when window_calls is set and vice versa).
    ///
    /// Nor does it fill one side of a pair the spec writes the other side of, when
    /// the filled value would break the pair's order: `min_calls` above the window's
    /// calls, `cooldown` above `cooldown_max`, `delay` above `max_delay` (and the
    /// reverse): the spec's written key keeps its meaning and the preset supplies the
    /// other. `enabled` is ignored: defaults never add or remove a policy.
    pub fn fill_under(&self, spec: &mut Spec) {
        fill(&mut spec.strategy, self.strategy);
        fill(&mut spec.timeout, self.timeout);
        fill(&mut spec.total_timeout, self.total_timeout);
        if spec.breaker {
            if let Some(b) = &self.circuit_breaker {
                b.fill_under(spec);
            }
        }
        if spec.retry {
            if let Some(r) = &self.retry {
                fill(&mut spec.max_attempts, r.max_attempts);
                fill_ordered(&mut spec.delay, &mut spec.max_delay, r.delay, r.max_delay);
                fill(&mut spec.backoff, r.backoff);
                fill(&mut spec.multiplier, r.multiplier);
                fill(&mut spec.jitter, r.jitter);
                fill(&mut spec.max_elapsed, r.max_elapsed);
            }
        }
        if spec.bulkhead {
            if let Some(b) = &self.bulkhead {
                fill(&mut spec.max_concurrent, b.max_concurrent);
                fill(&mut spec.bulkhead_max_wait, b.max_wait);
            }
        }
        if spec.rate_limit {
            if let Some(l) = &self.rate_limit {
                fill(&mut spec.rate, l.rate);
                fill(&mut spec.burst, l.burst);
                fill(&mut spec.rate_max_wait, l.max_wait);
            }
        }
    }
}

impl BreakerSettings {
    fn rate_keys_written(&self) -> bool {
        self.failure_rate.is_some()
            || self.window_calls.is_some()
            || self.window_time.is_some()
            || self.min_calls.is_some()
            || self.slow_call_rate.is_some()
    }

    fn fill_under(&self, spec: &mut Spec) {
        let spec_rate = spec.failure_rate.is_some()
            || spec.window_calls.is_some()
            || spec.window_time.is_some()
            || spec.min_calls.is_some()
            || spec.slow_call_rate.is_some();
        let consecutive =
            spec.failure_threshold.is_some() || (!spec_rate && self.failure_threshold.is_some());
        if consecutive {
            fill(&mut spec.failure_threshold, self.failure_threshold);
        } else {
            fill(&mut spec.failure_rate, self.failure_rate);
            fill(&mut spec.slow_call_rate, self.slow_call_rate);
            let window_filled = spec.window_calls.is_none()
                && spec.window_time.is_none()
                && (self.window_calls.is_some() || self.window_time.is_some());
            if window_filled {
                if self.window_calls.is_some() {
                    spec.window_calls = self.window_calls;
                } else {
                    spec.window_time = self.window_time;
                }
            }
            let min_filled = spec.min_calls.is_none() && self.min_calls.is_some();
            fill(&mut spec.min_calls, self.min_calls);
            if let (Some(min), Some(window)) = (spec.min_calls, spec.window_calls) {
                if min > window {
                    if min_filled {
                        spec.min_calls = None;
                    }
                    if window_filled {
                        spec.window_calls = None;
                    }
                }
            }
        }
        fill(&mut spec.slow_call, self.slow_call);
        fill_ordered(
            &mut spec.cooldown,
            &mut spec.cooldown_max,
            self.cooldown,
            self.cooldown_max,
        );
        fill(&mut spec.half_open_calls, self.half_open_calls);
        fill(&mut spec.success_threshold, self.success_threshold);
    }
}

fn set<T: Copy>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn fill<T: Copy>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Fills `lo` and `hi` (which must keep `lo <= hi`) from defaults, and takes back
/// a filled value that would break the order against the other.
fn fill_ordered<T: Copy + PartialOrd>(
    lo: &mut Option<T>,
    hi: &mut Option<T>,
    default_lo: Option<T>,
    default_hi: Option<T>,
) {
    let (lo_written, hi_written) = (lo.is_some(), hi.is_some());
    fill(lo, default_lo);
    fill(hi, default_hi);
    if let (Some(l), Some(h)) = (*lo, *hi) {
        if l > h {
            if !lo_written {
                *lo = None;
            }
            if !hi_written {
                *hi = None;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Parsing and checking.

const TOP_KEYS: &[&str] = &["kill_switch", "defaults", "services", "persistence"];
const PERSISTENCE_KEYS: &[&str] = &["path", "interval"];
const SERVICE_KEYS: &[&str] = &[
    "strategy",
    "critical",
    "record_latency",
    "timeout",
    "total_timeout",
    "circuit_breaker",
    "retry",
    "bulkhead",
    "rate_limit",
];
const BREAKER_KEYS: &[&str] = &[
    "enabled",
    "failure_threshold",
    "failure_rate",
    "window",
    "min_calls",
    "slow_call",
    "slow_call_rate",
    "cooldown",
    "cooldown_max",
    "half_open_calls",
    "success_threshold",
];
const RETRY_KEYS: &[&str] = &[
    "enabled",
    "max_attempts",
    "delay",
    "backoff",
    "multiplier",
    "max_delay",
    "jitter",
    "max_elapsed",
];
const BULKHEAD_KEYS: &[&str] = &["enabled", "max_concurrent", "max_wait"];
const RATE_LIMIT_KEYS: &[&str] = &["enabled", "rate", "burst", "max_wait"];

/// The path of a problem that concerns the whole document.
const ROOT: &str = "(document)";
/// The most a probe or success count may be (as `Spec::resolve` checks).
const MAX_HALF_OPEN: u32 = 1 << 12;

fn syntax_error(line: usize, column: usize, message: &str) -> ConfigError {
    ConfigError::new(vec![problem(
        &format!("line {line}, column {column}"),
        message,
    )])
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// `prefix.key`, the key quoted when it is not a bare word.
fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// A value of either tree, seen through one interface.
#[derive(Clone, Copy)]
enum Node<'a> {
    Json(&'a serde_json::Value),
    Toml(&'a toml::Value),
}

enum Kind<'a> {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(&'a str),
    Table,
    Array,
    Null,
    Datetime(String),
}

impl<'a> Node<'a> {
    fn kind(self) -> Kind<'a> {
        match self {
            Node::Json(v) => match v {
                serde_json::Value::Null => Kind::Null,
                serde_json::Value::Bool(b) => Kind::Bool(*b),
                serde_json::Value::Number(n) => {
                    if let Some(u) = n.as_u64() {
                        Kind::Int(i128::from(u))
                    } else if let Some(i) = n.as_i64() {
                        Kind::Int(i128::from(i))
                    } else {
                        Kind::Float(n.as_f64().unwrap_or(f64::NAN))
                    }
                }
                serde_json::Value::String(s) => Kind::Str(s),
                serde_json::Value::Array(_) => Kind::Array,
                serde_json::Value::Object(_) => Kind::Table,
            },
            Node::Toml(v) => match v {
                toml::Value::String(s) => Kind::Str(s),
                toml::Value::Integer(i) => Kind::Int(i128::from(*i)),
                toml::Value::Float(f) => Kind::Float(*f),
                toml::Value::Boolean(b) => Kind::Bool(*b),
                toml::Value::Datetime(d) => Kind::Datetime(d.to_string()),
                toml::Value::Array(_) => Kind::Array,
                toml::Value::Table(_) => Kind::Table,
            },
        }
    }

    /// A table's entries, sorted by key (whatever order the parser keeps).
    fn entries(self) -> Option<Vec<(&'a str, Node<'a>)>> {
        let mut entries: Vec<(&'a str, Node<'a>)> = match self {
            Node::Json(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.as_str(), Node::Json(v)))
                .collect(),
            Node::Toml(toml::Value::Table(table)) => table
                .iter()
                .map(|(k, v)| (k.as_str(), Node::Toml(v)))
                .collect(),
            _ => return None,
        };
        entries.sort_by(|a, b| a.0.cmp(b.0));
        Some(entries)
    }

    /// What the value is, for "expected X, found Y".
    fn describe(self) -> String {
        match self.kind() {
            Kind::Bool(b) => format!("{b} (a boolean)"),
            Kind::Int(n) => format!("{n} (an integer)"),
            Kind::Float(f) => format!("{f:?} (a float)"),
            Kind::Str(s) => {
                const MAX: usize = 40;
                if s.chars().count() > MAX {
                    let head: String = s.chars().take(MAX).collect();
                    format!("{:?}... (a string)", head)
                } else {
                    format!("{s:?} (a string)")
                }
            }
            Kind::Table => "a table".to_owned(),
            Kind::Array => "an array".to_owned(),
            Kind::Null => "null".to_owned(),
            Kind::Datetime(d) => format!("{d} (a datetime)"),
        }
    }
}

/// Edit distance between two short strings (Levenshtein, by characters).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The known key a misspelt `key` most likely means: within 2 edits, or one of
/// the two a prefix of the other (at least 3 characters in common).
fn suggestion<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let len = key.chars().count();
    known
        .iter()
        .filter_map(|&k| {
            let k_len = k.chars().count();
            let close = len.abs_diff(k_len) <= 2 && distance(key, k) <= 2;
            let prefix = len.min(k_len) >= 3 && (k.starts_with(key) || key.starts_with(k));
            let rank = if len.abs_diff(k_len) <= 2 {
                distance(key, k)
            } else {
                usize::MAX
            };
            (close || prefix).then_some((rank, k))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, k)| k)
}

const STRATEGY_NAMES: &str =
    "a strategy name (`aggressive`, `balanced`, `conservative` or `critical`)";
const BACKOFF_NAMES: &str = "a backoff name (`fixed`, `linear` or `exponential`)";
const JITTER_NAMES: &str = "a jitter name (`none`, `full`, `equal` or `decorrelated`)";
const DURATION: &str = "a duration string like \"200ms\"";

#[derive(Default)]
struct Walker {
    problems: Vec<ConfigProblem>,
}

impl Walker {
    fn push(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(problem(path, message));
    }

    fn wrong(&mut self, path: &str, expected: &str, node: Node<'_>) {
        self.push(
            path,
            format!("expected {expected}, found {}", node.describe()),
        );
    }

    fn unknown(&mut self, path: &str, key: &str, known: &[&str]) {
        let message = match suggestion(key, known) {
            Some(k) => format!("unknown key; did you mean `{k}`?"),
            None => format!(
                "unknown key; expected one of {}",
                known
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        self.push(path, message);
    }

    /// Runs a check from `config.rs` and tells whether it passed.
    fn passes(&mut self, check: impl FnOnce(&mut Vec<ConfigProblem>)) -> bool {
        let before = self.problems.len();
        check(&mut self.problems);
        self.problems.len() == before
    }

    fn table<'a>(&mut self, path: &str, node: Node<'a>) -> Option<Vec<(&'a str, Node<'a>)>> {
        let entries = node.entries();
        if entries.is_none() {
            self.wrong(path, "a table", node);
        }
        entries
    }

    fn bool(&mut self, path: &str, node: Node<'_>) -> Option<bool> {
        match node.kind() {
            Kind::Bool(b) => Some(b),
            _ => {
                self.wrong(path, "true or false", node);
                None
            }
        }
    }

    /// An integer >= 1 that fits a `u32`.
    fn count(&mut self, path: &str, node: Node<'_>) -> Option<u32> {
        match node.kind() {
            Kind::Int(n) if n >= 0 => match u32::try_from(n) {
                Ok(n) => self.passes(|p| check_count(path, n, p)).then_some(n),
                Err(_) => {
                    self.push(
                        path,
                        format!("{n} is too large: the largest accepted is {}", u32::MAX),
                    );
                    None
                }
            },
            _ => {
                self.wrong(path, "a positive integer", node);
                None
            }
        }
    }

    /// A count of at most `max`.
    fn capped(&mut self, path: &str, node: Node<'_>, max: u32) -> Option<u32> {
        let n = self.count(path, node)?;
        if n > max {
            self.push(path, format!("must be at most {max}"));
            return None;
        }
        Some(n)
    }

    /// A number, integer or float.
    fn number(&mut self, path: &str, node: Node<'_>, expected: &str) -> Option<f64> {
        match node.kind() {
            Kind::Float(f) => Some(f),
            Kind::Int(n) => Some(n as f64),
            _ => {
                self.wrong(path, expected, node);
                None
            }
        }
    }

    fn ratio(&mut self, path: &str, node: Node<'_>) -> Option<f64> {
        let r = self.number(path, node, "a number in (0, 1]")?;
        self.passes(|p| check_ratio(path, r, p)).then_some(r)
    }

    fn multiplier(&mut self, path: &str, node: Node<'_>) -> Option<f64> {
        let m = self.number(path, node, "a number >= 1.0")?;
        if !(m.is_finite() && m >= 1.0) {
            self.push(path, format!("{m} must be a finite number >= 1.0"));
            return None;
        }
        Some(m)
    }

    fn duration(&mut self, path: &str, node: Node<'_>) -> Option<Duration> {
        match node.kind() {
            Kind::Str(s) => match parse_duration(s) {
                Ok(d) => Some(d),
                Err(message) => {
                    self.push(path, message);
                    None
                }
            },
            _ => {
                self.wrong(path, DURATION, node);
                None
            }
        }
    }

    /// A duration longer than zero.
    fn positive(&mut self, path: &str, node: Node<'_>) -> Option<Duration> {
        let d = self.duration(path, node)?;
        self.passes(|p| check_positive(path, d, p)).then_some(d)
    }

    /// A string parsed by `T::from_str` (strategy, backoff, jitter, rate).
    fn named<T: FromStr<Err = String>>(
        &mut self,
        path: &str,
        node: Node<'_>,
        expected: &str,
    ) -> Option<T> {
        match node.kind() {
            Kind::Str(s) => match s.parse() {
                Ok(v) => Some(v),
                Err(message) => {
                    self.push(path, message);
                    None
                }
            },
            _ => {
                self.wrong(path, expected, node);
                None
            }
        }
    }

    /// `enabled`, which only a service's own table may write.
    fn enabled(&mut self, path: &str, node: Node<'_>, in_defaults: bool) -> Option<bool> {
        if in_defaults {
            self.push(
                path,
                "`enabled` has no effect in `defaults`: defaults fill keys of the policies a \
                 service already has and never add or remove one; write it under \
                 `services.NAME`",
            );
            return None;
        }
        self.bool(path, node)
    }

    fn document(&mut self, root: Node<'_>) -> ConfigDocument {
        let mut doc = ConfigDocument::default();
        let Some(entries) = root.entries() else {
            self.wrong(ROOT, "a table at the top level", root);
            return doc;
        };
        for (key, value) in entries {
            match key {
                "kill_switch" => doc.kill_switch = self.bool(key, value),
                "defaults" => doc.defaults = self.service(key, value, true),
                "services" => {
                    let Some(services) = self.table(key, value) else {
                        continue;
                    };
                    for (name, value) in services {
                        let path = join("services", name);
                        if name.trim().is_empty() {
                            self.push(&path, "a service name cannot be empty");
                        }
                        if let Some(settings) = self.service(&path, value, false) {
                            doc.services.insert(name.to_owned(), settings);
                        }
                    }
                }
                "persistence" => doc.persistence = self.persistence(key, value),
                _ => self.unknown(&join("", key), key, TOP_KEYS),
            }
        }
        doc
    }

    fn persistence(&mut self, path: &str, node: Node<'_>) -> Option<PersistenceSettings> {
        let entries = self.table(path, node)?;
        let (mut file, mut interval) = (None, None);
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "path" => match value.kind() {
                    Kind::Str(s) if !s.trim().is_empty() => file = Some(s.into()),
                    _ => self.wrong(&p, "a file path string", value),
                },
                "interval" => interval = self.positive(&p, value),
                _ => self.unknown(&p, key, PERSISTENCE_KEYS),
            }
        }
        if file.is_none() {
            self.push(
                &join(path, "path"),
                "missing: write the SQLite file to keep breaker state in, e.g. \
                 `path = \"/var/lib/app/breakers.db\"`",
            );
        }
        if !cfg!(feature = "sqlite") {
            self.push(
                path,
                "persistence needs the `sqlite` feature of resilience-runtime",
            );
        }
        Some(PersistenceSettings {
            path: file?,
            interval,
        })
    }

    fn service(
        &mut self,
        path: &str,
        node: Node<'_>,
        in_defaults: bool,
    ) -> Option<ServiceSettings> {
        let entries = self.table(path, node)?;
        let mut s = ServiceSettings::default();
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "strategy" => s.strategy = self.named(&p, value, STRATEGY_NAMES),
                "critical" => s.critical = self.bool(&p, value),
                "record_latency" => s.record_latency = self.bool(&p, value),
                "timeout" => s.timeout = self.positive(&p, value),
                "total_timeout" => s.total_timeout = self.positive(&p, value),
                "circuit_breaker" => s.circuit_breaker = self.breaker(&p, value, in_defaults),
                "retry" => s.retry = self.retry(&p, value, in_defaults),
                "bulkhead" => s.bulkhead = self.bulkhead(&p, value, in_defaults),
                "rate_limit" => s.rate_limit = self.rate_limit(&p, value, in_defaults),
                _ => self.unknown(&p, key, SERVICE_KEYS),
            }
        }
        Some(s)
    }

    fn breaker(
        &mut self,
        path: &str,
        node: Node<'_>,
        in_defaults: bool,
    ) -> Option<BreakerSettings> {
        let entries = self.table(path, node)?;
        let mut b = BreakerSettings::default();
        let (mut threshold_written, mut rate_written) = (false, false);
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "enabled" => b.enabled = self.enabled(&p, value, in_defaults),
                "failure_threshold" => {
                    threshold_written = true;
                    b.failure_threshold = self.count(&p, value);
                }
                "failure_rate" => {
                    rate_written = true;
                    b.failure_rate = self.ratio(&p, value);
                }
                "window" => {
                    rate_written = true;
                    (b.window_calls, b.window_time) = self.window(&p, value);
                }
                "min_calls" => {
                    rate_written = true;
                    b.min_calls = self.count(&p, value);
                }
                "slow_call" => b.slow_call = self.positive(&p, value),
                "slow_call_rate" => {
                    rate_written = true;
                    b.slow_call_rate = self.ratio(&p, value);
                }
                "cooldown" => b.cooldown = self.positive(&p, value),
                "cooldown_max" => b.cooldown_max = self.positive(&p, value),
                "half_open_calls" => b.half_open_calls = self.capped(&p, value, MAX_HALF_OPEN),
                "success_threshold" => b.success_threshold = self.capped(&p, value, MAX_HALF_OPEN),
                _ => self.unknown(&p, key, BREAKER_KEYS),
            }
        }
        if threshold_written && rate_written {
            self.push(
                &join(path, "failure_threshold"),
                "`failure_threshold` (consecutive mode) cannot be combined with `failure_rate`, \
                 `window`, `min_calls` or `slow_call_rate` (rate mode): keep one mode",
            );
        }
        if let (Some(min_calls), Some(n)) = (b.min_calls, b.window_calls) {
            if min_calls > n {
                self.push(
                    &join(path, "min_calls"),
                    format!(
                        "{min_calls} is more than the window ({n} calls): the breaker could \
                         never decide; lower `min_calls` or widen `window`"
                    ),
                );
            }
        }
        if let (Some(cooldown), Some(max)) = (b.cooldown, b.cooldown_max) {
            if max < cooldown {
                self.push(
                    &join(path, "cooldown_max"),
                    format!(
                        "{} is below `cooldown` ({}): the cap must be at least the first cooldown",
                        format_duration(max),
                        format_duration(cooldown)
                    ),
                );
            }
        }
        Some(b)
    }

    /// `window`: an integer is a number of calls, a string a time window.
    fn window(&mut self, path: &str, node: Node<'_>) -> (Option<u32>, Option<Duration>) {
        match node.kind() {
            Kind::Int(n) if n >= 0 => {
                if n > i128::from(MAX_WINDOW_CALLS) {
                    self.push(
                        path,
                        format!("{n} calls is more than the largest window, {MAX_WINDOW_CALLS}"),
                    );
                    return (None, None);
                }
                (self.count(path, node), None)
            }
            Kind::Str(_) => {
                let Some(d) = self.duration(path, node) else {
                    return (None, None);
                };
                if d < Duration::from_secs(1) {
                    self.push(
                        path,
                        format!(
                            "{} is shorter than the shortest time window, 1s",
                            format_duration(d)
                        ),
                    );
                    return (None, None);
                }
                (None, Some(d))
            }
            _ => {
                self.wrong(
                    path,
                    "a number of calls or a duration string like \"60s\"",
                    node,
                );
                (None, None)
            }
        }
    }

    fn retry(&mut self, path: &str, node: Node<'_>, in_defaults: bool) -> Option<RetrySettings> {
        let entries = self.table(path, node)?;
        let mut r = RetrySettings::default();
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "enabled" => r.enabled = self.enabled(&p, value, in_defaults),
                "max_attempts" => r.max_attempts = self.count(&p, value),
                "delay" => r.delay = self.duration(&p, value),
                "backoff" => r.backoff = self.named(&p, value, BACKOFF_NAMES),
                "multiplier" => r.multiplier = self.multiplier(&p, value),
                "max_delay" => r.max_delay = self.duration(&p, value),
                "jitter" => r.jitter = self.named(&p, value, JITTER_NAMES),
                "max_elapsed" => r.max_elapsed = self.positive(&p, value),
                _ => self.unknown(&p, key, RETRY_KEYS),
            }
        }
        if let (Some(delay), Some(max)) = (r.delay, r.max_delay) {
            if max < delay {
                self.push(
                    &join(path, "max_delay"),
                    format!(
                        "{} is below `delay` ({}): the cap must be at least the first delay",
                        format_duration(max),
                        format_duration(delay)
                    ),
                );
            }
        }
        Some(r)
    }

    fn bulkhead(
        &mut self,
        path: &str,
        node: Node<'_>,
        in_defaults: bool,
    ) -> Option<BulkheadSettings> {
        let entries = self.table(path, node)?;
        let mut b = BulkheadSettings::default();
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "enabled" => b.enabled = self.enabled(&p, value, in_defaults),
                "max_concurrent" => b.max_concurrent = self.count(&p, value),
                "max_wait" => b.max_wait = self.duration(&p, value),
                _ => self.unknown(&p, key, BULKHEAD_KEYS),
            }
        }
        Some(b)
    }

    fn rate_limit(
        &mut self,
        path: &str,
        node: Node<'_>,
        in_defaults: bool,
    ) -> Option<RateLimitSettings> {
        let entries = self.table(path, node)?;
        let mut l = RateLimitSettings::default();
        for (key, value) in entries {
            let p = join(path, key);
            match key {
                "enabled" => l.enabled = self.enabled(&p, value, in_defaults),
                "rate" => l.rate = self.named(&p, value, "a rate string like \"100/s\""),
                "burst" => l.burst = self.count(&p, value),
                "max_wait" => l.max_wait = self.duration(&p, value),
                _ => self.unknown(&p, key, RATE_LIMIT_KEYS),
            }
        }
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BreakerMode, Window};

    const FULL_TOML: &str = r#"
kill_switch = false

[defaults]
strategy = "balanced"
timeout = "2s"
[defaults.circuit_breaker]
cooldown = "30s"

[services.payments]
strategy = "critical"
critical = true
record_latency = true
timeout = "5s"
total_timeout = "20s"
[services.payments.circuit_breaker]
enabled = true
failure_rate = 0.5
window = 20
min_calls = 10
slow_call = "2s"
slow_call_rate = 0.8
cooldown = "30s"
cooldown_max = "5m"
half_open_calls = 1
success_threshold = 1
[services.payments.retry]
enabled = true
max_attempts = 3
delay = "200ms"
backoff = "exponential"
multiplier = 2.0
max_delay = "10s"
jitter = "full"
max_elapsed = "30s"
[services.payments.bulkhead]
enabled = true
max_concurrent = 10
max_wait = "0ms"
[services.payments.rate_limit]
enabled = true
rate = "100/s"
burst = 20
max_wait = "0ms"

[services."crate::mod::fn".circuit_breaker]
failure_threshold = 5
[services.reports.circuit_breaker]
window = "60s"
"#;

    const FULL_JSON: &str = r#"{
  "kill_switch": false,
  "defaults": { "strategy": "balanced", "timeout": "2s",
                "circuit_breaker": { "cooldown": "30s" } },
  "services": {
    "payments": {
      "strategy": "critical", "critical": true, "record_latency": true,
      "timeout": "5s", "total_timeout": "20s",
      "circuit_breaker": { "enabled": true, "failure_rate": 0.5, "window": 20, "min_calls": 10,
        "slow_call": "2s", "slow_call_rate": 0.8, "cooldown": "30s", "cooldown_max": "5m",
        "half_open_calls": 1, "success_threshold": 1 },
      "retry": { "enabled": true, "max_attempts": 3, "delay": "200ms", "backoff": "exponential",
        "multiplier": 2.0, "max_delay": "10s", "jitter": "full", "max_elapsed": "30s" },
      "bulkhead": { "enabled": true, "max_concurrent": 10, "max_wait": "0ms" },
      "rate_limit": { "enabled": true, "rate": "100/s", "burst": 20, "max_wait": "0ms" }
    },
    "crate::mod::fn": { "circuit_breaker": { "failure_threshold": 5 } },
    "reports": { "circuit_breaker": { "window": "60s" } }
  }
}"#;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn toml_err(text: &str) -> ConfigError {
        ConfigDocument::parse(text, Format::Toml).expect_err("should be rejected")
    }
    fn json_err(text: &str) -> ConfigError {
        ConfigDocument::parse(text, Format::Json).expect_err("should be rejected")
    }
    /// The problems as `path: message` lines.
    fn lines(err: &ConfigError) -> Vec<String> {
        err.problems().iter().map(|p| p.to_string()).collect()
    }
    fn has(err: &ConfigError, line: &str) -> bool {
        lines(err).iter().any(|l| l == line)
    }

    #[test]
    fn full_example_parses_in_toml_and_json_to_equal_documents() {
        // The example minus `failure_threshold`, which cannot share a table with the
        // rate-mode keys: the second service shows it.
        let from_toml = ConfigDocument::parse(FULL_TOML, Format::Toml).unwrap();
        let from_json = ConfigDocument::parse(FULL_JSON, Format::Json).unwrap();
        assert_eq!(from_toml, from_json);

        assert_eq!(from_toml.kill_switch, Some(false));
        let defaults = from_toml.defaults.as_ref().unwrap();
        assert_eq!(defaults.strategy, Some(Strategy::Balanced));
        assert_eq!(defaults.timeout, Some(secs(2)));
        assert_eq!(
            defaults.circuit_breaker.as_ref().unwrap().cooldown,
            Some(secs(30))
        );

        let p = &from_toml.services["payments"];
        assert_eq!(p.strategy, Some(Strategy::Critical));
        assert_eq!((p.critical, p.record_latency), (Some(true), Some(true)));
        assert_eq!(
            (p.timeout, p.total_timeout),
            (Some(secs(5)), Some(secs(20)))
        );
        assert_eq!(
            p.circuit_breaker,
            Some(BreakerSettings {
                enabled: Some(true),
                failure_threshold: None,
                failure_rate: Some(0.5),
                window_calls: Some(20),
                window_time: None,
                min_calls: Some(10),
                slow_call: Some(secs(2)),
                slow_call_rate: Some(0.8),
                cooldown: Some(secs(30)),
                cooldown_max: Some(secs(300)),
                half_open_calls: Some(1),
                success_threshold: Some(1),
            })
        );
        assert_eq!(
            p.retry,
            Some(RetrySettings {
                enabled: Some(true),
                max_attempts: Some(3),
                delay: Some(ms(200)),
                backoff: Some(Backoff::Exponential),
                multiplier: Some(2.0),
                max_delay: Some(secs(10)),
                jitter: Some(Jitter::Full),
                max_elapsed: Some(secs(30)),
            })
        );
        assert_eq!(
            p.bulkhead,
            Some(BulkheadSettings {
                enabled: Some(true),
                max_concurrent: Some(10),
                max_wait: Some(Duration::ZERO),
            })
        );
        assert_eq!(
            p.rate_limit,
            Some(RateLimitSettings {
                enabled: Some(true),
                rate: Some(Rate::per_second(100)),
                burst: Some(20),
                max_wait: Some(Duration::ZERO),
            })
        );
        let f = from_toml.services["crate::mod::fn"]
            .circuit_breaker
            .as_ref()
            .unwrap();
        assert_eq!(f.failure_threshold, Some(5));
        let r = from_toml.services["reports"]
            .circuit_breaker
            .as_ref()
            .unwrap();
        assert_eq!(r.window_time, Some(secs(60)));
        assert_eq!(r.window_calls, None);
    }

    #[test]
    fn the_full_example_resolves() {
        let doc = ConfigDocument::parse(FULL_TOML, Format::Toml).unwrap();
        let mut spec = Spec::EMPTY;
        doc.defaults.as_ref().unwrap().fill_under(&mut spec);
        doc.services["payments"].apply_over(&mut spec);
        let c = spec.resolve().unwrap();
        assert!(c.breaker.is_some() && c.retry.is_some());
        assert!(c.bulkhead.is_some() && c.rate_limit.is_some());
        assert_eq!(c.timeout, Some(secs(5)));
    }

    #[test]
    fn empty_documents_are_empty() {
        for text in ["", "  \n\t", "# only a comment\n"] {
            assert_eq!(
                ConfigDocument::parse(text, Format::Toml),
                Ok(ConfigDocument::default())
            );
        }
        for text in ["", " \n", "{}"] {
            assert_eq!(
                ConfigDocument::parse(text, Format::Json),
                Ok(ConfigDocument::default())
            );
        }
        let doc = ConfigDocument::parse("[services.a]", Format::Toml).unwrap();
        assert_eq!(doc.services["a"], ServiceSettings::default());
    }

    #[test]
    fn a_bad_ratio_is_located_by_its_dotted_path() {
        let err = toml_err("[services.payments.circuit_breaker]\nfailure_rate = 1.7\n");
        assert_eq!(
            lines(&err),
            ["services.payments.circuit_breaker.failure_rate: 1.7 is not in (0, 1]"]
        );
        let err =
            json_err(r#"{"services": {"payments": {"circuit_breaker": {"failure_rate": 1.7}}}}"#);
        assert_eq!(
            lines(&err),
            ["services.payments.circuit_breaker.failure_rate: 1.7 is not in (0, 1]"]
        );
        // Odd service names are quoted.
        let err = toml_err(
            "[services.\"a.b\"]\ntimeout = \"0ms\"\n[services.\"x y\".retry]\nmax_attempts = 0\n",
        );
        assert_eq!(
            lines(&err),
            [
                "services.\"a.b\".timeout: must be longer than 0s",
                "services.\"x y\".retry.max_attempts: must be at least 1",
            ]
        );
        let err = toml_err("[defaults.circuit_breaker]\nslow_call_rate = 0\n");
        assert_eq!(
            lines(&err),
            ["defaults.circuit_breaker.slow_call_rate: 0 is not in (0, 1]"]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = toml_err(
            r#"
kill_switch = "yes"
[defaults]
strategy = "reckless"
[services.a]
timeout = "5 parsecs"
[services.a.circuit_breaker]
failure_rate = 2.0
cooldown = "0s"
half_open_calls = 5000
cooldwn = "1s"
[services.a.retry]
max_attempts = "three"
backoff = "quadratic"
multiplier = 0.5
[services.b.rate_limit]
rate = "10/week"
burst = 0
"#,
        );
        let got = lines(&err);
        assert_eq!(got.len(), 12, "{got:#?}");
        for expected in [
            "kill_switch: expected true or false, found \"yes\" (a string)",
            "defaults.strategy: unknown strategy `reckless`: expected one of `aggressive`, \
             `balanced`, `conservative`, `critical`",
            "services.a.timeout: invalid duration `5 parsecs`: unknown unit ` parsecs`; use `ms`, \
             `s`, `m` or `h`",
            "services.a.circuit_breaker.failure_rate: 2 is not in (0, 1]",
            "services.a.circuit_breaker.cooldown: must be longer than 0s",
            "services.a.circuit_breaker.half_open_calls: must be at most 4096",
            "services.a.circuit_breaker.cooldwn: unknown key; did you mean `cooldown`?",
            "services.a.retry.max_attempts: expected a positive integer, found \"three\" (a string)",
            "services.a.retry.backoff: unknown backoff `quadratic`: expected one of `fixed`, \
             `linear`, `exponential`",
            "services.a.retry.multiplier: 0.5 must be a finite number >= 1.0",
            "services.b.rate_limit.rate: invalid rate `10/week`: write it as `N/ms`, `N/s`, `N/m` \
             or `N/h`, e.g. `100/s`",
            "services.b.rate_limit.burst: must be at least 1",
        ] {
            assert!(got.iter().any(|l| l == expected), "missing {expected:?} in {got:#?}");
        }
        assert!(err
            .to_string()
            .starts_with("invalid resilience configuration (12 problems):"));
    }

    #[test]
    fn unknown_keys_get_a_suggestion_or_the_list_of_known_keys() {
        let err = toml_err(
            "kill_swich = true\nservice = {}\n[services.x]\ntimeuot = \"1s\"\nfallback = \"f\"\n\
             [services.x.circuit_breaker]\ncooldwn = \"1s\"\nwindow_calls = 10\n\
             [services.x.retry]\nmax = 3\n",
        );
        let got = lines(&err);
        assert_eq!(
            got,
            [
                "kill_swich: unknown key; did you mean `kill_switch`?",
                "service: unknown key; did you mean `services`?",
                "services.x.circuit_breaker.cooldwn: unknown key; did you mean `cooldown`?",
                "services.x.circuit_breaker.window_calls: unknown key; did you mean `window`?",
                "services.x.fallback: unknown key; expected one of `strategy`, `critical`, \
                 `record_latency`, `timeout`, `total_timeout`, `circuit_breaker`, `retry`, \
                 `bulkhead`, `rate_limit`",
                "services.x.retry.max: unknown key; did you mean `max_attempts`?",
                "services.x.timeuot: unknown key; did you mean `timeout`?",
            ]
        );
        let err = json_err(r#"{"services": {"x": {"bulkhead": {"size": 3, "max_concurent": 2}}}}"#);
        assert_eq!(
            lines(&err),
            [
                "services.x.bulkhead.max_concurent: unknown key; did you mean `max_concurrent`?",
                "services.x.bulkhead.size: unknown key; expected one of `enabled`, \
                 `max_concurrent`, `max_wait`",
            ]
        );
        // Odd unknown keys are quoted in the path.
        let err = json_err(r#"{"a.b": 1}"#);
        assert_eq!(err.problems()[0].path, "\"a.b\"");
    }

    #[test]
    fn persistence_table_needs_a_path_and_the_sqlite_feature() {
        let r = ConfigDocument::parse(
            "[persistence]\npath = \"state.db\"\ninterval = \"5s\"\n",
            Format::Toml,
        );
        if cfg!(feature = "sqlite") {
            let doc = r.unwrap();
            let p = doc.persistence.unwrap();
            assert_eq!(p.path, std::path::PathBuf::from("state.db"));
            assert_eq!(p.interval, Some(Duration::from_secs(5)));
        } else {
            let e = r.unwrap_err().to_string();
            assert!(
                e.contains("persistence: persistence needs the `sqlite` feature"),
                "{e}"
            );
        }
        let e = ConfigDocument::parse("[persistence]\nintervl = \"0s\"\n", Format::Toml)
            .unwrap_err()
            .to_string();
        assert!(e.contains("persistence.path: missing"), "{e}");
        assert!(
            e.contains("persistence.intervl: unknown key; did you mean `interval`?"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_name_what_was_found() {
        let err = toml_err(
            r#"
services = { a = 3, b = { timeout = 200, retry = [1, 2], critical = "yes" } }
defaults = "fast"
[more]
"#,
        );
        assert_eq!(
            lines(&err),
            [
                "defaults: expected a table, found \"fast\" (a string)",
                "more: unknown key; expected one of `kill_switch`, `defaults`, `services`, `persistence`",
                "services.a: expected a table, found 3 (an integer)",
                "services.b.critical: expected true or false, found \"yes\" (a string)",
                "services.b.retry: expected a table, found an array",
                "services.b.timeout: expected a duration string like \"200ms\", found 200 (an integer)",
            ]
        );
        let err = json_err(
            r#"{"services": {"a": {"retry": {"max_attempts": 2.5, "delay": null, "jitter": 1},
               "circuit_breaker": {"window": 2.5, "failure_rate": "half", "cooldown": {}},
               "rate_limit": {"rate": 100}, "strategy": true}}}"#,
        );
        assert_eq!(
            lines(&err),
            [
                "services.a.circuit_breaker.cooldown: expected a duration string like \"200ms\", \
                 found a table",
                "services.a.circuit_breaker.failure_rate: expected a number in (0, 1], found \
                 \"half\" (a string)",
                "services.a.circuit_breaker.window: expected a number of calls or a duration \
                 string like \"60s\", found 2.5 (a float)",
                "services.a.rate_limit.rate: expected a rate string like \"100/s\", found 100 (an \
                 integer)",
                "services.a.retry.delay: expected a duration string like \"200ms\", found null",
                "services.a.retry.jitter: expected a jitter name (`none`, `full`, `equal` or \
                 `decorrelated`), found 1 (an integer)",
                "services.a.retry.max_attempts: expected a positive integer, found 2.5 (a float)",
                "services.a.strategy: expected a strategy name (`aggressive`, `balanced`, \
                 `conservative` or `critical`), found true (a boolean)",
            ]
        );
        assert_eq!(
            lines(&json_err("[1, 2]")),
            ["(document): expected a table at the top level, found an array"]
        );
        assert_eq!(
            lines(&json_err(r#"{"services": [], "kill_switch": 1}"#)),
            [
                "kill_switch: expected true or false, found 1 (an integer)",
                "services: expected a table, found an array",
            ]
        );
        let err = toml_err("[services.a]\ntimeout = 1979-05-27\n");
        assert!(lines(&err)[0].contains("found 1979-05-27 (a datetime)"));
    }

    #[test]
    fn syntax_errors_are_located_by_line_and_column() {
        let err = toml_err("[services.a]\ntimeout = \"5s\nx = 1\n");
        assert_eq!(err.problems().len(), 1);
        assert!(
            err.problems()[0].path.starts_with("line 2, column "),
            "{err}"
        );
        assert!(!err.problems()[0].message.is_empty());

        let err = toml_err("[services.a]\nx = = 1\n");
        assert_eq!(err.problems()[0].path, "line 2, column 5", "{err}");

        let err = json_err("{\n  \"services\": {\n    \"a\": { \"timeout\": \"5s\", }\n  }\n}");
        assert_eq!(err.problems().len(), 1);
        assert_eq!(err.problems()[0].path, "line 3, column 29", "{err}");
        assert_eq!(err.problems()[0].message, "trailing comma");

        // A duplicate key is a TOML syntax error too.
        let err = toml_err("kill_switch = true\nkill_switch = false\n");
        assert!(err.problems()[0].path.starts_with("line 2,"), "{err}");
    }

    #[test]
    fn huge_and_negative_numbers_are_problems() {
        let err = toml_err(
            r#"
[services.a.circuit_breaker]
failure_threshold = 99999999999
half_open_calls = -1
cooldown_max = "99999999999999999999h"
[services.b.circuit_breaker]
window = 9223372036854775807
slow_call_rate = nan
[services.c.circuit_breaker]
window = 2000000
min_calls = -5
[services.a.retry]
multiplier = inf
max_attempts = -3
"#,
        );
        let got = lines(&err);
        for expected in [
            "services.a.circuit_breaker.failure_threshold: 99999999999 is too large: the largest \
             accepted is 4294967295",
            "services.a.circuit_breaker.half_open_calls: expected a positive integer, found -1 \
             (an integer)",
            "services.a.circuit_breaker.cooldown_max: invalid duration `99999999999999999999h`: \
             too large",
            "services.b.circuit_breaker.window: 9223372036854775807 calls is more than the \
             largest window, 1048576",
            "services.b.circuit_breaker.slow_call_rate: NaN is not in (0, 1]",
            "services.c.circuit_breaker.window: 2000000 calls is more than the largest window, \
             1048576",
            "services.c.circuit_breaker.min_calls: expected a positive integer, found -5 (an \
             integer)",
            "services.a.retry.multiplier: inf must be a finite number >= 1.0",
            "services.a.retry.max_attempts: expected a positive integer, found -3 (an integer)",
        ] {
            assert!(
                got.iter().any(|l| l == expected),
                "missing {expected:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), 9, "{got:#?}");

        let err = json_err(
            r#"{"services": {"a": {"bulkhead": {"max_concurrent": 18446744073709551615},
               "rate_limit": {"burst": 1e300}, "retry": {"max_attempts": -9223372036854775808,
               "multiplier": -1.5}}}}"#,
        );
        let got = lines(&err);
        assert!(has(
            &err,
            "services.a.bulkhead.max_concurrent: 18446744073709551615 is too large: the largest \
             accepted is 4294967295"
        ));
        assert!(has(
            &err,
            "services.a.rate_limit.burst: expected a positive integer, found 1e300 (a float)"
        ));
        assert!(has(
            &err,
            "services.a.retry.max_attempts: expected a positive integer, found \
             -9223372036854775808 (an integer)"
        ));
        assert!(has(
            &err,
            "services.a.retry.multiplier: -1.5 must be a finite number >= 1.0"
        ));
        assert_eq!(got.len(), 4, "{got:#?}");
        // Beyond f64, JSON numbers are a syntax error.
        let err = json_err(r#"{"services": {"a": {"retry": {"multiplier": 1e400}}}}"#);
        assert_eq!(lines(&err), ["line 1, column 49: number out of range"]);
    }

    #[test]
    fn keys_of_one_table_are_checked_against_each_other() {
        let err = toml_err(
            r#"
[services.a.circuit_breaker]
failure_threshold = 3
failure_rate = 0.5
[services.b.circuit_breaker]
cooldown = "1m"
cooldown_max = "30s"
window = 10
min_calls = 20
[services.c.retry]
delay = "2s"
max_delay = "1s"
"#,
        );
        assert_eq!(
            lines(&err),
            [
                "services.a.circuit_breaker.failure_threshold: `failure_threshold` (consecutive \
                 mode) cannot be combined with `failure_rate`, `window`, `min_calls` or \
                 `slow_call_rate` (rate mode): keep one mode",
                "services.b.circuit_breaker.min_calls: 20 is more than the window (10 calls): the \
                 breaker could never decide; lower `min_calls` or widen `window`",
                "services.b.circuit_breaker.cooldown_max: 30s is below `cooldown` (1m): the cap \
                 must be at least the first cooldown",
                "services.c.retry.max_delay: 1s is below `delay` (2s): the cap must be at least \
                 the first delay",
            ]
        );
        // A time window shorter than a second; `enabled` in defaults.
        let err = toml_err(
            "[services.a.circuit_breaker]\nwindow = \"500ms\"\n[defaults.retry]\nenabled = false\n",
        );
        let got = lines(&err);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(got[0].starts_with("defaults.retry.enabled: `enabled` has no effect in `defaults`"));
        assert_eq!(
            got[1],
            "services.a.circuit_breaker.window: 500ms is shorter than the shortest time window, 1s"
        );
    }

    #[test]
    fn format_follows_the_extension_and_from_path_reports_the_file() {
        assert_eq!(Format::from_path(Path::new("a/b.toml")), Some(Format::Toml));
        assert_eq!(Format::from_path(Path::new("b.JSON")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("b.yaml")), None);
        assert_eq!(Format::from_path(Path::new("toml")), None);

        let err = ConfigDocument::from_path(Path::new("conf.yaml")).unwrap_err();
        assert_eq!(err.problems()[0].path, "conf.yaml");
        assert!(err.problems()[0].message.contains("`.toml` or `.json`"));

        let dir = std::env::temp_dir().join(format!("resilience-document-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        let err = ConfigDocument::from_path(&missing).unwrap_err();
        assert_eq!(err.problems()[0].path, missing.display().to_string());
        assert!(err.problems()[0]
            .message
            .starts_with("cannot read the file: "));

        let file = dir.join("live.json");
        std::fs::write(&file, FULL_JSON).unwrap();
        let doc = ConfigDocument::from_path(&file).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(doc, ConfigDocument::parse(FULL_TOML, Format::Toml).unwrap());
    }

    fn settings(text: &str) -> ServiceSettings {
        let doc = ConfigDocument::parse(
            &format!("[services.s]\n{}", text.replace('[', "[services.s.")),
            Format::Toml,
        )
        .unwrap();
        doc.services["s"].clone()
    }

    #[test]
    fn document_keys_beat_the_spec_and_add_policies() {
        let mut spec = Spec {
            breaker: true,
            cooldown: Some(secs(5)),
            half_open_calls: Some(2),
            timeout: Some(secs(1)),
            ..Spec::EMPTY
        };
        settings(
            "strategy = \"aggressive\"\ntimeout = \"3s\"\n[circuit_breaker]\ncooldown = \"9s\"\n\
             [bulkhead]\n[retry]\nmax_attempts = 7\n",
        )
        .apply_over(&mut spec);
        let c = spec.resolve().unwrap();
        let b = c.breaker.unwrap();
        assert_eq!(b.cooldown, secs(9));
        assert_eq!(b.half_open_calls, 2, "a key the document leaves out stays");
        assert_eq!(c.timeout, Some(secs(3)));
        assert_eq!(c.retry.unwrap().max_attempts, 7);
        // The aggressive preset supplies what nobody wrote.
        assert_eq!(c.retry.unwrap().delay, ms(50));
        assert_eq!(
            c.bulkhead.unwrap().max_concurrent,
            crate::DEFAULT_MAX_CONCURRENT
        );
        assert!(c.rate_limit.is_none());
    }

    #[test]
    fn enabled_false_removes_a_policy() {
        let mut spec = Spec {
            breaker: true,
            retry: true,
            bulkhead: true,
            rate_limit: true,
            max_attempts: Some(4),
            ..Spec::EMPTY
        };
        settings(
            "[circuit_breaker]\nenabled = false\ncooldown = \"1s\"\n[retry]\nenabled = false\n\
             [bulkhead]\nenabled = false\n[rate_limit]\nenabled = true\nburst = 3\n",
        )
        .apply_over(&mut spec);
        let c = spec.resolve().unwrap();
        assert!(c.breaker.is_none() && c.retry.is_none() && c.bulkhead.is_none());
        assert_eq!(c.rate_limit.unwrap().burst, 3);
    }

    #[test]
    fn a_document_can_switch_a_breakers_mode() {
        // Rate mode in the spec, consecutive in the document.
        let mut spec = Spec {
            breaker: true,
            failure_rate: Some(0.3),
            window_calls: Some(40),
            min_calls: Some(20),
            slow_call_rate: Some(0.9),
            ..Spec::EMPTY
        };
        settings("[circuit_breaker]\nfailure_threshold = 4\n").apply_over(&mut spec);
        assert_eq!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Consecutive {
                failure_threshold: 4
            }
        );
        // And back: a rate key clears the threshold; a time window clears the count
        // window.
        let mut spec = Spec {
            breaker: true,
            failure_threshold: Some(4),
            window_calls: Some(40),
            ..Spec::EMPTY
        };
        // (The spec above is itself inconsistent; the document's keys settle it.)
        settings("[circuit_breaker]\nwindow = \"2m\"\n").apply_over(&mut spec);
        assert_eq!(spec.window_calls, None);
        assert_eq!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Rate {
                failure_rate: 0.5,
                window: Window::Time(secs(120)),
                min_calls: 10
            }
        );
        let mut spec = Spec {
            breaker: true,
            window_time: Some(secs(60)),
            ..Spec::EMPTY
        };
        settings("[circuit_breaker]\nwindow = 30\n").apply_over(&mut spec);
        assert_eq!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Rate {
                failure_rate: 0.5,
                window: Window::Calls(30),
                min_calls: 30
            }
        );
    }

    fn defaults(text: &str) -> ServiceSettings {
        let doc = ConfigDocument::parse(
            &format!("[defaults]\n{}", text.replace('[', "[defaults.")),
            Format::Toml,
        )
        .unwrap();
        doc.defaults.unwrap()
    }

    #[test]
    fn defaults_fill_only_missing_keys_and_never_add_a_policy() {
        let d = defaults(
            "strategy = \"conservative\"\ntimeout = \"2s\"\ntotal_timeout = \"9s\"\n\
             [circuit_breaker]\ncooldown = \"7s\"\nhalf_open_calls = 3\n\
             [retry]\nmax_attempts = 9\ndelay = \"1s\"\n[bulkhead]\nmax_concurrent = 2\n\
             [rate_limit]\nrate = \"5/s\"\n",
        );
        let mut spec = Spec {
            strategy: Some(Strategy::Aggressive),
            breaker: true,
            cooldown: Some(secs(3)),
            retry: true,
            timeout: Some(secs(1)),
            ..Spec::EMPTY
        };
        d.fill_under(&mut spec);
        let c = spec.resolve().unwrap();
        assert_eq!(spec.strategy, Some(Strategy::Aggressive));
        assert_eq!(c.timeout, Some(secs(1)), "the spec's own key stays");
        assert_eq!(c.total_timeout, Some(secs(9)), "a missing key is filled");
        let b = c.breaker.unwrap();
        assert_eq!(b.cooldown, secs(3));
        assert_eq!(b.half_open_calls, 3);
        let r = c.retry.unwrap();
        assert_eq!((r.max_attempts, r.delay), (9, secs(1)));
        assert!(c.bulkhead.is_none(), "defaults never add a policy");
        assert!(c.rate_limit.is_none(), "defaults never add a policy");

        let mut spec = Spec::EMPTY;
        d.fill_under(&mut spec);
        assert_eq!(spec.strategy, Some(Strategy::Conservative));
        assert_eq!(spec.resolve().unwrap().breaker, None);
        assert_eq!(spec.max_attempts, None);
    }

    #[test]
    fn defaults_do_not_fill_across_a_breakers_mode() {
        // Rate-mode defaults under a consecutive spec.
        let rate =
            defaults("[circuit_breaker]\nfailure_rate = 0.2\nwindow = \"30s\"\nmin_calls = 4\n");
        let mut spec = Spec {
            breaker: true,
            failure_threshold: Some(6),
            ..Spec::EMPTY
        };
        rate.fill_under(&mut spec);
        assert_eq!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Consecutive {
                failure_threshold: 6
            }
        );
        // Consecutive defaults under a rate-mode spec.
        let consecutive = defaults("[circuit_breaker]\nfailure_threshold = 2\n");
        let mut spec = Spec {
            breaker: true,
            failure_rate: Some(0.4),
            ..Spec::EMPTY
        };
        consecutive.fill_under(&mut spec);
        assert_eq!(spec.failure_threshold, None);
        assert!(matches!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Rate { failure_rate, .. } if failure_rate == 0.4
        ));
        // A spec with no mode key takes the defaults' mode.
        let mut spec = Spec {
            breaker: true,
            ..Spec::EMPTY
        };
        consecutive.fill_under(&mut spec);
        assert_eq!(spec.failure_threshold, Some(2));
        // Count window in the spec: the defaults' time window is not filled, their
        // rate-mode keys are.
        let mut spec = Spec {
            breaker: true,
            window_calls: Some(8),
            ..Spec::EMPTY
        };
        rate.fill_under(&mut spec);
        assert_eq!(spec.window_time, None);
        assert_eq!(
            spec.resolve().unwrap().breaker.unwrap().mode,
            BreakerMode::Rate {
                failure_rate: 0.2,
                window: Window::Calls(8),
                min_calls: 4
            }
        );
        // And the reverse.
        let calls = defaults("[circuit_breaker]\nwindow = 50\nmin_calls = 30\n");
        let mut spec = Spec {
            breaker: true,
            window_time: Some(secs(10)),
            ..Spec::EMPTY
        };
        calls.fill_under(&mut spec);
        assert_eq!(spec.window_calls, None);
        assert_eq!(spec.min_calls, Some(30));
        assert!(spec.resolve().is_ok());
    }

    #[test]
    fn defaults_do_not_break_the_order_of_a_written_pair() {
        let d = defaults(
            "[circuit_breaker]\ncooldown = \"1m\"\nmin_calls = 30\n[retry]\ndelay = \"5s\"\n",
        );
        let mut spec = Spec {
            breaker: true,
            cooldown_max: Some(secs(40)),
            window_calls: Some(10),
            retry: true,
            max_delay: Some(secs(1)),
            ..Spec::EMPTY
        };
        d.fill_under(&mut spec);
        assert_eq!(spec.cooldown, None);
        assert_eq!(spec.min_calls, None);
        assert_eq!(spec.delay, None);
        assert!(spec.resolve().is_ok(), "{:?}", spec.resolve());
    }

    #[test]
    fn layers_compose_defaults_under_the_spec_under_the_document() {
        let doc = ConfigDocument::parse(
            r#"
[defaults]
timeout = "2s"
[defaults.retry]
max_attempts = 4
jitter = "none"
[services.payments.retry]
jitter = "equal"
"#,
            Format::Toml,
        )
        .unwrap();
        let mut spec = Spec {
            retry: true,
            max_attempts: Some(2),
            jitter: Some(Jitter::Full),
            ..Spec::EMPTY
        };
        doc.defaults.as_ref().unwrap().fill_under(&mut spec);
        doc.services["payments"].apply_over(&mut spec);
        let c = spec.resolve().unwrap();
        let r = c.retry.unwrap();
        assert_eq!(r.max_attempts, 2, "the spec beats defaults");
        assert_eq!(r.jitter, Jitter::Equal, "the document beats the spec");
        assert_eq!(c.timeout, Some(secs(2)));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(ConfigDocument::parse(&deep, Format::Json).is_err());
        let deep = format!("x = {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(ConfigDocument::parse(&deep, Format::Toml).is_err());
        let deep = format!("x = {}{}", "{a=".repeat(50_000), "}".repeat(50_000));
        assert!(ConfigDocument::parse(&deep, Format::Toml).is_err());
        let deep = format!("{}= 1", "a.".repeat(100_000));
        assert!(ConfigDocument::parse(&deep, Format::Toml).is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("cooldwn", BREAKER_KEYS), Some("cooldown"));
        assert_eq!(suggestion("window_size", BREAKER_KEYS), Some("window"));
        assert_eq!(suggestion("retries", SERVICE_KEYS), None);
        assert_eq!(suggestion("", SERVICE_KEYS), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(join("services", "a.b"), "services.\"a.b\"");
        assert_eq!(join("services", ""), "services.\"\"");
        assert_eq!(
            join("services", "say \"hi\""),
            "services.\"say \\\"hi\\\"\""
        );
        assert_eq!(position("ab\ncé\nx", 6), (2, 3));
        assert_eq!(position("ab", 99), (1, 3));
    }

    mod fuzz {
        use super::super::{
            ConfigDocument, Format, BREAKER_KEYS, BULKHEAD_KEYS, RATE_LIMIT_KEYS, RETRY_KEYS,
            SERVICE_KEYS,
        };
        use crate::config::Spec;
        use proptest::prelude::*;

        const KEYS: &[&str] = &[
            "kill_switch",
            "defaults",
            "services",
            "payments",
            "a.b",
            "strategy",
            "critical",
            "timeout",
            "total_timeout",
            "circuit_breaker",
            "retry",
            "bulkhead",
            "rate_limit",
            "enabled",
            "failure_threshold",
            "failure_rate",
            "window",
            "min_calls",
            "slow_call",
            "slow_call_rate",
            "cooldown",
            "cooldown_max",
            "half_open_calls",
            "success_threshold",
            "max_attempts",
            "delay",
            "backoff",
            "multiplier",
            "max_delay",
            "jitter",
            "max_elapsed",
            "max_concurrent",
            "max_wait",
            "burst",
            "rate",
            "cooldwn",
        ];

        fn leaf() -> impl Strategy<Value = serde_json::Value> {
            use serde_json::Value;
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                (0u32..5000).prop_map(Value::from),
                // Floats that survive a trip through text exactly (serde_json's
                // default parser may be off by one ulp on extreme values).
                (-40i32..40).prop_map(|n| Value::from(f64::from(n) / 8.0)),
                prop::sample::select(vec![
                    "0ms",
                    "1s",
                    "30s",
                    "5m",
                    "999999999999h",
                    "",
                    "100/s",
                    "0/s",
                    "full",
                    "critical",
                    "exponential",
                    "3x",
                    "-1s",
                ])
                .prop_map(Value::from),
                ".{0,12}".prop_map(Value::from),
            ]
        }

        /// Any small tree, its keys mostly the document's.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                4 => leaf(),
                1 => any::<f64>().prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(5, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                    prop::collection::vec(
                        (
                            prop_oneof![
                                4 => prop::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
                                1 => ".{0,8}",
                            ],
                            inner
                        ),
                        0..8
                    )
                    .prop_map(|entries| serde_json::Value::Object(entries.into_iter().collect())),
                ]
            })
        }

        fn table(
            keys: &'static [&'static str],
            value: impl Strategy<Value = serde_json::Value>,
        ) -> impl Strategy<Value = serde_json::Value> {
            prop::collection::btree_map(
                prop_oneof![
                    8 => prop::sample::select(keys.to_vec()).prop_map(str::to_owned),
                    1 => "[a-z_]{0,8}",
                ],
                value,
                0..6,
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()))
        }

        fn service() -> impl Strategy<Value = serde_json::Value> {
            let policy = prop_oneof![
                table(BREAKER_KEYS, leaf()),
                table(RETRY_KEYS, leaf()),
                table(BULKHEAD_KEYS, leaf()),
                table(RATE_LIMIT_KEYS, leaf()),
            ];
            table(SERVICE_KEYS, prop_oneof![2 => policy, 1 => leaf()])
        }

        /// A tree shaped like a document: the right tables with the right keys, the
        /// values at the leaves arbitrary.
        fn document_value() -> impl Strategy<Value = serde_json::Value> {
            let services = prop::collection::btree_map(".{0,6}", service(), 0..4)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect()));
            (any::<bool>(), service(), services).prop_map(|(kill, defaults, services)| {
                serde_json::json!({ "kill_switch": kill, "defaults": defaults, "services": services })
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn document_shaped_values_parse_alike_in_json_and_toml(value in document_value()) {
                let json = ConfigDocument::parse(&value.to_string(), Format::Json);
                // (The serializer writes integers above `i64::MAX` that TOML cannot read
                // back.)
                let toml_text = toml::to_string(&value)
                    .ok()
                    .filter(|t| t.parse::<toml::Table>().is_ok());
                if let Some(toml_text) = toml_text {
                    let from_toml = ConfigDocument::parse(&toml_text, Format::Toml);
                    prop_assert_eq!(&json, &from_toml, "{}", toml_text);
                }
                if let Ok(doc) = json {
                    for s in doc.services.values() {
                        let mut spec = Spec::EMPTY;
                        if let Some(d) = &doc.defaults {
                            d.fill_under(&mut spec);
                        }
                        s.apply_over(&mut spec);
                        let _ = spec.resolve();
                    }
                }
            }

            #[test]
            fn arbitrary_text_never_panics(text in ".{0,200}") {
                let _ = ConfigDocument::parse(&text, Format::Toml);
                let _ = ConfigDocument::parse(&text, Format::Json);
            }

            #[test]
            fn arbitrary_json_values_never_panic(value in json_value()) {
                let text = value.to_string();
                let json = ConfigDocument::parse(&text, Format::Json);
                // Every problem has a path and a message.
                if let Err(e) = &json {
                    prop_assert!(!e.problems().is_empty());
                    prop_assert!(e.problems().iter().all(|p| !p.path.is_empty() && !p.message.is_empty()));
                }
                // The same tree in TOML, when TOML can hold it, parses the same way.
                if let Ok(toml_text) = toml::to_string(&value) {
                    let from_toml = ConfigDocument::parse(&toml_text, Format::Toml);
                    if let (Ok(a), Ok(b)) = (&json, &from_toml) {
                        prop_assert_eq!(a, b);
                    }
                }
                // And a parsed document applies without panicking.
                if let Ok(doc) = json {
                    for s in doc.services.values() {
                        let mut spec = Spec::EMPTY;
                        if let Some(d) = &doc.defaults {
                            d.fill_under(&mut spec);
                        }
                        s.apply_over(&mut spec);
                        let _ = spec.resolve();
                    }
                }
            }
        }
    }
}
