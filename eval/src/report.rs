//! The A/B report: what was measured, the gate's checks, and its renderings
//! (a terminal table and `report.md`; [`crate::output`] writes the report
//! folder with `report.json` and the plots).

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::Summary;
use super::thresholds::{Check, Gate, Measured};

/// Teacher-forced measures of one codebook.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodebookStats {
    /// Codebook index (0 = the backbone's).
    pub codebook: usize,
    /// Cosine similarity of the guided logits.
    pub cosine: Summary,
    /// `KL(A‖B)` of the sampling distributions, nats.
    pub kl: Summary,
    /// Fraction of frames whose argmax agrees.
    pub top1_agreement: f64,
}

/// Relative error of each layer's residual stream (engines with layer taps).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerErrors {
    /// Backbone layers, in order.
    pub backbone: Vec<Summary>,
    /// Decoder layers, in order.
    pub decoder: Vec<Summary>,
}

/// Free-running greedy comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GreedyStats {
    /// Mean over prompts of the fraction of identical frames.
    pub agreement: f64,
    /// Prompts whose greedy runs were identical throughout.
    pub identical_prompts: usize,
    /// First differing frame, over the prompts that differ.
    pub first_divergence: Summary,
    /// Per frame index: the fraction of prompts whose frame is identical in
    /// both runs (a frame only one engine produced counts as different).
    pub per_frame: Vec<f64>,
}

/// A prompt the A/B could not use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptSkip {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// Everything an A/B measured, and the verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AbReport {
    /// Engine folder A (the reference).
    pub a: String,
    /// Engine folder B (under test).
    pub b: String,
    /// A's build profile (or precision).
    pub a_profile: String,
    /// B's build profile (or precision).
    pub b_profile: String,
    /// Whether both were built from the same checkpoint weights (SHA-256).
    pub same_checkpoint: bool,
    /// SHA-256 of the prompts file.
    pub prompts_sha256: String,
    /// Prompts compared.
    pub prompts: usize,
    /// Prompts skipped, with the reason.
    pub skipped: Vec<PromptSkip>,
    /// Teacher-forced frames compared.
    pub frames: usize,
    /// Per-codebook measures.
    pub codebooks: Vec<CodebookStats>,
    /// Relative error of the backbone's final hidden state.
    pub hidden_rel_error: Summary,
    /// Per-layer relative errors, when both engines expose layer taps.
    pub layers: Option<LayerErrors>,
    /// Free-running greedy agreement.
    pub greedy: GreedyStats,
    /// Audio SNR over prompts whose audio differed (both engines with a codec).
    pub audio_snr_db: Option<Summary>,
    /// Prompts whose audio was bit-identical.
    pub audio_identical: usize,
    /// Why no gate applies, when none does (no budget for this model).
    pub budget: Option<String>,
    /// B's cost relative to an fp8 engine of the same model (`--fp8 DIR`).
    pub relative_to_fp8: Option<RelativeCost>,
    /// Log-mel distance (dB) of B's audio against A's, over prompts.
    pub audio_log_mel_db: Option<Summary>,
    /// Multi-resolution STFT distance of B's audio against A's, over prompts.
    pub audio_mr_stft: Option<Summary>,
    /// The gate applied.
    pub gate: Option<String>,
    /// Its checks.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub pass: bool,
}

/// B's cost relative to an fp8 engine of the same model, both against the
/// same A: ratios travel between models better than absolute KL (a model with
/// sharper logits has a larger KL at every precision).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelativeCost {
    /// The fp8 engine folder.
    pub fp8: String,
    /// Worst codebook's mean KL: B's / fp8's.
    pub kl_ratio: Option<f64>,
    /// Worst codebook's top-1 loss (1 − agreement): B's / fp8's.
    pub top1_loss_ratio: Option<f64>,
    /// Mean hidden-state relative error: B's / fp8's.
    pub hidden_error_ratio: Option<f64>,
}

impl RelativeCost {
    /// `b`'s measures over `fp8`'s (an A/B of the fp8 engine against the same A).
    pub fn of(b: &AbReport, fp8: &AbReport) -> Self {
        let (mb, mf) = (b.measured(), fp8.measured());
        let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
            (Some(x), Some(y)) if y > 0.0 => Some(x / y),
            _ => None,
        };
        Self {
            fp8: fp8.b.clone(),
            kl_ratio: ratio(mb.kl, mf.kl),
            top1_loss_ratio: ratio(mb.top1_agreement.map(|t| 1.0 - t), mf.top1_agreement.map(|t| 1.0 - t)),
            hidden_error_ratio: ratio(mb.hidden_rel_error, mf.hidden_rel_error),
        }
    }
}

impl AbReport {
    /// The values a gate is checked against: worst codebook for the
    /// per-codebook measures, worst prompt for the SNR (∞ if all identical).
    pub fn measured(&self) -> Measured {
        let worst =
            |f: &dyn Fn(&CodebookStats) -> f64, pick: fn(f64, f64) -> f64| self.codebooks.iter().map(f).reduce(pick);
        Measured {
            top1_agreement: worst(&|c| c.top1_agreement, f64::min),
            kl: worst(&|c| c.kl.mean, f64::max),
            cosine: worst(&|c| c.cosine.mean, f64::min),
            hidden_rel_error: (self.hidden_rel_error.count > 0).then_some(self.hidden_rel_error.mean),
            greedy_agreement: Some(self.greedy.agreement),
            snr_db: self
                .audio_snr_db
                .map(|s| if s.count > 0 { s.min } else { f64::INFINITY }),
            log_mel_db: self.audio_log_mel_db.map(|s| s.max),
            mr_stft: self.audio_mr_stft.map(|s| s.max),
        }
    }

    /// Checks `gate` (called `name`) and records the verdict.
    pub fn apply_gate(&mut self, name: &str, gate: &Gate) {
        self.checks = gate.check(&self.measured());
        self.pass = self.checks.iter().all(|c| c.pass);
        self.gate = Some(name.to_string());
    }

    /// The report as Markdown (also the terminal summary).
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# heart-eval ab: {} vs {}\n", self.b_profile, self.a_profile);
        let _ = writeln!(s, "- A: `{}`\n- B: `{}`", self.a, self.b);
        let _ = writeln!(
            s,
            "- {} prompts, {} teacher-forced frames{}; same checkpoint: {}\n",
            self.prompts,
            self.frames,
            if self.skipped.is_empty() {
                String::new()
            } else {
                format!(", {} prompts skipped", self.skipped.len())
            },
            if self.same_checkpoint { "yes" } else { "NO" }
        );
        let _ = writeln!(s, "| codebook | cosine mean | cosine min | KL mean | KL max | top-1 |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|");
        for c in &self.codebooks {
            let _ = writeln!(
                s,
                "| {} | {:.5} | {:.5} | {:.5} | {:.5} | {:.3} |",
                c.codebook, c.cosine.mean, c.cosine.min, c.kl.mean, c.kl.max, c.top1_agreement
            );
        }
        let h = self.hidden_rel_error;
        let _ = writeln!(s, "\nhidden state relative error: mean {:.5}, max {:.5}", h.mean, h.max);
        if let Some(l) = &self.layers {
            let fmt = |v: &[Summary]| v.iter().map(|x| format!("{:.4}", x.mean)).collect::<Vec<_>>().join(" ");
            let _ = writeln!(s, "per-layer relative error (mean): backbone [{}]", fmt(&l.backbone));
            let _ = writeln!(s, "                                  decoder [{}]", fmt(&l.decoder));
        }
        let g = &self.greedy;
        let _ = writeln!(
            s,
            "greedy: {:.3} of frames identical; {} prompts identical throughout; first divergence mean {:.1}",
            g.agreement, g.identical_prompts, g.first_divergence.mean
        );
        match self.audio_snr_db {
            Some(snr) if snr.count > 0 => {
                let _ = writeln!(
                    s,
                    "audio SNR: mean {:.2} dB, min {:.2} dB ({} prompts bit-identical)",
                    snr.mean, snr.min, self.audio_identical
                );
            }
            Some(_) => {
                let _ = writeln!(s, "audio: bit-identical for every prompt");
            }
            None => {
                let _ = writeln!(s, "audio: not compared (a folder has no codec)");
            }
        }
        if let Some(r) = &self.relative_to_fp8 {
            let f = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.2}×"));
            let _ = writeln!(
                s,
                "cost relative to fp8 (`{}`): KL {}, top-1 loss {}, hidden error {}",
                r.fp8,
                f(r.kl_ratio),
                f(r.top1_loss_ratio),
                f(r.hidden_error_ratio)
            );
        }
        if let Some(why) = &self.budget {
            let _ = writeln!(s, "\n{why}");
        }
        if let (Some(mel), Some(mr)) = (self.audio_log_mel_db, self.audio_mr_stft) {
            let _ = writeln!(
                s,
                "audio log-mel distance: mean {:.3} dB, max {:.3} dB; multi-resolution STFT distance: mean {:.4}, \
                 max {:.4}",
                mel.mean, mel.max, mr.mean, mr.max
            );
        }
        if let Some(gate) = &self.gate {
            let _ = writeln!(s, "\n## gate `{gate}`: {}\n", if self.pass { "PASS" } else { "FAIL" });
            let _ = writeln!(s, "| check | measured | limit | |");
            let _ = writeln!(s, "|---|---:|---:|---|");
            for c in &self.checks {
                let value = c.value.map_or("n/a".to_string(), |v| format!("{v:.5}"));
                let verdict = if c.pass { "ok" } else { "FAIL" };
                let _ = writeln!(s, "| {} | {value} | {} | {verdict} |", c.key, c.limit);
            }
        }
        for skip in &self.skipped {
            let _ = writeln!(s, "\nskipped `{}`: {}", skip.name, skip.reason);
        }
        s
    }
}
