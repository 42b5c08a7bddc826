//! Calls that leave the lane on one thread and end on another (a task moved
//! between a runtime's workers): the state blocks come back through the shared
//! stock, so once warm the thread that starts the calls allocates nothing, though
//! it never gives a block back itself.
//!
//! A test binary of its own: the shared stock is process-wide, and no other test
//! may take from it between the two threads' turns.

use std::future::Future;
use std::sync::{Barrier, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::{Policy, Resilience, ResilienceError};

mod counting;
use counting::{arm, count, reset, timer_runtime, PendingOnce};

#[derive(Debug, Clone, PartialEq)]
enum E {
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

fn policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        Resilience::builder("pool::threads")
            .no_retry()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    })
}

/// A call whose body is pending at its first poll: the call's state (with the
/// attempt's timer, armed then) is put in a block at that poll.
fn call() -> impl Future<Output = Result<u32, E>> + Send {
    policy().call(|| async {
        PendingOnce(false).await;
        Ok::<u32, E>(1)
    })
}

/// More calls in flight than a thread keeps blocks of its own.
const CALLS: usize = 100;
const WARM_ROUNDS: usize = 30;
const ROUNDS: usize = 30;

#[test]
fn calls_started_on_one_thread_and_ended_on_another_allocate_nothing_once_warm() {
    let rt = timer_runtime();
    let slots = Mutex::new((0..CALLS).map(|_| Box::pin(call())).collect::<Vec<_>>());
    let turn = Barrier::new(2);
    let mut cx = Context::from_waker(Waker::noop());
    let starter_allocations = std::thread::scope(|s| {
        // Ends each call on its second poll and drops it (its block goes to this
        // thread's free blocks), leaving a fresh call in its slot.
        s.spawn(|| {
            let _in = rt.handle().enter();
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..WARM_ROUNDS + ROUNDS {
                turn.wait();
                let mut slots = slots.lock().unwrap();
                for slot in slots.iter_mut() {
                    assert_eq!(slot.as_mut().poll(&mut cx), Poll::Ready(Ok(1)));
                    slot.set(call());
                }
                drop(slots);
                turn.wait();
            }
        });
        // Starts every call: its first poll takes a block.
        let _in = rt.handle().enter();
        let mut measured = 0;
        for round in 0..WARM_ROUNDS + ROUNDS {
            arm(round >= WARM_ROUNDS);
            let mut slots = slots.lock().unwrap();
            for slot in slots.iter_mut() {
                assert!(slot.as_mut().poll(&mut cx).is_pending());
            }
            drop(slots);
            arm(false);
            if round == WARM_ROUNDS - 1 {
                reset();
            }
            turn.wait();
            turn.wait();
            measured = count();
        }
        measured
    });
    assert_eq!(starter_allocations, 0);
    let s = policy().service().status();
    assert_eq!(s.successes, ((WARM_ROUNDS + ROUNDS) * CALLS) as u64);
}
