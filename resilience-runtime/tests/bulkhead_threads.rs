//! A bulkhead shared by threads. Each thread gives its slots back on a cache line
//! of its own (threads past the lines, on a shared count), and a call that finds
//! the bulkhead full sums those lines; a waiter must see every slot given back or
//! be woken by it. These run real threads against one bulkhead: never more calls
//! inside than its size, every waiter let in (a lost wake-up leaves one waiting
//! out its `max_wait` and refused), and every slot back at the end, also when
//! tasks give back on another worker than the one they took the slot on, and
//! when threads end and others take their lines.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use resilience_runtime::{status, Policy, Resilience, ResilienceError};

/// Calls inside now, and the most seen at once.
#[derive(Default)]
struct Inside {
    now: AtomicU32,
    most: AtomicU32,
}

impl Inside {
    fn enter(&self) {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(n, SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, SeqCst);
    }
}

fn bulkhead(name: &str, size: u32) -> Policy {
    Resilience::builder(name)
        .no_circuit_breaker()
        .no_retry()
        .max_concurrent(size)
        // Long enough that only a lost wake-up runs it out.
        .bulkhead_max_wait(Duration::from_secs(120))
        .build()
        .expect("valid policy")
}

/// `threads` threads a wave, three waves (more threads than own lines, two per
/// CPU and at least four; lines given back by ended threads taken by new ones),
/// `calls` calls each, through a bulkhead of `size`.
fn threads_through(name: &str, size: u32, threads: usize, calls: u64) {
    let p = Arc::new(bulkhead(name, size));
    let inside = Arc::new(Inside::default());
    for _wave in 0..3 {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let (p, inside) = (p.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..calls {
                        let r: Result<(), ResilienceError> = p.call_sync(|| {
                            inside.enter();
                            std::thread::yield_now();
                            inside.leave();
                            Ok(())
                        });
                        r.expect("every waiter gets a slot");
                    }
                })
            })
            .collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
    }
    let most = inside.most.load(SeqCst);
    assert!(most <= size, "{most} calls inside a bulkhead of {size}");
    all_back(name, &p, size, 3 * threads as u64 * calls);
}

/// Every slot of the bulkhead of `size` free, and `calls` calls counted, none
/// refused.
fn all_back(name: &str, p: &Policy, size: u32, calls: u64) {
    assert_eq!(
        p.service().bulkhead_available(),
        Some(size),
        "every slot given back"
    );
    let s = status(name).expect("registered");
    assert_eq!(s.successes, calls);
    assert_eq!(s.rejections, 0);
}

#[test]
fn threads_waiting_on_a_small_bulkhead_all_get_in_and_never_more_than_its_size() {
    // Under 16 slots: every give-back on the shared count.
    threads_through("bulkhead.threads.sync.2", 2, 6, 2_000);
}

#[test]
fn threads_waiting_on_a_bulkhead_of_lines_all_get_in_and_never_more_than_its_size() {
    // 16 slots and more: give-backs on the threads' own lines.
    threads_through("bulkhead.threads.sync.16", 16, 24, 500);
}

/// `tasks` tasks on two workers, `calls` calls each, through a bulkhead of `size`.
fn tasks_through(name: &str, size: u32, tasks: usize, calls: u64) {
    let p = Arc::new(bulkhead(name, size));
    let inside = Arc::new(Inside::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (p, inside) = (p.clone(), inside.clone());
                tokio::spawn(async move {
                    for _ in 0..calls {
                        let inside = &inside;
                        let r: Result<(), ResilienceError> = p
                            .call(|| async move {
                                inside.enter();
                                // The task may resume on the other worker.
                                tokio::task::yield_now().await;
                                inside.leave();
                                Ok(())
                            })
                            .await;
                        r.expect("every waiter gets a slot");
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    // More tasks than slots, each yielding inside: the bulkhead fills, and the
    // rest wait for slots given back.
    let most = inside.most.load(SeqCst);
    assert_eq!(most, size, "{most} calls inside a bulkhead of {size}");
    all_back(name, &p, size, tasks as u64 * calls);
}

#[test]
fn tasks_that_give_back_on_another_worker_leave_every_slot_of_a_small_bulkhead_free() {
    tasks_through("bulkhead.threads.tasks.3", 3, 8, 500);
}

#[test]
fn tasks_that_give_back_on_another_worker_leave_every_slot_of_a_bulkhead_of_lines_free() {
    tasks_through("bulkhead.threads.tasks.16", 16, 40, 200);
}
