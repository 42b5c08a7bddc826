//! Memory for what a service keeps apart from its registry entry (its cold
//! fields, its breaker's, its window's mode, its policies' components and
//! settings): [`ColdBox`].
//!
//! A computed key's lane call reads only its registry entry (see the registry's
//! `Slot`). With very many keys, how many lines and pages those entries take is
//! what decides the call's time, and with every box taken from the allocator the
//! entries were laid out between their own keys' cold boxes (about 700 bytes a
//! key), one entry every few hundred bytes. Cold boxes come instead from regions
//! of their own ([`REGION`] bytes each, which the allocator maps apart from its
//! heap), carved into slots of a few sizes, so the entries lie next to one
//! another on the heap.
//!
//! A slot given back is kept on its size's free list for the next box of that
//! size; regions are never given back to the allocator. What they hold is bounded
//! by the most services alive at once (computed keys are capped, see
//! `set_key_capacity`).

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

/// The bytes of a region: above glibc's default threshold for mapping a request
/// apart from the heap (128 KiB).
pub(crate) const REGION: usize = 256 * 1024;

/// The layout of a region, aligned as its slots.
const REGION_LAYOUT: Layout = match Layout::from_size_align(REGION, STEP) {
    Ok(layout) => layout,
    Err(_) => panic!("the region layout is valid"),
};

/// Slot sizes are multiples of this, and slots are aligned to it.
const STEP: usize = 64;

/// How many slot sizes: up to `SIZES * STEP` bytes. A larger value, or one aligned
/// to more than [`STEP`], is boxed by the allocator.
const SIZES: usize = 8;

/// The free slots and the unused rest of the current region, of one slot size.
struct Size {
    /// Free slots, linked through their first word.
    free: Option<NonNull<Free>>,
    /// The next unused slot of the current region, and the region's end.
    next: usize,
    end: usize,
}

/// A free slot: the next one on its list.
struct Free(Option<NonNull<Free>>);

// SAFETY: `Size` holds addresses of memory nothing else owns (free slots and the
// unused rest of a region), handed out under its mutex only.
unsafe impl Send for Size {}

static SIZE_LISTS: [Mutex<Size>; SIZES] = [const {
    Mutex::new(Size {
        free: None,
        next: 0,
        end: 0,
    })
}; SIZES];

/// The slot size class of a `T`, or `None` when it is boxed by the allocator.
const fn class_of<T>() -> Option<usize> {
    let size = size_of::<T>();
    if size == 0 || size > SIZES * STEP || align_of::<T>() > STEP {
        None
    } else {
        Some(size.div_ceil(STEP) - 1)
    }
}

/// A slot of class `class` (its size `(class + 1) * STEP`, aligned to `STEP`).
fn take(class: usize) -> NonNull<u8> {
    let mut s = SIZE_LISTS[class]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(slot) = s.free {
        // SAFETY: a free slot holds a `Free` (written by `give`), and is no one
        // else's while on the list.
        s.free = unsafe { slot.as_ref().0 };
        return slot.cast();
    }
    let size = (class + 1) * STEP;
    if s.end - s.next < size {
        // SAFETY: the layout is not zero-sized.
        let region = unsafe { alloc(REGION_LAYOUT) };
        if region.is_null() {
            handle_alloc_error(REGION_LAYOUT);
        }
        // The rest of the previous region (less than a slot) is left unused.
        s.next = region as usize;
        s.end = s.next + REGION;
    }
    let slot = s.next;
    s.next += size;
    // SAFETY: a region is not at address 0.
    unsafe { NonNull::new_unchecked(slot as *mut u8) }
}

/// Puts `slot`, of class `class`, on its free list.
fn give(class: usize, slot: NonNull<u8>) {
    let mut s = SIZE_LISTS[class]
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let slot = slot.cast::<Free>();
    // SAFETY: the slot is ours (its value was dropped), at least `STEP` bytes and
    // aligned to `STEP`, room for a `Free`.
    unsafe { slot.as_ptr().write(Free(s.free)) };
    s.free = Some(slot);
}

/// A box whose memory is a slot of the cold regions (see the module docs), or
/// the allocator's for a value too large for a slot.
pub(crate) struct ColdBox<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a `ColdBox` owns its value as a `Box` does.
unsafe impl<T: Send> Send for ColdBox<T> {}
// SAFETY: as above; `&ColdBox<T>` gives `&T` only.
unsafe impl<T: Sync> Sync for ColdBox<T> {}

impl<T> ColdBox<T> {
    /// Boxes `value`.
    pub(crate) fn new(value: T) -> Self {
        let ptr = match class_of::<T>() {
            Some(class) => take(class).cast::<T>(),
            None if size_of::<T>() == 0 => NonNull::dangling(),
            None => {
                let layout = Layout::new::<T>();
                // SAFETY: the layout is not zero-sized (tested above).
                let raw = unsafe { alloc(layout) };
                match NonNull::new(raw) {
                    Some(p) => p.cast::<T>(),
                    None => handle_alloc_error(layout),
                }
            }
        };
        // SAFETY: `ptr` is valid for writes of a `T`, aligned for one, and holds
        // nothing yet.
        unsafe { ptr.as_ptr().write(value) };
        ColdBox {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Deref for ColdBox<T> {
    type Target = T;
    #[inline(always)]
    fn deref(&self) -> &T {
        // SAFETY: the value is in place until `drop`.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for ColdBox<T> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`; `&mut self` makes the access unique.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T> Drop for ColdBox<T> {
    fn drop(&mut self) {
        /// Gives the memory back even if the value's drop unwinds.
        struct Back<T>(NonNull<T>);
        impl<T> Drop for Back<T> {
            fn drop(&mut self) {
                match class_of::<T>() {
                    Some(class) => give(class, self.0.cast()),
                    None if size_of::<T>() == 0 => {}
                    // SAFETY: allocated with `T`'s own layout (`ColdBox::new`).
                    None => unsafe { dealloc(self.0.as_ptr().cast(), Layout::new::<T>()) },
                }
            }
        }
        let back = Back(self.ptr);
        // SAFETY: the value is in place and dropped once, here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        drop(back);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// Counts its drops; 472 bytes, of the largest slot size, which nothing of the
    /// runtime's (nor another test here) takes, so tests of this binary running at
    /// once do not take its slots.
    struct Counted<'a>(&'a AtomicUsize, [u64; 58]);

    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn a_value_is_dropped_once_and_its_slot_used_again() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let a = ColdBox::new(Counted(&DROPS, [7; 58]));
        assert_eq!(a.1, [7; 58]);
        let at = std::ptr::from_ref(&*a) as usize;
        assert_eq!(at % STEP, 0, "slots are aligned to {STEP}");
        drop(a);
        assert_eq!(DROPS.load(Relaxed), 1);
        // Nothing else takes a slot of this size (see `Counted`): the slot just
        // given back is the next one of its size.
        let b = ColdBox::new(Counted(&DROPS, [9; 58]));
        assert_eq!(std::ptr::from_ref(&*b) as usize, at);
        assert_eq!(b.1, [9; 58]);
        // Dropped on another thread, given back all the same.
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(DROPS.load(Relaxed), 2);
        let c = ColdBox::new(Counted(&DROPS, [1; 58]));
        assert_eq!(std::ptr::from_ref(&*c) as usize, at);
        drop(c);
        assert_eq!(DROPS.load(Relaxed), 3);
    }

    #[test]
    fn values_of_every_size_keep_their_contents_across_threads() {
        fn boxes<const N: usize>(seed: u8) -> Vec<ColdBox<[u8; N]>> {
            (0..300)
                .map(|i| ColdBox::new([seed ^ i as u8; N]))
                .collect()
        }
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                std::thread::spawn(move || {
                    for round in 0..20u8 {
                        let seed = t.wrapping_mul(31) ^ round;
                        let small = boxes::<24>(seed);
                        let mid = boxes::<200>(seed);
                        let large = boxes::<400>(seed);
                        let huge = boxes::<4096>(seed);
                        for (i, ((s, m), (l, h))) in small
                            .iter()
                            .zip(&mid)
                            .zip(large.iter().zip(&huge))
                            .enumerate()
                        {
                            let want = seed ^ i as u8;
                            assert!(s
                                .iter()
                                .chain(&**m)
                                .chain(&**l)
                                .chain(&**h)
                                .all(|&b| b == want));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn sizes_fall_in_their_classes() {
        assert_eq!(class_of::<[u8; 1]>(), Some(0));
        assert_eq!(class_of::<[u8; 64]>(), Some(0));
        assert_eq!(class_of::<[u8; 65]>(), Some(1));
        assert_eq!(class_of::<[u8; 512]>(), Some(SIZES - 1));
        assert_eq!(class_of::<[u8; 513]>(), None);
        assert_eq!(class_of::<()>(), None);
        // The runtime's cold parts take slots (and none the largest, which the
        // first test keeps to itself).
        for class in [
            class_of::<crate::service::ServiceCold>(),
            class_of::<crate::service::PoliciesRest>(),
            class_of::<crate::breaker::BreakerCold>(),
        ] {
            assert!(class.is_some_and(|c| c < SIZES - 1), "{class:?}");
        }
    }
}
