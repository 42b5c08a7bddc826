//! Shared by the allocation tests (`alloc.rs`, `pool_threads.rs`): a global
//! allocator that counts the allocations of the thread that armed it (tests run in
//! parallel), a future pending once, and a runtime whose timers a pending body can
//! arm.

#![allow(dead_code)] // each test binary uses part of it

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    // `try_with`: the allocator can run while thread-locals are being torn down.
    let _ = ARMED.try_with(|armed| {
        if armed.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts this thread's allocations from now on (`true`) or stops (`false`).
pub fn arm(on: bool) {
    ARMED.with(|a| a.set(on));
}

/// This thread's count so far.
pub fn count() -> u64 {
    COUNT.with(Cell::get)
}

/// Sets this thread's count back to zero.
pub fn reset() {
    COUNT.with(|c| c.set(0));
}

/// Heap allocations `f` makes on this thread.
pub fn allocations<R>(f: impl FnOnce() -> R) -> (u64, R) {
    reset();
    arm(true);
    let r = f();
    arm(false);
    (count(), r)
}

/// Pending at its first poll (waking itself), ready at the second.
pub struct PendingOnce(pub bool);

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

/// A current-thread runtime with timers, for calls whose pending bodies arm
/// tokio's (entered, not necessarily driven).
pub fn timer_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}
