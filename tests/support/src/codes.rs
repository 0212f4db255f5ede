//! Shared helpers of the `quant_*` tests: a seeded generator (SplitMix64, so the
//! tests need no random-number dependency) and a brute-force nearest-code search
//! that checks the encoders independently of their rounding logic.

/// SplitMix64: a small, well-mixed, seedable generator.
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [−1, 1) times `10^e` with `e` uniform in `[lo, hi)`: values
    /// spread over many binades.
    pub fn log_spread(&mut self, lo: f32, hi: f32) -> f32 {
        let e = lo + (hi - lo) * self.unit();
        (2.0 * self.unit() - 1.0) * 10f32.powf(e)
    }
}

/// The code among `codes` whose decoded value is nearest to `x` (distances in
/// f64, exact for these formats), ties broken to the code with an even low bit.
pub fn nearest_code(x: f32, codes: impl Iterator<Item = u8>, decode: impl Fn(u8) -> f32) -> u8 {
    let mut best: Option<(f64, u8)> = None;
    for c in codes {
        let dist = (f64::from(x) - f64::from(decode(c))).abs();
        best = match best {
            Some((d, b)) if d < dist || (d == dist && b & 1 == 0) => Some((d, b)),
            _ => Some((dist, c)),
        };
    }
    best.expect("no codes").1
}
