//! The floor under the shuffled computed-key rows: the memory reads any lookup of
//! a key in a map whose entries never move makes, and nothing else. The key's
//! bytes hashed (foldhash, as the runtime's map), a 4-byte word of an index (the
//! entry's number and 6 bits of the hash, as the runtime's, as large and as full
//! with the bench's keys), then the entry's line. Used by the bench's floor row
//! and by the example `keyed_floor`, which adds what our call does to it.

use std::hash::BuildHasher;
use std::sync::atomic::AtomicU64;

use compact_str::CompactString;

/// The bits of an index word that hold the entry's number plus one.
const SLOT: u32 = (1 << 26) - 1;

/// The bits of an index word that `h` decides.
fn tag(h: u64) -> u32 {
    ((h >> 58) as u32) << 26
}

/// An entry: the key inline, three words a call may add to.
#[repr(C, align(64))]
pub struct Line {
    pub key: CompactString,
    pub hold: AtomicU64,
    pub count: AtomicU64,
    _rest: [u64; 3],
}

/// An index over entries `STRIDE` bytes apart (64: packed lines).
pub struct Floor<const STRIDE: usize> {
    mask: usize,
    index: Vec<u32>,
    /// The entries, from the first byte aligned to 64.
    lines: Vec<u8>,
    hasher: foldhash::fast::FixedState,
}

impl<const STRIDE: usize> Floor<STRIDE> {
    /// An index of `keys`, filled at most 7/8 as the runtime's.
    pub fn new(keys: &[String]) -> Self {
        let positions = (keys.len() * 8 / 7 + 1).next_power_of_two();
        let mut f = Floor {
            mask: positions - 1,
            index: vec![0; positions],
            lines: vec![0u8; keys.len() * STRIDE + 64],
            hasher: foldhash::fast::FixedState::default(),
        };
        let base = f.lines.as_ptr().align_offset(64);
        for (n, k) in keys.iter().enumerate() {
            // SAFETY: within `lines`, aligned to 64.
            unsafe {
                let p = f.lines.as_mut_ptr().add(base + n * STRIDE).cast::<Line>();
                p.write(Line {
                    key: CompactString::new(k),
                    hold: AtomicU64::new(0),
                    count: AtomicU64::new(0),
                    _rest: [0; 3],
                });
            }
            let h = f.hasher.hash_one(k.as_str());
            let mut at = h as usize & f.mask;
            while f.index[at] != 0 {
                at = (at + 1) & f.mask;
            }
            f.index[at] = tag(h) | (n as u32 + 1);
        }
        f
    }

    #[inline(always)]
    fn line(&self, n: usize) -> &Line {
        let base = self.lines.as_ptr().align_offset(64);
        // SAFETY: written in `new`.
        unsafe { &*self.lines.as_ptr().add(base + n * STRIDE).cast::<Line>() }
    }

    /// The line of `key`: the first whose index word's tag matches and which
    /// `matches` accepts.
    #[inline(always)]
    pub fn find(&self, key: &str, matches: impl Fn(&Line) -> bool) -> Option<&Line> {
        let h = self.hasher.hash_one(key);
        let mut at = h as usize & self.mask;
        loop {
            let w = self.index[at];
            if w == 0 {
                return None;
            }
            if (w ^ tag(h)) >> 26 == 0 {
                let l = self.line(((w & SLOT) - 1) as usize);
                if matches(l) {
                    return Some(l);
                }
            }
            at = (at + 1) & self.mask;
        }
    }
}
