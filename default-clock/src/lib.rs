//! What the runtime's default clock should be in this build, worked out apart from
//! the runtime, for the tests in `tests/`: each runs in a process of its own,
//! since the clock source is fixed per process by its first reading.
//!
//! Run on its own (`cargo test -p resilience-default-clock`), tokio is built
//! without `test-util`, as in a production build, and the default is the CPU's
//! counter where it keeps time. Run with the workspace, tokio has `test-util`
//! and the default is tokio's clock.

use std::time::Duration;

use resilience_runtime::{Policy, Resilience, ResilienceError};

/// Whether the runtime should read the CPU's counter by default in this build:
/// tokio cannot pause, and the counter keeps time.
pub fn counter_by_default() -> bool {
    !tokio_can_pause() && counter_keeps_time()
}

/// Whether this build's tokio has `test-util`: its `Builder::start_paused` is
/// found before the method of the same name of the trait below, which exists for
/// the case it is not there. The closure is never called.
pub fn tokio_can_pause() -> bool {
    trait Absent {
        #[allow(dead_code)]
        fn start_paused(&mut self, _: bool) -> bool {
            false
        }
    }
    impl Absent for tokio::runtime::Builder {}
    fn kind<T: 'static>(_: impl FnOnce(&mut tokio::runtime::Builder) -> T) -> bool {
        std::any::TypeId::of::<T>() != std::any::TypeId::of::<bool>()
    }
    // `()` where tokio's method returned `&mut Builder`, `bool` where ours ran.
    kind(|b| b.start_paused(false).out())
}

trait UnitOrBool {
    type Out: 'static;
    fn out(self) -> Self::Out;
}

impl UnitOrBool for bool {
    type Out = bool;
    fn out(self) -> bool {
        self
    }
}

impl UnitOrBool for &mut tokio::runtime::Builder {
    type Out = ();
    fn out(self) {}
}

/// Whether the kernel says the counter is invariant (`constant_tsc` and
/// `nonstop_tsc`) and keeps its monotonic clock on it (Linux on x86_64 only: the
/// runtime's default elsewhere is checked where it is built).
pub fn counter_keeps_time() -> bool {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return false;
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|w| w == f);
    let source =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    has("constant_tsc") && has("nonstop_tsc") && source.trim() == "tsc"
}

/// An error of the body's own, or the policy's.
#[derive(Debug, Clone, PartialEq)]
pub enum E {
    Boom,
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

/// The cooldown of [`tripped`]'s breaker.
pub const COOLDOWN: Duration = Duration::from_secs(3600);

/// A breaker tripped by one failure, with an hour's cooldown: the failure is the
/// process's first reading of the time.
pub fn tripped(service: &str) -> Policy {
    let p = Resilience::builder(service)
        .failure_threshold(1)
        .cooldown(COOLDOWN)
        .no_retry()
        .build()
        .expect("valid policy");
    assert_eq!(p.call_sync(|| Err::<u32, E>(E::Boom)), Err(E::Boom));
    p
}

/// The cooldown left, as the tripped breaker reports it when it refuses a call
/// (whose body must not run).
pub fn cooldown_left(p: &Policy) -> Duration {
    let mut ran = false;
    let r = p.call_sync(|| {
        ran = true;
        Ok::<u32, E>(1)
    });
    assert!(!ran, "an open breaker does not run the body");
    match r {
        Err(E::R(ResilienceError::CircuitOpen { retry_after, .. })) => {
            assert!(
                retry_after > COOLDOWN - Duration::from_secs(60) && retry_after <= COOLDOWN,
                "{retry_after:?}"
            );
            retry_after
        }
        other => panic!("expected CircuitOpen, got {other:?}"),
    }
}
