//! What the distance between the lines a loop touches costs when their number is
//! fixed: 100,000 lines (a computed key's registry entry reads one) visited in a
//! shuffled order, each read and written once a visit, the lines 64, 128 or 192
//! bytes apart. The registry's entries are 192 bytes apart (see
//! `resilience-runtime/src/keymap.rs`); entries of one line would be 64.
//!
//! ```text
//! cargo run --release -p resilience-benches --example cache_stride
//! ```
//!
//! Each round runs each stride twice in a row (the order turning each round) and
//! keeps the second run's time, when what the first brought into the caches may
//! still be there: that is the state in which a loop over keys that fit the cache
//! runs. `N` sets the number of lines, `ROUNDS` the rounds (8), `HUGE` (set to
//! anything) asks for huge pages for the three regions (Linux).

use std::time::Instant;

#[path = "../benches/common/mod.rs"]
mod common;
// The computed-key examples' helpers; this one uses their count parser and key count.
#[allow(dead_code)]
mod keyed;
use keyed::{count_from_env, KEYS};

/// The strides compared, in bytes.
const STRIDES: [usize; 3] = [64, 128, 192];
/// Regions start on a 2 MB boundary, where huge pages can back them.
const HUGE: usize = 1 << 21;

/// A region of `size` bytes (a multiple of [`HUGE`]), written through once.
struct Region {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Region {
    fn new(size: usize, huge: bool) -> Region {
        let layout = std::alloc::Layout::from_size_align(size, HUGE).expect("region layout");
        // SAFETY: the size is not zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        #[cfg(target_os = "linux")]
        if huge {
            // SAFETY: the range is the allocation just made; the advice only
            // chooses the pages that back it.
            unsafe { libc::madvise(ptr.cast(), size, libc::MADV_HUGEPAGE) };
        }
        #[cfg(not(target_os = "linux"))]
        let _ = huge;
        // SAFETY: `ptr` is valid for `size` bytes.
        unsafe { std::ptr::write_bytes(ptr, 1, size) };
        Region { ptr, layout }
    }

    /// Three passes over `order`, reading and writing the first word of line
    /// `k * stride` for each `k`; nanoseconds a visit.
    fn visit(&self, stride: usize, order: &[u32]) -> f64 {
        let t = Instant::now();
        let mut sum = 0u64;
        for _ in 0..3 {
            for &k in order {
                // SAFETY: `k < n` and the region holds `n * stride` bytes, aligned
                // to 8 at every multiple of the stride.
                unsafe {
                    let p = self.ptr.add(k as usize * stride).cast::<u64>();
                    let v = p.read_volatile();
                    sum = sum.wrapping_add(v);
                    p.write_volatile(v.wrapping_add(1));
                }
            }
        }
        std::hint::black_box(sum);
        t.elapsed().as_nanos() as f64 / (3 * order.len()) as f64
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

fn main() {
    let (n, rounds) = match (count_from_env("N", KEYS), count_from_env("ROUNDS", 8)) {
        (Ok(n), Ok(r)) => (n, r),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("cache_stride: {e}");
            std::process::exit(2);
        }
    };
    let huge = std::env::var_os("HUGE").is_some();
    let regions: Vec<Region> = STRIDES
        .iter()
        .map(|s| Region::new((n * s).next_multiple_of(HUGE), huge))
        .collect();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // The bench's fixed shuffle, the same every run.
    common::shuffle(&mut order);
    let mut second = vec![Vec::new(); STRIDES.len()];
    for r in 0..rounds {
        let mut line = format!("round {r}:");
        for j in 0..STRIDES.len() {
            let i = (j + r) % STRIDES.len();
            let first = regions[i].visit(STRIDES[i], &order);
            let again = regions[i].visit(STRIDES[i], &order);
            second[i].push(again);
            line += &format!("  {} B: {first:.1} then {again:.1} ns", STRIDES[i]);
        }
        println!("{line}");
    }
    for (s, mut v) in STRIDES.iter().zip(second) {
        v.sort_by(f64::total_cmp);
        println!(
            "{s} bytes apart: {:.1} ns a visit (median of the second runs)",
            v[v.len() / 2]
        );
    }
}
