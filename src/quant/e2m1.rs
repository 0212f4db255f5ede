//! FP4 E2M1 (OCP MX / NVIDIA NVFP4 element type): 1 sign, 2 exponent and 1
//! mantissa bit, no infinities or NaN.
//!
//! Nibble layout `s e e m` (sign = bit 3). Magnitudes by the low three bits:
//! `000` 0, `001` 0.5 (subnormal), `010` 1, `011` 1.5, `100` 2, `101` 3, `110` 4,
//! `111` 6. Encoding rounds to nearest with ties to the even code (low bit 0),
//! so the midpoints go 0.25 → 0, 0.75 → 1, 1.25 → 1, 1.75 → 2, 2.5 → 2,
//! 3.5 → 4, 5 → 4; magnitudes above 6 saturate to 6. The sign bit is copied
//! from the input, so small negative values (and −0) encode as `1000` (−0).
//!
//! Two codes share a byte, the first (even-index) element in the low nibble —
//! the ONNX FLOAT4E2M1 and TensorRT packing. An odd count leaves the last high
//! nibble 0.

/// Largest E2M1 magnitude.
pub const E2M1_MAX: f32 = 6.0;

/// Value of each 4-bit code: the lookup table the portable ONNX lowering
/// `Gather`s from. Index 8 is −0.
pub const E2M1_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// The sign bit of a code.
pub const E2M1_SIGN: u8 = 0x08;

/// The value of the low nibble of `code` (upper bits are ignored).
pub fn e2m1_to_f32(code: u8) -> f32 {
    E2M1_VALUES[usize::from(code & 0x0F)]
}

/// The E2M1 code nearest to `x`, ties to even, saturating at ±6 (±inf too).
/// NaN, which E2M1 cannot represent, also saturates to ±6; the tensor
/// quantizers reject NaN before encoding.
pub fn f32_to_e2m1(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { E2M1_SIGN } else { 0 };
    sign | magnitude_code(x.abs())
}

/// Code of a magnitude: each comparison is a midpoint between neighbours, `<=`
/// where the lower neighbour has the even code, `<` where the upper one has.
fn magnitude_code(a: f32) -> u8 {
    match a {
        a if a <= 0.25 => 0,
        a if a < 0.75 => 1,
        a if a <= 1.25 => 2,
        a if a < 1.75 => 3,
        a if a <= 2.5 => 4,
        a if a < 3.5 => 5,
        a if a <= 5.0 => 6,
        _ => 7,
    }
}

/// One byte from two codes: `lo` in bits 0–3, `hi` in bits 4–7 (each masked
/// to 4 bits).
pub fn pack_nibbles(lo: u8, hi: u8) -> u8 {
    (lo & 0x0F) | ((hi & 0x0F) << 4)
}

/// The two codes of a byte, `(low nibble, high nibble)`.
pub fn unpack_nibbles(byte: u8) -> (u8, u8) {
    (byte & 0x0F, byte >> 4)
}

/// Packs codes two per byte, first element low; an odd count pads the last
/// high nibble with 0.
pub fn pack_codes(codes: &[u8]) -> Vec<u8> {
    codes
        .chunks(2)
        .map(|pair| pack_nibbles(pair[0], pair.get(1).copied().unwrap_or(0)))
        .collect()
}

/// The first `count` codes of a packed buffer (fewer if it holds fewer than
/// `count`).
pub fn unpack_codes(packed: &[u8], count: usize) -> Vec<u8> {
    packed
        .iter()
        .flat_map(|&b| {
            let (lo, hi) = unpack_nibbles(b);
            [lo, hi]
        })
        .take(count)
        .collect()
}
