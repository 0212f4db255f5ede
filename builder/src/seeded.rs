//! The seeded random streams of synthesized checkpoints: one per tensor and
//! chunk, so what a tensor holds depends only on the seed and its name.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Per-tensor, per-chunk RNG: chunks are independent, so the stream does not
/// depend on the chunk size used by the writer.
pub fn rng_for(seed: u64, name: &str, start: usize) -> ChaCha8Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(h);
    rng.set_word_pos(start as u128);
    rng
}
