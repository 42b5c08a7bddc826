//! Keys that come back soon after the sweep evicted them: more keys in use than the
//! cap holds. The sweep warns, naming the cap, at most once a minute; a stream of
//! new keys that never come back, however long, gives no warning.

mod captured;
mod keyed_calls;
use captured::Captured;
use keyed_calls::KEYED;

use resilience_runtime::{key_count, set_key_capacity, status};

/// How many times the sweep's warning was logged.
fn warnings(logs: &Captured) -> usize {
    logs.text()
        .matches("come back soon after their eviction")
        .count()
}

fn call_key(key: &str) {
    keyed_calls::call(&KEYED, key, false).unwrap();
}

#[test]
fn keys_evicted_and_called_again_warn_once_naming_the_cap() {
    // The only test in this binary: it owns the cap.
    let previous = set_key_capacity(100);
    let logs = Captured::default();
    tracing::subscriber::with_default(logs.subscriber(), || {
        // 5,000 keys, each called once: thousands evicted, none back.
        for i in 0..5_000 {
            call_key(&format!("ret.once.{i}"));
        }
        assert!(key_count() <= 101);
        assert_eq!(warnings(&logs), 0, "one-off keys are not keys coming back");

        // 300 keys called in turn under a cap of 100: each is evicted before its
        // next call and registered again, its counts started over.
        for round in 0..5 {
            for i in 0..300 {
                call_key(&format!("ret.turn.{i}"));
            }
            assert!(key_count() <= 101, "round {round}");
        }
        assert_eq!(
            status("ret.turn.0").map(|s| s.successes),
            None,
            "the first key was evicted again"
        );
        assert_eq!(warnings(&logs), 1, "warned once, not once a sweep");

        // Under a cap that holds them, the keys stay and count every call.
        set_key_capacity(1_000);
        for _ in 0..3 {
            for i in 0..300 {
                call_key(&format!("ret.turn.{i}"));
            }
        }
        assert_eq!(status("ret.turn.0").map(|s| s.successes), Some(3));
    });
    let text = logs.text();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("key cap of 100"), "{text}");
    assert!(text.contains("set_key_capacity"), "{text}");
    set_key_capacity(previous);
}
