//! Time and window geometry shared by the exporter, the runtime and the cost
//! model: one LM frame is 80 ms of audio (12.5 frames per second, spec §2.6),
//! and HeartCodec decodes codes in windows of 29.76 s (spec §4.1): 372 code
//! frames = 744 latent frames, hop 320 code frames, overlap 52 code frames =
//! 104 latent frames. Everything here is an integer fact of the released
//! design, independent of checkpoint size.

/// Milliseconds of audio per LM frame (one code per codebook).
pub const FRAME_MS: u64 = 80;
/// Code frames per second of audio.
pub const CODE_FRAME_RATE: f64 = 12.5;

/// Code frames per codec window (`int(29.76 · 12.5)`).
pub const WINDOW_CODES: usize = 372;
/// Code frames between codec window starts (`372 // 93 · 80`).
pub const HOP_CODES: usize = 320;
/// Code frames shared by consecutive windows.
pub const OVERLAP_CODES: usize = WINDOW_CODES - HOP_CODES;
/// Latent frames per code frame (25 Hz latents, 12.5 Hz codes).
pub const LATENTS_PER_CODE: usize = 2;
/// Latent frames per window (744).
pub const WINDOW_LATENTS: usize = WINDOW_CODES * LATENTS_PER_CODE;
/// New latent frames per window after the first (640).
pub const HOP_LATENTS: usize = HOP_CODES * LATENTS_PER_CODE;
/// Latent frames of in-context conditioning carried into the next window (104).
pub const OVERLAP_LATENTS: usize = OVERLAP_CODES * LATENTS_PER_CODE;

/// Whole frames in `ms` milliseconds of audio (`ms / 80`, rounded down).
pub fn frames_in_ms(ms: u64) -> usize {
    (ms / FRAME_MS) as usize
}

/// Seconds of audio in `frames` LM frames.
pub fn seconds_of_frames(frames: usize) -> f64 {
    frames as f64 / CODE_FRAME_RATE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_window_geometry() {
        assert_eq!((OVERLAP_CODES, WINDOW_LATENTS, OVERLAP_LATENTS), (52, 744, 104));
        assert_eq!((29.76f64 * CODE_FRAME_RATE) as usize, WINDOW_CODES);
        assert_eq!(WINDOW_CODES / 93 * 80, HOP_CODES);
        assert_eq!(frames_in_ms(240_000), 3000);
        assert_eq!(frames_in_ms(159), 1);
        assert!((seconds_of_frames(412) - 32.96).abs() < 1e-12);
    }
}
