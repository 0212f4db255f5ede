//! Quality budgets belong to a model: which [`Gate`] `heart-eval ab` applies
//! to engine B.
//!
//! A budget file holds either or both of
//! - `[model.NAME]` tables, each naming the checkpoint it belongs to by the
//!   SHA-256 of its weight files, with one `[model.NAME.gate.PROFILE]` table
//!   per build profile (keys as in [`super::thresholds`]):
//!   ```toml
//!   [model.synth-tiny-seed0]
//!   mula_weights_sha256 = ["3f0c…"]     # every weight file of the checkpoint
//!   note = "heart-build synth --size tiny --seed 0"
//!   [model.synth-tiny-seed0.gate.fp4]
//!   max_kl = 0.08
//!   ```
//!   These apply only to engines built from exactly those weights (B's
//!   manifest records their hashes). `configs/ab-thresholds.toml` holds the
//!   CI's own models this way and nothing else.
//! - top-level `[gate.PROFILE]` tables: a budget the user wrote for the model
//!   they compare (`heart-eval ab --budget FILE`); applied to any model.
//!
//! Without a matching model table or top-level gate, the A/B reports "no
//! budget for this model" and gates nothing: limits measured on one model say
//! nothing about another (an fp4 engine of an unseen random checkpoint has a
//! KL of 0.555 where the CI model's fp4 has 0.038).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::thresholds::{Gate, ThresholdsError};

/// One model's budgets.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelBudget {
    /// SHA-256 of every weight file of the checkpoint (order-free).
    mula_weights_sha256: Vec<String>,
    /// What the model is (free text).
    #[serde(default)]
    note: Option<String>,
    /// Gates by build profile.
    #[serde(default)]
    gate: BTreeMap<String, Gate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    model: BTreeMap<String, ModelBudget>,
    #[serde(default)]
    gate: BTreeMap<String, Gate>,
}

/// A parsed budget file.
#[derive(Debug)]
pub struct Budgets {
    path: PathBuf,
    models: BTreeMap<String, ModelBudget>,
    gates: BTreeMap<String, Gate>,
}

/// What a budget file says about one engine.
#[derive(Debug, Clone, PartialEq)]
pub enum Budget {
    /// Gate `gate` applies; `name` says whose it is (`MODEL.PROFILE`, or `PROFILE`
    /// for a top-level gate).
    Gate {
        /// How the report names it.
        name: String,
        /// The limits.
        gate: Gate,
    },
    /// Nothing applies; why, for the report.
    None(String),
}

impl Budgets {
    /// Reads `path`; unknown keys are errors naming the file.
    pub fn load(path: &Path) -> Result<Self, ThresholdsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ThresholdsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let file: File = toml::from_str(&text).map_err(|e| ThresholdsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            models: file.model,
            gates: file.gate,
        })
    }

    /// The budget for an engine built from weights `weights_sha256` with gate
    /// (profile) `gate`. `explicit`: the user named the gate (`--gate`), so a
    /// missing one is an error rather than "no budget".
    pub fn lookup(&self, weights_sha256: &[&str], gate: &str, explicit: bool) -> Result<Budget, ThresholdsError> {
        let mut ours: Vec<&str> = weights_sha256.to_vec();
        ours.sort_unstable();
        let model = self.models.iter().find(|(_, m)| {
            let mut theirs: Vec<&str> = m.mula_weights_sha256.iter().map(String::as_str).collect();
            theirs.sort_unstable();
            !ours.is_empty() && theirs == ours
        });
        let (gates, prefix) = match model {
            Some((name, m)) => (&m.gate, format!("{name}.")),
            None if !self.gates.is_empty() => (&self.gates, String::new()),
            None => {
                let short: Vec<String> = ours.iter().map(|h| h.chars().take(12).collect()).collect();
                let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
                return Ok(Budget::None(format!(
                    "no budget for this model (weights SHA-256 {}) in {} (budgets for: {}); \
                     nothing gated. Write one for your model and pass it with --budget FILE",
                    if short.is_empty() {
                        "not recorded".to_string()
                    } else {
                        short.join(", ")
                    },
                    self.path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        };
        match gates.get(gate) {
            Some(g) => Ok(Budget::Gate {
                name: format!("{prefix}{gate}"),
                gate: *g,
            }),
            None if explicit => Err(ThresholdsError::NoGate {
                path: self.path.clone(),
                gate: format!("{prefix}{gate}"),
                available: gates.keys().cloned().collect::<Vec<_>>().join(", "),
            }),
            None => Ok(Budget::None(format!(
                "no budget for profile `{gate}` of {} in {}; nothing gated",
                model.map_or("this model".to_string(), |(n, _)| format!("model `{n}`")),
                self.path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, Budgets) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, text).unwrap();
        let b = Budgets::load(&path).unwrap();
        (dir, b)
    }

    #[test]
    fn model_budgets_apply_only_to_their_weights() {
        let (_d, b) = file("[model.ci]\nmula_weights_sha256 = [\"bb\", \"aa\"]\n[model.ci.gate.fp4]\nmax_kl = 0.1\n");
        let Budget::Gate { name, gate } = b.lookup(&["aa", "bb"], "fp4", false).unwrap() else {
            panic!("the CI model's budget applies");
        };
        assert_eq!((name.as_str(), gate.max_kl), ("ci.fp4", Some(0.1)));
        let Budget::None(why) = b.lookup(&["cc"], "fp4", false).unwrap() else {
            panic!("another model has no budget");
        };
        assert!(why.contains("no budget for this model") && why.contains("ci"), "{why}");
        let Budget::None(why) = b.lookup(&["aa", "bb"], "int4", false).unwrap() else {
            panic!("no int4 budget");
        };
        assert!(why.contains("int4") && why.contains("`ci`"), "{why}");
        let err = b.lookup(&["aa", "bb"], "int4", true).unwrap_err().to_string();
        assert!(err.contains("ci.int4") && err.contains("fp4"), "{err}");
    }

    #[test]
    fn top_level_gates_are_the_users_own_budget() {
        let (_d, b) = file("[gate.fp4]\nmin_cosine = 0.9\n");
        assert!(matches!(b.lookup(&["any"], "fp4", false).unwrap(), Budget::Gate { .. }));
        let err = b.lookup(&["any"], "fp9", true).unwrap_err().to_string();
        assert!(err.contains("no [gate.fp9]") && err.contains("b.toml"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("typo.toml");
        std::fs::write(&path, "[gate.fp4]\nmax_kll = 0.1\n").unwrap();
        let err = Budgets::load(&path).unwrap_err().to_string();
        assert!(err.contains("typo.toml") && err.contains("max_kll"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[model.x]\nweights = []\n").unwrap();
        let err = Budgets::load(&path).unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("weights"), "{err}");
    }
}
