//! An asymmetric fence: a side that runs on every call pays a compiler fence only,
//! and a side that runs rarely pays for both.
//!
//! The bulkhead gives a slot back with a plain store on a line its thread owns,
//! then reads whether anyone waits. A waiter counts itself, then reads the lines.
//! Each side must see the other's write (a store, then a load of another place:
//! the order a store buffer breaks), or a waiter sleeps while a slot is free. A
//! full fence on both sides would cost the give-back what the locked subtraction
//! it replaces cost. Instead the waiter calls `membarrier(2)` (Linux's
//! `MEMBARRIER_CMD_PRIVATE_EXPEDITED`), which makes every running thread of the
//! process execute a full fence before it returns, and the giver needs only the
//! compiler not to reorder its store and load: [`light`] on the side of every
//! call, [`heavy`] on the side of the waits. Where that call is unavailable (other
//! systems, a kernel without it, a sandbox that refuses it) both sides take a full
//! fence.

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Not decided yet: [`init`] has not run.
const UNKNOWN: u8 = 0;
/// The process is registered for `membarrier`'s private expedited command.
const MEMBARRIER: u8 = 1;
/// Full fences on both sides.
const FENCES: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Decides how the two sides fence. Runs before anything that uses them exists
/// (the bulkhead calls it when made), so a side never sees the state change
/// under it. Once per process; later calls return at once.
pub(crate) fn init() {
    if STATE.load(Relaxed) != UNKNOWN {
        return;
    }
    let state = if sys::register() { MEMBARRIER } else { FENCES };
    // Two threads may both register: registering twice is harmless, and both
    // find the same answer.
    let _ = STATE.compare_exchange(UNKNOWN, state, Relaxed, Relaxed);
}

/// Whether [`heavy`] fences every running thread of the process (and not only
/// the caller's): then one call of it serves every later waiter for as long as
/// the light side's loads find a waiter counted.
#[inline(always)]
pub(crate) fn heavy_is_process_wide() -> bool {
    #[cfg(not(resilience_loom))]
    {
        STATE.load(Relaxed) == MEMBARRIER
    }
    #[cfg(resilience_loom)]
    {
        false
    }
}

/// The side of every call: between a store and a load that the other side's
/// [`heavy`] pairs with.
#[inline(always)]
pub(crate) fn light() {
    if heavy_is_process_wide() {
        std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
        return;
    }
    crate::sync::fence(crate::sync::Ordering::SeqCst);
}

/// The rare side: after its store (a waiter counted), before its loads.
#[cold]
pub(crate) fn heavy() {
    if heavy_is_process_wide() {
        sys::barrier();
        return;
    }
    crate::sync::fence(crate::sync::Ordering::SeqCst);
}

#[cfg(all(target_os = "linux", not(resilience_loom)))]
mod sys {
    // From <linux/membarrier.h>.
    const CMD_QUERY: libc::c_long = 0;
    const CMD_GLOBAL: libc::c_long = 1;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn membarrier(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: `membarrier(cmd, flags = 0, cpu_id = 0)` reads and writes no
        // memory of the caller's; an unknown command or a refused one returns -1.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                cmd,
                0 as libc::c_long,
                0 as libc::c_long,
            )
        }
    }

    /// Registers the process for the private expedited command; false when the
    /// kernel lacks it or refuses.
    pub(super) fn register() -> bool {
        let supported = membarrier(CMD_QUERY);
        if supported < 0 || supported & CMD_PRIVATE_EXPEDITED == 0 || supported & CMD_GLOBAL == 0 {
            return false;
        }
        membarrier(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// A full fence on every running thread of the process. If the expedited
    /// command fails once registered (a process forked from a registered one,
    /// whose registration the kernel did not carry over), the global one, slower
    /// but needing no registration, does the same; `register` checked that the
    /// kernel has both.
    pub(super) fn barrier() {
        if membarrier(CMD_PRIVATE_EXPEDITED) != 0 {
            membarrier(CMD_GLOBAL);
        }
    }
}

#[cfg(not(all(target_os = "linux", not(resilience_loom))))]
mod sys {
    pub(super) fn register() -> bool {
        false
    }

    #[allow(dead_code)]
    pub(super) fn barrier() {}
}
