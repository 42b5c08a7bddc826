//! How much of the shuffled computed-key row is address translation: ours and
//! governor's keyed `check_key` over 100,000 keys in one process, each side's
//! objects in a memory region of its own, timed in rounds that alternate our
//! region between 4 KB pages and 2 MB pages (collapsed with `MADV_COLLAPSE`, split
//! again by a protection change). governor's region stays on 4 KB pages: it is
//! timed beside ours in every round, the control for the machine's drift.
//!
//! ```text
//! cargo run --release -p resilience-benches --example keyed_pages
//! ```
//!
//! (`ROUNDS`, default 10, rounds of each kind; `N`, default 400,000, calls a
//! loop.) It prints both sides' times, the ratio ours / governor per round and
//! its median, for each kind of page. On the bench VM memory latency swings by 2x
//! within minutes, so read the ratios, over several runs. Linux only (kernel 6.1
//! or later for `MADV_COLLAPSE`, transparent huge pages not `never`).
//!
//! Every allocation comes from a bump region (frees inside one are dropped), so
//! the layout is the same in every round: the bench's keys in one region,
//! governor's map and key copies in a second, our services, the registry map's
//! entries and tables in a third. A region starts on a 2 MB boundary. Split
//! again, our pages stay physically contiguous, which those of a heap that grew
//! on 4 KB pages need not be.

#[path = "../benches/common/mod.rs"]
mod common;
#[cfg(target_os = "linux")]
mod keyed;

#[cfg(target_os = "linux")]
mod pages {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use super::common::{governor_keyed, shuffle};
    use super::keyed::{count_from_env, governor_loop, ours_loop};

    const HUGE: usize = 2 << 20;
    /// Address space a region reserves (not memory: `MAP_NORESERVE`).
    const REGION: usize = 1 << 30;
    const KEYS_REGION: usize = 0;
    const GOVERNOR: usize = 1;
    const OURS: usize = 2;
    /// No region: the system allocator.
    const NONE: usize = usize::MAX;

    static START: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    static NEXT: [AtomicUsize; 3] = [const { AtomicUsize::new(0) }; 3];
    /// The region allocations come from now.
    static CURRENT: AtomicUsize = AtomicUsize::new(NONE);

    struct Regions;

    // SAFETY: an allocation from a region is a range of it no other allocation
    // got (the bump pointer only moves up, by compare-and-swap), aligned as asked;
    // a region is mapped read-write for the whole process. Everything else goes to
    // the system allocator, and frees go back where the block came from.
    unsafe impl GlobalAlloc for Regions {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let r = CURRENT.load(Relaxed);
            if r == NONE {
                // SAFETY: the caller's layout, passed on.
                return unsafe { System.alloc(layout) };
            }
            let end_of_region = START[r].load(Relaxed) + REGION;
            let mut next = NEXT[r].load(Relaxed);
            loop {
                let start = (next + layout.align() - 1) & !(layout.align() - 1);
                let end = start + layout.size();
                if end > end_of_region {
                    return std::ptr::null_mut();
                }
                match NEXT[r].compare_exchange_weak(next, end, Relaxed, Relaxed) {
                    Ok(_) => return start as *mut u8,
                    Err(now) => next = now,
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let at = ptr as usize;
            let in_region = START.iter().any(|s| {
                let s = s.load(Relaxed);
                s != 0 && (s..s + REGION).contains(&at)
            });
            if !in_region {
                // SAFETY: not from a region, so from the system allocator.
                unsafe { System.dealloc(ptr, layout) }
            }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Regions = Regions;

    fn map_regions() -> Result<(), String> {
        for r in [KEYS_REGION, GOVERNOR, OURS] {
            // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    REGION + HUGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!(
                    "mmap of {} MB failed: {}",
                    REGION >> 20,
                    std::io::Error::last_os_error()
                ));
            }
            let start = (p as usize + HUGE - 1) & !(HUGE - 1);
            START[r].store(start, Relaxed);
            NEXT[r].store(start, Relaxed);
        }
        Ok(())
    }

    /// Collapses the used part of region `r` into 2 MB pages.
    fn collapse(r: usize) -> Result<(), String> {
        // `MADV_COLLAPSE` (Linux 6.1); not every libc release names it.
        const MADV_COLLAPSE: libc::c_int = 25;
        let start = START[r].load(Relaxed);
        let end = (NEXT[r].load(Relaxed) + HUGE - 1) & !(HUGE - 1);
        // SAFETY: a range of a mapping this process made and keeps; `madvise`
        // changes how it is backed, not what it holds.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, end - start, MADV_COLLAPSE) };
        if rc == 0 {
            Ok(())
        } else {
            Err(format!(
                "madvise(MADV_COLLAPSE) failed: {} (it needs Linux 6.1 or later, and \
                 /sys/kernel/mm/transparent_hugepage/enabled not `never`)",
                std::io::Error::last_os_error()
            ))
        }
    }

    /// Maps the used part of region `r` with 4 KB page-table entries again: a
    /// protection change of one 4 KB page splits the 2 MB mapping around it
    /// (the kernel cannot map part of a huge page read-only), and changing it back
    /// leaves the split in place.
    fn split(r: usize) -> Result<(), String> {
        let start = START[r].load(Relaxed);
        let end = (NEXT[r].load(Relaxed) + HUGE - 1) & !(HUGE - 1);
        for at in (start..end).step_by(HUGE) {
            for prot in [libc::PROT_READ, libc::PROT_READ | libc::PROT_WRITE] {
                // SAFETY: a page of a mapping this process made; nothing runs
                // meanwhile (one thread), and the protection is restored before
                // the region is used again.
                if unsafe { libc::mprotect(at as *mut libc::c_void, 4096, prot) } != 0 {
                    return Err(format!(
                        "mprotect failed: {}",
                        std::io::Error::last_os_error()
                    ));
                }
            }
        }
        Ok(())
    }

    fn used_mb(r: usize) -> usize {
        (NEXT[r].load(Relaxed) - START[r].load(Relaxed)) >> 20
    }

    fn anon_huge_kb() -> String {
        std::fs::read_to_string("/proc/self/smaps_rollup")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("AnonHugePages:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
            })
            .unwrap_or_else(|| "?".into())
    }

    fn median(v: &[f64]) -> f64 {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    pub fn run() -> Result<(), String> {
        let rounds = count_from_env("ROUNDS", 10)?;
        let n = count_from_env("N", 400_000)?;
        map_regions()?;

        CURRENT.store(KEYS_REGION, Relaxed);
        let keys = super::keyed::keys_of(super::keyed::KEYS);
        let mut shuffled = keys.clone();
        shuffle(&mut shuffled);
        CURRENT.store(GOVERNOR, Relaxed);
        let gov = governor_keyed(&keys);
        CURRENT.store(OURS, Relaxed);
        super::keyed::warm(&keys)?;
        CURRENT.store(NONE, Relaxed);
        println!(
            "regions: the keys {} MB, governor {} MB, ours {} MB",
            used_mb(KEYS_REGION),
            used_mb(GOVERNOR),
            used_mb(OURS)
        );

        let time = |f: &dyn Fn() -> usize| -> Result<f64, String> {
            let t = std::time::Instant::now();
            if f() != n {
                return Err("a call failed".into());
            }
            Ok(t.elapsed().as_nanos() as f64 / n as f64)
        };
        // Rounds alternate: ours on 4 KB pages, then collapsed into 2 MB ones, then
        // split again, so that a drift of the machine over the run does not fall
        // on one side. governor stays on 4 KB pages: it is the control.
        let mut by_pages = [
            (Vec::new(), Vec::new(), Vec::new()),
            (Vec::new(), Vec::new(), Vec::new()),
        ];
        let mut huge_kb = [String::new(), String::new()];
        for round in 0..2 * rounds {
            let huge = round % 2;
            if huge == 1 {
                collapse(OURS)?;
            } else if round > 0 {
                split(OURS)?;
            }
            huge_kb[huge] = anon_huge_kb();
            let o = time(&|| ours_loop(&shuffled, n))?;
            let g = time(&|| governor_loop(&gov, &shuffled, n))?;
            let (ours, theirs, ratios) = &mut by_pages[huge];
            ours.push(o);
            theirs.push(g);
            ratios.push(o / g);
        }
        let list = |v: &[f64], digits: usize| {
            v.iter()
                .map(|x| format!("{x:.digits$}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        for (huge, phase) in ["ours on 4 KB pages", "ours on 2 MB pages"]
            .iter()
            .enumerate()
        {
            let (ours, theirs, ratios) = &by_pages[huge];
            println!(
                "{phase} (AnonHugePages {} kB):\n  ours (ns)     {}\n  governor (ns) {}\n  ratio         {}  median {:.2}",
                huge_kb[huge],
                list(ours, 0),
                list(theirs, 0),
                list(ratios, 2),
                median(ratios)
            );
        }
        println!(
            "median ratio ours / governor: {:.2} on 4 KB pages, {:.2} on 2 MB pages",
            median(&by_pages[0].2),
            median(&by_pages[1].2)
        );
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = pages::run() {
        eprintln!("keyed_pages: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("keyed_pages: needs Linux (mmap and MADV_COLLAPSE)");
    std::process::exit(1);
}
