//! A service: the breaker, bulkhead and rate limiter that calls naming it share, the
//! counters behind its status, and the call protocol that attributes and the
//! builder both drive.

use std::cell::Cell;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicIsize, AtomicU8,
    Ordering::{AcqRel, Acquire, Relaxed},
};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::breaker::{
    epoch_of, Admission, Breaker, BreakerSnapshot, CircuitState, Outcome, Rejected,
};
use crate::bulkhead::{Bulkhead, Permit};
use crate::clock::{self, Instant};
use crate::config::{PolicyConfig, Spec};
use crate::counters::{self, Counter, CounterSnapshot, Counters, Counts, Head};
use crate::events::{self, EventKind, RejectedBy};
use crate::rate_limit::{RateLimiter, Reservation};
use crate::retry::retry_delay;
pub use crate::run::{
    Bodies, CallFuture, CallHooks, DefaultHooks, LeanFuture, Lend, LendAttempt, OneAttempt,
};
use crate::{ResilienceError, ServiceName};

/// One protected dependency: its policies' shared state and its counters.
///
/// Services live in the global registry; attributes and [`crate::Resilience`] find
/// them by name.
// `repr(C)`, what a computed key's call reads first, in one run of 32 bytes: the
// policies word (with its tags, which say whether the lane may admit on the
// service's own breaker alone), the shared count of successes, and the service's
// own breaker's state word and window word. The registry's map entry holds the
// service right after the key (24 bytes) and the hold (8), so such a call, for
// which each line is likely a cache miss, reads the entry's first 64 bytes and
// nothing else (see the registry's layout check). What only other calls read (the
// length of the own lines, the service's own policies) follows; everything else
// is boxed apart (`cold`), so that an entry is 120 bytes: with many keys, the
// fewer bytes a key takes, the more keys' lines the cache and the TLB hold.
#[repr(C)]
pub struct Service {
    /// Where the policies in force are, as a byte offset from the service: its own
    /// (`home`) until live configuration swaps in new ones (boxed). An offset rather
    /// than a pointer so that the service, built and then moved into the registry
    /// map's entry, finds its own policies and breaker wherever it lies: a
    /// computed key's call then reads them in the entry, at addresses the lookup
    /// knows, rather than behind pointers that one cache miss after another
    /// finds. See [`Service::policies`]. Offsets are multiples of 8 (policies and
    /// services are aligned to 8), kept doubled ([`policies_word`]) so that the low
    /// four bits are tags: [`LANE`], [`LANE_BREAKER`], [`SHARED_COUNTS`] and
    /// [`HOME_UNTIMED`].
    policies: AtomicIsize,
    /// What a computed key's successful call counts in (see [`Head`]).
    count_head: Head,
    /// The first breaker (if the first policies have one), which they point at.
    // `repr(C)`: the breaker's state word and its window's word first.
    home_breaker: Option<Breaker>,
    /// The bytes of the counters' own lines (see [`Counts`]).
    lines_bytes: usize,
    /// The first policies.
    home: Policies,
    /// The rest, which no call on the lane reads.
    cold: crate::cold::ColdBox<ServiceCold>,
}

/// A tag of [`Service::policies`]: the policies in force are the service's own
/// and their gate is 0 (see [`swift_admit`]): the swift lane admits on the home
/// breaker's state word alone, without reading the policies. Set only under
/// [`BARS_COPY`] ([`Service::refresh_lane`]), where every gate changes.
const LANE: isize = 1;
/// A tag of [`Service::policies`]: the service has its own breaker. (This and
/// [`SHARED_COUNTS`] say what the service's fields say too, but those lie past
/// the 64 bytes of the registry entry a computed key's lane call reads: the
/// `Option`'s niche is in the breaker's boxes, the lines' length after it.)
const LANE_BREAKER: isize = 2;
/// A tag of [`Service::policies`]: the service has no own lines; its calls count
/// on the shared counts.
const SHARED_COUNTS: isize = 4;
/// A tag of [`Service::policies`]: the service's own policies need no timer
/// ([`Policies::untimed`], which lies past the 64 bytes a computed key's lane call
/// reads). Set when the service is made, and said of its own policies only: an
/// async call on the swift lane ([`LANE`]) knows from it that a body not ready
/// at its first poll may wait without a timer.
const HOME_UNTIMED: isize = 8;
/// The tags of [`Service::policies`].
const TAGS: isize = 15;

/// The policies word for policies `at` bytes from the service (a multiple of 8,
/// and far less than 2^61 either way: both lie in the address space), tagged
/// `tags`: the offset doubled, so that a multiple of 16 leaves four bits to tags.
#[inline(always)]
const fn policies_word(at: isize, tags: isize) -> isize {
    (at << 1) | tags
}

/// The offset a policies word holds (see [`policies_word`]).
#[inline(always)]
const fn policies_at(word: isize) -> isize {
    (word & !TAGS) >> 1
}

/// What a service keeps apart from its registry entry: what calls read only off
/// the lane (counts but a computed key's successes, the name for events and
/// errors, replaced policies, the first settings). `pub` only because
/// [`Service`] derefs to it; nothing of it is public.
#[doc(hidden)]
#[allow(missing_debug_implementations)]
pub struct ServiceCold {
    counters: Counters,
    /// Fixed and generated names are never evicted.
    pub(crate) pinned: bool,
    random: fn() -> u64,
    name: ServiceName,
    /// Policies replaced by live configuration. Calls that began before the change
    /// may still read them, so they live as long as the service (a few hundred bytes
    /// per change that actually altered this service).
    // Boxed: calls hold pointers into them, so they must not move.
    #[allow(clippy::vec_box)]
    retired: Mutex<Vec<Box<Policies>>>,
    /// The settings of the first registration, before live configuration.
    first: First,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: crate::metrics::ServiceMetrics,
}

#[doc(hidden)]
impl std::ops::Deref for Service {
    type Target = ServiceCold;
    #[inline(always)]
    fn deref(&self) -> &ServiceCold {
        &self.cold
    }
}

/// The settings a service is registered with: a call site's, which live as long as
/// the program, or the builder's.
#[derive(Clone, Copy)]
pub(crate) enum Registration<'a> {
    /// An attribute's call site: every key of a computed name shares its settings.
    Site(&'static Spec, &'static PolicyConfig),
    /// Settings the service keeps a copy of.
    Copied(&'a Spec, &'a PolicyConfig),
}

impl Registration<'_> {
    pub(crate) fn spec(&self) -> &Spec {
        match self {
            Registration::Site(s, _) | Registration::Copied(s, _) => s,
        }
    }

    pub(crate) fn config(&self) -> &PolicyConfig {
        match self {
            Registration::Site(_, c) | Registration::Copied(_, c) => c,
        }
    }

    fn keep(self) -> First {
        match self {
            Registration::Site(s, c) => First::Site(s, c),
            Registration::Copied(s, c) => First::Own(Box::new((*s, *c))),
        }
    }
}

/// A service's first registration (see [`Registration`]). A computed name may have
/// very many keys: theirs point at the call site's settings (584 bytes less per key),
/// which matters for how many keys' hot lines stay in cache.
enum First {
    Site(&'static Spec, &'static PolicyConfig),
    Own(Box<(Spec, PolicyConfig)>),
}

/// The policies of a service at one time. Components whose settings did not change
/// are shared with the previous policies (and bulkhead and limiter are changed in
/// place), so calls on either side of a change count against the same limits.
// `repr(C)`, 24 bytes: what the lanes read (the breaker's offset, the gate and
// the flags) first, the components and settings boxed apart (`rest`, read through
// `Deref`). A service's own policies lie in the registry's entry after what a
// computed key's lane call reads, which needs them only when the policies word's
// tags close its lane.
#[repr(C)]
pub(crate) struct Policies {
    /// Where the breaker is, as a byte offset from these policies; 0 without one.
    /// A service's first policies and its first breaker lie in the service itself
    /// (see [`Service`]), at a distance that does not change when the service is
    /// moved into the registry; a breaker apart (of settings changed later) is
    /// kept alive by `breaker_own`. See [`Policies::breaker`].
    breaker_at: isize,
    /// Zero when the swift lane's admission is the breaker's state word alone (see
    /// [`swift_admit`]): [`GATE_SHAPE`] unless `lean` with no bulkhead and no rate
    /// limiter, or'd with a copy of the global [`LANE_BARS`], which
    /// [`set_lane_bar`] keeps current in every registered service's policies. A
    /// lane call so reads one byte of the policies, which it reads anyway, rather
    /// than a global as well.
    pub(crate) gate: AtomicU8,
    /// Health: an open breaker here makes the application unhealthy.
    pub(crate) critical: bool,
    /// Attempts are timed (for `slow_call` or `record_latency`).
    pub(crate) timed: bool,
    pub(crate) record_latency: bool,
    /// Calls may take the lane (see [`Call::gate`]; sync ones the swift lane,
    /// [`Call::swift`]): attempts not timed, no `max_elapsed`.
    pub(crate) lean: bool,
    /// A call needs no timer or clock: not timed, no timeout, no total timeout, no
    /// rate limiter (a bulkhead's wait is read from the bulkhead). See
    /// [`Service::once_lean`].
    pub(crate) untimed: bool,
    rest: crate::cold::ColdBox<PoliciesRest>,
}

/// What [`Policies`] keep apart: the components and the settings.
pub(crate) struct PoliciesRest {
    pub(crate) bulkhead: Option<Arc<Bulkhead>>,
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// The breaker `breaker_at` finds, when it is not the service's own.
    breaker_own: Option<Arc<Breaker>>,
    /// The settings (264 bytes): read when a call leaves the lanes.
    pub(crate) config: PolicyConfig,
}

impl std::ops::Deref for Policies {
    type Target = PoliciesRest;
    #[inline(always)]
    fn deref(&self) -> &PoliciesRest {
        &self.rest
    }
}

/// Conditions that close the swift lane, one bit each: the kill switch (which
/// closes every lane), a listener that wants every call's events, and `tracing` at
/// `TRACE` for the per-call events. The lanes read their copy in the policies'
/// [`Policies::gate`]; this one is what the copies are made from, and what the
/// kill switch and the event bus report.
static LANE_BARS: AtomicU8 = AtomicU8::new(0);
/// The bits of [`LANE_BARS`].
const BARS: u8 = BAR_KILL_SWITCH | BAR_LISTENERS | BAR_TRACE;
/// [`Policies::gate`]: the policies are not of the swift lane's commonest shape.
const GATE_SHAPE: u8 = 8;
/// Held while [`LANE_BARS`] changes and is copied into every service's policies,
/// and while new policies take their copy ([`Service::take_bars`]): so either a
/// change sees the new policies or they see the change. Nothing is called under it
/// but atomics and the registry's iteration (it is taken inside `tracing`'s
/// interest callback).
static BARS_COPY: Mutex<()> = Mutex::new(());
/// [`LANE_BARS`]: the kill switch is on.
pub(crate) const BAR_KILL_SWITCH: u8 = 1;
/// [`LANE_BARS`]: a listener wants every event.
pub(crate) const BAR_LISTENERS: u8 = 2;
/// [`LANE_BARS`]: `tracing` may record the per-call `TRACE` events of this module
/// (see [`LaneTrace`]).
pub(crate) const BAR_TRACE: u8 = 4;

/// A callsite standing for this module's per-call `TRACE` events ("call
/// succeeded"). `tracing` tells a registered callsite whether its event may be
/// enabled each time that can change (a subscriber set, a scoped one made, a
/// filter reloaded); this one keeps the answer in [`BAR_TRACE`], so the lanes,
/// which read the bars anyway, need no test of their own for `tracing`.
struct LaneTrace;

static LANE_TRACE: LaneTrace = LaneTrace;

static LANE_TRACE_META: tracing_core::Metadata<'static> = tracing_core::Metadata::new(
    "call succeeded",
    module_path!(),
    tracing_core::Level::TRACE,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    tracing_core::field::FieldSet::new(
        &["message", "service"],
        tracing_core::callsite::Identifier(&LANE_TRACE),
    ),
    tracing_core::metadata::Kind::EVENT,
);

impl tracing_core::Callsite for LaneTrace {
    fn set_interest(&self, interest: tracing_core::subscriber::Interest) {
        set_lane_bar(BAR_TRACE, !interest.is_never());
    }

    fn metadata(&self) -> &tracing_core::Metadata<'_> {
        &LANE_TRACE_META
    }
}

/// Registers [`LaneTrace`] with `tracing` (once; from then on `tracing` keeps its
/// bar current). Called before the first service exists, so before any lane call.
fn register_lane_trace() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if tracing::Level::TRACE <= tracing::level_filters::STATIC_MAX_LEVEL {
        ONCE.call_once(|| tracing_core::callsite::register(&LANE_TRACE));
    }
}

/// The [`LANE_BARS`] now.
#[inline(always)]
pub(crate) fn lane_bars() -> u8 {
    LANE_BARS.load(Relaxed)
}

/// Sets or clears one bar, in [`LANE_BARS`] and in the [`Policies::gate`] of every
/// registered service; returns whether it was set.
pub(crate) fn set_lane_bar(bar: u8, on: bool) -> bool {
    let _copying = BARS_COPY.lock().unwrap_or_else(|p| p.into_inner());
    let was = if on {
        LANE_BARS.fetch_or(bar, Relaxed)
    } else {
        LANE_BARS.fetch_and(!bar, Relaxed)
    };
    let was_on = was & bar != 0;
    if was_on != on {
        // Every service that was in the registry when the lock was taken; one
        // registered since takes its copy after us (`Service::take_bars`).
        crate::registry::registry().for_each(|svc| {
            let gate = &svc.policies().gate;
            if on {
                gate.fetch_or(bar, Relaxed);
            } else {
                gate.fetch_and(!bar, Relaxed);
            }
            svc.refresh_lane();
        });
    }
    was_on
}

/// Whether calls under `config` may take the lane.
fn lean(config: &PolicyConfig, timed: bool) -> bool {
    !timed && config.retry.is_none_or(|r| r.max_elapsed.is_none())
}

/// A service's state to carry over a restart: breaker and counters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSnapshot {
    /// The service's name.
    pub service: String,
    /// Its breaker's state, if it has one.
    pub breaker: Option<BreakerSnapshot>,
    /// Its counters.
    pub counters: CounterSnapshot,
}

/// Settings that are not policies: from the strategy and live configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Extras {
    pub(crate) critical: bool,
    pub(crate) record_latency: bool,
}

/// Whether attempts must be timed: for `slow_call`, or where latency is recorded.
fn timed(config: &PolicyConfig, extras: Extras) -> bool {
    extras.record_latency || config.breaker.is_some_and(|b| b.slow_call.is_some())
}

/// The breaker new policies take: the one before them (the service's own, or one
/// apart), or a new one.
pub(crate) enum BreakerChoice<'a> {
    None,
    Same(&'a Breaker, Option<Arc<Breaker>>),
    New(Arc<Breaker>),
}

impl Policies {
    /// A service's first policies, whose breaker (if `config` has one) is the
    /// service's own: [`Service::new`] aims them at it. `owned`: the service's
    /// threads count on lines of their own (see [`crate::counters::new`]), and so give
    /// its bulkhead's slots back on lines of their own.
    fn first(config: PolicyConfig, extras: Extras, owned: bool) -> Self {
        Self::assemble(
            config,
            extras,
            None,
            config.bulkhead.map(|b| Arc::new(Bulkhead::new(b, owned))),
            config.rate_limit.map(|r| Arc::new(RateLimiter::new(r))),
        )
    }

    /// The breaker, if the policies have one.
    #[inline(always)]
    pub(crate) fn breaker(&self) -> Option<&Breaker> {
        if self.breaker_at == 0 {
            return None;
        }
        let at = std::ptr::from_ref(self)
            .expose_provenance()
            .wrapping_add_signed(self.breaker_at);
        // SAFETY: `breaker_at` was set by `aim` from the breaker's address and
        // these policies' own, where they are now: a service's first policies and
        // its first breaker are fields of the service, moved only together (before
        // registration), which keeps their distance; policies apart are boxed and
        // never move, and their breaker is either the service's own (which lives
        // as long as the service, and so as long as any of its policies) or one
        // `breaker_own` keeps alive. Both addresses' provenance is exposed (`aim`
        // and the cast above).
        // SAFETY (the hint): the breaker's address is never 0; said so, a caller's
        // match on the `Option` tests `breaker_at` alone, not the address as well.
        unsafe { std::hint::assert_unchecked(at != 0) };
        Some(unsafe { &*std::ptr::with_exposed_provenance::<Breaker>(at) })
    }

    /// Points `breaker_at` at `target`, from where these policies are now (see
    /// [`Policies::breaker`]).
    fn aim(&mut self, target: Option<&Breaker>) {
        self.breaker_at = target.map_or(0, |b| {
            let to = std::ptr::from_ref(b).expose_provenance();
            let from = std::ptr::from_ref(self).expose_provenance();
            to.wrapping_sub(from) as isize
        });
    }

    /// The policies of `config` that carry over this one's state, and the breaker
    /// they take (to [`Policies::aim`] at once they are where they stay).
    fn succeed(
        &self,
        name: &ServiceName,
        config: PolicyConfig,
        extras: Extras,
        owned: bool,
    ) -> (Self, BreakerChoice<'_>) {
        let breaker = match (self.breaker(), config.breaker) {
            (Some(old), Some(new)) if *old.config() == new => {
                BreakerChoice::Same(old, self.breaker_own.clone())
            }
            (Some(old), Some(new)) => {
                let snap = old.retire();
                BreakerChoice::New(Arc::new(Breaker::restored(name.clone(), new, &snap)))
            }
            (None, Some(new)) => BreakerChoice::New(Arc::new(Breaker::new(name.clone(), new))),
            (_, None) => BreakerChoice::None,
        };
        let bulkhead = match (&self.bulkhead, config.bulkhead) {
            (Some(old), Some(new)) => {
                old.reconfigure(new);
                Some(old.clone())
            }
            (None, Some(new)) => Some(Arc::new(Bulkhead::new(new, owned))),
            (_, None) => None,
        };
        let limiter = match (&self.limiter, config.rate_limit) {
            (Some(old), Some(new)) => {
                old.reconfigure(new);
                Some(old.clone())
            }
            (None, Some(new)) => Some(Arc::new(RateLimiter::new(new))),
            (_, None) => None,
        };
        let own = match &breaker {
            BreakerChoice::None => None,
            BreakerChoice::Same(_, own) => own.clone(),
            BreakerChoice::New(b) => Some(b.clone()),
        };
        (
            Self::assemble(config, extras, own, bulkhead, limiter),
            breaker,
        )
    }

    /// The policies of `config` over these components, with the flags derived
    /// from both.
    fn assemble(
        config: PolicyConfig,
        extras: Extras,
        breaker_own: Option<Arc<Breaker>>,
        bulkhead: Option<Arc<Bulkhead>>,
        limiter: Option<Arc<RateLimiter>>,
    ) -> Self {
        let timed = timed(&config, extras);
        let lean = lean(&config, timed);
        let shape = if lean && bulkhead.is_none() && limiter.is_none() {
            0
        } else {
            GATE_SHAPE
        };
        Self {
            untimed: !timed
                && config.timeout.is_none()
                && config.total_timeout.is_none()
                && limiter.is_none(),
            breaker_at: 0,
            critical: extras.critical,
            timed,
            record_latency: extras.record_latency,
            // The bars are taken under their lock when the policies are put in
            // force (`take_bars`); closed until then.
            gate: AtomicU8::new(shape | BARS),
            lean,
            rest: crate::cold::ColdBox::new(PoliciesRest {
                breaker_own,
                bulkhead,
                limiter,
                config,
            }),
        }
    }

    pub(crate) fn extras(&self) -> Extras {
        Extras {
            critical: self.critical,
            record_latency: self.record_latency,
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let at = policies_at(*self.policies.get_mut());
        if at != Self::HOME {
            let p = std::ptr::from_mut(self)
                .expose_provenance()
                .wrapping_add_signed(at);
            // SAFETY: not the service's own policies: boxed ones, put in force by
            // `install` (which moves the ones it replaces into `retired`). With
            // `&mut self` no call can read them any more.
            drop(unsafe { Box::from_raw(std::ptr::with_exposed_provenance_mut::<Policies>(p)) });
        }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("config", self.config())
            .finish_non_exhaustive()
    }
}

/// Typed per-call-site hooks: how to classify errors and how to build one from a
/// [`ResilienceError`]. Function pointers, so a call site's hooks are a constant.
pub struct Hooks<E> {
    /// Errors that count as failures; others count as successes.
    pub record_if: Option<fn(&E) -> bool>,
    /// Errors that count as neither; wins over `record_if`.
    pub ignore_if: Option<fn(&E) -> bool>,
    /// Only these errors are retried.
    pub retry_if: Option<fn(&E) -> bool>,
    /// A server's hint of how long to wait before the next attempt.
    pub retry_after: Option<fn(&E) -> Option<Duration>>,
    /// Builds `E` from a rejection or timeout. Without it the policies that reject
    /// or time out (breaker, rate limit, bulkhead, timeouts) are not applied.
    pub into_error: Option<fn(ResilienceError) -> E>,
}

impl<E> Hooks<E> {
    /// No hooks: every error is a retryable failure.
    pub const NONE: Hooks<E> = Hooks {
        record_if: None,
        ignore_if: None,
        retry_if: None,
        retry_after: None,
        into_error: None,
    };
}

impl<E: From<ResilienceError>> Hooks<E> {
    /// Every error is a retryable failure; rejections convert with `From`.
    pub const DEFAULT: Hooks<E> = Hooks {
        into_error: Some(<E as From<ResilienceError>>::from),
        ..Hooks::NONE
    };
}

impl<E> Clone for Hooks<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Hooks<E> {}

impl<E> std::fmt::Debug for Hooks<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("record_if", &self.record_if.is_some())
            .field("ignore_if", &self.ignore_if.is_some())
            .field("retry_if", &self.retry_if.is_some())
            .field("retry_after", &self.retry_after.is_some())
            .field("into_error", &self.into_error.is_some())
            .finish()
    }
}

impl Service {
    pub(crate) fn new(
        name: &str,
        first: Registration<'_>,
        effective: PolicyConfig,
        extras: Extras,
        random: fn() -> u64,
        pinned: bool,
    ) -> Self {
        register_lane_trace();
        // A pinned service is never removed, so its name can live as long as the
        // process and rejections copy it without counting references.
        let name = if pinned {
            ServiceName::permanent(name)
        } else {
            ServiceName::from(name)
        };
        let (count_head, lines_bytes, counters) = counters::new(pinned);
        let home = Policies::first(effective, extras, pinned);
        let tags = if lines_bytes == 0 { SHARED_COUNTS } else { 0 }
            | if effective.breaker.is_some() {
                LANE_BREAKER
            } else {
                0
            }
            | if home.untimed { HOME_UNTIMED } else { 0 };
        let mut svc = Self {
            policies: AtomicIsize::new(policies_word(Self::HOME, tags)),
            count_head,
            lines_bytes,
            home_breaker: effective.breaker.map(|b| Breaker::new(name.clone(), b)),
            home,
            cold: crate::cold::ColdBox::new(ServiceCold {
                counters,
                retired: Mutex::new(Vec::new()),
                first: first.keep(),
                random,
                pinned,
                #[cfg(feature = "metrics")]
                metrics: crate::metrics::ServiceMetrics::new(&name),
                name,
            }),
        };
        // The distance from the first policies to the first breaker, both in the
        // service: it moves with them.
        let Self {
            home, home_breaker, ..
        } = &mut svc;
        home.aim(home_breaker.as_ref());
        svc
    }

    /// [`Service::policies`]' offset for the service's own policies.
    const HOME: isize = std::mem::offset_of!(Service, home) as isize;

    /// The policies in force.
    #[inline]
    pub(crate) fn policies(&self) -> &Policies {
        let at = std::ptr::from_ref(self)
            .expose_provenance()
            .wrapping_add_signed(policies_at(self.policies.load(Acquire)));
        // SAFETY: the offset is `HOME` (the service's own policies, a field: valid
        // wherever the service lies) or was set by `install` from the address of
        // boxed policies, which never move, and this service's, which does not move
        // once policies are installed (it is registered); those are freed only when
        // the service is dropped (see `retired`), and `&self` keeps it alive. Both
        // provenances are exposed (`install` and the cast above).
        unsafe { &*std::ptr::with_exposed_provenance::<Policies>(at) }
    }

    /// The end of what a computed-key call reads of a service (`repr(C)`): the
    /// policies word, the shared count of successes and its own breaker's two
    /// words.
    // Read by a check that loom's models leave out (see the registry).
    #[cfg_attr(resilience_loom, allow(dead_code))]
    pub(crate) const HOT_END: usize = {
        use std::mem::offset_of;
        assert!(offset_of!(Service, policies) < offset_of!(Service, count_head));
        assert!(offset_of!(Service, count_head) < offset_of!(Service, home_breaker));
        assert!(offset_of!(Service, home_breaker) < offset_of!(Service, home));
        offset_of!(Service, home_breaker) + crate::breaker::Breaker::HOT_SIZE
    };

    /// The service's counters.
    #[inline(always)]
    pub(crate) fn counters(&self) -> Counts<'_> {
        Counts {
            head: &self.count_head,
            lines_bytes: &self.lines_bytes,
            rest: &self.counters,
        }
    }

    /// The home breaker if the swift lane may admit on it alone ([`LANE`]): the
    /// policies in force are the service's own, their gate is 0. `Err` when not.
    #[inline(always)]
    pub(crate) fn lane_breaker(&self) -> Result<Option<&Breaker>, ()> {
        let w = self.policies.load(Relaxed);
        if w & LANE == 0 {
            return Err(());
        }
        if w & LANE_BREAKER == 0 {
            return Ok(None);
        }
        // SAFETY: `LANE_BREAKER` is set only when the service was made with its
        // own breaker, which it keeps for its life.
        Ok(Some(unsafe {
            self.home_breaker.as_ref().unwrap_unchecked()
        }))
    }

    /// Whether the swift lane is open on the service's own policies ([`LANE`]) and
    /// they need no timer ([`HOME_UNTIMED`]), from the policies word alone: when
    /// `false`, [`Policies::untimed`] says whether the policies in force need one.
    #[inline(always)]
    pub(crate) fn lane_untimed(&self) -> bool {
        self.policies.load(Relaxed) & (LANE | HOME_UNTIMED) == LANE | HOME_UNTIMED
    }

    /// Whether the service's calls count on the shared counts (no own lines).
    #[inline(always)]
    pub(crate) fn counts_shared(&self) -> bool {
        self.policies.load(Relaxed) & SHARED_COUNTS != 0
    }

    /// Takes the current [`LANE_BARS`] into the gate of the policies in force,
    /// and sets [`LANE`] from it: called once the policies are reachable from the
    /// registry (the service registered, or the policies installed), so a bar
    /// changed from then on is copied there by [`set_lane_bar`], and one changed
    /// before is read here.
    pub(crate) fn take_bars(&self) {
        let _copying = BARS_COPY.lock().unwrap_or_else(|p| p.into_inner());
        let p = self.policies();
        let shape = p.gate.load(Relaxed) & GATE_SHAPE;
        p.gate.store(shape | LANE_BARS.load(Relaxed), Relaxed);
        self.refresh_lane();
    }

    /// Sets [`LANE`] when the policies in force are the service's own and their
    /// gate is 0, clears it otherwise. Called under [`BARS_COPY`], so no gate
    /// changes meanwhile; a concurrent `install` (which clears it) is retried.
    fn refresh_lane(&self) {
        let mut w = self.policies.load(Acquire);
        loop {
            let home = policies_at(w) == Self::HOME;
            let open = home && self.home.gate.load(Relaxed) == 0;
            let next = if open { w | LANE } else { w & !LANE };
            match self.policies.compare_exchange(w, next, AcqRel, Acquire) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// Puts new settings in force for the next call, keeping state and counters.
    /// Returns whether anything changed.
    pub(crate) fn reconfigure(&self, config: PolicyConfig, extras: Extras) -> bool {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.policies();
        if old.config == config && old.extras() == extras {
            return false;
        }
        let (next, breaker) = old.succeed(&self.name, config, extras, self.pinned);
        self.install(next, breaker, &mut retired);
        true
    }

    /// Puts `next` in force, its breaker the one `breaker` chose; the policies it
    /// replaces join `retired` (boxed: calls may still hold pointers into them),
    /// unless they are the service's own, which stay where they are.
    #[allow(clippy::vec_box)]
    fn install(
        &self,
        next: Policies,
        breaker: BreakerChoice<'_>,
        retired: &mut Vec<Box<Policies>>,
    ) {
        let mut next = Box::new(next);
        next.aim(match &breaker {
            BreakerChoice::None => None,
            BreakerChoice::Same(b, _) => Some(*b),
            BreakerChoice::New(b) => Some(&**b),
        });
        let to = Box::into_raw(next).expose_provenance();
        let at = to.wrapping_sub(std::ptr::from_ref(self).expose_provenance()) as isize;
        let tags = self.policies.load(Relaxed) & (SHARED_COUNTS | LANE_BREAKER | HOME_UNTIMED);
        let prev = policies_at(self.policies.swap(policies_word(at, tags), AcqRel));
        self.take_bars();
        if prev != Self::HOME {
            let prev = std::ptr::from_ref(self)
                .expose_provenance()
                .wrapping_add_signed(prev);
            // SAFETY: `prev` is the address of policies boxed by an earlier
            // `install` (not the service's own), no longer reachable from
            // `policies`; calls still reading them keep `self` alive, and `retired`
            // frees them only with `self`.
            retired.push(unsafe { Box::from_raw(std::ptr::with_exposed_provenance_mut(prev)) });
        }
    }

    /// The settings of the first registration (attribute or builder), before live
    /// configuration.
    pub(crate) fn base(&self) -> (&Spec, &PolicyConfig) {
        match &self.first {
            First::Site(spec, config) => (spec, config),
            First::Own(own) => (&own.0, &own.1),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The policies in force.
    pub fn config(&self) -> &PolicyConfig {
        &self.policies().config
    }

    /// The breaker's state (`Closed` when the service has no breaker).
    pub fn state(&self) -> CircuitState {
        self.policies()
            .breaker()
            .map_or(CircuitState::Closed, Breaker::state)
    }

    /// This service's breaker state and counters, to carry over a restart.
    pub fn snapshot(&self) -> ServiceSnapshot {
        ServiceSnapshot {
            service: self.name.to_string(),
            breaker: self.policies().breaker().map(Breaker::snapshot),
            counters: self.counters().snapshot(),
        }
    }

    /// Takes over a snapshot's breaker state (with this service's current settings:
    /// see [`BreakerSnapshot`]) and adds its counters to the current ones. A
    /// snapshot's breaker is ignored when the service has none.
    pub fn restore(&self, snap: &ServiceSnapshot) {
        if let Some(bs) = &snap.breaker {
            let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            let cur = self.policies();
            if let Some(old) = cur.breaker() {
                let fresh = Arc::new(Breaker::restored(self.name.clone(), *old.config(), bs));
                let state = fresh.state();
                old.retire();
                let (mut next, _) = cur.succeed(&self.name, cur.config, cur.extras(), self.pinned);
                next.rest.breaker_own = Some(fresh.clone());
                self.install(next, BreakerChoice::New(fresh), &mut retired);
                tracing::info!(service = %self.name, ?state, "breaker state restored");
            }
        }
        self.counters().restore(&snap.counters);
    }

    /// Takes a breaker state learned from another instance of the fleet: `Open`
    /// with the cooldown left there, `Closed` after its probes succeeded, or an
    /// operator's `ForcedOpen`/`Disabled`. Reported with reason `Restored`.
    pub fn adopt_state(&self, to: CircuitState, cooldown_left: Duration) {
        if let Some(b) = self.policies().breaker() {
            b.adopt(to, cooldown_left);
        }
    }

    /// Whether this instance may turn its breaker half-open once the cooldown has
    /// passed. A fleet backend closes the gate while another instance probes, so
    /// the fleet sends a bounded number of probes; open by default.
    pub fn set_probe_gate(&self, open: bool) {
        if let Some(b) = self.policies().breaker() {
            b.set_probe_gate(open);
        }
    }

    /// Reports an event to metrics and listeners.
    #[inline(always)]
    pub(crate) fn emit(&self, kind: EventKind) {
        #[cfg(feature = "metrics")]
        self.metrics.record(&kind);
        if events::active() {
            events::publish(&self.name, kind);
        }
    }

    /// Starts a sync call (the sync expansions run it by value: [`Call::retry_sync`],
    /// [`Call::attempt_once_sync`]). The call uses the policies in force now, for
    /// all its attempts.
    #[inline(always)]
    pub fn call<'a, E>(&'a self, hooks: &'a Hooks<E>) -> Call<'a, E> {
        Call::with(self, self.policies(), hooks)
    }
}

impl<'a, E> Call<'a, E> {
    /// A call under policies `p` (the service's at its start).
    #[inline(always)]
    pub(crate) fn with(svc: &'a Service, p: &'a Policies, hooks: &'a Hooks<E>) -> Self {
        Call {
            svc,
            p,
            hooks,
            attempt: 0,
            bypass: false,
            single: false,
            started: None,
            previous: Duration::ZERO,
        }
    }
}

impl Service {
    /// A whole call of one attempt (an async expansion without a retry): the
    /// attempt and the total timeout in one future, as [`Policy::call`]'s. A retry
    /// that live configuration gives the service does not apply to it.
    ///
    /// [`Policy::call`]: crate::Policy::call
    #[inline]
    pub fn once<'a, T, E, Fut>(
        &'a self,
        hooks: &'a Hooks<E>,
        body: Fut,
    ) -> CallFuture<'a, T, E, OneAttempt, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        CallFuture::once(self, hooks, body)
    }

    /// A whole call with a retry (an async expansion with a retry whose arguments
    /// lend nothing `&mut`): every attempt, the total timeout and the backoff sleeps
    /// in one future, [`Policy::call`]'s, under `hooks`. `make` is called once per
    /// attempt for that attempt's body. A first attempt through the lane builds
    /// nothing but its body.
    ///
    /// An expansion whose arguments include a `&mut` (`&mut self` too) runs its
    /// attempts as a loop of [`Lend::attempt`] instead ([`Service::lend`]): a
    /// closure called once per attempt cannot return a body that borrows through
    /// it.
    ///
    /// [`Policy::call`]: crate::Policy::call
    #[inline]
    pub fn retry<'a, T, E, F, Fut>(
        &'a self,
        hooks: &'a Hooks<E>,
        make: F,
    ) -> CallFuture<'a, T, E, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        CallFuture::new(self, hooks, make)
    }

    /// A whole call of one attempt for an async expansion whose attribute declares
    /// no timer-driven policy (no timeout, total timeout, rate limit, bulkhead wait
    /// or slow-call threshold): the future holds the body, the service, the hooks
    /// and, while the body runs, its admission and bulkhead slot, not the timers of
    /// [`Service::once`]'s. The body is made by `make` once the call is admitted.
    /// Outcomes, rejections, events and counters are those of [`Service::once`].
    /// If live configuration gives the service a timeout, total timeout, rate limit,
    /// bulkhead wait or timed attempts, the call runs as [`Service::once`]'s, boxed
    /// in a block of the thread's pool of call states (no allocation once the
    /// thread has one free, unless the body's future is larger than about 480
    /// bytes: then one allocation per call while that configuration is in force).
    #[inline]
    pub fn once_lean<'a, T, E, M, Fut>(
        &'a self,
        hooks: &'a Hooks<E>,
        make: M,
    ) -> LeanFuture<'a, T, E, M, Fut>
    where
        M: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        LeanFuture::new(self, hooks, make)
    }

    /// A call whose attempts borrow through their caller (an async expansion with a
    /// retry whose arguments lend a `&mut` to each attempt, `&mut self` included):
    /// the caller runs [`Lend::attempt`] in a loop, a fresh body each time, until it
    /// breaks. The total timeout, the backoff sleeps and the attempt's admissions
    /// are the call's, as in [`Service::retry`]'s future, and a first attempt
    /// through the lane builds nothing but its body.
    #[inline(always)]
    pub fn lend<'a, E>(&'a self, hooks: &'a Hooks<E>) -> Lend<'a, E> {
        Lend::new(self, hooks)
    }

    /// The total timeout a call starting now runs under, if any.
    #[inline]
    pub(crate) fn total_limit<E>(&self, hooks: &Hooks<E>) -> Option<(Duration, IntoError<E>)> {
        match (self.policies().config.total_timeout, hooks.into_error) {
            (Some(limit), Some(into)) if !crate::live::kill_switch() => Some((limit, into)),
            _ => None,
        }
    }

    /// The total timeout passed.
    pub(crate) fn total_timed_out<E>(&self, limit: Duration, into: IntoError<E>) -> E {
        self.counters().add(Counter::Timeouts);
        tracing::debug!(service = %self.name, "total timeout elapsed");
        self.emit(EventKind::Timeout {
            after: limit,
            total: true,
        });
        into(ResilienceError::timeout(&self.name, limit))
    }

    /// Counts one run of the fallback.
    #[inline]
    pub fn fallback_used(&self) {
        self.counters().add(Counter::Fallbacks);
        tracing::debug!(service = %self.name, "fallback used");
        self.emit(EventKind::FallbackUsed);
    }

    /// A call's own body panicked: a failure, recorded in the breaker if admitted.
    #[cold]
    fn body_panicked(&self, admitted: Option<(&Breaker, Admission)>) {
        self.counters().add(Counter::Failures);
        self.emit(EventKind::Failed { latency: None });
        if let Some((b, adm)) = admitted {
            b.record(
                adm,
                Some(Outcome {
                    failure: true,
                    slow: false,
                }),
            );
        }
    }

    /// A rejection: counted, reported, and converted to the caller's error. Inlined
    /// where the caller's hooks are known, so the conversion is a direct call; the
    /// report (a `tracing` event at `DEBUG`, the event listeners, the `metrics`
    /// feature) is a function of its own, called only when something listens.
    ///
    /// The error is made in the branch that converts it: the error a silent
    /// rejection converts never has its address taken, so it is not written to the
    /// stack and read back as one wide copy (which the CPU cannot forward from the
    /// narrower stores that wrote it).
    #[inline(always)]
    fn reject<E>(
        &self,
        into: fn(ResilienceError) -> E,
        e: impl FnOnce() -> ResilienceError,
        by: RejectedBy,
    ) -> E {
        self.counters().add(Counter::Rejections);
        if cfg!(feature = "metrics")
            || events::active()
            || tracing::level_enabled!(tracing::Level::DEBUG)
        {
            let e = e();
            self.report_rejection(&e, by);
            return into(e);
        }
        into(e())
    }

    #[cold]
    #[inline(never)]
    fn report_rejection(&self, e: &ResilienceError, by: RejectedBy) {
        tracing::debug!(service = %self.name, error = %e, "call rejected");
        self.emit(EventKind::Rejected { by });
    }
}

thread_local! {
    /// Panics that unwound out of a call's own code (see [`Own`]) and that no
    /// [`Admitted`] has claimed yet.
    static OWN_PANICS: Cell<u32> = const { Cell::new(0) };
}

/// Lives on the stack while a call's own code runs (a poll of its body, a sync body,
/// its error classification hooks): a panic unwinding through it is the call's own.
/// A call dropped while some other code's panic unwinds (a sibling in a `join!`) is
/// only cancelled.
struct Own;

impl Own {
    /// The call's own code returned: nothing to note (the drop runs only while a
    /// panic unwinds, so the common path skips its test of the panic count).
    #[inline(always)]
    fn end(self) {
        std::mem::forget(self);
    }
}

impl Drop for Own {
    #[inline]
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = OWN_PANICS.try_with(|c| c.set(c.get() + 1));
        }
    }
}

fn claim_own_panic() -> bool {
    OWN_PANICS
        .try_with(|c| {
            let n = c.get();
            c.set(n.saturating_sub(1));
            n > 0
        })
        .unwrap_or(false)
}

pin_project_lite::pin_project! {
    /// A body whose every poll runs under [`Own`].
    pub(crate) struct OwnBody<F> {
        #[pin]
        pub(crate) fut: F,
    }
}

impl<F: Future> Future for OwnBody<F> {
    type Output = F::Output;
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let own = Own;
        let polled = self.project().fut.poll(cx);
        own.end();
        polled
    }
}

/// A breaker admission that is given back if the call ends without an outcome; a
/// panicking body is recorded as a failure on the way out.
pub(crate) struct Admitted<'a> {
    pub(crate) svc: &'a Service,
    pub(crate) breaker: Option<&'a Breaker>,
    pub(crate) adm: Option<Admission>,
}

impl<'a> Admitted<'a> {
    /// The admission as a lane's, if it needs nothing given back: a breaker
    /// closed when it was admitted, or none.
    #[inline(always)]
    pub(crate) fn as_lane(&self) -> Option<Lane<'a>> {
        match (self.breaker, self.adm) {
            (None, _) => Some(Lane::NO_BREAKER),
            (Some(b), Some(adm)) => adm.closed_epoch().map(|epoch| Lane {
                breaker: Some(b),
                epoch,
            }),
            (Some(_), None) => None,
        }
    }

    #[inline(always)]
    fn record(mut self, outcome: Outcome) {
        if let (Some(b), Some(adm)) = (self.breaker, self.adm.take()) {
            b.record(adm, Some(outcome));
        }
    }
    #[inline(always)]
    fn ignore(mut self) {
        if let (Some(b), Some(adm)) = (self.breaker, self.adm.take()) {
            b.abandon(adm);
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        // `record` and `ignore` consume `self` outside any panic, so a drop while
        // a panic of the call's own body (or hook) unwinds is a failure, also for a
        // service without a breaker. A drop during another panic is a cancellation.
        if std::thread::panicking() && claim_own_panic() {
            let adm = self.adm.take();
            self.svc.body_panicked(self.breaker.zip(adm));
        } else if let (Some(b), Some(adm)) = (self.breaker, self.adm.take()) {
            b.abandon(adm);
        }
    }
}

/// A first attempt that needs no admission bookkeeping: the breaker (if any) was
/// closed in `epoch`, which needs nothing given back, and nothing else applies
/// before the body but an uncontended bulkhead.
#[derive(Clone, Copy)]
pub(crate) struct Lane<'a> {
    pub(crate) breaker: Option<&'a Breaker>,
    pub(crate) epoch: u32,
}

impl<'a> Lane<'a> {
    /// The lane of a call no breaker applies to.
    pub(crate) const NO_BREAKER: Self = Lane {
        breaker: None,
        epoch: 0,
    };

    /// The admission of a lane call, for the paths that record it as any other.
    #[inline]
    pub(crate) fn admitted(self, svc: &'a Service) -> Admitted<'a> {
        Admitted {
            svc,
            breaker: self.breaker,
            adm: self.breaker.map(|_| Admission::closed(self.epoch)),
        }
    }
}

/// How a first attempt goes: see [`Call::gate`].
pub(crate) enum Gate<'a> {
    Lane(Lane<'a>),
    Refused(Rejected),
    Full,
}

/// Records a lane call whose body panics as a failure. It lives only across a call
/// of the body (a sync body, or one poll of an async one), so a panic unwinding
/// through it is the body's own; forgotten when the body returns, so the common path
/// never runs its drop.
pub(crate) struct LaneGuard<'a> {
    pub(crate) svc: &'a Service,
    pub(crate) lane: Lane<'a>,
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lane = self.lane;
            self.svc
                .body_panicked(lane.breaker.map(|b| (b, Admission::closed(lane.epoch))));
        }
    }
}

/// [`LaneGuard`] that holds the breaker's state word as the lane read it (a
/// closed breaker's; 0 without a breaker), so the epoch is taken from it only if
/// the body panics.
struct WordGuard<'a> {
    svc: &'a Service,
    breaker: Option<&'a Breaker>,
    ctl: u64,
}

impl Drop for WordGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let adm = Admission::closed(epoch_of(self.ctl));
            self.svc.body_panicked(self.breaker.map(|b| (b, adm)));
        }
    }
}

/// [`LaneGuard`] for one poll of an async body on the swift lane, made to cost one
/// store: it refers to the service where the call's future already holds it (an
/// address the compiler recomputes rather than saves), and keeps the lane (the
/// breaker it was admitted by, or none, which the lane reads again after the
/// poll anyway, and the epoch).
pub(crate) struct PollGuard<'f, 'a> {
    pub(crate) svc: &'f &'a Service,
    pub(crate) lane: Lane<'a>,
}

impl Drop for PollGuard<'_, '_> {
    // Inlined into the unwinding path, so the guard's fields need not be written
    // to memory for it: the unwinding path passes them to `poll_panicked`.
    #[inline(always)]
    fn drop(&mut self) {
        poll_panicked(self.svc, self.lane);
    }
}

/// The body of a [`PollGuard`] panicked: recorded as a failure.
#[cold]
#[inline(never)]
fn poll_panicked(svc: &Service, lane: Lane<'_>) {
    if std::thread::panicking() {
        svc.body_panicked(lane.breaker.map(|b| (b, Admission::closed(lane.epoch))));
    }
}

/// One call through a service's policies: the state of a sync call (its attempts
/// through [`Call::attempt_sync`] and the ways built on it), and of an async call
/// off the lane, held by its future's state block.
pub struct Call<'a, E> {
    pub(crate) svc: &'a Service,
    pub(crate) p: &'a Policies,
    pub(crate) hooks: &'a Hooks<E>,
    pub(crate) attempt: u32,
    /// The kill switch was on at the first attempt: every policy passes through.
    pub(crate) bypass: bool,
    /// The caller runs one attempt only (an expansion without a retry loop): a
    /// retry that live configuration gives the service does not apply to it.
    single: bool,
    started: Option<Instant>,
    previous: Duration,
}

impl<E> std::fmt::Debug for Call<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("service", &self.svc.name)
            .field("attempt", &self.attempt)
            .finish()
    }
}

/// What [`Call::swift`] did.
enum Swift<'a, T, E, B> {
    /// The body succeeded; it is counted.
    Done(T),
    /// The body ran; the rest is the caller's ([`Call::after_swift`]).
    After(Ran<T, E>),
    /// The breaker is not closed (it may refuse outright): its state word. The
    /// body did not run.
    NotClosed(B, &'a Breaker, u64),
    /// The swift lane is closed to this call; the body did not run.
    Off(B),
}

/// The admission of the swift lane ([`Call::swift`], and the first poll of an
/// async call): the policies are of the common shapes, no global bar is up, the
/// breaker is closed (or none), a bulkhead slot is free (or no bulkhead) and a
/// rate-limit permit is due now (or no limiter). Nothing is taken unless it
/// admits.
///
/// Hooks without `into_error` (an attribute none of whose policies can refuse:
/// a retry alone, a fallback alone) have no policy but timing and the retry apply
/// to them (see [`Call::begin`]): whatever breaker, bulkhead or limiter live
/// configuration gives the service, their lane is the bare one with no breaker,
/// unless attempts are timed or a bar is up.
#[inline(always)]
pub(crate) fn swift_admit<'a, E>(
    svc: &'a Service,
    p: &'a Policies,
    hooks: &Hooks<E>,
) -> SwiftAdmit<'a> {
    // The service's own policies with a gate of 0, read from the service's policies
    // word alone: the commonest shape without a load of the policies. `p` are then
    // the service's own (they are never put back in force once replaced).
    if hooks.into_error.is_some() {
        if let Ok(breaker) = svc.lane_breaker() {
            return match breaker {
                None => SwiftAdmit::Bare(Lane::NO_BREAKER),
                Some(b) => match b.closed_epoch_or_ctl() {
                    Ok(epoch) => SwiftAdmit::Bare(Lane {
                        breaker: Some(b),
                        epoch,
                    }),
                    Err(ctl) => SwiftAdmit::NotClosed(b, ctl),
                },
            };
        }
    }
    let gate = p.gate.load(Relaxed);
    if hooks.into_error.is_none() {
        return if hookless_lane(p, gate) {
            SwiftAdmit::Bare(Lane::NO_BREAKER)
        } else {
            SwiftAdmit::Off
        };
    }
    // The common shape first, in one test: no bulkhead or limiter, no bar up.
    if gate == 0 {
        return match closed_lane(p) {
            Ok(lane) => SwiftAdmit::Bare(lane),
            Err((b, ctl)) => SwiftAdmit::NotClosed(b, ctl),
        };
    }
    if !p.lean || gate & BARS != 0 {
        return SwiftAdmit::Off;
    }
    let lane = match closed_lane(p) {
        Ok(lane) => lane,
        Err((b, ctl)) => return SwiftAdmit::NotClosed(b, ctl),
    };
    let permit = match p.bulkhead.as_deref() {
        None => None,
        Some(b) => match b.try_acquire() {
            Some(permit) => Some(permit),
            None => return SwiftAdmit::Off,
        },
    };
    // A permit due now, after the slot as in `Call::lane_admit` (the slot is
    // the cheaper to give back); one that must wait or be refused leaves the
    // lane with nothing taken.
    if let Some(l) = p.limiter.as_deref() {
        if !l.take_now() {
            drop(permit);
            return SwiftAdmit::Off;
        }
    }
    SwiftAdmit::In(lane, permit)
}

/// The lane of `p`'s breaker if it is closed (or of no breaker), else the
/// breaker and its state word: one load.
#[inline(always)]
fn closed_lane(p: &Policies) -> Result<Lane<'_>, (&Breaker, u64)> {
    match p.breaker() {
        None => Ok(Lane::NO_BREAKER),
        Some(b) => match b.closed_epoch_or_ctl() {
            Ok(epoch) => Ok(Lane {
                breaker: Some(b),
                epoch,
            }),
            Err(ctl) => Err((b, ctl)),
        },
    }
}

/// The bulkhead of a first attempt that may take the swift lane in its second
/// shape: a bulkhead (with a breaker or none), no rate limiter, attempts not
/// timed, no bar up, and hooks that let the policies apply (`into_error`).
/// Called when [`bare_lane`] said no.
#[inline(always)]
fn bulkhead_lane<'a, E>(p: &'a Policies, hooks: &Hooks<E>) -> Option<&'a Bulkhead> {
    // A rate-limited call passes these tests on its way to `once_swift` (8
    // instructions on the probe, of the 220 its clock read dominates).
    if p.limiter.is_some()
        || hooks.into_error.is_none()
        || p.gate.load(Relaxed) != GATE_SHAPE
        || !p.lean
    {
        return None;
    }
    p.bulkhead.as_deref()
}

/// Whether a first attempt may take the swift lane in its commonest shape: a
/// breaker or nothing (no bulkhead, no rate limiter, attempts not timed), and no
/// bar up. Without `into_error` no breaker, bulkhead or limiter applies (see
/// [`swift_admit`]): only the timing and the bars count.
#[inline(always)]
fn bare_lane<E>(p: &Policies, hooks: &Hooks<E>) -> bool {
    let gate = p.gate.load(Relaxed);
    match hooks.into_error {
        Some(_) => gate == 0,
        None => hookless_lane(p, gate),
    }
}

/// Whether a first attempt whose hooks have no `into_error` may take the swift
/// lane (with no breaker): attempts not timed and no bar up (`gate`: the
/// policies' [`Policies::gate`] as read).
#[inline(always)]
fn hookless_lane(p: &Policies, gate: u8) -> bool {
    p.lean && gate & BARS == 0
}

/// The breaker that applies to a call with these hooks: the policies', unless
/// the hooks cannot make a rejection into the caller's error (no `into_error`).
#[inline(always)]
fn applied_breaker<'a, E>(p: &'a Policies, hooks: &Hooks<E>) -> Option<&'a Breaker> {
    match hooks.into_error {
        Some(_) => p.breaker(),
        None => None,
    }
}

/// Counts a swift-lane success (its slot given back, no waiter to wake) on
/// this thread's own counter line when nothing else is due for it. `false`:
/// something is (a first count on this thread, a success the breaker's window must
/// record, the `metrics` feature's event), and the caller counts it as
/// [`Call::lane_success`] does. (`tracing` at `TRACE` closes the lane at
/// admission: [`BAR_TRACE`].)
#[inline(always)]
pub(crate) fn swift_count(svc: &Service, breaker: Option<&Breaker>) -> bool {
    // With the `metrics` feature every success is also a metrics event,
    // counted where `Call::lane_success` emits it.
    let countable =
        || breaker.is_none_or(Breaker::success_changes_nothing) && !cfg!(feature = "metrics");
    if svc.counts_shared() {
        // A computed key: no own lines, so their length is not read (it lies past
        // what such a call reads of the registry's entry).
        if countable() {
            svc.count_head.add_success();
            return true;
        }
        return false;
    }
    match svc.counters().own_line() {
        Some(line) if countable() => {
            line.add(Counter::Successes);
            true
        }
        _ => false,
    }
}

/// What [`Call::bare_sync`] did.
enum BareSync<'a, T, E, B> {
    /// The body ran and its success was counted.
    Done(Result<T, E>),
    /// The breaker is not closed: its state word; the body is handed back.
    NotClosed(B, &'a Breaker, u64),
    /// The body ran; the rest of its outcome is left to the caller.
    After(Ran<T, E>),
}

/// What [`swift_admit`] did.
pub(crate) enum SwiftAdmit<'a> {
    /// Admitted in the commonest shape (a breaker or none, and nothing else): the
    /// breaker's closed epoch; no bulkhead slot, no permit. A caller that runs the
    /// lane in a copy of its own for this shape knows there is no slot to give
    /// back.
    Bare(Lane<'a>),
    /// Admitted: the breaker's closed epoch, and the bulkhead slot if there is a
    /// bulkhead (a rate-limit permit, if any, is taken).
    In(Lane<'a>, Option<Permit<'a>>),
    /// The breaker is not closed (it may refuse outright): its state word.
    NotClosed(&'a Breaker, u64),
    /// The swift lane is closed to this call; nothing was taken.
    Off,
}

/// A body that ran on the swift lane, and what is left to do after it.
struct Ran<T, E> {
    result: Result<T, E>,
    /// The breaker's epoch at admission (0 without a breaker).
    epoch: u32,
    /// A bulkhead waiter is to be woken.
    wake: bool,
}

/// What [`Call::sync_lane`] did.
enum SyncLane<'a, T, E, B> {
    /// The body succeeded; it is counted.
    Done(T),
    /// The body failed; nothing is recorded yet.
    Failed(Lane<'a>, E),
    /// The breaker refuses outright; the body did not run.
    Refused(Rejected),
    /// The lane is closed to this call; the body did not run.
    Off(B),
}

pub(crate) enum Next<T, E> {
    Done(Result<T, E>),
    Retry(E, Duration),
}

pub(crate) type IntoError<E> = fn(ResilienceError) -> E;

pub(crate) type Begun<'a> = (Admitted<'a>, Option<Reservation<'a>>);

impl<'a, E> Call<'a, E> {
    /// Admission through breaker and rate limiter (bulkhead is separate: its wait
    /// differs between async and sync calls).
    #[inline(always)]
    pub(crate) fn begin(&mut self) -> Result<Begun<'a>, E> {
        self.attempt += 1;
        let (svc, p) = (self.svc, self.p);
        if self.attempt > 1 {
            svc.counters().add(Counter::Retries);
        } else if crate::live::kill_switch() {
            self.bypass = true;
        } else if p.config.retry.is_some_and(|r| r.max_elapsed.is_some()) {
            self.started = Some(clock::now());
        }
        let into = match self.hooks.into_error {
            Some(into) if !self.bypass => into,
            _ => {
                return Ok((
                    Admitted {
                        svc,
                        breaker: None,
                        adm: None,
                    },
                    None,
                ))
            }
        };
        let breaker = p.breaker();
        let adm = match breaker {
            Some(b) => match b.admit() {
                Ok(a) => Some(a),
                Err(r) => {
                    return Err(svc.reject(
                        into,
                        || ResilienceError::circuit_open(&svc.name, r.retry_after),
                        RejectedBy::CircuitBreaker,
                    ))
                }
            },
            None => None,
        };
        let admitted = Admitted { svc, breaker, adm };
        let reservation = match p.limiter.as_deref() {
            Some(l) => match l.acquire() {
                Ok(r) => Some(r),
                Err(lim) => {
                    admitted.ignore();
                    return Err(svc.reject(
                        into,
                        || ResilienceError::rate_limited(&svc.name, lim.retry_after),
                        RejectedBy::RateLimiter,
                    ));
                }
            },
            None => None,
        };
        Ok((admitted, reservation))
    }

    /// The bulkhead refused the call: its probe is freed and its rate-limit permit
    /// (dropped by the caller, unused) given back.
    pub(crate) fn bulkhead_full(
        &self,
        admitted: Admitted<'_>,
        into: fn(ResilienceError) -> E,
    ) -> E {
        admitted.ignore();
        self.svc.reject(
            into,
            || ResilienceError::bulkhead_full(&self.svc.name),
            RejectedBy::Bulkhead,
        )
    }

    /// The bulkhead, unless the call bypasses policies.
    #[inline(always)]
    pub(crate) fn bulkhead(&self) -> Option<(&'a Bulkhead, IntoError<E>)> {
        match (self.p.bulkhead.as_deref(), self.hooks.into_error) {
            (Some(b), Some(into)) if !self.bypass => Some((b, into)),
            _ => None,
        }
    }

    /// Records the outcome and decides what comes next.
    #[inline(always)]
    pub(crate) fn finish<T>(
        &mut self,
        admitted: Admitted<'_>,
        result: Result<T, E>,
        timed_out: bool,
        began: Option<Instant>,
    ) -> Next<T, E> {
        let svc = self.svc;
        let c = svc.counters();
        let failure = match &result {
            Ok(_) => false,
            Err(_) if timed_out => true,
            Err(e) => {
                let own = Own;
                if self.hooks.ignore_if.is_some_and(|f| f(e)) {
                    own.end();
                    c.add(Counter::Ignored);
                    tracing::trace!(service = %svc.name, "error ignored");
                    svc.emit(EventKind::Ignored);
                    admitted.ignore();
                    return self.after_error(result);
                }
                let failure = self.hooks.record_if.is_none_or(|f| f(e));
                own.end();
                failure
            }
        };
        let latency = began.map(|t| clock::now().saturating_duration_since(t));
        if failure {
            c.add(Counter::Failures);
            tracing::trace!(service = %svc.name, ?latency, "call failed");
            svc.emit(EventKind::Failed { latency });
            admitted.record(Outcome {
                failure: true,
                slow: false,
            });
        } else {
            c.add(Counter::Successes);
            tracing::trace!(service = %svc.name, ?latency, "call succeeded");
            svc.emit(EventKind::Succeeded { latency });
            let slow = match (admitted.breaker.and_then(|b| b.config().slow_call), latency) {
                (Some(limit), Some(l)) => l > limit,
                _ => false,
            };
            if slow {
                c.add(Counter::SlowCalls);
                if let Some(latency) = latency {
                    svc.emit(EventKind::SlowCall { latency });
                }
            }
            admitted.record(Outcome {
                failure: false,
                slow,
            });
        }
        self.after_error(result)
    }

    #[inline(always)]
    fn after_error<T>(&mut self, result: Result<T, E>) -> Next<T, E> {
        match result {
            Ok(v) => Next::Done(Ok(v)),
            Err(e) => self.after_failure(e),
        }
    }

    #[cold]
    fn after_failure<T>(&mut self, e: E) -> Next<T, E> {
        let Some(r) = &self.p.config.retry else {
            return Next::Done(Err(e));
        };
        if self.bypass
            || self.single
            || self.attempt >= r.max_attempts
            || !self.hooks.retry_if.is_none_or(|f| f(&e))
        {
            return Next::Done(Err(e));
        }
        let mut delay = retry_delay(r, self.attempt, self.previous, (self.svc.random)());
        self.previous = delay;
        if let Some(hint) = self.hooks.retry_after.and_then(|f| f(&e)) {
            delay = delay.max(hint);
        }
        if let (Some(max), Some(started)) = (r.max_elapsed, self.started) {
            // Saturating: a server's hint may be as long as `Duration::MAX`.
            if clock::now()
                .saturating_duration_since(started)
                .saturating_add(delay)
                > max
            {
                tracing::debug!(service = %self.svc.name, attempt = self.attempt, "max_elapsed reached: not retrying");
                return Next::Done(Err(e));
            }
        }
        tracing::debug!(service = %self.svc.name, attempt = self.attempt, ?delay, "retry scheduled");
        self.svc.emit(EventKind::RetryScheduled {
            attempt: self.attempt,
            delay,
        });
        Next::Retry(e, delay)
    }

    pub(crate) fn timed_out(&self, limit: Duration, into: fn(ResilienceError) -> E) -> E {
        let svc = self.svc;
        svc.counters().add(Counter::Timeouts);
        tracing::debug!(service = %svc.name, ?limit, "attempt timed out");
        svc.emit(EventKind::Timeout {
            after: limit,
            total: false,
        });
        into(ResilienceError::timeout(&svc.name, limit))
    }

    #[inline]
    pub(crate) fn timing(&self) -> Option<Instant> {
        self.p.timed.then(clock::now)
    }

    /// How a first attempt may go. The lane: attempts not timed, the kill switch
    /// off, and the breaker closed (or none); then [`Call::lane_admit`] takes a
    /// bulkhead slot and a rate-limit permit if they are free now. A lane call costs
    /// a few loads (and the clock, under a rate limiter) and, for a success, one
    /// count on this thread's own line. A breaker that refuses outright (forced open, or open with cooldown
    /// left) refuses at once. Anything else goes through every policy.
    #[inline(always)]
    pub(crate) fn gate(&self) -> Gate<'a> {
        if self.attempt != 0 || self.hooks.into_error.is_none() || crate::live::kill_switch() {
            return Gate::Full;
        }
        match self.p.breaker() {
            None if self.p.lean => Gate::Lane(Lane::NO_BREAKER),
            None => Gate::Full,
            Some(b) => match b.closed_epoch() {
                Some(epoch) if self.p.lean => Gate::Lane(Lane {
                    breaker: Some(b),
                    epoch,
                }),
                Some(_) => Gate::Full,
                None => match b.refusal() {
                    Some(r) => Gate::Refused(r),
                    None => Gate::Full,
                },
            },
        }
    }

    /// The rest of a lane admission, after [`Call::gate`]: a bulkhead slot now, then
    /// a rate-limit permit due now (the slot first: it is the cheaper to give back).
    /// `None`: either must wait or refuse, so the call goes through every policy
    /// (nothing was taken).
    #[inline(always)]
    pub(crate) fn lane_admit(&self) -> Option<Option<Permit<'a>>> {
        let permit = match self.p.bulkhead.as_deref() {
            None => None,
            Some(b) => Some(b.try_acquire()?),
        };
        if let Some(l) = self.p.limiter.as_deref() {
            if !l.take_now() {
                return None;
            }
        }
        Some(permit)
    }

    /// The breaker refused the first attempt outright (see [`Call::gate`]).
    #[cold]
    #[inline(never)]
    pub(crate) fn refuse(&mut self, r: Rejected) -> E {
        self.attempt = 1;
        Self::refused(self.svc, self.hooks, r)
    }

    /// A lane call succeeded.
    #[inline(always)]
    pub(crate) fn lane_success(&self, lane: Lane<'_>) {
        Self::lane_success_of(self.svc, lane);
    }

    /// A lane call of `svc` succeeded.
    #[inline(always)]
    pub(crate) fn lane_success_of(svc: &Service, lane: Lane<'_>) {
        svc.counters().add(Counter::Successes);
        tracing::trace!(service = %svc.name, "call succeeded");
        svc.emit(EventKind::Succeeded { latency: None });
        if let Some(b) = lane.breaker {
            b.closed_success(lane.epoch);
        }
    }

    /// A lane call failed (or timed out): recorded as any other call, then the retry
    /// decision.
    #[cold]
    #[inline(never)]
    pub(crate) fn lane_failed<T>(&mut self, lane: Lane<'_>, e: E, timed_out: bool) -> Next<T, E> {
        let admitted = lane.admitted(self.svc);
        self.finish(admitted, Err(e), timed_out, None)
    }

    /// This call makes one attempt only ([`Service::once`]): a
    /// retry that live configuration gives the service does not apply to it, so
    /// its attempt always breaks.
    #[inline(always)]
    pub(crate) fn single_attempt(mut self) -> Self {
        self.single = true;
        self
    }

    /// A whole sync call, every attempt: [`Call::attempt_sync`] in a loop, for
    /// callers whose body needs nothing fresh per attempt. It takes the call by
    /// value, so a first attempt through the lane keeps the call's state in
    /// registers: every path off the lane (a refusal, a failure, a full bulkhead,
    /// policies the lane does not cover) leaves through a function of its own.
    #[inline(always)]
    pub fn run_sync<T>(self, body: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        if !self.is_fresh() {
            return self.run_sync_full(body);
        }
        Self::run_sync_swift(self.svc, self.p, self.hooks, self.single, body)
    }

    /// [`Call::run_sync`] for a sync expansion with a retry: the commonest shape
    /// (a breaker or nothing, no bar up) inline, as in [`Call::attempt_once_sync`],
    /// and every other way by a tail call to a function of its own, so the
    /// function the attribute wraps needs no stack frame for its lane.
    /// (`run_sync` keeps every shape of the swift lane inline, for a caller that
    /// inlines it into a loop or a larger function.)
    #[inline(always)]
    pub fn retry_sync<T>(self, mut body: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        if !self.is_fresh() {
            return self.run_sync_full(body);
        }
        let (svc, p, hooks, single) = (self.svc, self.p, self.hooks, self.single);
        if !bare_lane(p, hooks) {
            return Self::run_sync_shape(svc, p, hooks, single, body);
        }
        match Self::bare_sync(svc, applied_breaker(p, hooks), &mut body) {
            BareSync::Done(r) => r,
            BareSync::NotClosed(_, b, ctl) => {
                Self::run_sync_not_closed(svc, p, hooks, single, body, b, ctl)
            }
            BareSync::After(ran) => Self::run_sync_after_swift(svc, p, hooks, single, ran, body),
        }
    }

    /// [`Call::retry_sync`] in the swift lane's second shape, as
    /// [`Call::once_bulkhead`] is for a call without a retry (a full bulkhead
    /// goes on through the other lanes, which wait for a slot or refuse).
    #[inline(never)]
    fn run_sync_bulkhead<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        bulkhead: &'a Bulkhead,
        mut body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        match Self::swift_bulkhead(svc, p, bulkhead, &mut body) {
            Swift::Done(v) => Ok(v),
            Swift::After(ran) => Self::run_sync_after_swift(svc, p, hooks, single, ran, body),
            Swift::NotClosed(_, b, ctl) => {
                Self::run_sync_not_closed(svc, p, hooks, single, body, b, ctl)
            }
            Swift::Off(_) => Self::run_sync_lanes(svc, p, hooks, single, body),
        }
    }

    /// [`Call::retry_sync`] for the shapes other than the commonest: a tail call
    /// to the function for the bulkhead's ([`Call::run_sync_bulkhead`]) or to the
    /// one for the others ([`Call::run_sync_other`]). It calls nothing else, so it
    /// needs no stack frame, and neither does the bulkhead's; the others' does.
    #[cold]
    #[inline(never)]
    fn run_sync_shape<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        match bulkhead_lane(p, hooks) {
            Some(bulkhead) => Self::run_sync_bulkhead(svc, p, hooks, single, bulkhead, body),
            None => Self::run_sync_other(svc, p, hooks, single, body),
        }
    }

    /// [`Call::retry_sync`] for the shapes other than the commonest and the
    /// bulkhead's.
    #[cold]
    #[inline(never)]
    fn run_sync_other<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        Self::run_sync_swift(svc, p, hooks, single, body)
    }

    /// The swift lane of [`Call::run_sync`], every shape it covers inline.
    #[inline(always)]
    fn run_sync_swift<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        mut body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        match Self::swift(svc, p, hooks, &mut body) {
            Swift::Done(v) => Ok(v),
            Swift::After(ran) => Self::run_sync_after_swift(svc, p, hooks, single, ran, body),
            // The refusal inline (not `run_sync_not_closed`'s call): an inlined
            // `run_sync` refuses where the caller's hooks are known.
            Swift::NotClosed(_, b, ctl) => match b.refusal_from(ctl) {
                Some(r) => Err(Self::refusal_error(svc, hooks, r)),
                None => Self::run_sync_lanes(svc, p, hooks, single, body),
            },
            Swift::Off(_) => Self::run_sync_lanes(svc, p, hooks, single, body),
        }
    }

    /// Nothing has happened to this call yet ([`Call::with`], perhaps made
    /// single-attempt): what [`Call::from_parts`] rebuilds. The attempt count
    /// says it: the rest of the call's state is set only once an attempt has
    /// begun ([`Call::begin`] counts the attempt first) or a retry is scheduled.
    #[inline(always)]
    fn is_fresh(&self) -> bool {
        let fresh = self.attempt == 0;
        debug_assert!(
            !fresh || (!self.bypass && self.started.is_none() && self.previous.is_zero()),
            "a call with no attempt has state"
        );
        fresh
    }

    /// A call nothing has happened to, from its parts. The ways off the swift lane
    /// take the parts (registers) and build the call themselves, so the lane builds
    /// nothing in memory.
    #[inline(always)]
    fn from_parts(svc: &'a Service, p: &'a Policies, hooks: &'a Hooks<E>, single: bool) -> Self {
        let mut call = Self::with(svc, p, hooks);
        call.single = single;
        call
    }

    /// The swift lane of a first sync attempt: for the common shapes (breaker
    /// closed or none, a bulkhead slot free or no bulkhead, a rate-limit permit due
    /// now or no limiter, attempts not timed, no bar up: kill switch, a listener
    /// for every call, `tracing` at `TRACE`) it reads the policies, runs the body
    /// and counts a success, and everything else (a failure, a waiter to wake, a
    /// first count on this thread, a success the breaker's window must record, the
    /// `metrics` feature's event) is left to a function of its own
    /// ([`Swift::After`]). It holds nothing across the body but what the count
    /// needs, so it needs no stack frame of its own when the body is inlined.
    #[inline(always)]
    fn swift<T, B: FnOnce() -> Result<T, E>>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &Hooks<E>,
        body: B,
    ) -> Swift<'a, T, E, B> {
        match swift_admit(svc, p, hooks) {
            // The commonest shape runs in a copy of its own, which knows there is
            // no bulkhead slot to give back.
            SwiftAdmit::Bare(lane) => Self::swift_run(svc, lane, None, body),
            SwiftAdmit::In(lane, permit) => Self::swift_run(svc, lane, permit, body),
            SwiftAdmit::NotClosed(b, ctl) => Swift::NotClosed(body, b, ctl),
            SwiftAdmit::Off => Swift::Off(body),
        }
    }

    /// [`Call::swift`] in its second shape ([`bulkhead_lane`]: a bulkhead, no rate
    /// limiter), for the attribute's expansions ([`Call::once_bulkhead`],
    /// [`Call::run_sync_bulkhead`]). Without a limiter the lane reads no clock, so
    /// it calls nothing but the body.
    #[inline(always)]
    fn swift_bulkhead<T, B: FnOnce() -> Result<T, E>>(
        svc: &'a Service,
        p: &'a Policies,
        bulkhead: &'a Bulkhead,
        body: B,
    ) -> Swift<'a, T, E, B> {
        let lane = match closed_lane(p) {
            Ok(lane) => lane,
            Err((b, ctl)) => return Swift::NotClosed(body, b, ctl),
        };
        match bulkhead.try_acquire() {
            Some(permit) => Self::swift_run(svc, lane, Some(permit), body),
            None => Swift::Off(body),
        }
    }

    /// [`Call::swift`] once admitted: the body run, a success counted.
    #[inline(always)]
    fn swift_run<T, B: FnOnce() -> Result<T, E>>(
        svc: &'a Service,
        lane: Lane<'a>,
        permit: Option<Permit<'a>>,
        body: B,
    ) -> Swift<'a, T, E, B> {
        let guard = LaneGuard { svc, lane };
        let result = body();
        std::mem::forget(guard);
        let wake = permit.and_then(Permit::release_quiet);
        if let (Ok(_), None) = (&result, wake) {
            if swift_count(svc, lane.breaker) {
                if let Ok(v) = result {
                    return Swift::Done(v);
                }
            }
        }
        Swift::After(Ran {
            result,
            epoch: lane.epoch,
            wake: wake.is_some(),
        })
    }

    /// [`Call::swift`] left the rest of a call to its caller: wake a bulkhead's
    /// waiter, and count the success as [`Call::lane_success`] does, or hand back
    /// the failure to be recorded.
    #[inline(always)]
    fn after_swift<T>(&self, ran: Ran<T, E>) -> Result<T, (Lane<'a>, E)> {
        if ran.wake {
            if let Some(b) = self.p.bulkhead.as_deref() {
                b.wake();
            }
        }
        // The lane's breaker, as `swift_admit` gave it.
        let lane = Lane {
            breaker: applied_breaker(self.p, self.hooks),
            epoch: ran.epoch,
        };
        match ran.result {
            Ok(v) => {
                self.lane_success(lane);
                Ok(v)
            }
            Err(e) => Err((lane, e)),
        }
    }

    /// [`Call::retry_sync`] when the breaker is not closed: refused outright, or
    /// through the other lanes.
    #[cold]
    #[inline(never)]
    fn run_sync_not_closed<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        body: impl FnMut() -> Result<T, E>,
        b: &'a Breaker,
        ctl: u64,
    ) -> Result<T, E> {
        match b.refusal_from(ctl) {
            Some(r) => Err(Self::refusal_error(svc, hooks, r)),
            None => Self::run_sync_lanes(svc, p, hooks, single, body),
        }
    }

    /// [`Call::run_sync`] after [`Swift::After`].
    #[cold]
    #[inline(never)]
    fn run_sync_after_swift<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        ran: Ran<T, E>,
        body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let call = Self::from_parts(svc, p, hooks, single);
        match call.after_swift(ran) {
            Ok(v) => Ok(v),
            Err((lane, e)) => call.run_sync_after_lane_failure(lane, e, body),
        }
    }

    /// [`Call::run_sync`] when the swift lane is closed to the call: the lane of
    /// [`Call::gate`], or every policy.
    #[cold]
    #[inline(never)]
    fn run_sync_lanes<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        single: bool,
        mut body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let call = Self::from_parts(svc, p, hooks, single);
        match call.sync_lane(&mut body) {
            SyncLane::Done(v) => Ok(v),
            SyncLane::Failed(lane, e) => call.run_sync_after_lane_failure(lane, e, body),
            SyncLane::Refused(r) => Err(Self::refused(svc, hooks, r)),
            SyncLane::Off(_) => call.run_sync_full(body),
        }
    }

    /// A first sync attempt through the lane, shared by [`Call::run_sync`] and
    /// [`Call::attempt_sync`]: the body runs here unless the lane is closed to the
    /// call (`Refused`, `Off`: nothing was done, the body is handed back).
    #[inline(always)]
    fn sync_lane<T, B: FnOnce() -> Result<T, E>>(&self, body: B) -> SyncLane<'a, T, E, B> {
        let lane = match self.gate() {
            Gate::Lane(lane) => lane,
            Gate::Refused(r) => return SyncLane::Refused(r),
            Gate::Full => return SyncLane::Off(body),
        };
        let Some(permit) = self.lane_admit() else {
            return SyncLane::Off(body);
        };
        let guard = LaneGuard {
            svc: self.svc,
            lane,
        };
        let result = body();
        std::mem::forget(guard);
        drop(permit);
        match result {
            Ok(v) => {
                self.lane_success(lane);
                SyncLane::Done(v)
            }
            Err(e) => SyncLane::Failed(lane, e),
        }
    }

    /// [`Call::run_sync`]: the breaker refused the first attempt outright. Takes
    /// only what a refusal reads, so the caller builds no `Call` in memory for it.
    #[cold]
    #[inline(never)]
    pub(crate) fn refused(svc: &Service, hooks: &Hooks<E>, r: Rejected) -> E {
        Self::refusal_error(svc, hooks, r)
    }

    /// What [`Call::refused`] does, and the sync lanes' refusals of a breaker that
    /// is not closed: inlined there, where the caller's hooks are known.
    #[inline(always)]
    fn refusal_error(svc: &Service, hooks: &Hooks<E>, r: Rejected) -> E {
        let into = hooks.into_error.expect("gate: into_error is set");
        svc.reject(
            into,
            || ResilienceError::circuit_open(&svc.name, r.retry_after),
            RejectedBy::CircuitBreaker,
        )
    }

    /// [`Call::run_sync`] off the lane: every attempt through every policy.
    #[inline(never)]
    fn run_sync_full<T>(mut self, mut body: impl FnMut() -> Result<T, E>) -> Result<T, E> {
        loop {
            if let ControlFlow::Break(r) = self.attempt_sync_full(&mut body) {
                return r;
            }
        }
    }

    /// [`Call::run_sync`]: the lane's attempt failed; it is recorded, and any
    /// retry goes through every policy.
    #[cold]
    #[inline(never)]
    fn run_sync_after_lane_failure<T>(
        mut self,
        lane: Lane<'_>,
        e: E,
        body: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        match self.after_lane_failure_sync(lane, e) {
            ControlFlow::Break(r) => r,
            ControlFlow::Continue(()) => self.run_sync_full(body),
        }
    }

    /// One attempt of a sync body: breaker, rate limit and bulkhead admission, the
    /// body, the outcome recorded and the retry decided; waits block the thread.
    /// Timeouts do not apply (a sync body cannot be interrupted).
    #[inline(always)]
    pub fn attempt_sync<T>(
        &mut self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> ControlFlow<Result<T, E>> {
        if !self.is_fresh() {
            return self.attempt_sync_lanes(body);
        }
        match Self::swift(self.svc, self.p, self.hooks, body) {
            Swift::Done(v) => {
                self.attempt = 1;
                ControlFlow::Break(Ok(v))
            }
            Swift::After(ran) => self.attempt_sync_after_swift(ran),
            Swift::NotClosed(body, b, ctl) => match b.refusal_from(ctl) {
                Some(r) => ControlFlow::Break(Err(self.refuse(r))),
                None => self.attempt_sync_lanes(body),
            },
            Swift::Off(body) => self.attempt_sync_lanes(body),
        }
    }

    /// [`Call::attempt_sync`] after [`Swift::After`]: the success counted, or the
    /// failure recorded and the retry decided.
    #[cold]
    #[inline(never)]
    fn attempt_sync_after_swift<T>(&mut self, ran: Ran<T, E>) -> ControlFlow<Result<T, E>> {
        match self.after_swift(ran) {
            Ok(v) => {
                self.attempt = 1;
                ControlFlow::Break(Ok(v))
            }
            Err((lane, e)) => self.after_lane_failure_sync(lane, e),
        }
    }

    /// [`Call::attempt_sync`] when the swift lane is closed to it: the lane of
    /// [`Call::gate`], or every policy.
    #[cold]
    #[inline(never)]
    fn attempt_sync_lanes<T>(
        &mut self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> ControlFlow<Result<T, E>> {
        match self.sync_lane(body) {
            SyncLane::Done(v) => {
                self.attempt = 1;
                ControlFlow::Break(Ok(v))
            }
            SyncLane::Failed(lane, e) => self.after_lane_failure_sync(lane, e),
            SyncLane::Refused(r) => ControlFlow::Break(Err(self.refuse(r))),
            SyncLane::Off(body) => self.attempt_sync_full(body),
        }
    }

    /// [`Call::attempt_sync`] for a call that has only this attempt (an expansion
    /// without a retry). It takes the call by value, as [`Call::run_sync`] does, so
    /// the lane keeps the call's state in registers. It never retries (a retry a
    /// live configuration gives the service does not apply), so it returns the
    /// call's result.
    #[inline(always)]
    pub fn attempt_once_sync<T>(mut self, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.single = true;
        if !self.is_fresh() {
            return self.once_lanes(body);
        }
        let (svc, p, hooks) = (self.svc, self.p, self.hooks);
        // The commonest shape (a breaker or nothing) inline; every other way leaves
        // by a tail call to a function of its own, so the function this attribute
        // wraps needs no stack frame for its lane (a frame costs it more than the
        // lane when it is called, not inlined).
        if !bare_lane(p, hooks) {
            return Self::once_shape(svc, p, hooks, body);
        }
        match Self::bare_sync(svc, applied_breaker(p, hooks), body) {
            BareSync::Done(r) => r,
            BareSync::NotClosed(body, b, ctl) => Self::once_not_closed(svc, p, hooks, body, b, ctl),
            BareSync::After(ran) => Self::once_after_swift(svc, p, hooks, ran),
        }
    }

    /// [`Call::attempt_once_sync`] for the shapes other than the commonest: a tail
    /// call to the function for the bulkhead's ([`Call::once_bulkhead`]) or to
    /// the one for the others ([`Call::once_swift`]). It calls nothing else, so
    /// it needs no stack frame, and neither does the bulkhead's; the others' does.
    /// Marked cold so the commonest shape is laid out straight: deciding the
    /// shape inline in the wrapped function put the commonest shape's path out of
    /// line there and cost it 0.3-0.6 ns where that function is inlined.
    #[cold]
    #[inline(never)]
    fn once_shape<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        match bulkhead_lane(p, hooks) {
            Some(bulkhead) => Self::once_bulkhead(svc, p, hooks, bulkhead, body),
            None => Self::once_swift(svc, p, hooks, body),
        }
    }

    /// [`Call::attempt_once_sync`] in the swift lane's second shape
    /// ([`bulkhead_lane`]: a bulkhead, no rate limiter). A function of its own
    /// that calls nothing but the body, so it needs no stack frame. Inside
    /// [`Call::once_swift`] it ran in that function's frame, which the rate
    /// limiter's clock read needs: a `#[bulkhead] fn` ran 85 instructions a call,
    /// about 2 ns more.
    #[inline(never)]
    fn once_bulkhead<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        bulkhead: &'a Bulkhead,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        Self::once_end(svc, p, hooks, Self::swift_bulkhead(svc, p, bulkhead, body))
    }

    /// The sync swift lane in its commonest shape ([`bare_lane`]: a breaker or
    /// nothing, no bar up), inline in [`Call::attempt_once_sync`] and
    /// [`Call::run_sync`], which leave by tail calls on every other way.
    #[inline(always)]
    fn bare_sync<T, B: FnOnce() -> Result<T, E>>(
        svc: &'a Service,
        breaker: Option<&'a Breaker>,
        body: B,
    ) -> BareSync<'a, T, E, B> {
        // The breaker's state word as read: its epoch is taken from it only on the
        // ways that need it.
        let (breaker, ctl) = match breaker {
            None => (None, 0),
            Some(b) => match b.closed_ctl() {
                Ok(ctl) => (Some(b), ctl),
                Err(ctl) => return BareSync::NotClosed(body, b, ctl),
            },
        };
        let guard = WordGuard { svc, breaker, ctl };
        let result = body();
        std::mem::forget(guard);
        if result.is_ok() && swift_count(svc, breaker) {
            return BareSync::Done(result);
        }
        BareSync::After(Ran {
            result,
            epoch: epoch_of(ctl),
            wake: false,
        })
    }

    /// [`Call::attempt_once_sync`] for the shapes other than the commonest and the
    /// bulkhead's: the swift lane with a rate limiter, or the other lanes. Marked
    /// cold so the commonest shape is laid out straight (a jump more for these).
    #[cold]
    #[inline(never)]
    fn once_swift<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        Self::once_end(svc, p, hooks, Self::swift(svc, p, hooks, body))
    }

    /// [`Call::attempt_once_sync`] after the swift lane: its result, or the way on
    /// by a tail call.
    #[inline(always)]
    fn once_end<T, B: FnOnce() -> Result<T, E>>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        swift: Swift<'a, T, E, B>,
    ) -> Result<T, E> {
        match swift {
            Swift::Done(v) => Ok(v),
            Swift::After(ran) => Self::once_after_swift(svc, p, hooks, ran),
            Swift::NotClosed(body, b, ctl) => Self::once_not_closed(svc, p, hooks, body, b, ctl),
            Swift::Off(body) => Self::once_lanes_from(svc, p, hooks, body),
        }
    }

    /// [`Call::attempt_once_sync`] when the breaker is not closed: refused
    /// outright, or through the other lanes (half-open, or a cooldown that ended).
    #[cold]
    #[inline(never)]
    fn once_not_closed<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        body: impl FnOnce() -> Result<T, E>,
        b: &'a Breaker,
        ctl: u64,
    ) -> Result<T, E> {
        match b.refusal_from(ctl) {
            Some(r) => Err(Self::refusal_error(svc, hooks, r)),
            None => Self::once_lanes_from(svc, p, hooks, body),
        }
    }

    /// [`Call::attempt_once_sync`] when the swift lane is closed to the call.
    #[cold]
    #[inline(never)]
    fn once_lanes_from<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        body: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        Self::from_parts(svc, p, hooks, true).once_lanes(body)
    }

    /// [`Call::attempt_once_sync`] after [`Swift::After`].
    #[cold]
    #[inline(never)]
    fn once_after_swift<T>(
        svc: &'a Service,
        p: &'a Policies,
        hooks: &'a Hooks<E>,
        ran: Ran<T, E>,
    ) -> Result<T, E> {
        let call = Self::from_parts(svc, p, hooks, true);
        match call.after_swift(ran) {
            Ok(v) => Ok(v),
            Err((lane, e)) => call.once_after_lane_failure(lane, e),
        }
    }

    /// [`Call::attempt_once_sync`] through the lane of [`Call::gate`], or every
    /// policy.
    #[inline(always)]
    fn once_lanes<T>(self, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        match self.sync_lane(body) {
            SyncLane::Done(v) => Ok(v),
            SyncLane::Failed(lane, e) => self.once_after_lane_failure(lane, e),
            SyncLane::Refused(r) => Err(Self::refused(self.svc, self.hooks, r)),
            SyncLane::Off(body) => self.once_full(body),
        }
    }

    /// [`Call::attempt_once_sync`] off the lane (by value, so the caller builds the
    /// call in memory only on this path).
    #[inline(never)]
    fn once_full<T>(mut self, body: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let step = self.attempt_sync_full(body);
        Self::only(step)
    }

    /// [`Call::attempt_once_sync`]: the lane's attempt failed.
    #[cold]
    #[inline(never)]
    fn once_after_lane_failure<T>(mut self, lane: Lane<'_>, e: E) -> Result<T, E> {
        let step = self.after_lane_failure_sync(lane, e);
        Self::only(step)
    }

    /// The end of a single-attempt call: it never asks for another attempt.
    fn only<T>(step: ControlFlow<Result<T, E>>) -> Result<T, E> {
        match step {
            ControlFlow::Break(r) => r,
            ControlFlow::Continue(()) => unreachable!("a single-attempt call does not retry"),
        }
    }

    /// A sync lane attempt failed: recorded, and the retry decision (the backoff is
    /// slept here).
    #[inline(always)]
    fn after_lane_failure_sync<T>(&mut self, lane: Lane<'_>, e: E) -> ControlFlow<Result<T, E>> {
        self.attempt = 1;
        match self.lane_failed(lane, e, false) {
            Next::Done(r) => ControlFlow::Break(r),
            Next::Retry(_, delay) => {
                clock::sleep_thread(delay);
                ControlFlow::Continue(())
            }
        }
    }

    /// [`Call::attempt_sync`] through every policy: retries, rejections, waits.
    #[inline(never)]
    fn attempt_sync_full<T>(
        &mut self,
        body: impl FnOnce() -> Result<T, E>,
    ) -> ControlFlow<Result<T, E>> {
        let (admitted, reservation) = match self.begin() {
            Ok(a) => a,
            Err(e) => return ControlFlow::Break(Err(e)),
        };
        if let Some(r) = &reservation {
            if let Some(wait) = r.delay() {
                self.svc.emit(EventKind::RateLimitWaited { wait });
            }
            r.wait_sync();
        }
        let permit = match self.bulkhead() {
            Some((b, into)) => match b.acquire_sync() {
                Ok(p) => Some(p),
                Err(_) => {
                    drop(reservation);
                    return ControlFlow::Break(Err(self.bulkhead_full(admitted, into)));
                }
            },
            None => None,
        };
        if let Some(r) = reservation {
            r.used();
        }
        let began = self.timing();
        let result = {
            let own = Own;
            let result = body();
            own.end();
            result
        };
        drop(permit);
        match self.finish(admitted, result, false, began) {
            Next::Done(r) => ControlFlow::Break(r),
            Next::Retry(_, delay) => {
                clock::sleep_thread(delay);
                ControlFlow::Continue(())
            }
        }
    }
}

#[cfg(test)]
mod swift_tests {
    use std::sync::{mpsc, Arc};
    use std::time::Duration;

    use crate::{status, Resilience, ResilienceError};

    #[derive(Debug, PartialEq)]
    struct E;

    impl From<ResilienceError> for E {
        fn from(_: ResilienceError) -> Self {
            E
        }
    }

    /// A swift-lane call gives its slot back without waking anyone on its fast
    /// path; a waiter must still be woken (it would sleep its hour of `max_wait`).
    #[test]
    fn a_sync_call_that_gives_its_bulkhead_slot_back_wakes_a_waiting_one() {
        let p = Arc::new(
            Resilience::builder("swift.wake")
                .no_retry()
                .no_circuit_breaker()
                .max_concurrent(1)
                .bulkhead_max_wait(Duration::from_secs(3600))
                .build()
                .expect("valid policy"),
        );
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let holder = {
            let p = p.clone();
            std::thread::spawn(move || {
                p.call_sync(|| {
                    entered_tx.send(()).expect("test alive");
                    release_rx.recv().expect("test alive");
                    Ok::<u8, E>(1)
                })
            })
        };
        entered_rx.recv().expect("holder entered");
        let (done_tx, done_rx) = mpsc::channel();
        let waiter = {
            let p = p.clone();
            std::thread::spawn(move || {
                let r = p.call_sync(|| Ok::<u8, E>(2));
                done_tx.send(()).expect("test alive");
                r
            })
        };
        let bulkhead = p.service().policies().bulkhead.clone().expect("a bulkhead");
        while bulkhead.waiting() == 0 {
            std::thread::yield_now();
        }
        release_tx.send(()).expect("holder alive");
        assert!(done_rx.recv_timeout(Duration::from_secs(60)).is_ok());
        assert_eq!(holder.join().expect("no panic"), Ok(1));
        assert_eq!(waiter.join().expect("no panic"), Ok(2));
        let s = status("swift.wake").expect("registered");
        assert_eq!((s.successes, s.rejections), (2, 0));
    }
}

#[cfg(test)]
mod layout_tests {
    use std::mem::{align_of, offset_of};

    use super::Policies;
    use crate::__private::{Site, SiteName, Spec};

    /// What the lanes read of the policies lies within their first 64 bytes, and
    /// what the swift lane's commonest shape reads off the service's own policies
    /// (the breaker's offset and the gate) within their first 16, which a line
    /// boundary never splits in boxed policies (the allocator aligns them to 16).
    #[test]
    fn a_call_reads_the_first_line_of_its_policies() {
        assert!(align_of::<Policies>() <= 16);
        assert!(
            offset_of!(Policies, breaker_at) + 8 <= 16 && offset_of!(Policies, gate) < 16,
            "the bare lane reads the policies' bytes {}-{}",
            offset_of!(Policies, breaker_at),
            offset_of!(Policies, gate)
        );
        for end in [
            offset_of!(Policies, breaker_at) + 8,
            offset_of!(Policies, gate) + 1,
            offset_of!(Policies, lean) + 1,
            offset_of!(Policies, untimed) + 1,
        ] {
            assert!(end <= 64, "the lanes read byte {end} of the policies");
        }
    }

    /// Keys of a computed name keep no copy of their call site's settings: every key
    /// points at the site's own.
    #[test]
    fn keys_of_a_computed_name_share_the_call_sites_settings() {
        static SITE: Site = Site::new(
            SiteName::Fixed("layout.keyed"),
            Spec {
                breaker: true,
                ..Spec::EMPTY
            },
        );
        let (a, b) = (SITE.keyed("layout.keyed.a"), SITE.keyed("layout.keyed.b"));
        let (spec_a, config_a) = a.base();
        let (spec_b, config_b) = b.base();
        assert!(spec_a.breaker);
        assert!(std::ptr::eq(spec_a, spec_b) && std::ptr::eq(config_a, config_b));
    }
}

#[cfg(test)]
mod gate_tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use super::{policies_at, Service, BARS_COPY, GATE_SHAPE, HOME_UNTIMED, LANE, LANE_BARS};
    use crate::__private::{Site, SiteName, Spec};
    use crate::config::BulkheadConfig;
    use crate::Resilience;

    /// A service's gate against the bars, read while no bar can change (other
    /// tests of this binary may add listeners meanwhile).
    fn gate_and_bars(svc: &Service) -> (u8, u8) {
        let _still = BARS_COPY.lock().unwrap_or_else(|p| p.into_inner());
        let gate = svc.policies().gate.load(Relaxed);
        // The policies word's tag says the same as the gate: the lane is open on
        // the service's own policies with a gate of 0.
        let word = svc.policies.load(Relaxed);
        let home = policies_at(word) == Service::HOME;
        assert_eq!(
            word & LANE != 0,
            home && gate == 0,
            "{}: the lane tag against the gate {gate} (own policies: {home})",
            svc.name()
        );
        // And the untimed tag says what the service's own policies say.
        assert_eq!(
            word & HOME_UNTIMED != 0,
            svc.home.untimed,
            "{}: the untimed tag",
            svc.name()
        );
        assert_eq!(
            svc.lane_untimed(),
            home && gate == 0 && svc.policies().untimed,
            "{}: the lane and untimed tags together",
            svc.name()
        );
        (gate, LANE_BARS.load(Relaxed))
    }

    /// Policies are made closed to the lane; the registry opens them once they are
    /// reachable (the bars copied in), and so does live configuration for the
    /// policies it installs. A shape the lane's first test does not admit keeps its
    /// bit.
    #[test]
    fn registered_and_reconfigured_policies_take_the_bars_in_force() {
        let bare = Resilience::builder("gate.bare").no_retry().build().unwrap();
        let (gate, bars) = gate_and_bars(bare.service());
        assert_eq!(gate, bars, "a bare service's gate is the bars alone");

        static SITE: Site = Site::new(
            SiteName::Fixed("gate.site"),
            Spec {
                breaker: true,
                ..Spec::EMPTY
            },
        );
        let (gate, bars) = gate_and_bars(SITE.service());
        assert_eq!(gate, bars, "an attribute's fixed name");
        let key = SITE.keyed("gate.site.key");
        let (gate, bars) = gate_and_bars(&key);
        assert_eq!(gate, bars, "a computed key");

        let bulkhead = Resilience::builder("gate.bulkhead")
            .no_retry()
            .max_concurrent(2)
            .build()
            .unwrap();
        let (gate, bars) = gate_and_bars(bulkhead.service());
        assert_eq!(gate, GATE_SHAPE | bars);

        // A timeout leaves the gate open (a sync call ignores it) but needs a
        // timer: the untimed tag is off, so an async call reads the policies.
        let timed = Resilience::builder("gate.timeout")
            .no_retry()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let (gate, bars) = gate_and_bars(timed.service());
        assert_eq!(gate, bars, "a timeout is not a shape the gate closes on");
        assert_eq!(timed.service().policies.load(Relaxed) & HOME_UNTIMED, 0);
        assert!(!timed.service().lane_untimed());

        // New policies from live configuration: a bulkhead closes the shape, and
        // removing it opens it again, with the bars taken each time.
        let svc = bare.service();
        let mut config = *svc.config();
        let extras = svc.policies().extras();
        config.bulkhead = Some(BulkheadConfig {
            max_concurrent: 3,
            max_wait: Duration::ZERO,
        });
        assert!(svc.reconfigure(config, extras));
        let (gate, bars) = gate_and_bars(svc);
        assert_eq!(gate, GATE_SHAPE | bars);
        config.bulkhead = None;
        assert!(svc.reconfigure(config, extras));
        let (gate, bars) = gate_and_bars(svc);
        assert_eq!(gate, bars);
        // Policies apart from the service: the tag stays off for good, the lane
        // reads them.
        assert_eq!(svc.policies.load(Relaxed) & LANE, 0);
    }
}

/// What policies put in force by live configuration or a restore carry over.
#[cfg(test)]
mod succession_tests {
    use std::time::Duration;

    use super::Breaker;

    /// The breaker a service's calls use, by address.
    fn breaker_of(svc: &crate::Service) -> *const Breaker {
        std::ptr::from_ref(svc.policies().breaker().expect("a breaker"))
    }

    /// Policies that keep their predecessor's breaker share the very breaker,
    /// across changes; a change of its settings makes a new one, and so does a
    /// restore.
    #[test]
    fn policies_keep_their_predecessors_breaker_until_its_settings_change() {
        let policy = crate::Resilience::builder("layout.breaker")
            .no_retry()
            .build()
            .unwrap();
        let svc = policy.service();
        let mut config = *svc.config();
        let first = breaker_of(svc);

        // A bulkhead added, then resized: the breaker is kept, not copied.
        for max_concurrent in [4, 2] {
            config.bulkhead = Some(crate::config::BulkheadConfig {
                max_concurrent,
                max_wait: Duration::ZERO,
            });
            assert!(svc.reconfigure(config, svc.policies().extras()));
            assert_eq!(breaker_of(svc), first);
        }

        // The breaker's settings changed: a new one.
        config.breaker.as_mut().unwrap().cooldown = Duration::from_secs(7);
        assert!(svc.reconfigure(config, svc.policies().extras()));
        let second = breaker_of(svc);
        assert_ne!(second, first);

        // Restored from a snapshot: a new one again.
        svc.restore(&svc.snapshot());
        assert_ne!(breaker_of(svc), second);
    }
}
