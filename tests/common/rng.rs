//! xorshift64*: the small deterministic generator of the tests that draw a schedule (the crash
//! loop) or mutations (the fuzz corpus replay), so a failing run replays from its seed, the same
//! on every machine, without an extra crate. Included by `tests/common/mod.rs` and, with
//! `#[path = "common/rng.rs"] mod rng;`, by tests that do not use the rest of `common`.
#![allow(dead_code)]

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// [`Rng::below`] for a count of milliseconds and the like.
    pub fn below_u64(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
