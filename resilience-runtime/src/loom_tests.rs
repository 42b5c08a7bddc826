//! Loom models: every interleaving of a few threads on the breaker, the bulkhead and
//! the rate limiter. Run with
//! `RUSTFLAGS="--cfg resilience_loom" cargo test -p resilience-runtime --lib --release loom`.

use std::time::Duration;

use loom::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use loom::sync::Arc;
use loom::thread;

use crate::breaker::{Breaker, CircuitState, Outcome};
use crate::bulkhead::Bulkhead;
use crate::config::{BreakerConfig, BreakerMode, BulkheadConfig, Rate, RateLimitConfig};
use crate::hold::Hold;
use crate::keymap::KeyMap;
use crate::rate_limit::{Grant, RateLimiter};

/// Every interleaving with up to three preemptions: enough for these races, small
/// enough to finish in CI.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

const FAIL: Outcome = Outcome {
    failure: true,
    slow: false,
};
const OK: Outcome = Outcome {
    failure: false,
    slow: false,
};

fn breaker(
    threshold: u32,
    half_open_calls: u32,
    success_threshold: u32,
    cooldown: Duration,
) -> Breaker {
    Breaker::new(
        "loom".into(),
        BreakerConfig {
            mode: BreakerMode::Consecutive {
                failure_threshold: threshold,
            },
            slow_call: None,
            slow_call_rate: 1.0,
            cooldown,
            cooldown_max: None,
            half_open_calls,
            success_threshold,
        },
    )
}

#[test]
fn loom_breaker_opens_exactly_once_under_concurrent_failures() {
    model(|| {
        let b = Arc::new(breaker(2, 1, 1, Duration::from_secs(60)));
        let opened = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (b, opened) = (b.clone(), opened.clone());
                thread::spawn(move || match b.admit() {
                    Ok(adm) => {
                        if let Some(t) = b.record(adm, Some(FAIL)) {
                            assert_eq!((t.from, t.to), (CircuitState::Closed, CircuitState::Open));
                            opened.fetch_add(1, SeqCst);
                        }
                    }
                    Err(r) => {
                        // A rejection sees the open state and a cooldown within bounds.
                        assert!(r.retry_after <= Duration::from_secs(60));
                        assert_eq!(b.state(), CircuitState::Open);
                    }
                })
            })
            .collect();
        // A third thread only reads: every state it sees is one the breaker passes through.
        let reader = {
            let b = b.clone();
            thread::spawn(move || {
                let s = b.state();
                assert!(matches!(s, CircuitState::Closed | CircuitState::Open));
            })
        };
        hs.into_iter().for_each(|h| h.join().unwrap());
        reader.join().unwrap();
        assert_eq!(opened.load(SeqCst), 1, "exactly one transition to open");
        assert_eq!(b.state(), CircuitState::Open);
    });
}

#[test]
fn loom_half_open_admits_at_most_half_open_calls_and_returns_every_slot() {
    model(|| {
        // Open with a cooldown already over: the first admission turns it half-open.
        let b = Arc::new(breaker(1, 1, 3, Duration::ZERO));
        let adm = b.admit().unwrap();
        b.record(adm, Some(FAIL));
        let inside = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (b, inside) = (b.clone(), inside.clone());
                thread::spawn(move || {
                    if let Ok(adm) = b.admit() {
                        let n = inside.fetch_add(1, SeqCst) + 1;
                        assert_eq!(n, 1, "{n} probes in flight with half_open_calls = 1");
                        inside.fetch_sub(1, SeqCst);
                        b.abandon(adm);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        // Every slot came back: a probe can be admitted again, and only one.
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let a1 = b.admit().expect("a free probe slot");
        assert!(b.admit().is_err());
        b.abandon(a1);
    });
}

#[test]
fn loom_successful_probes_close_it_once() {
    model(|| {
        let b = Arc::new(breaker(1, 2, 2, Duration::ZERO));
        let adm = b.admit().unwrap();
        b.record(adm, Some(FAIL));
        let first = b.admit().unwrap();
        let b2 = b.clone();
        let h = thread::spawn(move || {
            let adm = b2.admit().expect("second probe slot");
            b2.record(adm, Some(OK))
        });
        let t1 = b.record(first, Some(OK));
        let t2 = h.join().unwrap();
        assert_eq!(
            u32::from(t1.is_some()) + u32::from(t2.is_some()),
            1,
            "closed exactly once"
        );
        assert_eq!(b.state(), CircuitState::Closed);
    });
}

/// Gives the model thread the bulkhead's line `i` (1-based), or none (`None`:
/// its give-backs go to the shared count).
fn on_line(i: Option<usize>) {
    let off = i.map_or(usize::MAX, |i| i * crate::counters::LINE);
    crate::bulkhead::LOOM_LINE.with(|l| l.set(off));
}

#[test]
fn loom_bulkhead_never_exceeds_its_limit_and_returns_every_permit() {
    // Each thread on a line of its own, and one on the shared count.
    for lines in [[Some(1), Some(2)], [Some(1), None]] {
        model(move || {
            let bh = Arc::new(Bulkhead::new(
                BulkheadConfig {
                    max_concurrent: 1,
                    max_wait: Duration::ZERO,
                },
                true,
            ));
            let inside = Arc::new(AtomicU32::new(0));
            let hs: Vec<_> = lines
                .into_iter()
                .map(|line| {
                    let (bh, inside) = (bh.clone(), inside.clone());
                    thread::spawn(move || {
                        on_line(line);
                        // Twice: the second try reads what the first gave back.
                        for _ in 0..2 {
                            if let Some(p) = bh.try_acquire() {
                                assert_eq!(
                                    inside.fetch_add(1, SeqCst),
                                    0,
                                    "two calls inside a bulkhead of 1"
                                );
                                inside.fetch_sub(1, SeqCst);
                                drop(p);
                            }
                        }
                    })
                })
                .collect();
            hs.into_iter().for_each(|h| h.join().unwrap());
            assert_eq!(bh.available(), 1);
        });
    }
}

#[test]
fn loom_a_slot_given_back_is_seen_by_a_waiter_or_wakes_it() {
    // A gives its slot back on its own line (a plain store), or on the shared
    // count (a bulkhead without lines, whose waiter does not fence); B counts
    // itself waiting and then tries. A lost wake-up: A saw no waiter and B's try
    // saw no slot, so B would sleep while the slot is free.
    for owned in [true, false] {
        seen_or_woken(owned);
    }
}

fn seen_or_woken(owned: bool) {
    model(move || {
        let bh = Arc::new(Bulkhead::new(
            BulkheadConfig {
                max_concurrent: 1,
                max_wait: Duration::from_secs(1),
            },
            owned,
        ));
        let a = {
            let bh = bh.clone();
            thread::spawn(move || {
                on_line(Some(1));
                bh.try_acquire().map(|p| p.release_quiet().is_some())
            })
        };
        let b = {
            let bh = bh.clone();
            thread::spawn(move || {
                on_line(Some(2));
                bh.wait_then_try()
            })
        };
        let a_saw_waiter = a.join().unwrap();
        let b_got = b.join().unwrap();
        if a_saw_waiter == Some(false) {
            assert!(
                b_got,
                "the slot was given back unseen by the waiter, and no wake-up (lines: {owned})"
            );
        }
    });
}

#[test]
fn loom_rate_limiter_grants_each_permit_once() {
    model(|| {
        let l = Arc::new(RateLimiter::new(RateLimitConfig {
            rate: Rate::new(1, Duration::from_secs(1)),
            burst: 1,
            max_wait: Duration::ZERO,
        }));
        let now = 1u64 << 62;
        let granted = Arc::new(AtomicU32::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (l, granted) = (l.clone(), granted.clone());
                thread::spawn(move || {
                    if l.acquire_at(now) == Ok(Grant::Now) {
                        granted.fetch_add(1, SeqCst);
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(
            granted.load(SeqCst),
            1,
            "burst 1 grants one permit at one instant"
        );
    });
}

/// A schedule moving into ticks while a permit is taken in nanoseconds: the
/// permit is granted once, whichever unit each thread took it in, and a thread
/// that finds the schedule in ticks reads the ticks' settings made before it
/// moved (without them, `T` and `tau` of 0 would grant it twice).
#[test]
fn loom_a_permit_is_granted_once_while_the_schedule_moves_move_to_ticks() {
    model(|| {
        let l = Arc::new(RateLimiter::new(RateLimitConfig {
            rate: Rate::new(1, Duration::from_secs(1)),
            burst: 1,
            max_wait: Duration::ZERO,
        }));
        // One instant on both clocks: the scale's, and a 2 GHz counter's.
        let (now, ticks, two_ghz) = (1u64 << 62, 1_000_000u64, 1u64 << 31);
        let granted = Arc::new(AtomicU32::new(0));
        let taker = {
            let (l, granted) = (l.clone(), granted.clone());
            thread::spawn(move || {
                if l.take_either(now, ticks) {
                    granted.fetch_add(1, SeqCst);
                }
            })
        };
        let mover = {
            let (l, granted) = (l.clone(), granted.clone());
            thread::spawn(move || {
                l.move_to_ticks_at(two_ghz, now, ticks);
                if l.take_either(now, ticks) {
                    granted.fetch_add(1, SeqCst);
                }
            })
        };
        taker.join().unwrap();
        mover.join().unwrap();
        assert!(l.schedule_in_ticks());
        assert_eq!(
            granted.load(SeqCst),
            1,
            "burst 1 grants one permit at one instant"
        );
    });
}

/// The registry's hold on a computed key: a sweep that evicts the entry (and so
/// frees it) never does so while a handle is held, and no handle is taken on an
/// entry once evicted.
#[test]
fn loom_a_held_key_is_never_evicted_and_an_evicted_one_never_taken() {
    model(|| {
        let hold = Arc::new(idle_hold());
        let freed = Arc::new(AtomicBool::new(false));
        let caller = {
            let (hold, freed) = (hold.clone(), freed.clone());
            thread::spawn(move || {
                let evicted_before = freed.load(SeqCst);
                if hold.take() {
                    assert!(!evicted_before, "a handle taken on an evicted entry");
                    assert!(!freed.load(SeqCst), "evicted while held");
                    hold.add();
                    hold.give_back();
                    assert!(!freed.load(SeqCst), "evicted while held");
                    hold.give_back();
                }
            })
        };
        if hold.try_evict() {
            freed.store(true, SeqCst);
        }
        caller.join().unwrap();
    });
}

/// A key's hold once a sweep has passed it and it has not been used since (a new
/// key is marked used, so that the sweep passes it once before evicting it).
fn idle_hold() -> Hold {
    let hold = Hold::new();
    assert!(hold.take_used_mark(), "a new key is marked used");
    assert!(!hold.take_used_mark(), "the mark is cleared");
    hold
}

/// The sweep passing a key: whether it was idle since the last pass (the mark is
/// cleared).
fn sweep_passes(hold: &Hold) -> bool {
    !hold.take_used_mark()
}

/// A key a call takes after the sweep cleared its mark is not evicted by that
/// sweep: its handle (taken or already given back) marks it used again, and the
/// eviction's compare-and-swap from zero fails; or the eviction came first, and
/// the call's handle is refused.
#[test]
fn loom_a_key_used_after_the_sweep_passed_it_is_kept() {
    model(|| {
        let hold = Arc::new(idle_hold());
        let passed = Arc::new(AtomicBool::new(false));
        let caller = {
            let (hold, passed) = (hold.clone(), passed.clone());
            thread::spawn(move || {
                let after = passed.load(SeqCst);
                let taken = hold.take_used();
                if taken {
                    hold.give_back();
                }
                (after, taken)
            })
        };
        let idle = sweep_passes(&hold);
        passed.store(true, SeqCst);
        let evicted = idle && hold.try_evict();
        let (after, taken) = caller.join().unwrap();
        assert!(
            !(after && taken && evicted),
            "a key used after the sweep passed it was evicted"
        );
        assert_eq!(hold.held(), 0, "a handle given back or refused is not held");
    });
}

/// A sweep that finds the key held leaves it as it was: handles are taken on it
/// again, and a later sweep, once it is let go, evicts it for good.
#[test]
fn loom_a_key_the_sweep_found_held_takes_handles_again() {
    model(|| {
        let hold = Arc::new(idle_hold());
        assert!(hold.take());
        let sweep = {
            let hold = hold.clone();
            thread::spawn(move || hold.try_evict())
        };
        let again = hold.take();
        assert!(again, "a held key refused a handle");
        assert!(!sweep.join().unwrap(), "evicted while held");
        hold.give_back();
        hold.give_back();
        assert!(hold.take());
        hold.give_back();
        assert!(sweep_passes(&hold));
        assert!(hold.try_evict());
        assert!(!hold.take());
        assert!(!hold.take_used());
        assert_eq!(hold.held(), 0);
    });
}

fn key_map() -> Arc<KeyMap<u64>> {
    Arc::new(KeyMap::with_hasher(Default::default()))
}

/// A reader finds a key being put in whole (its value written before the index
/// tells of it: loom's cell checks the read is ordered after the write) or not at
/// all. (The reader is the thread spawned: loom explores fewer interleavings
/// when the spawned thread starts with loads the other thread only loads too.)
#[test]
fn loom_a_key_being_put_in_is_found_whole_or_not_at_all() {
    model(|| {
        let m = key_map();
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                let seen = m.pin().get("k").copied();
                assert!(seen.is_none() || seen == Some(7), "saw {seen:?}");
            })
        };
        assert_eq!(m.pin().get_or_insert_with("k", || 7), (&7, true));
        reader.join().unwrap();
        assert_eq!(m.pin().get("k"), Some(&7));
    });
}

/// Two threads putting the same key in: one puts its value, and both get that one.
#[test]
fn loom_a_key_put_in_twice_at_once_is_put_in_once() {
    model(|| {
        let m = key_map();
        let other = {
            let m = m.clone();
            thread::spawn(move || {
                let pinned = m.pin();
                let (v, fresh) = pinned.get_or_insert_with("k", || 1);
                (*v, fresh)
            })
        };
        let pinned = m.pin();
        let (v, fresh) = pinned.get_or_insert_with("k", || 2);
        let (w, other_fresh) = other.join().unwrap();
        assert_eq!(*v, w);
        assert!(fresh != other_fresh, "put in by exactly one");
        assert_eq!(pinned.get("k"), Some(v));
    });
}

/// A key already in is found by a reader while an insert builds the index again
/// and swaps it in, and the key put in is found whole or not at all.
#[test]
fn loom_a_reader_finds_a_key_while_the_index_is_built_again() {
    model(|| {
        let m = key_map();
        // The first index has 16 positions and is built again at 14 in use.
        for i in 0..14 {
            m.pin().get_or_insert_with(&format!("k{i}"), || i);
        }
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                let pinned = m.pin();
                assert_eq!(pinned.get("k3"), Some(&3));
                let seen = pinned.get("new").copied();
                assert!(seen.is_none() || seen == Some(99), "saw {seen:?}");
                assert_eq!(pinned.get("k13"), Some(&13));
            })
        };
        assert!(m.pin().get_or_insert_with("new", || 99).1);
        reader.join().unwrap();
        assert_eq!(m.pin().get("new"), Some(&99));
        assert_eq!(m.pin().get("k0"), Some(&0));
    });
}

/// A key being removed is found whole or not at all, and the keys beside it stay.
#[test]
fn loom_a_key_being_removed_is_found_whole_or_not_at_all() {
    model(|| {
        let m = key_map();
        m.pin().get_or_insert_with("k", || 7);
        m.pin().get_or_insert_with("j", || 8);
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                let pinned = m.pin();
                let seen = pinned.get("k").copied();
                assert!(seen.is_none() || seen == Some(7), "saw {seen:?}");
                assert_eq!(pinned.get("j"), Some(&8));
            })
        };
        assert!(m.pin().remove("k"));
        reader.join().unwrap();
        assert_eq!(m.pin().get("k"), None);
        let left: Vec<_> = m.pin().iter().map(|(k, v)| (k.to_owned(), *v)).collect();
        assert_eq!(left, [("j".to_owned(), 8)]);
    });
}

/// A call's lookup, which enters no collector, meets its key being removed, the
/// entry reclaimed (as once every guard has left) and written for another key: it
/// takes the old key's entry whole while it is that key's, or nothing; never the
/// entry once it holds another key or while it is written (loom's cells check
/// that every read of the value is ordered after its write and before its drop).
#[test]
fn loom_a_lookup_without_a_guard_never_takes_an_entry_used_again() {
    model(|| {
        let m = key_map();
        m.pin().insert_with("a", || 1);
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                if let Some(e) = m.take_used("a") {
                    assert_eq!((e.key(), *e.value()), ("a", 1));
                    e.hold().give_back();
                }
            })
        };
        // Refused while the reader holds a handle (or is taking one).
        let removed = m.pin().remove("a");
        if removed {
            m.collector().reclaim_now();
            assert!(m.pin().insert_with("b", || 2).1);
        }
        reader.join().unwrap();
        let p = m.pin();
        assert_eq!(p.get("a"), if removed { None } else { Some(&1) });
        if removed {
            let e = m.take_used("b").expect("b is live");
            assert_eq!(*e.value(), 2);
            assert_eq!(e.hold().held(), 1, "the reader left nothing held");
            e.hold().give_back();
        }
    });
}

/// A call's lookup meets its key being put in (into an entry used before, for
/// another key): it takes the entry whole, its value written, or nothing.
#[test]
fn loom_a_lookup_without_a_guard_takes_a_key_being_put_in_whole_or_not_at_all() {
    model(|| {
        let m = key_map();
        m.pin().insert_with("a", || 1);
        assert!(m.pin().remove("a"));
        m.collector().reclaim_now();
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                if let Some(e) = m.take_used("b") {
                    assert_eq!((e.key(), *e.value()), ("b", 2));
                    e.hold().give_back();
                }
                assert!(m.take_used("a").is_none(), "a removed key taken");
            })
        };
        assert!(m.pin().insert_with("b", || 2).1);
        reader.join().unwrap();
        let e = m.take_used("b").expect("b is live");
        assert_eq!(e.hold().held(), 1, "the reader left nothing held");
        e.hold().give_back();
    });
}

/// A reader looking a key up while the index is built again twice: the second
/// rebuild uses again the index the first replaced, in which the reader may
/// still be probing, and empties it. The reader finds the key all the same (a
/// miss while an index was used again is probed again).
#[test]
fn loom_a_key_is_never_reported_absent_while_an_index_is_used_again() {
    model(|| {
        let m = key_map();
        m.pin().insert_with("k", || 7);
        let reader = {
            let m = m.clone();
            thread::spawn(move || {
                assert_eq!(m.pin().get("k"), Some(&7));
            })
        };
        m.rebuild_now();
        m.rebuild_now();
        reader.join().unwrap();
    });
}
