//! The global bars that close the swift lane (here the kill switch) are copied into
//! every service's policies, which is what the lane reads: a service registered
//! before, during or after a flip must see it. Its own test binary: the kill switch
//! is global.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use resilience_runtime::__private::{Hooks, Site, SiteName, Spec};
use resilience_runtime::{
    set_kill_switch, status, CircuitState, Policy, Resilience, ResilienceError,
};

#[derive(Debug, PartialEq)]
enum E {
    Boom,
    R(ResilienceError),
}
impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

/// A breaker that one failure trips, no retry: the swift lane's commonest shape.
fn bare(name: &str) -> Policy {
    Resilience::builder(name)
        .failure_threshold(1)
        .no_retry()
        .build()
        .unwrap()
}

/// Computed keys of an attribute's call site whose breaker one failure trips. A
/// computed key's lane reads its service's policies word alone (not the policies'
/// copy of the bars), which the flip must change as well.
static KEYED: Site = Site::new(
    SiteName::Fixed("bars.keyed"),
    Spec {
        breaker: true,
        failure_threshold: Some(1),
        ..Spec::EMPTY
    },
);
static HOOKS: Hooks<E> = Hooks::DEFAULT;

/// One call of the computed key `key`, as the attribute's sync expansion makes it.
fn keyed_call(key: &str, ok: bool) -> Result<u32, E> {
    KEYED
        .keyed(key)
        .call(&HOOKS)
        .run_sync(|| if ok { Ok(1) } else { Err(E::Boom) })
}

/// Services registered on another thread while the kill switch goes on, and one
/// registered before (and computed keys registered before and after): with the
/// switch on, a failing call on each is passed through (the breaker that one
/// failure would trip stays closed); off again, the breaker applies (a failure
/// trips it).
#[test]
fn services_registered_around_a_flip_see_the_kill_switch() {
    const N: usize = 2000;
    let before = bare("bars.before");
    let registered = Arc::new(AtomicUsize::new(0));
    let registering = {
        let registered = registered.clone();
        std::thread::spawn(move || {
            (0..N)
                .map(|i| {
                    let p = bare(&format!("bars.race.{i}"));
                    registered.fetch_add(1, SeqCst);
                    p
                })
                .collect::<Vec<_>>()
        })
    };
    while registered.load(SeqCst) < N / 4 {
        std::thread::yield_now();
    }
    // Called once before the flip: a key's first call registers it.
    assert_eq!(keyed_call("bars.keyed.before", true), Ok(1));
    assert!(!set_kill_switch(true));
    let during = registering.join().unwrap();
    let after = bare("bars.after");
    let keys = ["bars.keyed.before", "bars.keyed.after"];
    for key in keys {
        for _ in 0..2 {
            assert_eq!(keyed_call(key, false), Err(E::Boom));
        }
        assert_eq!(
            status(key).unwrap().state,
            CircuitState::Closed,
            "{key}: the kill switch passed the failures through"
        );
        assert_eq!(keyed_call(key, true), Ok(1));
    }

    let all: Vec<&Policy> = std::iter::once(&before)
        .chain(&during)
        .chain(std::iter::once(&after))
        .collect();
    for p in &all {
        for _ in 0..2 {
            assert_eq!(p.call_sync(|| Err::<u32, E>(E::Boom)), Err(E::Boom));
        }
        let name = p.service().name();
        assert_eq!(
            status(name).unwrap().state,
            CircuitState::Closed,
            "{name}: the kill switch passed the failures through"
        );
        assert_eq!(p.call_sync(|| Ok::<u32, E>(1)), Ok(1));
    }

    assert!(set_kill_switch(false));
    for key in keys {
        assert_eq!(keyed_call(key, false), Err(E::Boom));
        assert_eq!(status(key).unwrap().state, CircuitState::Open, "{key}");
        assert!(matches!(
            keyed_call(key, true),
            Err(E::R(ResilienceError::CircuitOpen { .. }))
        ));
    }
    for p in &all {
        assert_eq!(p.call_sync(|| Err::<u32, E>(E::Boom)), Err(E::Boom));
        let name = p.service().name();
        assert_eq!(status(name).unwrap().state, CircuitState::Open, "{name}");
        assert!(matches!(
            p.call_sync(|| Ok::<u32, E>(1)),
            Err(E::R(ResilienceError::CircuitOpen { .. }))
        ));
    }
}
