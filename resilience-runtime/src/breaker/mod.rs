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
use crate::events::TransitionReason;
use crate::ServiceName;
use window::Window;
pub use window::{BucketSnapshot, WindowSnapshot};
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
pub(crate) fn epoch_of(ctl: u64) -> u32 {
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

impl Admission {
    /// The epoch of an admission let in closed (it holds nothing to give back).
    #[inline(always)]
    pub(crate) fn closed_epoch(&self) -> Option<u32> {
        (self.kind == Kind::Closed).then_some(self.epoch)
    }

    /// The admission of a call let in closed in `epoch`.
    #[inline(always)]
    pub(crate) fn closed(epoch: u32) -> Self {
        Self {
            epoch,
            kind: Kind::Closed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Closed,
    Probe,
    /// Disabled: counted, never recorded.
    Pass,
}

// `repr(C)`: what a closed call reads, the state word and the window's word,
// first and side by side (see the service's layout); what only other calls read
// boxed apart (`cold`, read through `Deref`), so that a service's own breaker
// takes 32 bytes of its registry entry.
#[repr(C)]
pub(crate) struct Breaker {
    ctl: AtomicU64,
    window: Window,
    cold: crate::cold::ColdBox<BreakerCold>,
}

/// What a [`Breaker`] keeps apart: what no closed call reads.
pub(crate) struct BreakerCold {
    open_until: AtomicU64,
    service: ServiceName,
    cooldown: AtomicU64,
    /// When the state last changed (clock nanos + 1; 0: never).
    last_transition: AtomicU64,
    config: BreakerConfig,
    transitions: Mutex<()>,
    /// Replaced by a breaker of new settings: its late transitions are not reported.
    retired: std::sync::atomic::AtomicBool,
    /// Whether this instance may turn half-open when the cooldown has passed (a
    /// fleet backend closes it while another instance probes).
    probe_gate: std::sync::atomic::AtomicU8,
}

impl std::ops::Deref for Breaker {
    type Target = BreakerCold;
    #[inline(always)]
    fn deref(&self) -> &BreakerCold {
        &self.cold
    }
}

const GATE_CLOSED: u8 = 1;

/// What a transition reports, for logs and events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: TransitionReason,
}

/// A breaker's state, to carry into a breaker of new settings or over a restart.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BreakerSnapshot {
    /// The state.
    pub state: CircuitState,
    /// Open: how long until it may half-open.
    pub cooldown_left: Duration,
    /// The cooldown in force (it grows after failed probes, up to `cooldown_max`).
    pub cooldown: Duration,
    /// Half-open: successful probes so far.
    pub probe_successes: u32,
    /// How long ago the state last changed.
    pub since_transition: Option<Duration>,
    /// The window's contents (closed state).
    pub window: WindowSnapshot,
}

impl Breaker {
    /// What a closed call reads of a breaker: its first bytes (`repr(C)`), the
    /// state word and the window's word.
    // Read by a check that loom's models leave out (see the registry).
    #[cfg_attr(resilience_loom, allow(dead_code))]
    pub(crate) const HOT_SIZE: usize = {
        use std::mem::offset_of;
        assert!(offset_of!(Breaker, ctl) == 0 && offset_of!(Breaker, window) == 8);
        16
    };

    pub(crate) fn new(service: ServiceName, config: BreakerConfig) -> Self {
        Self {
            ctl: AtomicU64::new(pack(CircuitState::Closed, 0, 0, 0)),
            window: Window::new(&config),
            cold: crate::cold::ColdBox::new(BreakerCold {
                open_until: AtomicU64::new(0),
                service,
                cooldown: AtomicU64::new(clock::dur_nanos(config.cooldown)),
                last_transition: AtomicU64::new(0),
                config,
                transitions: Mutex::new(()),
                retired: std::sync::atomic::AtomicBool::new(false),
                probe_gate: std::sync::atomic::AtomicU8::new(0),
            }),
        }
    }

    /// Lets this instance probe after the cooldown (`true`, the default) or not.
    pub(crate) fn set_probe_gate(&self, open: bool) {
        self.probe_gate
            .store(if open { 0 } else { GATE_CLOSED }, Relaxed);
    }

    /// Takes a state learned elsewhere (another instance): `Open` with `cooldown_left`
    /// until it may half-open, or `Closed`/`ForcedOpen`/`Disabled`. Returns the
    /// transition, if the state changed (an open breaker learning of another
    /// opening only has its cooldown end moved later).
    pub(crate) fn adopt(&self, to: CircuitState, cooldown_left: Duration) -> Option<Transition> {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let ctl = self.ctl.load(Acquire);
        let now = clock::now_nanos();
        if to == CircuitState::Open && state_of(ctl) == CircuitState::Open {
            let until = now.saturating_add(clock::dur_nanos(cooldown_left));
            self.open_until.fetch_max(until, Relaxed);
            return None;
        }
        if state_of(ctl) == to && to != CircuitState::HalfOpen {
            return None;
        }
        let t = self.set_locked(ctl, to, TransitionReason::Restored);
        if to == CircuitState::Open {
            let until = now.saturating_add(clock::dur_nanos(cooldown_left));
            self.open_until.store(until, Relaxed);
        }
        Some(t)
    }

    /// The state now, consistent (taken under the transition lock).
    pub(crate) fn snapshot(&self) -> BreakerSnapshot {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        self.snapshot_locked()
    }

    fn snapshot_locked(&self) -> BreakerSnapshot {
        let ctl = self.ctl.load(Acquire);
        let now = clock::now_nanos();
        let state = state_of(ctl);
        let last = self.last_transition.load(Relaxed);
        BreakerSnapshot {
            state,
            cooldown_left: if state == CircuitState::Open {
                Duration::from_nanos(self.open_until.load(Relaxed).saturating_sub(now))
            } else {
                Duration::ZERO
            },
            cooldown: Duration::from_nanos(self.cooldown.load(Relaxed)),
            probe_successes: successes_of(ctl) as u32,
            since_transition: (last != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last - 1))),
            window: self.window.snapshot(),
        }
    }

    /// A breaker of `config` in the state `snap` describes: an open one stays open
    /// for the rest of its cooldown, a half-open one keeps its successful probes
    /// (probes in flight elsewhere are not counted), and the window keeps what
    /// still fits (see [`Window::restore`]). The cooldown is kept within the new
    /// `cooldown ..= cooldown_max`.
    pub(crate) fn restored(
        service: ServiceName,
        config: BreakerConfig,
        snap: &BreakerSnapshot,
    ) -> Self {
        let b = Self::new(service, config);
        let base = clock::dur_nanos(config.cooldown);
        let max = config.cooldown_max.map_or(base, clock::dur_nanos).max(base);
        let cooldown = clock::dur_nanos(snap.cooldown).clamp(base, max);
        b.cooldown.store(cooldown, Relaxed);
        let now = clock::now_nanos();
        let successes = u64::from(snap.probe_successes)
            .min(u64::from(config.success_threshold.saturating_sub(1)))
            .min(COUNT_MASK);
        match snap.state {
            CircuitState::Closed => b.window.restore(&snap.window),
            CircuitState::Open => {
                // Never longer than the cooldown in force (a snapshot may be odd).
                let left = clock::dur_nanos(snap.cooldown_left).min(cooldown);
                b.open_until.store(now.saturating_add(left), Relaxed);
            }
            _ => {}
        }
        let successes = if snap.state == CircuitState::HalfOpen {
            successes
        } else {
            0
        };
        b.ctl.store(pack(snap.state, 1, 0, successes), Release);
        if let Some(ago) = snap.since_transition {
            let at = now.saturating_sub(clock::dur_nanos(ago));
            b.last_transition.store(at.saturating_add(1), Relaxed);
        }
        b
    }

    /// This breaker's state for its successor of new settings; from now on its own
    /// transitions (late outcomes of calls admitted before the change) are silent.
    pub(crate) fn retire(&self) -> BreakerSnapshot {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        self.retired.store(true, Relaxed);
        self.snapshot_locked()
    }

    /// Time since the last change of state.
    pub(crate) fn since_transition(&self) -> Option<Duration> {
        let last = self.last_transition.load(Relaxed);
        (last != 0).then(|| Duration::from_nanos(clock::now_nanos().saturating_sub(last - 1)))
    }

    pub(crate) fn slow_call_rate(&self) -> Option<f64> {
        self.window.slow_call_rate()
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

    /// The epoch, when the breaker is closed: a call admitted in it needs nothing
    /// given back and may record a success with [`Breaker::closed_success`].
    #[inline(always)]
    pub(crate) fn closed_epoch(&self) -> Option<u32> {
        self.closed_epoch_or_ctl().ok()
    }

    /// The epoch of a closed breaker, or the state word of one in any other state
    /// (for [`Breaker::refusal_from`]): one load.
    #[inline(always)]
    pub(crate) fn closed_epoch_or_ctl(&self) -> Result<u32, u64> {
        self.closed_ctl().map(epoch_of)
    }

    /// [`Breaker::closed_epoch_or_ctl`] with the state word either way: the
    /// epoch is taken from it ([`epoch_of`]) only where it is needed.
    #[inline(always)]
    pub(crate) fn closed_ctl(&self) -> Result<u64, u64> {
        let ctl = self.ctl.load(Acquire);
        if ctl & STATE_MASK == CircuitState::Closed.code() {
            Ok(ctl)
        } else {
            Err(ctl)
        }
    }

    /// The refusal a call gets now without changing anything: forced open, or open
    /// with cooldown left. `None`: ask [`Breaker::admit`] (closed, disabled,
    /// half-open, or a cooldown just over).
    #[inline]
    pub(crate) fn refusal(&self) -> Option<Rejected> {
        self.refusal_from(self.ctl.load(Acquire))
    }

    /// [`Breaker::refusal`] from the state word `ctl` the caller loaded: forced
    /// open reads no clock; open reads it once, for the cooldown left.
    #[inline(always)]
    pub(crate) fn refusal_from(&self, ctl: u64) -> Option<Rejected> {
        match state_of(ctl) {
            CircuitState::ForcedOpen => Some(Rejected {
                retry_after: Duration::from_nanos(self.cooldown.load(Relaxed)),
            }),
            CircuitState::Open => {
                let now = clock::now_nanos();
                let until = self.open_until.load(Relaxed);
                (now < until).then(|| Rejected {
                    retry_after: Duration::from_nanos(until - now),
                })
            }
            _ => None,
        }
    }

    /// A success of a call admitted closed in `epoch`: most of the time there is
    /// nothing to write (a run of no failures, a window full of successes).
    #[inline(always)]
    pub(crate) fn closed_success(&self, epoch: u32) {
        if !self.window.success_changes_nothing() {
            self.closed_success_slow(epoch);
        }
    }

    /// Whether a closed-state success would leave the window as it is (what
    /// [`Breaker::closed_success`] checks before recording one).
    #[inline(always)]
    pub(crate) fn success_changes_nothing(&self) -> bool {
        self.window.success_changes_nothing()
    }

    #[cold]
    #[inline(never)]
    fn closed_success_slow(&self, epoch: u32) {
        self.record(
            Admission::closed(epoch),
            Some(Outcome {
                failure: false,
                slow: false,
            }),
        );
    }

    /// Whether the call may run. The closed state costs one load.
    #[inline(always)]
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
                    if self.probe_gate.load(Relaxed) == GATE_CLOSED {
                        // Another instance of the fleet probes; this one waits for
                        // its verdict.
                        return Err(Rejected {
                            retry_after: Duration::ZERO,
                        });
                    }
                    // The cooldown is over: this call turns it half-open and is its
                    // first probe.
                    if self
                        .transition(
                            epoch_of(ctl),
                            CircuitState::HalfOpen,
                            TransitionReason::CooldownElapsed,
                        )
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
    #[inline(always)]
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
                        TransitionReason::ProbeFailed
                    } else {
                        TransitionReason::ProbeSlow
                    };
                    return self.transition(epoch, CircuitState::Open, reason);
                }
                Some(_) => {
                    let successes = successes_of(ctl) + 1;
                    if successes >= u64::from(self.config.success_threshold) {
                        return self.transition(
                            epoch,
                            CircuitState::Closed,
                            TransitionReason::ProbesSucceeded,
                        );
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
    fn transition(
        &self,
        epoch: u32,
        to: CircuitState,
        reason: TransitionReason,
    ) -> Option<Transition> {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let ctl = self.ctl.load(Acquire);
        if epoch_of(ctl) != epoch {
            return None;
        }
        Some(self.set_locked(ctl, to, reason))
    }

    /// Operator transitions: always happen.
    pub(crate) fn force(&self, to: CircuitState, reason: TransitionReason) -> Transition {
        let _guard = self.transitions.lock().unwrap_or_else(|p| p.into_inner());
        let ctl = self.ctl.load(Acquire);
        if to == CircuitState::Closed {
            self.cooldown
                .store(clock::dur_nanos(self.config.cooldown), Relaxed);
        }
        self.set_locked(ctl, to, reason)
    }

    fn set_locked(&self, ctl: u64, to: CircuitState, reason: TransitionReason) -> Transition {
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
        self.last_transition
            .store(clock::now_nanos().saturating_add(1), Relaxed);
        let t = Transition { from, to, reason };
        if !self.retired.load(Relaxed) {
            t.log(&self.service);
            crate::events::transition(&self.service, from, to, reason);
        }
        t
    }
}

impl Transition {
    fn log(&self, service: &ServiceName) {
        let service: &str = service;
        let (from, to, reason) = (self.from, self.to, self.reason.as_str());
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
