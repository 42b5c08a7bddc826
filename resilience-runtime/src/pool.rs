//! Recycled memory for the state an async call keeps only once it leaves the lane
//! (its retry state, its admissions, its timers: a few hundred bytes, most of them
//! tokio's `Sleep`s). Held inline, that state made every wrapped future that
//! large, though a call done on the lane never touches it; held in a plain `Box`,
//! every call that leaves the lane (a failure, a pending body, a rejection off the
//! lane) would allocate. [`PoolBox`] holds it out of line in a block taken from
//! this thread's free blocks and given back to the free blocks of the thread that
//! drops it.
//!
//! Blocks are plain memory of one layout ([`BLOCK`]): a value is written into a
//! block when it is boxed and dropped in place when the box is, so a block carries
//! nothing of a call (or of a tokio runtime) from one use to the next.
//!
//! Two levels, so that a block dropped on another thread than the one that took
//! it (a task moved between a runtime's workers) comes back: a thread keeps up to
//! [`KEEP`] free blocks of its own, without a lock; past that it hands a chain of
//! [`BATCH`] of them to a shared stock (one lock per `BATCH` blocks), and a thread
//! with none left takes a chain from the stock before it asks the allocator. The
//! stock keeps at most [`STOCK`] chains; a block past every limit goes back to
//! the allocator. An exiting thread's blocks, and those given back while it exits,
//! go to the stock. Once the threads have had as many calls off the lane at once
//! as these hold, such calls allocate nothing.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, PoisonError};

/// The layout of a block: large enough for the state of a call's future that
/// left the lane (`run::Rest`, 456 bytes with tokio 1.54 on x86-64); a value
/// that does not fit is boxed by the allocator instead (see [`PoolBox::FITS`]).
pub(crate) const BLOCK: Layout = match Layout::from_size_align(512, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("the block layout is valid"),
};

/// How many free blocks a thread keeps of its own (32 KiB).
pub(crate) const KEEP: usize = 64;

/// How many blocks move between a thread and the shared stock at once.
pub(crate) const BATCH: usize = KEEP / 2;

/// How many chains of [`BATCH`] blocks the shared stock keeps (1 MiB).
pub(crate) const STOCK: usize = 64;

/// Free blocks linked through their first word.
#[derive(Clone, Copy)]
struct Chain {
    head: *mut u8,
    len: usize,
}

impl Chain {
    const EMPTY: Chain = Chain {
        head: ptr::null_mut(),
        len: 0,
    };

    fn pop(&mut self) -> Option<NonNull<u8>> {
        let head = NonNull::new(self.head)?;
        // SAFETY: a block on a chain holds the address of the next one in its
        // first word (written by `push`), and is the chain's alone.
        self.head = unsafe { head.as_ptr().cast::<*mut u8>().read() };
        self.len -= 1;
        Some(head)
    }

    fn push(&mut self, block: NonNull<u8>) {
        // SAFETY: `block` is a free block of `BLOCK`'s layout, no longer used by
        // anything else: its first word is the chain's to write.
        unsafe { block.as_ptr().cast::<*mut u8>().write(self.head) };
        self.head = block.as_ptr();
        self.len += 1;
    }

    /// Takes up to `n` blocks off the front.
    fn split(&mut self, n: usize) -> Chain {
        let mut out = Chain::EMPTY;
        while out.len < n {
            match self.pop() {
                Some(block) => out.push(block),
                None => break,
            }
        }
        out
    }

    /// Gives every block back to the allocator.
    fn release(mut self) {
        while let Some(block) = self.pop() {
            // SAFETY: every block on a chain was allocated with `BLOCK`.
            unsafe { dealloc(block.as_ptr(), BLOCK) };
        }
    }
}

/// Chains of free blocks any thread may take.
struct Stock {
    chains: [Chain; STOCK],
    len: usize,
}

impl Stock {
    const EMPTY: Stock = Stock {
        chains: [Chain::EMPTY; STOCK],
        len: 0,
    };

    /// Keeps `chain`, or hands it back when full. A short chain (the blocks of
    /// an exiting thread come one at a time) joins the last one while that one
    /// has room up to [`BATCH`], so it does not take a place of its own.
    fn put(&mut self, mut chain: Chain) -> Result<(), Chain> {
        if let Some(top) = self.len.checked_sub(1).map(|at| &mut self.chains[at]) {
            if top.len + chain.len <= BATCH {
                while let Some(block) = chain.pop() {
                    top.push(block);
                }
                return Ok(());
            }
        }
        if self.len == STOCK {
            return Err(chain);
        }
        self.chains[self.len] = chain;
        self.len += 1;
        Ok(())
    }

    fn take(&mut self) -> Option<Chain> {
        self.len = self.len.checked_sub(1)?;
        Some(std::mem::replace(&mut self.chains[self.len], Chain::EMPTY))
    }
}

// SAFETY: the blocks on a chain are plain memory owned by the chain, tied to no
// thread.
unsafe impl Send for Stock {}

static SHARED: Mutex<Stock> = Mutex::new(Stock::EMPTY);

/// Puts `chain` in the shared stock, or gives it back to the allocator when the
/// stock is full.
fn to_stock(chain: Chain) {
    if chain.len == 0 {
        return;
    }
    let kept = SHARED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .put(chain);
    if let Err(chain) = kept {
        chain.release();
    }
}

/// A chain from the shared stock, if it has one.
fn from_stock() -> Option<Chain> {
    SHARED.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A thread's own free blocks.
struct Free(Cell<Chain>);

impl Free {
    fn pop(&self) -> Option<NonNull<u8>> {
        let mut own = self.0.get();
        let block = match own.pop() {
            Some(block) => Some(block),
            None => {
                own = from_stock()?;
                own.pop()
            }
        };
        self.0.set(own);
        block
    }

    fn push(&self, block: NonNull<u8>) {
        let mut own = self.0.get();
        if own.len >= KEEP {
            to_stock(own.split(BATCH));
        }
        own.push(block);
        self.0.set(own);
    }
}

impl Drop for Free {
    fn drop(&mut self) {
        // The thread exits: its blocks go to the stock for the threads that stay.
        let mut own = self.0.replace(Chain::EMPTY);
        while own.len > 0 {
            to_stock(own.split(BATCH));
        }
    }
}

thread_local! {
    static FREE: Free = const { Free(Cell::new(Chain::EMPTY)) };
}

/// A block: one of this thread's free blocks, or a new one.
fn take() -> NonNull<u8> {
    if let Ok(Some(block)) = FREE.try_with(Free::pop) {
        return block;
    }
    fresh(BLOCK)
}

/// Gives a block back: to this thread's free blocks, or (while the thread exits)
/// to the shared stock.
fn give(block: NonNull<u8>) {
    if FREE.try_with(|f| f.push(block)).is_err() {
        let mut one = Chain::EMPTY;
        one.push(block);
        to_stock(one);
    }
}

/// Memory of `layout` (not zero-sized) from the allocator.
fn fresh(layout: Layout) -> NonNull<u8> {
    // SAFETY: `layout` is not zero-sized (the callers' word).
    let raw = unsafe { alloc(layout) };
    NonNull::new(raw).unwrap_or_else(|| handle_alloc_error(layout))
}

/// A pinned box whose memory is a block of this thread's pool: its content never
/// moves (nothing hands out `&mut T` but pinned) and is dropped in place.
pub(crate) struct PoolBox<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a `PoolBox` owns its content as a `Box` does; the block it came from is
// plain memory, tied to no thread.
unsafe impl<T: Send> Send for PoolBox<T> {}
// SAFETY: as above; `&PoolBox<T>` gives no access to its content.
unsafe impl<T: Sync> Sync for PoolBox<T> {}
// Moving the box moves a pointer, not its content (as `Box`).
impl<T> Unpin for PoolBox<T> {}

impl<T> PoolBox<T> {
    /// Whether a `T` fits a block. A zero-sized `T` is boxed without memory;
    /// one too large for a block, by the allocator with its own layout.
    const FITS: bool = size_of::<T>() <= BLOCK.size() && align_of::<T>() <= BLOCK.align();

    /// Boxes `value`, in a block when it fits one.
    pub(crate) fn new(value: T) -> Self {
        let ptr = if size_of::<T>() == 0 {
            NonNull::dangling()
        } else if Self::FITS {
            take().cast::<T>()
        } else {
            fresh(Layout::new::<T>()).cast::<T>()
        };
        // SAFETY: `ptr` is valid for writes of a `T` and aligned for one (a block's
        // alignment is at least `T`'s when it fits), and holds nothing yet.
        unsafe { ptr.as_ptr().write(value) };
        PoolBox {
            ptr,
            _owns: PhantomData,
        }
    }

    /// The content, pinned: it stays where it was written until dropped.
    #[inline(always)]
    pub(crate) fn pinned(&mut self) -> Pin<&mut T> {
        // SAFETY: the content is in place until `drop`, never moved out, and no
        // unpinned `&mut T` is handed out.
        unsafe { Pin::new_unchecked(self.ptr.as_mut()) }
    }

    /// The content, shared.
    #[inline(always)]
    pub(crate) fn get(&self) -> &T {
        // SAFETY: the content is in place until `drop`; a shared reference does
        // not let it move.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> Drop for PoolBox<T> {
    fn drop(&mut self) {
        /// Gives the block back even if the content's drop unwinds.
        struct Back<T>(NonNull<T>);
        impl<T> Drop for Back<T> {
            fn drop(&mut self) {
                if size_of::<T>() == 0 {
                } else if PoolBox::<T>::FITS {
                    give(self.0.cast());
                } else {
                    // SAFETY: allocated with `T`'s own layout (`PoolBox::new`).
                    unsafe { dealloc(self.0.as_ptr().cast(), Layout::new::<T>()) };
                }
            }
        }
        let back = Back(self.ptr);
        // SAFETY: the content is in place (written by `new`) and dropped once, here.
        unsafe { ptr::drop_in_place(back.0.as_ptr()) };
    }
}

impl<T> std::fmt::Debug for PoolBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolBox")
    }
}

/// How many free blocks this thread keeps now (tests).
#[cfg(test)]
pub(crate) fn free_blocks() -> usize {
    FREE.with(|f| f.0.get().len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counted<'a>(&'a AtomicUsize, [u64; 8]);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_block_given_back_is_taken_again() {
        let drops = AtomicUsize::new(0);
        let mut a = PoolBox::new(Counted(&drops, [7; 8]));
        let first = a.pinned().1.as_ptr();
        assert_eq!(a.pinned().1, [7; 8]);
        let before = free_blocks();
        drop(a);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "the content is dropped once"
        );
        assert_eq!(free_blocks(), before + 1);
        let mut b = PoolBox::new(Counted(&drops, [9; 8]));
        assert_eq!(b.pinned().1.as_ptr(), first, "the same block, reused");
        assert_eq!(b.pinned().1, [9; 8]);
        assert_eq!(free_blocks(), before);
        drop(b);
        assert_eq!(drops.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_thread_keeps_at_most_keep_blocks() {
        std::thread::spawn(|| {
            let boxes: Vec<_> = (0..KEEP + BATCH + 10).map(PoolBox::new).collect();
            drop(boxes);
            // Each time its own blocks reached `KEEP`, `BATCH` of them went to the
            // shared stock.
            assert!(free_blocks() <= KEEP, "{} kept", free_blocks());
            assert!(free_blocks() > KEEP - BATCH, "{} kept", free_blocks());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_value_too_large_for_a_block_is_boxed_by_the_allocator() {
        const { assert!(!PoolBox::<[u8; 1024]>::FITS) };
        let mut big = PoolBox::new([3u8; 1024]);
        assert!(big.pinned().iter().all(|&b| b == 3));
        let before = free_blocks();
        drop(big);
        assert_eq!(free_blocks(), before, "not kept as a block");
    }

    #[test]
    fn a_block_dropped_on_another_thread_is_kept_there() {
        let b = PoolBox::new([1u64; 4]);
        std::thread::spawn(move || {
            assert_eq!(free_blocks(), 0);
            drop(b);
            assert_eq!(free_blocks(), 1);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_chain_splits_and_releases_its_blocks() {
        let mut chain = chain_of(5);
        let front = chain.split(3);
        assert_eq!((front.len, chain.len), (3, 2));
        let rest = chain.split(10);
        assert_eq!((rest.len, chain.len), (2, 0));
        assert!(chain.head.is_null());
        front.release();
        rest.release();
    }

    /// A chain of `n` new blocks.
    fn chain_of(n: usize) -> Chain {
        let mut chain = Chain::EMPTY;
        for _ in 0..n {
            chain.push(fresh(BLOCK));
        }
        chain
    }

    #[test]
    fn the_stock_joins_short_chains_and_refuses_past_its_places() {
        let mut stock = Stock::EMPTY;
        // Blocks given back one at a time fill one place up to `BATCH`.
        for _ in 0..BATCH + 1 {
            stock.put(chain_of(1)).unwrap_or_else(|_| panic!("room"));
        }
        assert_eq!(stock.len, 2);
        assert_eq!((stock.chains[0].len, stock.chains[1].len), (BATCH, 1));
        // A full chain takes a place of its own; past `STOCK` places, refused.
        for _ in 2..STOCK {
            stock
                .put(chain_of(BATCH))
                .unwrap_or_else(|_| panic!("room"));
        }
        assert_eq!(stock.len, STOCK);
        let refused = stock.put(chain_of(BATCH)).expect_err("full");
        assert_eq!(refused.len, BATCH);
        refused.release();
        // Taken last in, first out; every block accounted for.
        let mut blocks = 0;
        while let Some(chain) = stock.take() {
            blocks += chain.len;
            chain.release();
        }
        assert_eq!(blocks, BATCH + 1 + (STOCK - 2) * BATCH);
        assert_eq!(stock.len, 0);
    }

    #[test]
    fn a_content_whose_drop_panics_still_gives_its_block_back() {
        struct Boom;
        impl Drop for Boom {
            fn drop(&mut self) {
                panic!("boom");
            }
        }
        std::thread::spawn(|| {
            let b = PoolBox::new((Boom, [0u64; 4]));
            let before = free_blocks();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(b)));
            assert!(r.is_err());
            assert_eq!(free_blocks(), before + 1);
        })
        .join()
        .unwrap();
    }
}
