//! Numeric precisions an engine can be built at.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Storage/compute precision of an exported graph's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// IEEE float32 weights and activations.
    Fp32,
    /// IEEE float16 weights and activations (norms and softmax accumulate in fp32).
    Fp16,
    /// FP8 E4M3FN weights with per-channel scales.
    Fp8,
    /// NVFP4: E2M1 values, FP8-E4M3 scale per 16-element block, FP32 global scale.
    Fp4,
    /// 8-bit unsigned integer weights in 32-element blocks along the input
    /// dimension, an f32 scale and a uint8 zero point per block (ONNX Runtime's
    /// `MatMulNBits`); f32 activations.
    Int8,
    /// 4-bit unsigned integer weights in 32-element blocks along the input
    /// dimension, an f32 scale and a 4-bit zero point per block (ONNX Runtime's
    /// `MatMulNBits`); f32 activations.
    Int4,
}

impl Precision {
    /// All precisions, in CLI order.
    pub const ALL: [Precision; 6] = [Self::Fp32, Self::Fp16, Self::Fp8, Self::Fp4, Self::Int8, Self::Int4];

    /// The CLI / manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fp32 => "fp32",
            Self::Fp16 => "fp16",
            Self::Fp8 => "fp8",
            Self::Fp4 => "fp4",
            Self::Int8 => "int8",
            Self::Int4 => "int4",
        }
    }

    /// The dtype of activations, KV cache and unquantized weights of the
    /// built-in build profile of this precision: f32 for fp32 and for int8 /
    /// int4 (ONNX Runtime's `MatMulNBits` CPU kernels take f32 activations),
    /// f16 for fp16, fp8 and fp4.
    pub fn default_compute(self) -> Precision {
        match self {
            Self::Fp32 | Self::Int8 | Self::Int4 => Self::Fp32,
            Self::Fp16 | Self::Fp8 | Self::Fp4 => Self::Fp16,
        }
    }

    /// Bytes per element of a compute dtype (fp32 or fp16); `None` for the
    /// storage-only formats.
    pub fn compute_bytes(self) -> Option<u64> {
        match self {
            Self::Fp32 => Some(4),
            Self::Fp16 => Some(2),
            _ => None,
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
            format!("unknown precision `{s}` (expected one of {})", names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_strings() {
        for p in Precision::ALL {
            assert_eq!(p.as_str().parse::<Precision>().unwrap(), p);
        }
        let err = "bf16".parse::<Precision>().unwrap_err();
        assert!(err.contains("`bf16`") && err.contains("fp4, int8, int4"), "{err}");
        assert_eq!("int4".parse::<Precision>().unwrap(), Precision::Int4);
        assert_eq!(serde_json::to_string(&Precision::Int8).unwrap(), "\"int8\"");
    }
}
