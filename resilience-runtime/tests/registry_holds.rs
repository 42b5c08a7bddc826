//! A computed key's service lives in the registry map's entry and is held by a
//! count of handles (see the runtime's `hold` module): a held key is never evicted,
//! and a handle reads its own key's service however many sweeps run. Small enough
//! for Miri, which checks that no handle reads an entry after it was freed:
//! `MIRIFLAGS="-Zmiri-disable-isolation" cargo +nightly miri test -p resilience-runtime --test registry_holds`.

mod keyed_calls;
use keyed_calls::{Fail, KEYED};

use resilience_runtime::__private::Hooks;
use resilience_runtime::{key_count, set_key_capacity, status};

fn call(key: &str) {
    let svc = KEYED.keyed(key);
    assert_eq!(svc.name(), key);
    let hooks = Hooks::<Fail>::DEFAULT;
    let mut call = svc.call(&hooks);
    loop {
        if let std::ops::ControlFlow::Break(r) = call.attempt_sync(|| Ok(())) {
            r.unwrap();
            break;
        }
    }
    assert_eq!(svc.name(), key);
}

#[test]
fn handles_keep_their_keys_through_sweeps_and_read_only_their_own() {
    // The only test in this binary: it owns the cap.
    set_key_capacity(4);
    let held = KEYED.keyed("holds.held");
    let threads: Vec<_> = (0..2)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..40 {
                    call(&format!("holds.t{t}.{}", i % 7));
                }
            })
        })
        .collect();
    for i in 0..20 {
        call(&format!("holds.k{i}"));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(key_count() <= 6, "{} keys live", key_count());
    assert_eq!(held.name(), "holds.held");
    assert!(status("holds.held").is_some(), "a held key was evicted");
    drop(held);
    for i in 0..20 {
        call(&format!("holds.after{i}"));
    }
    assert!(
        status("holds.held").is_none(),
        "let go, the idle key was evicted"
    );
}
