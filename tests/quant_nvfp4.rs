//! NVFP4 and its E2M1 elements: every code, every packed byte, ties to even,
//! saturation, hand-worked blocks with the scale arithmetic written out, zero
//! blocks and tensors, NaN/inf errors, an error-bound property over seeded random
//! data, and a reference computed independently in Python.

use heart_test_support::codes as quant_support;

use heart::quant::QuantError;
use heart::quant::e2m1::{
    E2M1_MAX, E2M1_VALUES, e2m1_to_f32, f32_to_e2m1, pack_codes, pack_nibbles, unpack_codes, unpack_nibbles,
};
use heart::quant::fp8::e4m3_to_f32;
use heart::quant::nvfp4::{NVFP4_BLOCK, Nvfp4Tensor, nvfp4_global_scale, quantize_nvfp4, quantize_nvfp4_with_global};
use quant_support::{SplitMix, nearest_code};

/// E2M1 value from the bit fields (sign, 2-bit exponent with bias 1, 1-bit
/// mantissa; exponent 0 is subnormal), independent of the lookup table.
fn e2m1_from_fields(code: u8) -> f32 {
    let sign = if code & 0b1000 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((code >> 1) & 0b11);
    let man = f32::from(code & 1);
    let magnitude = if exp == 0 {
        man * 0.5
    } else {
        (1.0 + man / 2.0) * 2f32.powi(exp - 1)
    };
    sign * magnitude
}

#[test]
fn every_e2m1_code_decodes_and_round_trips() {
    let expected = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    for code in 0..16u8 {
        let v = e2m1_to_f32(code);
        assert_eq!(v.to_bits(), e2m1_from_fields(code).to_bits(), "code {code:#x}");
        assert_eq!(v.to_bits(), E2M1_VALUES[usize::from(code)].to_bits());
        assert_eq!(v.abs(), expected[usize::from(code & 7)]);
        assert_eq!(v.is_sign_negative(), code & 8 != 0, "sign of code {code:#x}");
        assert_eq!(f32_to_e2m1(v), code, "re-encoding {v}");
    }
    assert_eq!(E2M1_MAX, 6.0);
    // Upper bits of the argument are ignored.
    assert_eq!(e2m1_to_f32(0xF3), 1.5);
}

#[test]
fn every_byte_unpacks_and_repacks() {
    for byte in 0..=u8::MAX {
        let (lo, hi) = unpack_nibbles(byte);
        assert!(lo < 16 && hi < 16);
        assert_eq!(u16::from(lo) | u16::from(hi) << 4, u16::from(byte));
        assert_eq!(pack_nibbles(lo, hi), byte);
        assert_eq!(pack_codes(&[lo, hi]), vec![byte]);
        assert_eq!(unpack_codes(&[byte], 2), vec![lo, hi]);
    }
    // First element in the low nibble.
    assert_eq!(pack_nibbles(0x1, 0xF), 0xF1);
    assert_eq!(pack_nibbles(0x13, 0x2A), 0xA3, "upper bits masked");
}

#[test]
fn odd_code_counts_pad_the_last_high_nibble() {
    assert_eq!(pack_codes(&[0x7, 0x9, 0xC]), vec![0x97, 0x0C]);
    assert_eq!(unpack_codes(&[0x97, 0x0C], 3), vec![0x7, 0x9, 0xC]);
    assert_eq!(
        unpack_codes(&[0x97], 5),
        vec![0x7, 0x9],
        "never more than the buffer holds"
    );
}

#[test]
fn ties_round_to_even() {
    let ties = [
        (0.25, 0.0),
        (0.75, 1.0),
        (1.25, 1.0),
        (1.75, 2.0),
        (2.5, 2.0),
        (3.5, 4.0),
        (5.0, 4.0),
    ];
    for (x, want) in ties {
        let code = f32_to_e2m1(x);
        assert_eq!(e2m1_to_f32(code), want, "{x}");
        assert_eq!(code & 1, 0, "{x} must land on an even code");
        assert_eq!(e2m1_to_f32(f32_to_e2m1(-x)), -want, "{}", -x);
        // Off the tie, the nearer neighbour wins.
        let below = e2m1_to_f32(f32_to_e2m1(f32::next_down(x)));
        let above = e2m1_to_f32(f32_to_e2m1(f32::next_up(x)));
        assert!(below < x && above > x, "{x}: {below} / {above}");
    }
}

#[test]
fn saturates_at_six() {
    for x in [6.0f32.next_up(), 6.5, 7.0, 1e9, f32::INFINITY] {
        assert_eq!(f32_to_e2m1(x), 0x7, "{x}");
        assert_eq!(f32_to_e2m1(-x), 0xF, "{}", -x);
    }
    // NaN has no E2M1 code; it saturates like an overflow.
    assert_eq!(f32_to_e2m1(f32::NAN), 0x7);
}

#[test]
fn small_negatives_keep_their_sign() {
    assert_eq!(f32_to_e2m1(-0.1), 0x8);
    assert_eq!(f32_to_e2m1(-0.0), 0x8);
    assert_eq!(f32_to_e2m1(0.0), 0x0);
}

#[test]
fn random_values_encode_to_the_nearest_code() {
    let mut rng = SplitMix::new(0xE2_41);
    for _ in 0..20_000 {
        let x = rng.log_spread(-2.0, 1.0);
        let family = if x.is_sign_negative() { 8..=15 } else { 0..=7 };
        assert_eq!(f32_to_e2m1(x), nearest_code(x, family, e2m1_to_f32), "x = {x}");
    }
}

/// The two blocks of [`hand_worked_blocks`].
#[rustfmt::skip]
fn hand_values() -> Vec<f32> {
    let unit = [6.0, -3.0, 1.25, 0.75, 0.25, -0.2, 2.5, 3.5, 5.0, 1.5, 0.5, -1.0, 4.0, -6.0, 0.0, 1.75];
    let mut v: Vec<f32> = unit.iter().map(|u| 0.4375 * u).collect();
    v.extend([0.3, 0.1, -0.05, 0.02, 0.0, 0.0125, -0.3, 0.2, -0.15, 0.0, 0.25, -0.25, 0.05, 0.075, 0.125, -0.01]);
    v
}

#[test]
fn hand_worked_blocks() {
    let t = quantize_nvfp4(&hand_values(), 1, 32).unwrap();
    // amax = 0.4375 · 6 = 2.625, so global = 2.625 / 2688 = 2⁻¹⁰ exactly.
    assert_eq!(t.global_scale(), 2f32.powi(-10));
    // Block 0: (2.625 / 6) / 2⁻¹⁰ = 0.4375 · 1024 = 448 → E4M3 0x7E; d = 448 · 2⁻¹⁰
    //   = 0.4375, and x / d gives back the unit values: 6 → 6 (0x7), −3 → 0xD,
    //   the ties 1.25 → 1 (0x2), 0.75 → 1 (0x2), 0.25 → 0, −0.2 → −0 (0x8),
    //   2.5 → 2 (0x4), 3.5 → 4 (0x6), 5 → 4 (0x6), then 1.5 (0x3), 0.5 (0x1),
    //   −1 (0xA), 4 (0x6), −6 (0xF), 0 (0x0), 1.75 → 2 (0x4).
    // Block 1: (0.3 / 6) / 2⁻¹⁰ = 51.2; E4M3 step in [32, 64) is 4: 12.8 → 13 →
    //   52 = 1.625 · 2⁵ → exponent field 12, mantissa 5 → 0x65; d = 52 · 2⁻¹⁰ =
    //   0.05078125. x / d: 0.3 → 5.91 → 6 (0x7); 0.1 → 1.97 → 2 (0x4);
    //   −0.05 → −0.98 → −1 (0xA); 0.02 → 0.39 → 0.5 (0x1); 0 → 0; 0.0125 → 0.25
    //   (just below the tie) → 0; −0.3 → −6 (0xF); 0.2 → 3.94 → 4 (0x6);
    //   −0.15 → −2.95 → −3 (0xD); 0 → 0; 0.25 → 4.92 → 4 (0x6); −0.25 → 0xE;
    //   0.05 → 0.98 → 1 (0x2); 0.075 → 1.48 → 1.5 (0x3); 0.125 → 2.46 → 2 (0x4);
    //   −0.01 → −0.2 → −0 (0x8).
    assert_eq!(t.block_scales(), &[0x7E, 0x65]);
    assert_eq!(t.block_divisors(), vec![0.4375, 0.05078125]);
    #[rustfmt::skip]
    let codes = [
        0x7, 0xD, 0x2, 0x2, 0x0, 0x8, 0x4, 0x6, 0x6, 0x3, 0x1, 0xA, 0x6, 0xF, 0x0, 0x4,
        0x7, 0x4, 0xA, 0x1, 0x0, 0x0, 0xF, 0x6, 0xD, 0x0, 0x6, 0xE, 0x2, 0x3, 0x4, 0x8,
    ];
    assert_eq!(t.codes(), codes);
    #[rustfmt::skip]
    assert_eq!(t.packed(), &[
        0xD7, 0x22, 0x80, 0x64, 0x36, 0xA1, 0xF6, 0x40,
        0x47, 0x1A, 0x00, 0x6F, 0x0D, 0xE6, 0x32, 0x84,
    ]);
    let want: Vec<f32> = codes
        .iter()
        .enumerate()
        .map(|(i, &c)| e2m1_to_f32(c) * [0.4375, 0.05078125][i / 16])
        .collect();
    assert_eq!(t.dequantize(), want);
    assert_eq!(t.dequantize()[0], 2.625);
    assert_eq!(t.dequantize()[16], 6.0 * 0.05078125);
}

#[test]
fn given_global_scale_saturates_block_scales() {
    // global 2⁻¹⁰ and block amax 6: (6 / 6) / 2⁻¹⁰ = 1024 > 448 → scale 0x7E,
    // d = 0.4375; 6 / d = 13.7 → saturates at 6 → 2.625; 1 / d = 2.29 → 2 → 0.875.
    let mut values = vec![0.0f32; 16];
    values[0] = 6.0;
    values[1] = -1.0;
    let t = quantize_nvfp4_with_global(&values, 1, 16, 2f32.powi(-10)).unwrap();
    assert_eq!(t.block_scales(), &[0x7E]);
    assert_eq!(&t.dequantize()[..3], &[2.625, -0.875, 0.0]);
    let err = quantize_nvfp4_with_global(&values, 1, 16, -1.0).unwrap_err();
    assert_eq!(err.to_string(), "NVFP4 global scale -1 must be finite and ≥ 0");
}

#[test]
fn zero_blocks_and_negligible_blocks_quantize_to_zero() {
    let mut values = vec![0.0f32; 48];
    values[0] = 1000.0;
    // Block 1 stays all zeros. Block 2 is so small next to the tensor amax that
    // its scale (1e-4 / 6) / (1000 / 2688) = 4.5e-5 rounds to E4M3 0 (below
    // 2⁻¹⁰, half the smallest subnormal): codes 0, no division by zero.
    values[32..].iter_mut().for_each(|v| *v = -1e-4);
    let t = quantize_nvfp4(&values, 1, 48).unwrap();
    assert_eq!(t.block_scales()[1..], [0, 0]);
    assert!(t.codes()[16..].iter().all(|&c| c == 0));
    let deq = t.dequantize();
    assert!(deq[16..].iter().all(|&v| v == 0.0), "{deq:?}");
    // Block 0: global 1000/2688, scale 448.00003 → 448, 1000 / d → 6.
    assert_eq!(deq[0], 6.0 * (448.0 * (1000.0f32 / 2688.0)));
}

#[test]
fn zero_tensor_has_zero_global_scale() {
    let t = quantize_nvfp4(&[0.0; 64], 2, 32).unwrap();
    assert_eq!(t.global_scale(), 0.0);
    assert_eq!(t.block_scales(), &[0; 4]);
    assert_eq!(t.packed(), &[0; 32]);
    assert_eq!(t.dequantize(), vec![0.0; 64]);
}

#[test]
fn rejects_ragged_rows_bad_shapes_and_non_finite_values() {
    let err = quantize_nvfp4(&[1.0; 40], 2, 20).unwrap_err();
    assert_eq!(
        err.to_string(),
        "row length 20 is not a multiple of the NVFP4 block size 16; pad the input dimension first"
    );
    let err = quantize_nvfp4(&[1.0; 31], 1, 32).unwrap_err();
    assert_eq!(err.to_string(), "expected 1×32 = 32 values, got 31");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = vec![0.25f32; 64];
        values[37] = bad;
        let err = quantize_nvfp4(&values, 2, 32).unwrap_err();
        assert!(
            matches!(
                err,
                QuantError::NonFinite {
                    index: 37,
                    row: 1,
                    col: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        let named = err.in_tensor("decoder.layers.3.mlp.w2.weight").to_string();
        assert_eq!(
            named,
            format!("tensor `decoder.layers.3.mlp.w2.weight`: non-finite value {bad} at [1, 5] (flat index 37)")
        );
    }
}

/// Largest rounding error on the E2M1 grid at magnitude `y ≤ 6`: half the
/// spacing (0.5 up to 2, 1 up to 4, 2 up to 6).
fn half_step(y: f32) -> f32 {
    if y <= 2.0 {
        0.25
    } else if y <= 4.0 {
        0.5
    } else {
        1.0
    }
}

#[test]
fn round_trip_error_is_bounded_by_the_format() {
    let mut rng = SplitMix::new(0x4E56_4650_3421);
    let (rows, cols) = (24, 256);
    // Each block gets its own magnitude across seven decades, so block scales
    // cover the whole E4M3 range, subnormals included.
    let mut values = Vec::with_capacity(rows * cols);
    for _ in 0..rows * cols / NVFP4_BLOCK {
        let magnitude = 10f32.powf(-6.0 + 7.0 * rng.unit());
        values.extend((0..NVFP4_BLOCK).map(|_| magnitude * (2.0 * rng.unit() - 1.0)));
    }
    let t = quantize_nvfp4(&values, rows, cols).unwrap();
    let deq = t.dequantize();
    let divisors = t.block_divisors();
    let (mut normal_blocks, mut subnormal_blocks) = (0, 0);
    for (b, block) in values.chunks(NVFP4_BLOCK).enumerate() {
        let d = divisors[b];
        let block_amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let mut worst = 0.0f32;
        for (i, &x) in block.iter().enumerate() {
            let got = deq[b * NVFP4_BLOCK + i];
            let err = (x - got).abs();
            worst = worst.max(err);
            if d == 0.0 {
                assert_eq!(got, 0.0);
                continue;
            }
            let y = (x / d).abs();
            if y <= 6.0 {
                // On the grid: within half a step, plus one rounding of the product.
                assert!(
                    err <= d * half_step(y) + got.abs() * f32::EPSILON,
                    "block {b} [{i}]: {x} → {got}, d {d}"
                );
            } else {
                assert_eq!(got, 6.0f32.copysign(x) * d, "block {b} [{i}] saturates");
            }
        }
        // With a normal E4M3 block scale (relative rounding ≤ 2⁻⁴), the worst
        // element error is at most one top-range half step: d ≤ (amax/6)(1 + 2⁻⁴).
        let scale = e4m3_to_f32(t.block_scales()[b]);
        if scale > 0.0 && scale < 2f32.powi(-6) {
            subnormal_blocks += 1;
        }
        if scale >= 2f32.powi(-6) {
            normal_blocks += 1;
            let bound = block_amax / 6.0 * (1.0 + 1.0 / 16.0) * (1.0 + 1e-5);
            assert!(worst <= bound, "block {b}: worst {worst} > {bound}");
        }
    }
    assert!(
        normal_blocks >= 200 && subnormal_blocks >= 10,
        "{normal_blocks} normal, {subnormal_blocks} subnormal"
    );
}

#[test]
// -0.4343 below is sampled data that happens to resemble log10(e).
#[allow(clippy::approx_constant)]
fn matches_an_independent_python_reference() {
    // Obtained with numpy 2.4.6 + ml_dtypes 0.6.0, implementing the recipe in the
    // module doc (`/tmp` script, not part of the project):
    //   rng = np.random.default_rng(20240611)
    //   x = np.round(rng.standard_normal((2, 32)) * [[0.02], [0.5]], 4).astype(np.float32)
    //   g = amax / np.float32(2688); s = ((bam / 6) / g).clip(-448, 448).astype(float8_e4m3fn)
    //   d = s.astype(np.float32) * g; q = (x / d).clip(-6, 6).astype(float4_e2m1fn)
    //   codes = q.view(np.uint8) & 0xF; packed = codes[0::2] | codes[1::2] << 4
    #[rustfmt::skip]
    let values = [
        -0.0042, -0.0104, 0.003, -0.0358, 0.0057, -0.0064, -0.0145, 0.002, -0.039, -0.0032, -0.0146, 0.0082,
        0.0088, -0.0186, -0.0187, -0.0294, -0.0158, 0.0064, 0.0171, 0.0046, 0.0007, -0.0173, 0.0039, -0.0163,
        0.0048, -0.0041, 0.0171, 0.004, 0.0274, -0.0082, 0.0151, 0.0045, 0.8483, -0.981, 0.4371, -0.5118, -0.4343,
        -0.0092, -0.7553, -0.5973, -0.2528, -0.1612, -0.9518, -0.4368, -0.073, -0.066, -0.3312, -0.002, -0.2567,
        0.5867, -0.4046, 0.0296, -0.2448, 0.4273, -0.4858, 0.4383, -0.5977, -0.6835, -0.2742, 0.0461, -0.7605,
        -0.2521, -0.002, -0.0178,
    ];
    let t = quantize_nvfp4(&values, 2, 32).unwrap();
    assert_eq!(t.global_scale().to_bits(), 968_841_083, "global {}", t.global_scale());
    assert_eq!(t.global_scale(), 0.000_364_955_37);
    assert_eq!(t.block_scales(), &[0x59, 0x55, 0x7E, 0x7B]);
    #[rustfmt::skip]
    assert_eq!(t.packed(), &[
        0xb9, 0xf1, 0xa2, 0x1c, 0x9f, 0x2c, 0xd3, 0xed, 0x3d, 0x26, 0xe0, 0xd2, 0xa2, 0x26, 0xb7, 0x25,
        0xf7, 0xd5, 0x8d, 0xee, 0xab, 0xdf, 0x99, 0x8c, 0x6c, 0x0d, 0x5c, 0x5e, 0xfe, 0x1c, 0xcf, 0x88,
    ]);
    #[rustfmt::skip]
    let want = [
        -0.0032845982, -0.009853795, 0.0032845982, -0.03941518, 0.0065691965, -0.0065691965, -0.013138393,
        0.0032845982, -0.03941518, -0.0032845982, -0.013138393, 0.0065691965, 0.009853795, -0.01970759,
        -0.01970759, -0.026276786, -0.0142332595, 0.0071166297, 0.01897768, 0.00474442, 0.0, -0.01897768,
        0.00474442, -0.0142332595, 0.00474442, -0.00474442, 0.01897768, 0.00474442, 0.028466519, -0.0071166297,
        0.0142332595, 0.00474442, 0.98100007, -0.98100007, 0.49050003, -0.49050003, -0.49050003, -0.0,
        -0.65400004, -0.65400004, -0.24525002, -0.16350001, -0.98100007, -0.49050003, -0.081750005,
        -0.081750005, -0.32700002, -0.0, -0.2569286, 0.5138572, -0.3853929, 0.0, -0.2569286, 0.3853929,
        -0.5138572, 0.3853929, -0.5138572, -0.7707858, -0.2569286, 0.06423215, -0.7707858, -0.2569286, -0.0,
        -0.0,
    ];
    let got: Vec<u32> = t.dequantize().iter().map(|v| v.to_bits()).collect();
    let want: Vec<u32> = want.iter().map(|v: &f32| v.to_bits()).collect();
    assert_eq!(got, want);
}

#[test]
fn from_parts_round_trips_and_checks() {
    let t = quantize_nvfp4(&hand_values(), 2, 16).unwrap();
    let back =
        Nvfp4Tensor::from_parts(2, 16, t.packed().to_vec(), t.block_scales().to_vec(), t.global_scale()).unwrap();
    assert_eq!(back.dequantize(), t.dequantize());
    let err = Nvfp4Tensor::from_parts(2, 16, vec![0; 15], vec![0; 2], 1.0).unwrap_err();
    assert_eq!(err.to_string(), "packed codes: expected 16 entries for 2×16, got 15");
    let err = Nvfp4Tensor::from_parts(2, 16, vec![0; 16], vec![0; 3], 1.0).unwrap_err();
    assert_eq!(err.to_string(), "block scales: expected 2 entries for 2×16, got 3");
    let err = Nvfp4Tensor::from_parts(1, 16, vec![0; 8], vec![0x7F], 1.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NVFP4 block 0 (code 0x7f) scale NaN must be finite and ≥ 0"
    );
    let err = Nvfp4Tensor::from_parts(1, 16, vec![0; 8], vec![0x38], f32::INFINITY).unwrap_err();
    assert_eq!(err.to_string(), "NVFP4 global scale inf must be finite and ≥ 0");
    assert_eq!(nvfp4_global_scale(2688.0), 1.0);
}
