//! Counters and timings of a speculative generation
//! ([`super::speculative::generate_speculative`]), with the derived figures a
//! run summary or a benchmark prints: acceptance per codebook, accepted frames
//! per round, target passes per frame, frames per second.

use std::time::Duration;

/// Counters and timings of one speculative generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecStats {
    /// Rounds (one target backbone and decoder call each).
    pub rounds: usize,
    /// Frames the draft proposed (a partly fixed frame it completed counts).
    pub drafted_frames: usize,
    /// Drafted frames whose drafted codes were all accepted.
    pub accepted_frames: usize,
    /// Drafted codes judged, per codebook.
    pub judged: Vec<usize>,
    /// Drafted codes accepted, per codebook.
    pub accepted: Vec<usize>,
    /// Final frames, including a dropped end-of-audio frame.
    pub frames: usize,
    /// Rejected frames the target's decoder walk finished.
    pub target_walks: usize,
    /// Rejected frames the draft finished in a later round.
    pub draft_finishes: usize,
    /// Target backbone calls (prefill included).
    pub target_backbone_calls: usize,
    /// Target decoder calls (a whole-frame scoring call counts once).
    pub target_decoder_calls: usize,
    /// Draft backbone calls (prefill included).
    pub draft_backbone_calls: usize,
    /// Draft decoder calls.
    pub draft_decoder_calls: usize,
    /// Time in the draft's calls and sampling.
    pub draft_time: Duration,
    /// Time in the target's calls, acceptance and sampling.
    pub target_time: Duration,
    /// Wall-clock time of the whole generation.
    pub total_time: Duration,
}

impl SpecStats {
    /// Zeroed counters for `codebooks` codebooks.
    pub fn new(codebooks: usize) -> Self {
        Self {
            judged: vec![0; codebooks],
            accepted: vec![0; codebooks],
            ..Self::default()
        }
    }

    /// Fraction of drafted codes accepted, per codebook (NaN where none was judged).
    pub fn acceptance_rates(&self) -> Vec<f64> {
        self.judged
            .iter()
            .zip(&self.accepted)
            .map(|(&j, &a)| a as f64 / j as f64)
            .collect()
    }

    /// Drafted frames accepted whole per round.
    pub fn accepted_frames_per_round(&self) -> f64 {
        self.accepted_frames as f64 / self.rounds.max(1) as f64
    }

    /// Final frames per round.
    pub fn frames_per_round(&self) -> f64 {
        self.frames as f64 / self.rounds.max(1) as f64
    }

    /// Target backbone calls per final frame (plain decoding: 1).
    pub fn target_backbone_per_frame(&self) -> f64 {
        self.target_backbone_calls as f64 / self.frames.max(1) as f64
    }

    /// Target decoder calls per final frame (plain decoding: codebooks − 1).
    pub fn target_decoder_per_frame(&self) -> f64 {
        self.target_decoder_calls as f64 / self.frames.max(1) as f64
    }

    /// Final frames per second of wall-clock time.
    pub fn frames_per_second(&self) -> f64 {
        self.frames as f64 / self.total_time.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl std::fmt::Display for SpecStats {
    /// A few summary lines (acceptance per codebook, frames per round, target
    /// passes per frame, time split).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rates: Vec<String> = self
            .acceptance_rates()
            .iter()
            .map(|r| format!("{:.0}%", r * 100.0))
            .collect();
        writeln!(f, "acceptance per codebook: {}", rates.join(" "))?;
        writeln!(
            f,
            "rounds {}: {:.2} drafted frames accepted per round, {:.2} frames per round",
            self.rounds,
            self.accepted_frames_per_round(),
            self.frames_per_round()
        )?;
        writeln!(
            f,
            "target passes per frame: backbone {:.2}, decoder {:.2}; rejected frames finished by the target {}, \
             by the draft {}",
            self.target_backbone_per_frame(),
            self.target_decoder_per_frame(),
            self.target_walks,
            self.draft_finishes
        )?;
        write!(
            f,
            "{} frames in {:.2} s ({:.2} frames/s): draft {:.2} s, target {:.2} s",
            self.frames,
            self.total_time.as_secs_f64(),
            self.frames_per_second(),
            self.draft_time.as_secs_f64(),
            self.target_time.as_secs_f64()
        )
    }
}
