//! Quality gates of `heart-eval ab`: the limits of one gate, as the tables of
//! a budget file ([`super::budget`]) spell them:
//!
//! ```toml
//! [gate.fp4]                      # one table per gate (profile), here or under [model.NAME]
//! min_top1_agreement = 0.80       # worst codebook's teacher-forced top-1 agreement
//! max_kl = 0.10                   # worst codebook's mean KL(A‖B), nats
//! min_cosine = 0.98               # worst codebook's mean logit cosine similarity
//! max_hidden_rel_error = 0.10     # mean relative error of the backbone hidden state
//! min_greedy_agreement = 0.5      # free-running greedy: fraction of identical frames
//! min_snr_db = 10.0               # audio of identical codes (both engines with a codec)
//! max_log_mel_db = 1.0            # worst prompt's log-mel distance of that audio, dB
//! max_mr_stft = 0.5               # worst prompt's multi-resolution STFT distance
//! ```
//!
//! Every key is optional; a missing key is not checked. Unknown keys are
//! errors, so a misspelt limit cannot silently pass.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors reading a thresholds file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdsError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a value of the wrong type.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key).
        message: String,
    },
    /// The gate asked for is not in the file.
    #[error("{}: no [gate.{gate}] table (gates: {available})", path.display())]
    NoGate {
        /// The file.
        path: PathBuf,
        /// The gate asked for.
        gate: String,
        /// The gates the file has, comma-separated.
        available: String,
    },
}

/// The limits of one gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Lowest acceptable top-1 agreement of the worst codebook.
    pub min_top1_agreement: Option<f64>,
    /// Highest acceptable mean KL(A‖B) of the worst codebook.
    pub max_kl: Option<f64>,
    /// Lowest acceptable mean logit cosine of the worst codebook.
    pub min_cosine: Option<f64>,
    /// Highest acceptable mean relative error of the backbone hidden state.
    pub max_hidden_rel_error: Option<f64>,
    /// Lowest acceptable fraction of identical frames in free-running greedy runs.
    pub min_greedy_agreement: Option<f64>,
    /// Lowest acceptable audio SNR (dB) of identical codes.
    pub min_snr_db: Option<f64>,
    /// Highest acceptable log-mel distance (dB) of that audio, worst prompt.
    pub max_log_mel_db: Option<f64>,
    /// Highest acceptable multi-resolution STFT distance, worst prompt.
    pub max_mr_stft: Option<f64>,
}

/// One limit checked against a measured value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The thresholds key.
    pub key: &'static str,
    /// The measured value (`None`: not measured, e.g. no codec).
    pub value: Option<f64>,
    /// The limit.
    pub limit: f64,
    /// Whether the value is within the limit (an unmeasured value fails).
    pub pass: bool,
}

/// The measured values a gate is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Worst codebook's top-1 agreement.
    pub top1_agreement: Option<f64>,
    /// Worst codebook's mean KL.
    pub kl: Option<f64>,
    /// Worst codebook's mean cosine.
    pub cosine: Option<f64>,
    /// Mean hidden-state relative error.
    pub hidden_rel_error: Option<f64>,
    /// Greedy frame agreement.
    pub greedy_agreement: Option<f64>,
    /// Audio SNR in dB (`Some(inf)` for identical audio).
    pub snr_db: Option<f64>,
    /// Worst prompt's log-mel distance, dB.
    pub log_mel_db: Option<f64>,
    /// Worst prompt's multi-resolution STFT distance.
    pub mr_stft: Option<f64>,
}

impl Gate {
    /// Checks every limit the gate sets.
    pub fn check(&self, m: &Measured) -> Vec<Check> {
        let at_least = |key, limit: Option<f64>, value: Option<f64>| {
            limit.map(|limit| Check {
                key,
                value,
                limit,
                pass: value.is_some_and(|v| v >= limit),
            })
        };
        let at_most = |key, limit: Option<f64>, value: Option<f64>| {
            limit.map(|limit| Check {
                key,
                value,
                limit,
                pass: value.is_some_and(|v| v <= limit),
            })
        };
        [
            at_least("min_top1_agreement", self.min_top1_agreement, m.top1_agreement),
            at_most("max_kl", self.max_kl, m.kl),
            at_least("min_cosine", self.min_cosine, m.cosine),
            at_most("max_hidden_rel_error", self.max_hidden_rel_error, m.hidden_rel_error),
            at_least("min_greedy_agreement", self.min_greedy_agreement, m.greedy_agreement),
            at_least("min_snr_db", self.min_snr_db, m.snr_db),
            at_most("max_log_mel_db", self.max_log_mel_db, m.log_mel_db),
            at_most("max_mr_stft", self.max_mr_stft, m.mr_stft),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_check_their_limits() {
        let g = Gate {
            min_top1_agreement: Some(0.8),
            max_kl: Some(0.1),
            ..Default::default()
        };
        let checks = g.check(&Measured {
            top1_agreement: Some(0.9),
            kl: Some(0.2),
            ..Default::default()
        });
        assert_eq!(checks.len(), 2);
        assert!(checks[0].pass);
        assert!(!checks[1].pass, "KL 0.2 > 0.1");
    }

    #[test]
    fn unmeasured_values_fail() {
        let g = Gate {
            min_snr_db: Some(10.0),
            ..Default::default()
        };
        assert!(!g.check(&Measured::default())[0].pass, "no codec, SNR gate set: fail");
    }
}
