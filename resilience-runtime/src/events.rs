//! Events: what happens to each service, for listeners registered globally or per
//! service.
//!
//! A call emits its events into a bounded queue that a background thread drains
//! into the listeners, so a listener never blocks a call, and a panicking listener
//! is caught (logged once) and does not break anything. With no listener
//! registered, an event costs one relaxed load.
//!
//! The queue holds [`QUEUE_CAPACITY`] events. When listeners fall that far behind,
//! further events are dropped and counted ([`dropped_events`]) rather than making
//! calls wait. [`flush_events`] waits until everything emitted so far has been
//! delivered (useful in tests and before shutdown).
//!
//! ```
//! use resilience_runtime::events::{on_event, flush_events, EventKind};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let opened = Arc::new(AtomicU64::new(0));
//! let seen = opened.clone();
//! let id = on_event(move |e| {
//!     if let EventKind::StateTransition { to, .. } = e.kind {
//!         if to == resilience_runtime::CircuitState::ForcedOpen {
//!             seen.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! });
//! let policy = resilience_runtime::Resilience::builder("events-doc").build().unwrap();
//! let _ = policy.call_sync(|| Ok::<_, resilience_runtime::ResilienceError>(1));
//! resilience_runtime::breaker("events-doc").unwrap().force_open();
//! flush_events();
//! assert_eq!(opened.load(Ordering::Relaxed), 1);
//! resilience_runtime::events::remove_listener(id);
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};
use std::time::Duration;

use crate::breaker::CircuitState;
use crate::ServiceName;

/// How many events may wait for the listeners before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Something that happened to a service.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The service it happened to.
    pub service: ServiceName,
    /// What happened.
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub enum EventKind {
    /// The breaker changed state.
    StateTransition {
        /// The state it left.
        from: CircuitState,
        /// The state it entered.
        to: CircuitState,
        /// Why.
        reason: TransitionReason,
    },
    /// The body returned `Ok` (or an error `record_if` does not count).
    Succeeded {
        /// How long the attempt took, where the service times its calls
        /// (`slow_call` or `record_latency`).
        latency: Option<Duration>,
    },
    /// A success slower than `slow_call` (emitted after its `Succeeded`).
    SlowCall {
        /// How long it took.
        latency: Duration,
    },
    /// The body failed, or its attempt timed out.
    Failed {
        /// How long the attempt took, where the service times its calls.
        latency: Option<Duration>,
    },
    /// The body's error was accepted by `ignore_if`: counted as neither.
    Ignored,
    /// The call was refused without running the body.
    Rejected {
        /// Which policy refused it.
        by: RejectedBy,
    },
    /// An attempt (or, with `total`, the whole call) ran out of time.
    Timeout {
        /// The limit that elapsed.
        after: Duration,
        /// `true` for `total_timeout`, `false` for the per-attempt `timeout`.
        total: bool,
    },
    /// Another attempt will start after `delay`.
    RetryScheduled {
        /// The attempt that failed (1 = the first).
        attempt: u32,
        /// The wait before the next one.
        delay: Duration,
    },
    /// The call waited for a rate-limit permit.
    RateLimitWaited {
        /// How long it was told to wait.
        wait: Duration,
    },
    /// The fallback ran.
    FallbackUsed,
}

/// Why a breaker changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TransitionReason {
    /// Closed -> Open: the failure rate reached `failure_rate`.
    FailureRate,
    /// Closed -> Open: the slow-call rate reached `slow_call_rate`.
    SlowCallRate,
    /// Closed -> Open: `failure_threshold` consecutive failures.
    ConsecutiveFailures,
    /// Open -> HalfOpen: the cooldown has passed.
    CooldownElapsed,
    /// HalfOpen -> Open: a probe failed.
    ProbeFailed,
    /// HalfOpen -> Open: a probe was slower than `slow_call`.
    ProbeSlow,
    /// HalfOpen -> Closed: `success_threshold` probes succeeded.
    ProbesSucceeded,
    /// An operator called `force_open`, `disable` or `reset`.
    Forced,
    /// State carried over from elsewhere (a snapshot, another instance).
    Restored,
}

impl TransitionReason {
    /// A short description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionReason::FailureRate => "failure rate",
            TransitionReason::SlowCallRate => "slow-call rate",
            TransitionReason::ConsecutiveFailures => "consecutive failures",
            TransitionReason::CooldownElapsed => "cooldown elapsed",
            TransitionReason::ProbeFailed => "probe failed",
            TransitionReason::ProbeSlow => "probe was slow",
            TransitionReason::ProbesSucceeded => "probes succeeded",
            TransitionReason::Forced => "forced by an operator",
            TransitionReason::Restored => "restored",
        }
    }
}

impl std::fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy that refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectedBy {
    /// The breaker is open, forced open, or out of half-open probes.
    CircuitBreaker,
    /// The bulkhead is full.
    Bulkhead,
    /// No rate-limit permit within `max_wait`.
    RateLimiter,
}

/// Identifies a listener, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

struct Entry {
    id: ListenerId,
    service: Option<Box<str>>,
    /// Wants state transitions only: calls then queue nothing for it.
    transitions_only: bool,
    f: Listener,
    panicked: AtomicBool,
}

struct Bus {
    listeners: RwLock<Vec<Entry>>,
    queue: Mutex<Queue>,
    ready: Condvar,
    done: Condvar,
    next_id: AtomicU64,
    dropped: AtomicU64,
}

struct Queue {
    events: std::collections::VecDeque<Event>,
    /// Events taken off the queue and delivered (or dropped), in order.
    delivered: u64,
    /// Events put on the queue.
    queued: u64,
    worker: bool,
}

/// Set while any listener is registered (transitions are queued then).
static ACTIVE_TRANSITIONS: AtomicBool = AtomicBool::new(false);

fn bus() -> &'static Bus {
    static B: OnceLock<Bus> = OnceLock::new();
    B.get_or_init(|| Bus {
        listeners: RwLock::new(Vec::new()),
        queue: Mutex::new(Queue {
            events: std::collections::VecDeque::new(),
            delivered: 0,
            queued: 0,
            worker: false,
        }),
        ready: Condvar::new(),
        done: Condvar::new(),
        next_id: AtomicU64::new(1),
        dropped: AtomicU64::new(0),
    })
}

/// Registers a listener for every service's events.
///
/// The first listener for every call's events (this one or
/// [`on_service_event`]'s), and the removal of the last, visit every registered
/// service once, as [`set_kill_switch`](crate::set_kill_switch) does.
pub fn on_event(f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
    add(None, false, Arc::new(f))
}

/// Registers a listener for every service's state transitions only: while only
/// such listeners exist, calls queue no per-call events (they stay as cheap as with
/// no listener at all).
pub fn on_transition(f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
    add(None, true, Arc::new(f))
}

/// Registers a listener for the events of one service (it need not exist yet).
pub fn on_service_event(service: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> ListenerId {
    add(Some(service.into()), false, Arc::new(f))
}

/// Removes a listener. Returns whether it was registered.
pub fn remove_listener(id: ListenerId) -> bool {
    let b = bus();
    let mut ls = b.listeners.write().unwrap_or_else(|p| p.into_inner());
    let before = ls.len();
    ls.retain(|e| e.id != id);
    set_active(&ls);
    ls.len() != before
}

/// Events dropped because the listeners fell [`QUEUE_CAPACITY`] events behind.
pub fn dropped_events() -> u64 {
    bus().dropped.load(Relaxed)
}

/// Waits until every event emitted before this call has been delivered to the
/// listeners.
///
/// A transition's event is emitted just after the breaker's state changes, so a
/// state that [`status`](crate::status()) reports (it reads the state word alone) may
/// be one whose event is still being emitted when this is called. To wait for the
/// events of the states you observe, read them with
/// [`snapshot_all`](crate::snapshot_all) or a service's
/// [`snapshot`](crate::Service::snapshot): those are taken under each breaker's
/// transition lock, which a transition holds until its event is emitted.
pub fn flush_events() {
    let b = bus();
    let mut q = b.queue.lock().unwrap_or_else(|p| p.into_inner());
    let target = q.queued;
    while q.delivered < target {
        q = b.done.wait(q).unwrap_or_else(|p| p.into_inner());
    }
}

fn set_active(ls: &[Entry]) {
    // Set while at least one listener wants every event: the only thing a call
    // reads when there is none.
    crate::service::set_lane_bar(
        crate::service::BAR_LISTENERS,
        ls.iter().any(|e| !e.transitions_only),
    );
    ACTIVE_TRANSITIONS.store(!ls.is_empty(), Relaxed);
}

fn add(service: Option<Box<str>>, transitions_only: bool, f: Listener) -> ListenerId {
    let b = bus();
    let id = ListenerId(b.next_id.fetch_add(1, Relaxed));
    {
        let mut q = b.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !q.worker {
            let spawned = std::thread::Builder::new()
                .name("resilience-events".into())
                .spawn(|| worker(bus()));
            match spawned {
                Ok(_) => q.worker = true,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the event thread: listeners will not be called");
                }
            }
        }
    }
    let mut ls = b.listeners.write().unwrap_or_else(|p| p.into_inner());
    ls.push(Entry {
        id,
        service,
        transitions_only,
        f,
        panicked: AtomicBool::new(false),
    });
    set_active(&ls);
    id
}

fn worker(b: &'static Bus) {
    let mut batch = Vec::new();
    loop {
        {
            let mut q = b.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.events.is_empty() {
                q = b.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            batch.extend(q.events.drain(..));
        }
        let n = batch.len() as u64;
        {
            let ls = b.listeners.read().unwrap_or_else(|p| p.into_inner());
            for event in batch.drain(..) {
                for l in ls.iter() {
                    if l.service.as_deref().is_some_and(|s| s != &*event.service) {
                        continue;
                    }
                    if l.transitions_only
                        && !matches!(event.kind, EventKind::StateTransition { .. })
                    {
                        continue;
                    }
                    let r = catch_unwind(AssertUnwindSafe(|| (l.f)(&event)));
                    if r.is_err() && !l.panicked.swap(true, Relaxed) {
                        tracing::error!(
                            service = %event.service,
                            listener = l.id.0,
                            "an event listener panicked; it stays registered and this is logged once"
                        );
                    }
                }
            }
        }
        let mut q = b.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.delivered += n;
        b.done.notify_all();
    }
}

/// Whether any listener is registered.
#[inline]
pub(crate) fn active() -> bool {
    crate::service::lane_bars() & crate::service::BAR_LISTENERS != 0
}

/// Queues an event for the listeners. Never blocks on a listener.
#[cold]
pub(crate) fn publish(service: &ServiceName, kind: EventKind) {
    let b = bus();
    let mut q = b.queue.lock().unwrap_or_else(|p| p.into_inner());
    if q.events.len() >= QUEUE_CAPACITY {
        drop(q);
        if b.dropped.fetch_add(1, Relaxed) == 0 {
            tracing::warn!(
                capacity = QUEUE_CAPACITY,
                "event listeners are too slow: events are being dropped"
            );
        }
        return;
    }
    q.events.push_back(Event {
        service: service.clone(),
        kind,
    });
    q.queued += 1;
    drop(q);
    b.ready.notify_one();
}

/// A breaker changed state: metrics and listeners.
pub(crate) fn transition(
    service: &ServiceName,
    from: CircuitState,
    to: CircuitState,
    reason: TransitionReason,
) {
    #[cfg(feature = "metrics")]
    crate::metrics::transition(service, from, to);
    if ACTIVE_TRANSITIONS.load(Relaxed) {
        publish(service, EventKind::StateTransition { from, to, reason });
    }
}
