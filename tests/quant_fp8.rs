//! FP8 E4M3FN: every code decoded against a table produced independently
//! (`ml_dtypes.float8_e4m3fn`), every finite code re-encoded, ties to even at
//! every midpoint, saturation, NaN, random values against a brute-force nearest
//! search, and hand-worked per-tensor / per-row scaled tensors.

use heart_test_support::codes as quant_support;

use heart::quant::QuantError;
use heart::quant::fp8::{
    E4M3_MAX, E4M3_MAX_CODE, E4M3_MIN_NORMAL, E4M3_MIN_SUBNORMAL, E4M3_NAN, Fp8Granularity, Fp8Tensor, e4m3_to_f32,
    f32_to_e4m3, quantize_fp8,
};
use quant_support::{SplitMix, nearest_code};

/// Values of codes 0x00..=0x7E, printed by
/// `np.arange(127, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn).astype(np.float32)`
/// (ml_dtypes 0.6.0).
const POSITIVE: [f32; 127] = [
    0.0,
    0.001953125,
    0.00390625,
    0.005859375,
    0.0078125,
    0.009765625,
    0.01171875,
    0.013671875,
    0.015625,
    0.017578125,
    0.01953125,
    0.021484375,
    0.0234375,
    0.025390625,
    0.02734375,
    0.029296875,
    0.03125,
    0.03515625,
    0.0390625,
    0.04296875,
    0.046875,
    0.05078125,
    0.0546875,
    0.05859375,
    0.0625,
    0.0703125,
    0.078125,
    0.0859375,
    0.09375,
    0.1015625,
    0.109375,
    0.1171875,
    0.125,
    0.140625,
    0.15625,
    0.171875,
    0.1875,
    0.203125,
    0.21875,
    0.234375,
    0.25,
    0.28125,
    0.3125,
    0.34375,
    0.375,
    0.40625,
    0.4375,
    0.46875,
    0.5,
    0.5625,
    0.625,
    0.6875,
    0.75,
    0.8125,
    0.875,
    0.9375,
    1.0,
    1.125,
    1.25,
    1.375,
    1.5,
    1.625,
    1.75,
    1.875,
    2.0,
    2.25,
    2.5,
    2.75,
    3.0,
    3.25,
    3.5,
    3.75,
    4.0,
    4.5,
    5.0,
    5.5,
    6.0,
    6.5,
    7.0,
    7.5,
    8.0,
    9.0,
    10.0,
    11.0,
    12.0,
    13.0,
    14.0,
    15.0,
    16.0,
    18.0,
    20.0,
    22.0,
    24.0,
    26.0,
    28.0,
    30.0,
    32.0,
    36.0,
    40.0,
    44.0,
    48.0,
    52.0,
    56.0,
    60.0,
    64.0,
    72.0,
    80.0,
    88.0,
    96.0,
    104.0,
    112.0,
    120.0,
    128.0,
    144.0,
    160.0,
    176.0,
    192.0,
    208.0,
    224.0,
    240.0,
    256.0,
    288.0,
    320.0,
    352.0,
    384.0,
    416.0,
    448.0,
];

#[test]
fn decodes_all_256_codes() {
    for code in 0..=u8::MAX {
        let got = e4m3_to_f32(code);
        let magnitude = code & 0x7F;
        if magnitude == E4M3_NAN {
            assert!(got.is_nan(), "code {code:#04x} must be NaN, got {got}");
            continue;
        }
        let want = POSITIVE[usize::from(magnitude)];
        let want = if code & 0x80 != 0 { -want } else { want };
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "code {code:#04x}: got {got}, want {want}"
        );
    }
}

#[test]
fn reencodes_every_finite_code() {
    for code in (0..=u8::MAX).filter(|c| c & 0x7F != E4M3_NAN) {
        assert_eq!(f32_to_e4m3(e4m3_to_f32(code)), code, "code {code:#04x}");
    }
}

#[test]
fn zeros_subnormals_and_extremes() {
    assert_eq!(e4m3_to_f32(0x00).to_bits(), 0.0f32.to_bits());
    assert_eq!(e4m3_to_f32(0x80).to_bits(), (-0.0f32).to_bits());
    assert_eq!(f32_to_e4m3(-0.0), 0x80);
    assert_eq!(E4M3_MIN_SUBNORMAL, 2f32.powi(-9));
    assert_eq!(e4m3_to_f32(0x01), E4M3_MIN_SUBNORMAL);
    // Subnormals are m · 2⁻⁹; the largest is 7 · 2⁻⁹, just below 2⁻⁶.
    for m in 1..8u8 {
        assert_eq!(e4m3_to_f32(m), f32::from(m) * 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x80 | m), -f32::from(m) * 2f32.powi(-9));
    }
    assert_eq!(e4m3_to_f32(0x08), E4M3_MIN_NORMAL);
    assert_eq!(E4M3_MIN_NORMAL, 2f32.powi(-6));
    assert_eq!(e4m3_to_f32(E4M3_MAX_CODE), E4M3_MAX);
    assert_eq!(E4M3_MAX, 448.0);
    assert_eq!(e4m3_to_f32(0xFE), -448.0);
    // Below half the smallest subnormal rounds to zero, keeping the sign.
    assert_eq!(f32_to_e4m3(2f32.powi(-11)), 0x00);
    assert_eq!(f32_to_e4m3(-2f32.powi(-11)), 0x80);
    assert_eq!(f32_to_e4m3(f32::from_bits(1)), 0x00);
}

#[test]
fn ties_go_to_even_at_every_midpoint() {
    for lo in 0..E4M3_MAX_CODE {
        let hi = lo + 1;
        let (a, b) = (e4m3_to_f32(lo), e4m3_to_f32(hi));
        // Both have at most 4 significant bits, so the midpoint is exact in f32.
        let mid = (a + b) / 2.0;
        assert!(mid > a && mid < b);
        let even = if lo % 2 == 0 { lo } else { hi };
        assert_eq!(
            f32_to_e4m3(mid),
            even,
            "midpoint {mid} of {lo:#04x} ({a}) and {hi:#04x} ({b})"
        );
        assert_eq!(f32_to_e4m3(mid.next_down()), lo, "just below {mid}");
        assert_eq!(f32_to_e4m3(mid.next_up()), hi, "just above {mid}");
        assert_eq!(f32_to_e4m3(-mid), 0x80 | even, "midpoint {}", -mid);
        assert_eq!(f32_to_e4m3(-mid.next_down()), 0x80 | lo);
        assert_eq!(f32_to_e4m3(-mid.next_up()), 0x80 | hi);
    }
}

#[test]
fn saturates_at_448() {
    for x in [448.0f32.next_up(), 463.9, 464.0, 480.0, 1e6, f32::MAX, f32::INFINITY] {
        assert_eq!(f32_to_e4m3(x), E4M3_MAX_CODE, "{x}");
        assert_eq!(f32_to_e4m3(-x), 0x80 | E4M3_MAX_CODE, "{}", -x);
    }
    // 432 is the midpoint of 416 (0x7D, odd) and 448 (0x7E, even).
    assert_eq!(f32_to_e4m3(432.0), E4M3_MAX_CODE);
    assert_eq!(f32_to_e4m3(432.0f32.next_down()), 0x7D);
}

#[test]
fn nan_encodes_to_the_nan_code_of_its_sign() {
    assert_eq!(f32_to_e4m3(f32::NAN), E4M3_NAN);
    assert_eq!(f32_to_e4m3(-f32::NAN), 0x80 | E4M3_NAN);
}

#[test]
fn random_values_encode_to_the_nearest_code() {
    let mut rng = SplitMix::new(0xE4_3F_00_01);
    for _ in 0..20_000 {
        let x = rng.log_spread(-4.0, 2.9);
        let family = if x.is_sign_negative() { 0x80..=0xFE } else { 0x00..=0x7E };
        let want = nearest_code(x, family, e4m3_to_f32);
        assert_eq!(f32_to_e4m3(x), want, "x = {x}");
    }
}

#[test]
fn per_tensor_hand_worked() {
    // amax 3.5 → scale = 3.5 / 448 = 2⁻⁷ exactly; x / scale = x · 128:
    // 1 → 128 = 2⁷ → exponent field 7+7 = 14, mantissa 0 → 0x70;
    // −2 → −256 = −2⁸ → 0x78 | sign → 0xF8; 0.5 → 64 → 0x68; 3.5 → 448 → 0x7E.
    let t = quantize_fp8(&[1.0, -2.0, 0.5, 3.5], 2, 2, Fp8Granularity::PerTensor).unwrap();
    assert_eq!(t.scales(), &[2f32.powi(-7)]);
    assert_eq!(t.codes(), &[0x70, 0xF8, 0x68, 0x7E]);
    assert_eq!(t.dequantize(), vec![1.0, -2.0, 0.5, 3.5]);

    // amax 1 → scale = fl(1/448) = 0.002232143; 0.1 / scale = 44.8 lies in
    // [32, 64) where the step is 4: 44.8 / 4 = 11.2 → 11 → 44 = 1.375 · 2⁵ →
    // exponent field 12, mantissa 3 → 0x63, dequantized 44 · scale ≈ 0.0982143.
    // 1 / scale = 447.99997 → 448 → 0x7E, dequantized 448 · scale = 1.0.
    let t = quantize_fp8(&[0.1, 1.0], 1, 2, Fp8Granularity::PerTensor).unwrap();
    let scale = 1.0f32 / 448.0;
    assert_eq!(t.scales(), &[scale]);
    assert_eq!(t.codes(), &[0x63, 0x7E]);
    assert_eq!(t.dequantize(), vec![44.0 * scale, 1.0]);
    assert!((t.dequantize()[0] - 0.098_214_29).abs() < 1e-8);
}

#[test]
fn per_row_hand_worked() {
    #[rustfmt::skip]
    let values = [
        3.0, -1.5, 0.0, 0.75,
        0.0, 0.0, 0.0, 0.0,
        100.0, 1.0, -7.0, 0.02,
    ];
    let t = quantize_fp8(&values, 3, 4, Fp8Granularity::PerRow).unwrap();
    // Row 0: scale 3/448; x / scale = 448, −224, 0, 112 — all exact E4M3 values.
    // Row 1: all zeros → scale 0, codes 0.
    // Row 2: scale 100/448 = 0.22321428:
    //   1 / scale = 4.48, step 0.5 in [4, 8): 8.96 → 9 → 4.5 = 1.125 · 2² → 0x49;
    //   −7 / scale = −31.36, step 2 in [16, 32): 15.68 → 16 → 32 carries into
    //     the next binade → 1.0 · 2⁵ → 0x60 | sign = 0xE0;
    //   0.02 / scale = 0.0896, step 2⁻⁷ in [2⁻⁴, 2⁻³): 11.47 → 11 → 0.0859375
    //     = 1.375 · 2⁻⁴ → exponent field 3, mantissa 3 → 0x1B.
    assert_eq!(t.scales(), &[3.0 / 448.0, 0.0, 100.0 / 448.0]);
    #[rustfmt::skip]
    assert_eq!(t.codes(), &[
        0x7E, 0xF6, 0x00, 0x6E,
        0x00, 0x00, 0x00, 0x00,
        0x7E, 0x49, 0xE0, 0x1B,
    ]);
    let s = 100.0f32 / 448.0;
    let deq = t.dequantize();
    assert_eq!(&deq[..8], &[3.0, -1.5, 0.0, 0.75, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(&deq[8..], &[448.0 * s, 4.5 * s, -32.0 * s, 0.0859375 * s]);
}

#[test]
fn all_zero_tensor_has_zero_scale() {
    let t = quantize_fp8(&[0.0; 6], 2, 3, Fp8Granularity::PerTensor).unwrap();
    assert_eq!(t.scales(), &[0.0]);
    assert_eq!(t.codes(), &[0; 6]);
    assert_eq!(t.dequantize(), vec![0.0; 6]);
}

#[test]
fn scaled_round_trip_error_is_within_half_a_step() {
    let mut rng = SplitMix::new(7);
    let (rows, cols) = (8, 64);
    let values: Vec<f32> = (0..rows * cols).map(|_| rng.log_spread(-3.0, 1.0)).collect();
    for granularity in [Fp8Granularity::PerTensor, Fp8Granularity::PerRow] {
        let t = quantize_fp8(&values, rows, cols, granularity).unwrap();
        for (i, (&x, &y)) in values.iter().zip(&t.dequantize()).enumerate() {
            let scale = t.scales()[if granularity == Fp8Granularity::PerRow {
                i / cols
            } else {
                0
            }];
            // Relative step 2⁻³ for normals (half-step 2⁻⁴), absolute 2⁻⁹ · scale below.
            let bound = (x.abs() * 2f32.powi(-4)).max(2f32.powi(-10) * scale) * (1.0 + 1e-6);
            assert!(
                (x - y).abs() <= bound,
                "{granularity:?} [{i}]: {x} → {y}, bound {bound}"
            );
        }
    }
}

#[test]
fn rejects_non_finite_values_naming_the_element() {
    let mut values = vec![0.5f32; 12];
    values[7] = f32::NAN;
    let err = quantize_fp8(&values, 3, 4, Fp8Granularity::PerRow).unwrap_err();
    assert!(
        matches!(err, QuantError::NonFinite { index: 7, row: 1, col: 3, value } if value.is_nan()),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "non-finite value NaN at [1, 3] (flat index 7)");
    values[7] = f32::NEG_INFINITY;
    let err = quantize_fp8(&values, 3, 4, Fp8Granularity::PerTensor)
        .unwrap_err()
        .in_tensor("backbone.layers.0.attn.q_proj.weight");
    assert_eq!(
        err.to_string(),
        "tensor `backbone.layers.0.attn.q_proj.weight`: non-finite value -inf at [1, 3] (flat index 7)"
    );
}

#[test]
fn rejects_shape_mismatch() {
    let err = quantize_fp8(&[1.0; 5], 2, 3, Fp8Granularity::PerTensor).unwrap_err();
    assert_eq!(err.to_string(), "expected 2×3 = 6 values, got 5");
}

#[test]
fn from_parts_checks_lengths_and_scales() {
    let t = quantize_fp8(&[1.0, -2.0, 0.5, 3.5], 2, 2, Fp8Granularity::PerRow).unwrap();
    let back = Fp8Tensor::from_parts(2, 2, Fp8Granularity::PerRow, t.codes().to_vec(), t.scales().to_vec()).unwrap();
    assert_eq!(back, t);
    let err = Fp8Tensor::from_parts(2, 2, Fp8Granularity::PerRow, vec![0; 4], vec![1.0]).unwrap_err();
    assert_eq!(err.to_string(), "scales: expected 2 entries for 2×2, got 1");
    let err = Fp8Tensor::from_parts(2, 2, Fp8Granularity::PerTensor, vec![0; 3], vec![1.0]).unwrap_err();
    assert_eq!(err.to_string(), "codes: expected 4 entries for 2×2, got 3");
    let err = Fp8Tensor::from_parts(1, 2, Fp8Granularity::PerRow, vec![0; 2], vec![-1.0]).unwrap_err();
    assert_eq!(err.to_string(), "FP8 row 0 scale -1 must be finite and ≥ 0");
}
