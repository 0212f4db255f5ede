//! Bit-exact reference quantization formats and the calibration prompt set.
//!
//! - [`fp8`]: FP8 E4M3FN scalars (round-to-nearest-even, saturating at ±448) and
//!   per-tensor / per-row scaled tensors.
//! - [`e2m1`]: FP4 E2M1 scalars, the 16-entry decode table and nibble packing.
//! - [`nvfp4`]: NVFP4 tensors: E2M1 values in 16-element blocks along the last
//!   dimension, one E4M3 scale per block, one FP32 global scale per tensor.
//! - [`blockwise`]: int4 / int8 weights in 32-element blocks along the input
//!   dimension, one f32 scale and one integer zero point per block, packed as
//!   ONNX Runtime's `MatMulNBits` reads them.
//! - [`calibration`]: the tag + lyrics prompt set the calibration run uses.
//!
//! These functions are the definition the ONNX lowerings are checked against: a
//! graph that dequantizes a tensor produced here must reproduce
//! [`nvfp4::Nvfp4Tensor::dequantize`] / [`fp8::Fp8Tensor::dequantize`] bit for bit,
//! so each doc comment states the exact f32 expression evaluated.
//!
//! Tensors are row-major `[rows, cols]` with `cols` the input (reduction)
//! dimension, as PyTorch stores `nn.Linear` weights (`[out, in]`).
//! Non-finite inputs are rejected with [`QuantError::NonFinite`], which names the
//! element; wrap it with [`QuantError::in_tensor`] to name the tensor.

pub mod blockwise;
pub mod calibration;
pub mod e2m1;
pub mod fp8;
pub mod int4x16;
pub mod nvfp4;

/// Errors of the quantizers. Every variant names the offending element or
/// quantity, and [`QuantError::Tensor`] adds the tensor name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The value count does not match `rows × cols`.
    #[error("expected {rows}×{cols} = {expected} values, got {found}")]
    Shape {
        /// Rows requested.
        rows: usize,
        /// Columns requested.
        cols: usize,
        /// `rows × cols` (saturated on overflow).
        expected: usize,
        /// Values supplied.
        found: usize,
    },
    /// NVFP4 needs whole 16-element blocks per row; the caller must pad.
    #[error("row length {cols} is not a multiple of the NVFP4 block size {block}; pad the input dimension first")]
    RaggedBlocks {
        /// Row length supplied.
        cols: usize,
        /// The block size.
        block: usize,
    },
    /// A NaN or infinity in the input.
    #[error("non-finite value {value} at [{row}, {col}] (flat index {index})")]
    NonFinite {
        /// Flat row-major index.
        index: usize,
        /// Row of the element.
        row: usize,
        /// Column of the element.
        col: usize,
        /// The value (NaN or ±inf).
        value: f32,
    },
    /// A supplied scale is negative, NaN or infinite.
    #[error("{what} scale {value} must be finite and ≥ 0")]
    BadScale {
        /// Which scale (`global`, `row 3`, …).
        what: String,
        /// The value supplied.
        value: f32,
    },
    /// Parts handed to a `from_parts` constructor have inconsistent lengths.
    #[error("{what}: expected {expected} entries for {rows}×{cols}, got {found}")]
    Parts {
        /// Which part (`packed codes`, `block scales`, `scales`, `codes`).
        what: &'static str,
        /// Rows of the tensor.
        rows: usize,
        /// Columns of the tensor.
        cols: usize,
        /// Entries the shape requires.
        expected: usize,
        /// Entries supplied.
        found: usize,
    },
    /// Another error, about the named tensor.
    #[error("tensor `{name}`: {source}")]
    Tensor {
        /// The tensor (checkpoint name).
        name: String,
        /// What is wrong with it.
        source: Box<QuantError>,
    },
}

impl QuantError {
    /// This error, attributed to the tensor `name` (checkpoint name).
    pub fn in_tensor(self, name: impl Into<String>) -> Self {
        Self::Tensor {
            name: name.into(),
            source: Box::new(self),
        }
    }
}

/// Checks `values.len() == rows × cols`.
fn check_shape(values: &[f32], rows: usize, cols: usize) -> Result<(), QuantError> {
    let expected = rows.saturating_mul(cols);
    if values.len() == expected && rows.checked_mul(cols).is_some() {
        Ok(())
    } else {
        Err(QuantError::Shape {
            rows,
            cols,
            expected,
            found: values.len(),
        })
    }
}

/// The first NaN/±inf in a row-major `[_, cols]` tensor, as an error.
fn check_finite(values: &[f32], cols: usize) -> Result<(), QuantError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(QuantError::NonFinite {
            index,
            row: index / cols.max(1),
            col: index % cols.max(1),
            value: values[index],
        }),
    }
}

/// Checks that a scale is finite and non-negative.
fn check_scale(what: impl FnOnce() -> String, value: f32) -> Result<(), QuantError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(QuantError::BadScale { what: what(), value })
    }
}

/// Largest magnitude of finite values (0 for an empty slice).
fn amax(values: &[f32]) -> f32 {
    values.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}
