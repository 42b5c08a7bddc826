//! Calls that leave the lane on one thread and end on another (a task moved
//! between a runtime's workers): the state blocks come back through the shared
//! stock, so once warm the thread that starts the calls allocates nothing, though
//! it never gives a block back itself.
//!
//! A test binary of its own: the shared stock is process-wide, and no other test
//! may take from it between the two threads' turns.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Barrier, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use resilience_runtime::{Policy, Resilience, ResilienceError};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ARMED.try_with(|armed| {
            if armed.get() {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Debug, Clone, PartialEq)]
enum E {
    R(ResilienceError),
}

impl From<ResilienceError> for E {
    fn from(e: ResilienceError) -> Self {
        E::R(e)
    }
}

/// Pending at its first poll (waking itself), ready at the second.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
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
            ARMED.with(|a| a.set(round >= WARM_ROUNDS));
            let mut slots = slots.lock().unwrap();
            for slot in slots.iter_mut() {
                assert!(slot.as_mut().poll(&mut cx).is_pending());
            }
            drop(slots);
            ARMED.with(|a| a.set(false));
            if round == WARM_ROUNDS - 1 {
                COUNT.with(|c| c.set(0));
            }
            turn.wait();
            turn.wait();
            measured = COUNT.with(Cell::get);
        }
        measured
    });
    assert_eq!(starter_allocations, 0);
    let s = policy().service().status();
    assert_eq!(s.successes, ((WARM_ROUNDS + ROUNDS) * CALLS) as u64);
}
