//! Window geometry of `HeartCodec.detokenize` (spec §4.1, §4.6, §4.8), in integers.
//!
//! Upstream derives everything from a 29.76 s window: 372 code frames (12.5 Hz) =
//! 744 latent frames (25 Hz), hop 320 code frames, overlap 52 code frames = 104
//! latent frames. Every length here is derived from these constants and the
//! codec's `samples_per_latent`; nothing depends on a particular checkpoint size.
//!
//! Upstream quirks, each an explicit choice:
//! - **Padding test against the latent overlap.** Upstream pads the code sequence
//!   only if `(m - 104) % 320 > 0`, comparing code frames with the overlap in
//!   *latent* frames. For `m = 424, 744, 1064, …` nothing is padded and the last 52
//!   code frames are never decoded (the song comes out 4.16 s short).
//!   [`TailPolicy::Full`] (the default) pads whenever `(m - 52) % 320 != 0`, so the
//!   whole song is decoded; [`TailPolicy::UpstreamQuirk`] reproduces upstream. Both
//!   agree for every other length.
//! - **`target_len` in floating point.** `int(n / 12.5 * sample_rate)` is computed in
//!   f64 and truncated, which yields `n·3840 − 1` at 48 kHz for some `n` (29, 57,
//!   113, …). Kept as upstream: it is one sample.
//! - **Looping pad.** Short or ragged inputs are extended by self-concatenation, i.e.
//!   padded frame `i` is frame `i % n`: the song's beginning is decoded again after
//!   its end and cut away by `target_len`.

use heart::geometry::{CODE_FRAME_RATE, HOP_CODES, OVERLAP_CODES, OVERLAP_LATENTS, WINDOW_CODES, WINDOW_LATENTS};

/// `sigma_min` of the flow-matching in-context interpolation.
pub const SIGMA_MIN: f32 = 1e-6;

/// How a code length that hits upstream's padding quirk is handled (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TailPolicy {
    /// Pad so that every code frame is decoded (`(m − 52) % 320 != 0` test).
    #[default]
    Full,
    /// Upstream's `(m − 104) % 320 > 0` test: leaves the last 52 frames undecoded
    /// for `m ≡ 104 (mod 320)`.
    UpstreamQuirk,
}

/// The windows one code sequence is decoded in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    /// Original number of code frames.
    pub frames: usize,
    /// Length after looping pad; padded frame `i` is original frame `i % frames`.
    pub padded_len: usize,
    /// First code frame of each window (`0, 320, 640, …`), each window
    /// `WINDOW_CODES` long and inside `padded_len`.
    pub starts: Vec<usize>,
    /// Output samples per channel after cropping (may exceed what the windows
    /// produce under [`TailPolicy::UpstreamQuirk`]; the output is then shorter).
    pub target_len: usize,
}

impl WindowPlan {
    /// Plans the windows for `frames` code frames (`frames > 0`) at `sample_rate`.
    pub fn new(frames: usize, sample_rate: u32, policy: TailPolicy) -> Self {
        let padded_len = padded_len(frames, policy);
        let starts = (0..)
            .map(|w| w * HOP_CODES)
            .take_while(|&s| s + HOP_CODES <= padded_len)
            .collect();
        Self {
            frames,
            padded_len,
            starts,
            target_len: target_len(frames, sample_rate),
        }
    }

    /// Number of audio samples per channel the windows produce together, before
    /// cropping to `target_len`.
    pub fn assembled_len(&self, samples_per_latent: usize) -> usize {
        let window = WINDOW_LATENTS * samples_per_latent;
        let hop = (WINDOW_LATENTS - OVERLAP_LATENTS) * samples_per_latent;
        window + (self.starts.len().saturating_sub(1)) * hop
    }

    /// Output samples per channel: `min(target_len, assembled_len)`.
    pub fn output_len(&self, samples_per_latent: usize) -> usize {
        self.target_len.min(self.assembled_len(samples_per_latent))
    }
}

/// Length of the code sequence after upstream's looping pad (`frames > 0`).
pub fn padded_len(frames: usize, policy: TailPolicy) -> usize {
    let m = frames.max(WINDOW_CODES);
    let needs_pad = match policy {
        TailPolicy::Full => !(m - OVERLAP_CODES).is_multiple_of(HOP_CODES),
        TailPolicy::UpstreamQuirk => !(m - OVERLAP_LATENTS).is_multiple_of(HOP_CODES),
    };
    if needs_pad {
        (m - OVERLAP_CODES).div_ceil(HOP_CODES) * HOP_CODES + OVERLAP_CODES
    } else {
        m
    }
}

/// `int(frames / 12.5 * sample_rate)` evaluated exactly like upstream (f64, truncated).
pub fn target_len(frames: usize, sample_rate: u32) -> usize {
    (frames as f64 / CODE_FRAME_RATE * f64::from(sample_rate)) as usize
}

/// `torch.linspace(0, 1, steps + 1)` in float32: the first half counts up from 0,
/// the second half down from 1, with `step = 1 / steps` rounded to f32.
pub fn t_span(steps: usize) -> Vec<f32> {
    let n = steps + 1;
    let step = 1.0f32 / steps as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step * i as f32
            } else {
                1.0 - step * (n - i - 1) as f32
            }
        })
        .collect()
}

/// Euler `(t, dt)` per step as upstream's `solve_euler` accumulates them in f32:
/// `t₀ = 0`, `dt₀ = span₁ − span₀`, then `t += dt; dt = span[k+1] − t`.
pub fn euler_steps(steps: usize) -> Vec<(f32, f32)> {
    let span = t_span(steps);
    let mut t = span[0];
    let mut dt = span[1] - span[0];
    let mut out = Vec::with_capacity(steps);
    for k in 1..=steps {
        out.push((t, dt));
        t += dt;
        if k < steps {
            dt = span[k + 1] - t;
        }
    }
    out
}

/// Cross-fade weight `w_j` of overlap sample `j` of `len` (f64 `linspace(0, 1, len)`).
pub fn crossfade_weight(j: usize, len: usize) -> f64 {
    if len <= 1 { 0.0 } else { j as f64 / (len - 1) as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: u32 = 48_000;

    #[test]
    fn short_inputs_loop_to_one_window() {
        for n in [1, 25, 40, 371, 372] {
            let p = WindowPlan::new(n, SR, TailPolicy::Full);
            assert_eq!((p.padded_len, p.starts.clone()), (372, vec![0]), "n={n}");
        }
        assert_eq!(WindowPlan::new(25, 300, TailPolicy::Full).target_len, 600);
        assert_eq!(WindowPlan::new(40, 300, TailPolicy::Full).target_len, 960);
    }

    #[test]
    fn four_hundred_frames_make_two_windows() {
        let p = WindowPlan::new(400, 300, TailPolicy::UpstreamQuirk);
        assert_eq!(
            (p.padded_len, p.starts.clone(), p.target_len),
            (692, vec![0, 320], 9600)
        );
        assert_eq!(p.assembled_len(12), 8928 + 7680);
        assert_eq!(p, WindowPlan::new(400, 300, TailPolicy::Full));
    }

    #[test]
    fn quirk_lengths_leave_the_tail_undecoded_only_in_compat_mode() {
        let q = WindowPlan::new(424, SR, TailPolicy::UpstreamQuirk);
        assert_eq!((q.padded_len, q.starts.clone()), (424, vec![0]));
        assert_eq!(q.target_len - q.output_len(1920), 199_680);
        let f = WindowPlan::new(424, SR, TailPolicy::Full);
        assert_eq!((f.padded_len, f.starts.clone()), (692, vec![0, 320]));
        assert_eq!(f.output_len(1920), f.target_len);

        let q = WindowPlan::new(744, SR, TailPolicy::UpstreamQuirk);
        assert_eq!((q.padded_len, q.starts.clone()), (744, vec![0, 320]));
        assert_eq!(q.target_len - q.output_len(1920), 199_680);
        let f = WindowPlan::new(744, SR, TailPolicy::Full);
        assert_eq!((f.padded_len, f.starts.clone()), (1012, vec![0, 320, 640]));
        assert_eq!(f.output_len(1920), f.target_len);
    }

    #[test]
    fn every_window_fits_and_covers_the_song() {
        for n in 1..3000 {
            for policy in [TailPolicy::Full, TailPolicy::UpstreamQuirk] {
                let p = WindowPlan::new(n, SR, policy);
                let last = *p.starts.last().unwrap();
                assert!(last + WINDOW_CODES <= p.padded_len, "n={n}");
                if policy == TailPolicy::Full {
                    assert_eq!(last + WINDOW_CODES, p.padded_len, "n={n}");
                    assert_eq!(p.output_len(1920), p.target_len, "n={n}");
                }
            }
            // The policies differ only where upstream skips the pad.
            let m = n.max(WINDOW_CODES);
            let same = WindowPlan::new(n, SR, TailPolicy::Full) == WindowPlan::new(n, SR, TailPolicy::UpstreamQuirk);
            assert_eq!(same, !(m - OVERLAP_LATENTS).is_multiple_of(HOP_CODES), "n={n}");
        }
    }

    #[test]
    fn target_len_truncates_like_python() {
        assert_eq!(target_len(29, SR), 29 * 3840 - 1);
        assert_eq!(target_len(57, SR), 57 * 3840 - 1);
        assert_eq!(target_len(30, SR), 30 * 3840);
    }

    #[test]
    fn euler_times_accumulate_in_f32() {
        let span = t_span(10);
        assert_eq!(span.len(), 11);
        assert_eq!((span[0], span[3], span[10]), (0.0, 0.3f32, 1.0));
        let ts: Vec<f32> = euler_steps(10).iter().map(|s| s.0).collect();
        let expected = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        assert_eq!(ts, expected.map(|v: f64| v as f32));
        assert_eq!(
            euler_steps(4).iter().map(|s| s.0).collect::<Vec<_>>(),
            [0.0, 0.25, 0.5, 0.75]
        );
        let total: f32 = euler_steps(10).iter().map(|s| s.1).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }

    #[test]
    fn crossfade_weights_span_zero_to_one() {
        assert_eq!(crossfade_weight(0, 1248), 0.0);
        assert_eq!(crossfade_weight(1247, 1248), 1.0);
    }
}
