//! Time. Every wait goes through tokio's clock, and where tokio is built with its
//! `test-util` feature (so a runtime's clock can be paused) so does every reading:
//! a test that pauses it (`#[tokio::test(start_paused = true)]`) drives the policies
//! exactly. Outside a runtime, and in any runtime whose clock is not paused, tokio's
//! clock is the system's monotonic clock.
//!
//! The readings on the call path (breaker cooldowns and time windows, rate-limit
//! schedules) may instead come from the CPU's clock, [`ClockSource::Cpu`]: the
//! invariant time-stamp counter, calibrated against the monotonic clock, which costs
//! about a third of a system clock read. A process gets it
//! - by default where tokio cannot pause (no `test-util`), the counter keeps time
//!   and, on Linux, the kernel keeps its own monotonic clock on it: the first 20 ms
//!   of readings come from the monotonic clock while the counter is calibrated
//!   against it, and the readings after from the counter, on the same scale;
//! - or by choosing it ([`set_clock_source`]); tokio's paused clock then no longer
//!   drives those readings.
//!
//! Waits (backoff, rate-limit and bulkhead waits, timeouts) and measured latencies
//! stay on tokio's clock either way. Once the counter is the source, a rate
//! limiter keeps its schedule in the counter's ticks ([`cpu_ticks`]), not scaled to
//! nanoseconds (see the rate limiter).
//!
//! Shared state keeps instants as `u64` nanoseconds on a private scale (see
//! [`Nanos`]) so they fit in atomics.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::OnceLock;
use std::time::Duration;

pub(crate) use tokio::time::Instant;

/// An instant as nanoseconds on the process-wide scale: `OFFSET` is the first
/// reading, so instants earlier than it (another test's paused clock) stay
/// representable and ordered.
pub(crate) type Nanos = u64;

const OFFSET: u64 = 1 << 62;

/// Where the policies read the time on the call path (breaker cooldowns and time
/// windows, rate-limit schedules). Waits, timeouts and measured latencies always
/// go through tokio's clock.
///
/// The process's first reading fixes the source, unless [`set_clock_source`]
/// chose one before:
/// - [`ClockSource::Tokio`] where tokio is built with its `test-util` feature (as
///   in tests, so a paused clock drives every policy exactly), or where the CPU
///   has no counter that keeps time;
/// - otherwise [`ClockSource::Cpu`]: no clock can pause, so tokio's clock is the
///   system's monotonic clock, and the counter calibrated against it reads the
///   same time for a third of the cost. The first 20 ms of readings come from
///   the monotonic clock while the counter is calibrated on them (no thread, no
///   wait); the readings after come from the counter, on the same scale.
///   [`clock_source`] says `Tokio` until then. On Linux the counter is used only
///   where the kernel keeps its own monotonic clock on it (clock source `tsc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClockSource {
    /// tokio's clock (`tokio::time::Instant`): follows a paused clock in tests;
    /// outside a runtime, the system's monotonic clock. The default where tokio is
    /// built with `test-util`, or the CPU has no counter that keeps time; also what
    /// [`clock_source`] says while the default's CPU clock is being calibrated.
    Tokio,
    /// The CPU's invariant time-stamp counter (x86_64), calibrated against the
    /// monotonic clock. Cheaper per reading; ignores tokio's paused clock. The
    /// default where tokio cannot pause, once calibrated.
    Cpu,
}

/// [`set_clock_source`] could not change the clock; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClockError {
    /// The process already read its clock (a policy ran, or a source was chosen).
    #[error(
        "the clock source is already {current:?}: it is fixed by the first policy that \
         reads the time, so choose it with set_clock_source before the first call (at the \
         start of main)"
    )]
    AlreadyFixed {
        /// The source in use.
        current: ClockSource,
    },
    /// The CPU has no counter that keeps time (x86_64 with an invariant
    /// time-stamp counter is required).
    #[error(
        "this CPU has no invariant time-stamp counter to read the time from ({why}); \
         the policies keep reading tokio's clock"
    )]
    Unavailable {
        /// What is missing.
        why: &'static str,
    },
}

const UNSET: u8 = 0;
const TOKIO: u8 = 1;
const CPU: u8 = 2;
/// The default's CPU clock, being calibrated: readings come from tokio's clock
/// (which cannot pause, so it is the monotonic clock) until [`CALIBRATION`] has
/// passed since [`CAL_START`], then the first reading after sets `CPU`.
const CALIBRATING: u8 = 3;

/// How long the counter is compared with the monotonic clock before it is read.
const CALIBRATION: Duration = Duration::from_millis(20);

/// The monotonic clock and the counter read together when calibration started.
/// Set before `source` says `CALIBRATING`.
static CAL_START: OnceLock<(std::time::Instant, u64)> = OnceLock::new();

/// Set by the one thread that ends the calibration.
static CAL_ENDING: AtomicBool = AtomicBool::new(false);

/// The source and the CPU clock's parameters, together so that a reading finds
/// them at one address.
struct Clock {
    /// The source, fixed by the first reading or by [`set_clock_source`].
    source: AtomicU8,
    /// What a scaled counter reading is added to (see [`base`]). Written before
    /// `source` says `CPU`.
    base: AtomicU64,
    /// Nanoseconds per tick, 32.32 fixed point (see [`scale`]). Written before
    /// `source` says `CPU`.
    mult: AtomicU64,
}

static CLOCK: Clock = Clock {
    source: AtomicU8::new(UNSET),
    base: AtomicU64::new(0),
    mult: AtomicU64::new(0),
};

/// Chooses where the policies read the time, for the whole process. The choice
/// is fixed by the first reading, so make it before the first call through a
/// policy; choosing the source already in use is not an error. On an error
/// nothing changes.
///
/// [`ClockSource::Cpu`] is for production processes that call rate-limited or
/// tripped services very often: a reading costs about a third of a system clock
/// read (11 ns against 32 ns on the machine of the README's performance table).
/// It is the default where tokio cannot pause (see [`ClockSource`]); choosing it
/// before the first reading calibrates the counter against the monotonic clock for
/// 20 ms (this call blocks meanwhile). Tests that pause tokio's clock must keep
/// [`ClockSource::Tokio`], the default wherever tokio can pause.
///
/// While the default's CPU clock is being calibrated (the first 20 ms after the
/// first reading), either choice is still open: [`ClockSource::Tokio`] keeps
/// tokio's clock for good, [`ClockSource::Cpu`] waits for the calibration to end.
///
/// ```
/// use resilience_runtime::{clock_source, set_clock_source, ClockError, ClockSource};
///
/// match set_clock_source(ClockSource::Cpu) {
///     Ok(()) => {
///         assert_eq!(clock_source(), ClockSource::Cpu);
///         // Once chosen, the other source is refused and nothing changes.
///         let err = set_clock_source(ClockSource::Tokio).unwrap_err();
///         assert!(err.to_string().contains("already Cpu"));
///         assert_eq!(clock_source(), ClockSource::Cpu);
///     }
///     // A CPU without an invariant counter: tokio's clock stays.
///     Err(ClockError::Unavailable { .. }) => assert_eq!(clock_source(), ClockSource::Tokio),
///     Err(e) => panic!("{e}"),
/// }
/// ```
pub fn set_clock_source(source: ClockSource) -> Result<(), ClockError> {
    let want = match source {
        ClockSource::Tokio => TOKIO,
        ClockSource::Cpu => CPU,
    };
    let current = CLOCK.source.load(Acquire);
    if current == CALIBRATING {
        return settle(want);
    }
    if current != UNSET {
        return fixed(current, want);
    }
    if want == CPU {
        let (origin, mult) = cpu::calibrate()?;
        // Published by the compare-exchange below (release).
        CLOCK.base.store(base(origin, mult), Relaxed);
        CLOCK.mult.store(mult, Relaxed);
    } else {
        origin();
    }
    match CLOCK.source.compare_exchange(UNSET, want, AcqRel, Acquire) {
        Ok(_) => Ok(()),
        // A first reading started the default's calibration meanwhile.
        Err(CALIBRATING) => settle(want),
        Err(current) => fixed(current, want),
    }
}

/// [`set_clock_source`] while the default's CPU clock is being calibrated.
fn settle(want: u8) -> Result<(), ClockError> {
    if want == TOKIO {
        return match CLOCK
            .source
            .compare_exchange(CALIBRATING, TOKIO, AcqRel, Acquire)
        {
            Ok(_) => Ok(()),
            Err(current) => fixed(current, want),
        };
    }
    if let Some(&(start, _)) = CAL_START.get() {
        sleep_thread(CALIBRATION.saturating_sub(start.elapsed()));
    }
    end_calibration();
    // Another thread may be ending it: a few clock reads.
    let mut current = CLOCK.source.load(Acquire);
    while current == CALIBRATING {
        std::thread::yield_now();
        current = CLOCK.source.load(Acquire);
    }
    if current == TOKIO && CAL_FAILED.load(Acquire) {
        return Err(ClockError::Unavailable { why: COUNTER_LAGS });
    }
    fixed(current, want)
}

fn fixed(current: u8, want: u8) -> Result<(), ClockError> {
    if current == want {
        Ok(())
    } else {
        Err(ClockError::AlreadyFixed {
            current: source_of(current),
        })
    }
}

fn source_of(code: u8) -> ClockSource {
    if code == CPU {
        ClockSource::Cpu
    } else {
        ClockSource::Tokio
    }
}

/// The clock source in use: tokio's until the CPU's is chosen or, by default where
/// tokio cannot pause, calibrated (see [`ClockSource`]).
pub fn clock_source() -> ClockSource {
    source_of(CLOCK.source.load(Acquire))
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Now, on tokio's clock.
#[inline]
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// `at` on the shared scale.
#[inline]
pub(crate) fn nanos(at: Instant) -> Nanos {
    let o = origin();
    // One subtraction of the clock's instants (a comparison first would be two).
    match at.checked_duration_since(o) {
        Some(d) => OFFSET.saturating_add(dur_nanos(d)),
        None => OFFSET.saturating_sub(dur_nanos(o.saturating_duration_since(at))),
    }
}

/// Now on the shared scale, from the process's clock source. The CPU's reading is
/// a few instructions, inlined; tokio's is a call (its clock read costs several
/// times the call).
#[inline(always)]
pub(crate) fn now_nanos() -> Nanos {
    if CLOCK.source.load(Acquire) == CPU {
        cpu_nanos()
    } else {
        tokio_nanos()
    }
}

/// The CPU's counter as it reads, for a schedule kept in its ticks (the rate
/// limiter's, once the counter is the source: [`cpu_scale`]).
#[inline(always)]
pub(crate) fn cpu_ticks() -> u64 {
    cpu::ticks()
}

/// Nanoseconds per tick of the CPU's counter (32.32 fixed point) once it is the
/// source; `None` before, and where it never is.
#[inline]
pub(crate) fn cpu_scale() -> Option<u64> {
    (CLOCK.source.load(Acquire) == CPU).then(|| CLOCK.mult.load(Relaxed))
}

/// A reading of the CPU's counter and the same instant on the shared scale. Only
/// once the counter is the source ([`cpu_scale`] said so).
pub(crate) fn cpu_reading() -> (u64, Nanos) {
    let ticks = cpu::ticks();
    (ticks, cpu_nanos_at(ticks))
}

/// A span of `ticks` of a counter of `mult` nanoseconds a tick (32.32 fixed
/// point), in nanoseconds: rounded down, saturating at `u64::MAX`.
#[inline]
pub(crate) fn ticks_to_nanos(ticks: u64, mult: u64) -> u64 {
    u64::try_from((u128::from(ticks) * u128::from(mult)) >> 32).unwrap_or(u64::MAX)
}

/// A span of `nanos` in ticks of a counter of `mult` nanoseconds a tick: rounded
/// up, saturating at `u64::MAX`.
pub(crate) fn nanos_to_ticks(nanos: u64, mult: u64) -> u64 {
    u64::try_from((u128::from(nanos) << 32).div_ceil(u128::from(mult.max(1)))).unwrap_or(u64::MAX)
}

/// [`now_nanos`] when the source is tokio's or not fixed yet.
#[inline(never)]
fn tokio_nanos() -> Nanos {
    match CLOCK.source.load(Acquire) {
        UNSET => first_nanos(),
        CPU => cpu_nanos(),
        CALIBRATING => calibrating_nanos(),
        _ => nanos(now()),
    }
}

/// A reading while the default's CPU clock is being calibrated: tokio's, and the
/// first one [`CALIBRATION`] after the start ends the calibration.
#[cold]
#[inline(never)]
fn calibrating_nanos() -> Nanos {
    let at = now();
    if CAL_START
        .get()
        .is_some_and(|&(start, _)| at.into_std().saturating_duration_since(start) >= CALIBRATION)
    {
        end_calibration();
    }
    nanos(at)
}

/// Ends the default's calibration, once, from the thread that gets here first:
/// the counter's rate from the two readings [`CALIBRATION`] apart, and its base so
/// that a counter reading lands on the scale tokio's readings were on. The source
/// is `CPU` after, or `TOKIO` if the counter did not keep pace (or a choice of
/// tokio's clock came first).
fn end_calibration() {
    if CAL_ENDING.swap(true, AcqRel) {
        return;
    }
    let Some(&(start_at, start_ticks)) = CAL_START.get() else {
        // Not reached (the start is noted before the source says `CALIBRATING`);
        // were it, tokio's clock, rather than a calibration no one ends.
        let _ = CLOCK
            .source
            .compare_exchange(CALIBRATING, TOKIO, AcqRel, Acquire);
        return;
    };
    let (end_at, end_ticks) = cpu::pair();
    let next = match scale(
        end_at.saturating_duration_since(start_at),
        end_ticks.wrapping_sub(start_ticks),
    ) {
        Ok(mult) => {
            // Published by the compare-exchange below (release).
            let at = nanos(Instant::from_std(end_at));
            CLOCK.base.store(aligned_base(at, end_ticks, mult), Relaxed);
            CLOCK.mult.store(mult, Relaxed);
            CPU
        }
        Err(_) => {
            CAL_FAILED.store(true, Release);
            TOKIO
        }
    };
    let _ = CLOCK
        .source
        .compare_exchange(CALIBRATING, next, AcqRel, Acquire);
}

/// Set when the default's calibration found a counter that does not keep time.
static CAL_FAILED: AtomicBool = AtomicBool::new(false);

const COUNTER_LAGS: &str = "the time-stamp counter did not keep pace with the monotonic clock";

/// The CPU clock's reading on the shared scale.
#[inline(always)]
fn cpu_nanos() -> Nanos {
    cpu_nanos_at(cpu::ticks())
}

/// The CPU clock's reading `ticks` on the shared scale.
#[inline(always)]
fn cpu_nanos_at(ticks: u64) -> Nanos {
    ticks_nanos(ticks, CLOCK.base.load(Relaxed), CLOCK.mult.load(Relaxed))
}

#[cfg(target_arch = "x86_64")]
mod cpu {
    use super::{scale, ClockError, CALIBRATION};
    use std::arch::x86_64::{__cpuid, _rdtsc};
    use std::time::{Duration, Instant};

    /// The time-stamp counter. Not serialized: a reading may be taken a few
    /// instructions early or late, as any clock read on an out-of-order CPU.
    #[inline(always)]
    pub(super) fn ticks() -> u64 {
        // SAFETY: `rdtsc` is part of x86_64; it is read only once the counter
        // was found to keep time.
        unsafe { _rdtsc() }
    }

    /// Whether the CPU says its counter is invariant (constant rate, runs in
    /// every power state).
    fn invariant() -> Result<(), ClockError> {
        // Leaf 0x8000_0007 EDX bit 8 is the invariant counter; a leaf above the
        // maximum extended leaf reads other data, so the maximum is checked too.
        // `cpuid` is part of x86_64 (the `unsafe` is for toolchains before 1.87,
        // where the intrinsic was still marked unsafe).
        #[allow(unused_unsafe)]
        // SAFETY: `cpuid` exists on every x86_64 CPU.
        let (max_extended, power) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(0x8000_0007).edx) };
        if max_extended < 0x8000_0007 || power & (1 << 8) == 0 {
            return Err(ClockError::Unavailable {
                why: "the CPU does not report an invariant time-stamp counter",
            });
        }
        Ok(())
    }

    /// Whether the default may read the counter: the CPU says it is invariant
    /// and, on Linux, the kernel keeps its monotonic clock on it (it does not
    /// where it found the counters unsynchronized across cores, or unstable in a
    /// virtual machine).
    pub(super) fn keeps_time() -> bool {
        invariant().is_ok() && kernel_reads_it()
    }

    #[cfg(target_os = "linux")]
    fn kernel_reads_it() -> bool {
        std::fs::read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .is_ok_and(|name| name.trim_ascii() == b"tsc")
    }

    #[cfg(not(target_os = "linux"))]
    fn kernel_reads_it() -> bool {
        true
    }

    /// The counter now, and nanoseconds per tick (32.32 fixed point), measured
    /// against the monotonic clock over [`CALIBRATION`].
    pub(super) fn calibrate() -> Result<(u64, u64), ClockError> {
        invariant()?;
        let (t0, c0) = pair();
        let (mut t1, mut c1) = (t0, c0);
        while t1.duration_since(t0) < CALIBRATION {
            (t1, c1) = pair();
        }
        let mult = scale(t1.duration_since(t0), c1.wrapping_sub(c0))?;
        Ok((ticks(), mult))
    }

    /// A monotonic-clock reading and the counter taken together: the pair whose
    /// two clock reads around the counter's are closest, of a few tries, so a
    /// preemption between them does not skew the calibration.
    pub(super) fn pair() -> (Instant, u64) {
        let mut best: Option<(Duration, Instant, u64)> = None;
        for _ in 0..8 {
            let before = Instant::now();
            let c = ticks();
            let after = Instant::now();
            let spread = after.duration_since(before);
            if best.is_none_or(|(s, _, _)| spread < s) {
                best = Some((spread, before + spread / 2, c));
            }
        }
        let (_, at, c) = best.expect("eight tries");
        (at, c)
    }
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
/// Nanoseconds per tick as 32.32 fixed point, from `counted` ticks in `elapsed`:
/// a counter between 10 MHz and 100 GHz, or it does not keep time.
fn scale(elapsed: Duration, counted: u64) -> Result<u64, ClockError> {
    let nanos = elapsed.as_nanos();
    let counted = u128::from(counted);
    if counted == 0 || counted < nanos / 100 || counted > nanos.saturating_mul(100) {
        return Err(ClockError::Unavailable { why: COUNTER_LAGS });
    }
    Ok(u64::try_from((nanos << 32) / counted).unwrap_or(u64::MAX))
}

/// The counter reading `ticks` on the shared scale: scaled at `mult` (see
/// [`scale`]) and added to `base`, which [`base`] made so that the counter's
/// origin is `OFFSET`.
///
/// Both terms are taken modulo 2^64, so their sum is exact while the reading is
/// within 2^63 ns (292 years) of the origin, on either side: a reading a little
/// behind it (another core's counter) comes out a little before `OFFSET`.
#[inline(always)]
fn ticks_nanos(ticks: u64, base: u64, mult: u64) -> Nanos {
    base.wrapping_add(scaled(ticks, mult))
}

/// `ticks` at `mult`, in nanoseconds modulo 2^64.
#[inline(always)]
fn scaled(ticks: u64, mult: u64) -> u64 {
    ((u128::from(ticks) * u128::from(mult)) >> 32) as u64
}

/// The `base` of [`ticks_nanos`] that puts the counter reading `origin` at `OFFSET`.
fn base(origin: u64, mult: u64) -> u64 {
    aligned_base(OFFSET, origin, mult)
}

/// The `base` of [`ticks_nanos`] that puts the counter reading `ticks` at `at`.
fn aligned_base(at: Nanos, ticks: u64, mult: u64) -> u64 {
    at.wrapping_sub(scaled(ticks, mult))
}

#[cfg(not(target_arch = "x86_64"))]
mod cpu {
    use super::ClockError;

    #[inline(always)]
    pub(super) fn ticks() -> u64 {
        0
    }

    pub(super) fn keeps_time() -> bool {
        false
    }

    pub(super) fn pair() -> (std::time::Instant, u64) {
        (std::time::Instant::now(), 0)
    }

    pub(super) fn calibrate() -> Result<(u64, u64), ClockError> {
        Err(ClockError::Unavailable {
            why: "the CPU clock is read on x86_64 only",
        })
    }
}

/// The process's first reading fixes the source, unless one was chosen meanwhile:
/// tokio's where it can pause or the counter does not keep time, otherwise the
/// CPU's, calibrated first (see [`ClockSource`]).
#[cold]
#[inline(never)]
fn first_nanos() -> Nanos {
    let next = default_source(tokio_can_pause(), cpu::keeps_time);
    if next == CALIBRATING {
        CAL_START.get_or_init(cpu::pair);
    }
    let _ = CLOCK.source.compare_exchange(UNSET, next, AcqRel, Acquire);
    tokio_nanos()
}

/// The default source: `CALIBRATING` (the CPU's, once calibrated) where tokio
/// cannot pause and the counter keeps time, `TOKIO` otherwise. The counter is
/// asked (a file read on Linux) only where tokio cannot pause.
fn default_source(tokio_can_pause: bool, counter_keeps_time: impl FnOnce() -> bool) -> u8 {
    if !tokio_can_pause && counter_keeps_time() {
        CALIBRATING
    } else {
        TOKIO
    }
}

/// Whether tokio was built with `test-util`, so a runtime's clock can be paused:
/// `Builder::start_paused` exists only then. An inherent method is found before a
/// trait's of the same name, so the closure below (never called) calls tokio's
/// where it exists and [`WithoutTestUtil`]'s otherwise; the type it returns
/// answers.
fn tokio_can_pause() -> bool {
    answer(|b| b.start_paused(false).pausable())
}

fn answer<A: Answer>(_: impl FnOnce(&mut tokio::runtime::Builder) -> A) -> bool {
    A::PAUSABLE
}

/// What `start_paused` returns when tokio has none.
struct Unpausable;

/// What the closure in [`tokio_can_pause`] returns when tokio has `start_paused`.
struct Pausable;

trait WithoutTestUtil {
    // Called only where tokio has no `start_paused`.
    #[allow(dead_code)]
    fn start_paused(&mut self, _: bool) -> Unpausable {
        Unpausable
    }
}

impl WithoutTestUtil for tokio::runtime::Builder {}

/// Turns either `start_paused`'s result into its answer type.
trait IntoAnswer {
    type Answer: Answer;
    fn pausable(self) -> Self::Answer;
}

impl IntoAnswer for Unpausable {
    type Answer = Unpausable;
    fn pausable(self) -> Unpausable {
        self
    }
}

impl IntoAnswer for &mut tokio::runtime::Builder {
    type Answer = Pausable;
    fn pausable(self) -> Pausable {
        Pausable
    }
}

trait Answer {
    const PAUSABLE: bool;
}

impl Answer for Unpausable {
    const PAUSABLE: bool = false;
}

impl Answer for Pausable {
    const PAUSABLE: bool = true;
}

#[inline]
pub(crate) fn dur_nanos(d: Duration) -> u64 {
    // In 64-bit arithmetic (`as_nanos` is 128-bit), saturating at `u64::MAX`.
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(u64::from(d.subsec_nanos())))
        .unwrap_or(u64::MAX)
}

/// Sleeps the current thread (sync calls wait this way).
pub(crate) fn sleep_thread(d: Duration) {
    if !d.is_zero() {
        std::thread::sleep(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dur_nanos_is_exact_up_to_u64_max_and_saturates_above() {
        assert_eq!(dur_nanos(Duration::ZERO), 0);
        assert_eq!(dur_nanos(Duration::new(1, 500_000_000)), 1_500_000_000);
        assert_eq!(dur_nanos(Duration::from_nanos(u64::MAX)), u64::MAX);
        let above = Duration::from_nanos(u64::MAX) + Duration::from_nanos(1);
        assert_eq!(dur_nanos(above), u64::MAX);
        assert_eq!(dur_nanos(Duration::MAX), u64::MAX);
    }

    #[test]
    fn a_calibrated_counter_converts_ticks_to_nanoseconds() {
        // A 3 GHz counter: 60 million ticks in 20 ms.
        let mult = scale(Duration::from_millis(20), 60_000_000).expect("a sane rate");
        // A counter that has run for a year, as on a machine up that long.
        let origin = 365 * 86_400 * 3_000_000_000;
        let b = base(origin, mult);
        assert_eq!(ticks_nanos(origin, b, mult), OFFSET);
        let second = ticks_nanos(origin + 3_000_000_000, b, mult) - OFFSET;
        assert!(second.abs_diff(1_000_000_000) <= 1, "{second}");
        let hour = ticks_nanos(origin + 3_600 * 3_000_000_000, b, mult) - OFFSET;
        assert!(hour.abs_diff(3_600_000_000_000) <= 3_600, "{hour}");
        // A reading behind the origin (another core's counter) comes out before it,
        // by as much.
        let behind = OFFSET - ticks_nanos(origin - 30, b, mult);
        assert!((9..=11).contains(&behind), "{behind}");
        // The slowest accepted counter, 10 MHz, a century on, from a reading whose
        // scaled value is just below 2^64: the scaled values wrap, their
        // difference does not.
        let slowest = scale(Duration::from_millis(20), 200_000).expect("10 MHz");
        assert_eq!(slowest, 100 << 32);
        let origin = u64::MAX / 100 - 1_000;
        let b = base(origin, slowest);
        let century = ticks_nanos(origin + 100 * 365 * 86_400 * 10_000_000, b, slowest);
        assert_eq!(century - OFFSET, 100 * 365 * 86_400 * 1_000_000_000);
    }

    #[test]
    fn a_counter_reading_is_aligned_with_the_scale_it_joins() {
        let mult = scale(Duration::from_millis(20), 60_000_000).expect("3 GHz");
        let (at, ticks) = (OFFSET + 123_456_789, 365 * 86_400 * 3_000_000_000);
        let b = aligned_base(at, ticks, mult);
        assert_eq!(ticks_nanos(ticks, b, mult), at);
        let later = ticks_nanos(ticks + 3_000_000, b, mult) - at;
        assert!(later.abs_diff(1_000_000) <= 1, "{later}");
    }

    #[test]
    fn the_default_is_the_counter_only_where_tokio_cannot_pause_and_it_keeps_time() {
        assert_eq!(default_source(false, || true), CALIBRATING);
        assert_eq!(default_source(false, || false), TOKIO);
        assert_eq!(default_source(true, || false), TOKIO);
        // Where tokio can pause the counter is not even asked.
        assert_eq!(
            default_source(true, || panic!("the counter is asked")),
            TOKIO
        );
    }

    #[test]
    fn tokio_can_pause_where_it_has_test_util() {
        // The runtime's tests build tokio with `test-util` (a dev-dependency); the
        // crate `resilience-default-clock`, built alone, checks a build without it.
        assert!(tokio_can_pause());
    }

    #[test]
    fn a_counter_that_does_not_keep_time_is_refused() {
        let ms = Duration::from_millis(20);
        for counted in [0, 100, u64::MAX] {
            let err = scale(ms, counted).expect_err("not a clock");
            assert!(
                err.to_string().contains("did not keep pace"),
                "{counted}: {err}"
            );
        }
        assert!(scale(ms, 200_000).is_ok(), "10 MHz is the slowest accepted");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn calibration_measures_a_sane_rate_or_says_why_not() {
        match cpu::calibrate() {
            // Between 10 MHz and 100 GHz: 0.01 to 100 ns per tick.
            Ok((_, mult)) => assert!(((1u64 << 32) / 100..=100 << 32).contains(&mult), "{mult}"),
            Err(e) => assert!(e.to_string().contains("tokio's clock"), "{e}"),
        }
    }

    #[test]
    fn nanos_keeps_the_order_and_distance_of_instants_on_both_sides_of_the_origin() {
        let o = origin();
        let d = Duration::from_millis(1500);
        assert_eq!(nanos(o), OFFSET);
        assert_eq!(nanos(o + d), OFFSET + 1_500_000_000);
        if let Some(before) = o.checked_sub(d) {
            assert_eq!(nanos(before), OFFSET - 1_500_000_000);
        }
    }
}
