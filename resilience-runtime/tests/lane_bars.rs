//! The global bars that close the swift lane (here the kill switch) are copied into
//! every service's policies, which is what the lane reads: a service registered
//! before, during or after a flip must see it. Its own test binary: the kill switch
//! is global.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

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

/// Services registered on another thread while the kill switch goes on, and one
/// registered before: with the switch on, a failing call on each is passed through
/// (the breaker that one failure would trip stays closed); off again, the breaker
/// applies (a failure trips it).
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
    assert!(!set_kill_switch(true));
    let during = registering.join().unwrap();
    let after = bare("bars.after");

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
