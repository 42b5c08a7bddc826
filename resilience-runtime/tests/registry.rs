//! The registry: shared names, first registration wins with a warning, computed keys
//! bounded with idle eviction.

mod captured;
mod keyed_calls;
use captured::Captured;
use keyed_calls::Fail;

use resilience_runtime::__private::{Site, SiteName, Spec};
use resilience_runtime::{key_count, set_key_capacity, status, CircuitState, Resilience};

#[test]
fn first_registration_wins_and_a_conflict_logs_a_warning() {
    let logs = Captured::default();
    tracing::subscriber::with_default(logs.subscriber(), || {
        let a = Resilience::builder("reg.shared")
            .failure_threshold(2)
            .no_retry()
            .build()
            .unwrap();
        let b = Resilience::builder("reg.shared")
            .failure_threshold(9)
            .no_retry()
            .build()
            .unwrap();
        // Both drive the same breaker, with the first settings: two failures open it.
        assert_eq!(a.call_sync(|| Err::<(), _>(Fail)), Err(Fail));
        assert_eq!(b.call_sync(|| Err::<(), _>(Fail)), Err(Fail));
        assert_eq!(status("reg.shared").unwrap().state, CircuitState::Open);
        // The same settings again: no warning.
        Resilience::builder("reg.shared")
            .failure_threshold(2)
            .no_retry()
            .build()
            .unwrap();
    });
    let text = logs.text();
    assert_eq!(
        text.matches("first registration's settings are kept")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("reg.shared"), "{text}");
}

static KEYED: Site = Site::new(
    SiteName::Fixed("unused"),
    Spec {
        breaker: true,
        failure_threshold: Some(1),
        ..Spec::EMPTY
    },
);

fn call_key(key: &str, fail: bool) -> Result<(), Fail> {
    keyed_calls::call(&KEYED, key, fail)
}

#[test]
fn computed_keys_are_bounded_and_idle_ones_evicted() {
    // This test owns the cap; other tests in this binary use no computed keys.
    let previous = set_key_capacity(100);
    // One key with an open breaker is never evicted.
    assert_eq!(call_key("reg.k.open", true), Err(Fail));
    for i in 0..1_000 {
        call_key(&format!("reg.k.{i}"), false).unwrap();
        assert!(key_count() <= 101, "{} keys live after {i}", key_count());
    }
    assert!(status("reg.k.999").is_some(), "the newest key stays");
    assert!(status("reg.k.0").is_none(), "an idle old key was evicted");
    assert_eq!(
        status("reg.k.open").map(|s| s.state),
        Some(CircuitState::Open)
    );
    // A key used again after eviction starts fresh.
    call_key("reg.k.0", false).unwrap();
    assert_eq!(status("reg.k.0").unwrap().successes, 1);

    // A key held by a handle (as a call holds it) is not evicted, however idle and
    // however many sweeps run, and keeps its counts; once let go, it may be.
    call_key("reg.held", false).unwrap();
    let held = KEYED.keyed("reg.held");
    for i in 0..1_000 {
        call_key(&format!("reg.h.{i}"), false).unwrap();
    }
    assert!(key_count() <= 101, "{} keys live", key_count());
    assert_eq!(held.name(), "reg.held");
    assert_eq!(status("reg.held").map(|s| s.successes), Some(1));
    let clone = held.clone();
    drop(held);
    for i in 0..1_000 {
        call_key(&format!("reg.c.{i}"), false).unwrap();
    }
    assert_eq!(
        status("reg.held").map(|s| s.successes),
        Some(1),
        "the clone holds it"
    );
    drop(clone);
    for i in 0..1_000 {
        call_key(&format!("reg.d.{i}"), false).unwrap();
    }
    assert!(
        status("reg.held").is_none(),
        "let go, the idle key was evicted"
    );

    // A key called between every ten new keys (no handle held between its calls) is
    // used each time the sweep comes round, so it is never evicted: it keeps every
    // call's count. Idle keys go instead.
    let mut hot_calls = 0;
    for i in 0..2_000 {
        call_key(&format!("reg.u.{i}"), false).unwrap();
        if i % 10 == 0 {
            call_key("reg.hot", false).unwrap();
            hot_calls += 1;
        }
    }
    assert_eq!(
        status("reg.hot").map(|s| s.successes),
        Some(hot_calls),
        "a key in use was evicted"
    );
    assert!(status("reg.u.0").is_none(), "an idle key was kept");

    // Two threads on more keys than the cap, sweeps running under their calls: every
    // call finds its own key's service, alive, for its whole length.
    let threads: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    let key = format!("reg.t{t}.{}", i % 500);
                    let svc = KEYED.keyed(&key);
                    assert_eq!(svc.name(), key);
                    call_key(&key, false).unwrap();
                    assert_eq!(svc.name(), key);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(key_count() <= 102, "{} keys live", key_count());
    set_key_capacity(previous);
}
