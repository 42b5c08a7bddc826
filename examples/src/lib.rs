//! Shared pieces of the examples: a simulated flaky dependency and a log setup.

pub mod ops;

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Mutex;

/// A dependency whose behaviour the example scripts: each call takes the next
/// outcome from a plan (`'S'` success, `'F'` failure, `'T'` a transient failure,
/// `'P'` a permanent one, `'H'` hang), repeating the last one when the plan runs out.
#[derive(Debug)]
pub struct FlakyService {
    plan: Mutex<Vec<char>>,
    calls: AtomicU32,
}

/// What the simulated dependency did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answered.
    Ok,
    /// Failed in a way worth retrying.
    Transient,
    /// Failed in a way no retry fixes.
    Permanent,
    /// Did not answer in time.
    Hang,
}

impl FlakyService {
    /// A service following `plan`, e.g. `"SSFFFFSS"`.
    pub fn new(plan: &str) -> Self {
        Self {
            plan: Mutex::new(plan.chars().rev().collect()),
            calls: AtomicU32::new(0),
        }
    }

    /// Replaces the rest of the plan.
    pub fn set_plan(&self, plan: &str) {
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = plan.chars().rev().collect();
    }

    /// How many times the service was reached.
    pub fn calls(&self) -> u32 {
        self.calls.load(Relaxed)
    }

    /// The next behaviour of the plan.
    pub fn next(&self) -> Behaviour {
        self.calls.fetch_add(1, Relaxed);
        let mut plan = self.plan.lock().unwrap_or_else(|p| p.into_inner());
        let c = if plan.len() > 1 {
            plan.pop()
        } else {
            plan.last().copied()
        };
        match c.unwrap_or('S') {
            'F' | 'T' => Behaviour::Transient,
            'P' => Behaviour::Permanent,
            'H' => Behaviour::Hang,
            _ => Behaviour::Ok,
        }
    }
}

/// Logs to stderr at `info` (override with `RUST_LOG`), so breaker transitions show.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_ansi(ansi)
        .try_init();
}

/// One line per service: state and counters.
pub fn print_statuses() {
    println!(
        "  {:<44} {:<10} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
        "service", "state", "calls", "ok", "fail", "rej", "retry", "tmo", "fallb"
    );
    for s in resilience_runtime::statuses() {
        println!(
            "  {:<44} {:<10} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}",
            s.service,
            format!("{:?}", s.state),
            s.calls,
            s.successes,
            s.failures,
            s.rejections,
            s.retries,
            s.timeouts,
            s.fallbacks
        );
    }
}
