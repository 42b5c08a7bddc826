//! The circuit breaker.
//!
//! All of its state that calls touch sits in one atomic word, `ctl`: the state, an
//! epoch that grows on every transition, and in half-open the probes in flight and
//! the successful probes so far. The closed-state fast path is one load of `ctl` at
//! admission and, for a success, one more load in the window. Transitions are rare
//! and take a mutex, so each happens exactly once and its side effects (clearing the
//! window, setting the end of the cooldown) are done before the new state is
//! published. An outcome is recorded only if the epoch it was admitted in is still
//! current; late outcomes of an earlier state touch only the counters.

mod window;

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::sync::{AtomicU64, Mutex};
use std::time::Duration;

use crate::clock::{self, Nanos};
use crate::config::BreakerConfig;
use window::Window;
pub(crate) use window::{Outcome, Trip};

/// The state of a circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CircuitState {
    /// Calls pass and their outcomes are recorded.
    Closed,
    /// Calls are rejected until the cooldown has passed.
    Open,
    /// A bounded number of probes pass; their outcomes decide.
    HalfOpen,
    /// Rejects everything until reset; set by an operator.
    ForcedOpen,
    /// Lets everything through and never opens; outcomes are still counted.
    Disabled,
}

impl CircuitState {
    const fn code(self) -> u64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
            CircuitState::ForcedOpen => 3,
            CircuitState::Disabled => 4,
        }
    }
    const fn from_code(c: u64) -> Self {
        match c {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            3 => CircuitState::ForcedOpen,
            _ => CircuitState::Disabled,
        }
    }
}

// ctl layout: state in bits 0..3, probes in flight in bits 3..16, successful probes in
// bits 16..29, epoch in bits 32..64.
const STATE_MASK: u64 = 0b111;
const INFLIGHT_SHIFT: u32 = 3;
const SUCC_SHIFT: u32 = 16;
const COUNT_MASK: u64 = (1 << 13) - 1;
const EPOCH_SHIFT: u32 = 32;

#[inline]
fn state_of(ctl: u64) -> CircuitState {
    CircuitState::from_code(ctl & STATE_MASK)
}
#[inline]
fn epoch_of(ctl: u64) -> u32 {
    (ctl >> EPOCH_SHIFT) as u32
}
#[inline]
fn inflight_of(ctl: u64) -> u64 {
    (ctl >> INFLIGHT_SHIFT) & COUNT_MASK
}
#[inline]
fn successes_of(ctl: u64) -> u64 {
    (ctl >> SUCC_SHIFT) & COUNT_MASK
}
fn pack(state: CircuitState, epoch: u32, inflight: u64, successes: u64) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT)
        | (successes << SUCC_SHIFT)
        | (inflight << INFLIGHT_SHIFT)
        | state.code()
}

/// Why the breaker refused a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rejected {
    pub retry_after: Duration,
}

/// Admission to the breaker: give it back with [`Breaker::record`] or, for a call
/// that ended without an outcome (cancelled), [`Breaker::abandon`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Admission {
    epoch: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe,
    /// Disabled: counted, never recorded.
    Pass,
}

pub(crate) struct Breaker {
    service: Box<str>,
    ctl: AtomicU64,
    open_until: AtomicU64,
    cooldown: AtomicU64,
    window: Window,
    config: BreakerConfig,
    transitions: Mutex<()>,
}

/// What a transition reports, for logs and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: &'static str,
}

impl Breaker {
    pub(crate) fn new(service: &str, config: BreakerConfig) -> Self {
        Self {
            service: service.into(),
            ctl: AtomicU64::new(pack(CircuitState::Closed, 0, 0, 0)),
            open_until: AtomicU64::new(0),
            cooldown: AtomicU64::new(clock::dur_nanos(config.cooldown)),
            window: Window::new(&config),
            config,
            transitions: Mutex::new(()),
        }
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }

    pub(crate) fn state(&self) -> CircuitState {
        state_of(self.ctl.load(Acquire))
    }

    pub(crate) fn failure_rate(&self) -> Option<f64> {
        self.window.failure_rate()
    }

    /// Whether the call may run. The closed state costs one load.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission, Rejected> {
        let ctl = self.ctl.load(Acquire);
        if ctl & STATE_MASK == CircuitState::Closed.code() {
            return Ok(Admission {
                epoch: epoch_of(ctl),
                kind: Kind::Closed,
            });
        }
        self.admit_slow(ctl)
    }

    #[cold]
    fn admit_slow(&self, mut ctl: u64) -> Result<Admission, Rejected> {
        loop {
            match state_of(ctl) {
                CircuitState::Closed => {
                    return Ok(Admission {
                        epoch: epoch_of(ctl),
                        kind: Kind::Closed,
                    })
                }
                CircuitState::Disabled => {
                    return Ok(Admission {
                        epoch: epoch_of(ctl),
                        kind: Kind::Pass,
                    })
                }
                CircuitState::ForcedOpen => {
                    return Err(Rejected {
                        retry_after: Duration::from_nanos(self.cooldown.load(Relaxed)),
                    })
                }
                CircuitState::Open => {
                    let now = clock::now_nanos();
                    let until = self.open_until.load(Relaxed);
                    if now < until {
                        return Err(Rejected {
                            retry_after: Duration::from_nanos(until - now),
                        });
                    }
                    // The cooldown is over: this call turns it half-open and is its
                    // first probe.
                    if self
                        .transition(epoch_of(ctl), CircuitState::HalfOpen, "cooldown elapsed")
                        .is_some()
                    {
                        return Ok(Admission {
                            epoch: epoch_of(ctl).wrapping_add(1),
                            kind: Kind::Probe,
                        });
                    }
                    ctl = self.ctl.load(Acquire);
                }
                CircuitState::HalfOpen => {
                    if inflight_of(ctl) >= u64::from(self.config.half_open_calls) {
                        return Err(Rejected {
                            retry_after: Duration::ZERO,
                        });
                    }
                    match self.ctl.compare_exchange_weak(
                        ctl,
                        ctl + (1 << INFLIGHT_SHIFT),
                        AcqRel,
                        Acquire,
                    ) {
                        Ok(_) => {
                            return Ok(Admission {
                                epoch: epoch_of(ctl),
                                kind: Kind::Probe,
                            })
                        }
                        Err(now) => ctl = now,
                    }
                }
            }
        }
    }

    /// Records the outcome of an admitted call. Returns the transition it caused.
    #[inline]
    pub(crate) fn record(&self, adm: Admission, outcome: Option<Outcome>) -> Option<Transition> {
        match adm.kind {
            Kind::Pass => None,
            Kind::Closed => {
                let o = outcome?;
                // A late outcome of an earlier closed state (the breaker has opened,
                // and maybe closed again, since) must not land in the new window.
                if epoch_of(self.ctl.load(Acquire)) != adm.epoch {
                    return None;
                }
                let trip = self.window.record(o)?;
                self.trip(adm.epoch, trip)
            }
            Kind::Probe => self.probe_done(adm.epoch, outcome),
        }
    }

    #[cold]
    fn trip(&self, epoch: u32, trip: Trip) -> Option<Transition> {
        let ctl = self.ctl.load(Acquire);
        if epoch_of(ctl) != epoch || state_of(ctl) != CircuitState::Closed {
            return None;
        }
        self.transition(epoch, CircuitState::Open, trip.reason())
    }

    /// A probe finished (`None`: it was ignored or abandoned).
    #[cold]
    fn probe_done(&self, epoch: u32, outcome: Option<Outcome>) -> Option<Transition> {
        let mut ctl = self.ctl.load(Acquire);
        loop {
            if epoch_of(ctl) != epoch || state_of(ctl) != CircuitState::HalfOpen {
                return None;
            }
            match outcome {
                Some(o) if o.failure || o.slow => {
                    let reason = if o.failure {
                        "probe failed"
                    } else {
                        "probe was slow"
                    };
                    return self.transition(epoch, CircuitState::Open, reason);
                }
                Some(_) => {
                    let successes = successes_of(ctl) + 1;
                    if successes >= u64::from(self.config.success_threshold) {
                        return self.transition(epoch, CircuitState::Closed, "probes succeeded");
                    }
                    let next = pack(
                        CircuitState::HalfOpen,
                        epoch,
                        inflight_of(ctl).saturating_sub(1),
                        successes,
                    );
                    match self.ctl.compare_exchange_weak(ctl, next, AcqRel, Acquire) {
                        Ok(_) => return None,
                        Err(now) => ctl = now,
                    }
                }
                None => {
                    let next = pack(
                        CircuitState::HalfOpen,
                        epoch,
                        inflight_of(ctl).saturating_sub(1),
                        successes_of(ctl),
                    );
                    match self.ctl.compare_exchange_weak(ctl, next, AcqRel, Acquire) {
                        Ok(_) => return None,
                        Err(now) => ctl = now,
                    }
                }
            }
        }
    }

    /// Moves from the state of `epoch` to `to`, once. `None` if another thread moved
    /// first.
    fn transition(&self, epoch: u32, to: CircuitState, reason: &'static str) -> Option<Transition> {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let ctl = self.ctl.load(Acquire);
        if epoch_of(ctl) != epoch {
            return None;
        }
        Some(self.set_locked(ctl, to, reason))
    }

    /// Operator transitions: always happen.
    pub(crate) fn force(&self, to: CircuitState, reason: &'static str) -> Transition {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let ctl = self.ctl.load(Acquire);
        if to == CircuitState::Closed {
            self.cooldown
                .store(clock::dur_nanos(self.config.cooldown), Relaxed);
        }
        self.set_locked(ctl, to, reason)
    }

    fn set_locked(&self, ctl: u64, to: CircuitState, reason: &'static str) -> Transition {
        let from = state_of(ctl);
        let base = clock::dur_nanos(self.config.cooldown);
        match (from, to) {
            (CircuitState::HalfOpen, CircuitState::Open) => {
                // A failed probe: the cooldown grows, if it may.
                if let Some(max) = self.config.cooldown_max {
                    let grown = self.cooldown.load(Relaxed).saturating_mul(2);
                    self.cooldown
                        .store(grown.min(clock::dur_nanos(max)), Relaxed);
                }
            }
            (_, CircuitState::Closed) => self.cooldown.store(base, Relaxed),
            _ => {}
        }
        if to == CircuitState::Open {
            let until: Nanos = clock::now_nanos().saturating_add(self.cooldown.load(Relaxed));
            self.open_until.store(until, Relaxed);
        }
        self.window.clear();
        let next = pack(
            to,
            epoch_of(ctl).wrapping_add(1),
            u64::from(to == CircuitState::HalfOpen),
            0,
        );
        // Probe counters may move under us; the epoch makes them stale either way.
        self.ctl.store(next, Release);
        let t = Transition { from, to, reason };
        t.log(&self.service);
        t
    }
}

impl Transition {
    fn log(&self, service: &str) {
        let (from, to, reason) = (self.from, self.to, self.reason);
        match to {
            CircuitState::Open | CircuitState::ForcedOpen => {
                tracing::warn!(service, ?from, ?to, reason, "circuit breaker opened")
            }
            CircuitState::Closed => {
                tracing::info!(service, ?from, ?to, reason, "circuit breaker closed")
            }
            CircuitState::HalfOpen => {
                tracing::info!(
                    service,
                    ?from,
                    ?to,
                    reason,
                    "circuit breaker half-open: probing"
                )
            }
            CircuitState::Disabled => {
                tracing::warn!(service, ?from, ?to, reason, "circuit breaker disabled")
            }
        }
    }
}

impl Breaker {
    /// Gives back an admission whose call ended without an outcome (cancelled).
    pub(crate) fn abandon(&self, adm: Admission) {
        if adm.kind == Kind::Probe {
            self.probe_done(adm.epoch, None);
        }
    }
}
