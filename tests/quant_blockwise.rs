//! Blockwise int4/int8 (`MatMulNBits` layout): packing against hand-worked
//! bytes, hand-worked blocks with the scale arithmetic written out, zero and
//! constant blocks, rows that are not a multiple of 32, NaN/inf and overflow
//! errors, an error-bound property over seeded random data, and bytes produced
//! by ONNX Runtime's own quantizer.

#[allow(dead_code)]
use heart_test_support::codes as quant_support;

use heart::quant::QuantError;
use heart::quant::blockwise::{
    BLOCK, BlockwiseTensor, IntBits, block_params, decode, encode, k_blocks, pack_codes, quantize_blockwise,
    unpack_codes,
};
use quant_support::SplitMix;

const WIDTHS: [IntBits; 2] = [IntBits::Int4, IntBits::Int8];

#[test]
fn codes_pack_low_nibble_first_and_unpack() {
    assert_eq!(pack_codes(&[1, 2, 3, 4, 15], IntBits::Int4), vec![0x21, 0x43, 0x0F]);
    assert_eq!(pack_codes(&[1, 2, 255], IntBits::Int8), vec![1, 2, 255]);
    for byte in 0..=u8::MAX {
        let codes = unpack_codes(&[byte], 2, IntBits::Int4);
        assert_eq!(codes, vec![byte & 0x0F, byte >> 4]);
        assert_eq!(pack_codes(&codes, IntBits::Int4), vec![byte]);
        assert_eq!(unpack_codes(&[byte], 1, IntBits::Int8), vec![byte]);
    }
    assert_eq!(
        unpack_codes(&[0x21, 0x43, 0x0F], 5, IntBits::Int4),
        vec![1, 2, 3, 4, 15]
    );
    assert_eq!(
        (IntBits::Int4.blob_bytes(), IntBits::Int8.blob_bytes()),
        (16, 32),
        "32 codes per block"
    );
    assert_eq!(IntBits::Int4.zero_point_row_bytes(3), 2);
    assert_eq!(IntBits::Int8.zero_point_row_bytes(3), 3);
    assert_eq!((k_blocks(32), k_blocks(33), k_blocks(48), k_blocks(0)), (1, 2, 2, 0));
}

/// One 32-element row: `head`, then zeros.
fn row(head: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0; BLOCK];
    v[..head.len()].copy_from_slice(head);
    v
}

#[test]
fn hand_worked_int4_block() {
    // lo = −3, hi = 12: scale = 15 / 15 = 1, zero point = round(3 / 1) = 3.
    // code = round(x + 3), half away from zero: 0.5 → 3.5 → 4, −0.5 → 2.5 → 3,
    // 1.49 → 4.49 → 4, 2.5 → 5.5 → 6; the 24 zeros are code 3.
    let v = row(&[-3.0, 12.0, 0.0, 0.5, -0.5, 1.49, 2.5, 7.0]);
    let t = quantize_blockwise(&v, 1, BLOCK, IntBits::Int4).unwrap();
    assert_eq!(t.scales(), &[1.0]);
    assert_eq!(t.zero_points(), &[3]);
    assert_eq!(&t.codes()[..8], &[0, 15, 3, 4, 3, 4, 6, 10]);
    let mut packed = vec![0xF0, 0x43, 0x43, 0xA6];
    packed.extend([0x33; 12]);
    assert_eq!(t.packed(), packed.as_slice());
    assert_eq!(t.packed_zero_points(), vec![0x83], "unused high nibble = default 8");
    let want = row(&[-3.0, 12.0, 0.0, 1.0, 0.0, 1.0, 3.0, 7.0]);
    assert_eq!(t.dequantize(), want);
}

#[test]
fn hand_worked_int8_block() {
    // lo = −51, hi = 204: scale = 255 / 255 = 1, zero point 51.
    // 0.5 → 51.5 → 52; −0.5 → 50.5 → 51; −50.5 → 0.5 → 1; 203.5 → 254.5 → 255.
    let v = row(&[-51.0, 204.0, 0.0, 0.5, -0.5, -50.5, 203.5]);
    let t = quantize_blockwise(&v, 1, BLOCK, IntBits::Int8).unwrap();
    assert_eq!((t.scales(), t.zero_points()), (&[1.0][..], &[51][..]));
    let mut codes = vec![0, 255, 51, 52, 51, 1, 255];
    codes.resize(BLOCK, 51);
    assert_eq!(t.packed(), codes.as_slice());
    assert_eq!(t.packed_zero_points(), vec![51]);
    assert_eq!(t.dequantize(), row(&[-51.0, 204.0, 0.0, 1.0, 0.0, -50.0, 204.0]));
}

#[test]
fn zero_and_constant_blocks() {
    for bits in WIDTHS {
        let qmax = f32::from(bits.max_code());
        // Row 0: zeros; row 1: constant 0.7; row 2: constant −2.
        let mut v = vec![0.0; 3 * BLOCK];
        v[BLOCK..2 * BLOCK].fill(0.7);
        v[2 * BLOCK..].fill(-2.0);
        let t = quantize_blockwise(&v, 3, BLOCK, bits).unwrap();
        assert_eq!(t.scales()[0], 0.0, "{bits:?}: a zero block has scale 0");
        assert_eq!(t.zero_points()[0], 0);
        assert!(t.codes()[..BLOCK].iter().all(|&c| c == 0));
        assert_eq!(t.scales()[1], 0.7 / qmax, "range [0, 0.7]");
        assert_eq!(t.zero_points()[1], 0);
        assert_eq!(t.scales()[2], 2.0 / qmax, "range [−2, 0]");
        assert_eq!(t.zero_points()[2], bits.max_code());
        let codes = t.codes();
        assert!(codes[BLOCK..2 * BLOCK].iter().all(|&c| c == bits.max_code()));
        assert!(codes[2 * BLOCK..].iter().all(|&c| c == 0));
        let d = t.dequantize();
        assert!(d[..BLOCK].iter().all(|&x| x.to_bits() == 0), "exact +0");
        for (i, (&x, &y)) in v.iter().zip(&d).enumerate().skip(BLOCK) {
            assert!((x - y).abs() <= x.abs() * f32::EPSILON, "{bits:?} [{i}]: {x} → {y}");
        }
    }
}

#[test]
fn rows_that_are_not_a_multiple_of_32_pad_with_the_zero_point() {
    // 2 rows × 40: blocks [0, 32) and [32, 40) + 24 padding codes.
    let mut r = SplitMix::new(3);
    let v: Vec<f32> = (0..80).map(|_| r.log_spread(-2.0, 0.0)).collect();
    for bits in WIDTHS {
        let t = quantize_blockwise(&v, 2, 40, bits).unwrap();
        assert_eq!(t.k_blocks(), 2);
        assert_eq!(t.packed().len(), 2 * 2 * bits.blob_bytes());
        assert_eq!(t.scales().len(), 4);
        for rw in 0..2 {
            let tail = &v[rw * 40 + 32..rw * 40 + 40];
            assert_eq!(
                (t.scales()[rw * 2 + 1], t.zero_points()[rw * 2 + 1]),
                block_params(tail, bits),
                "the partial block's parameters come from its 8 real elements"
            );
            let codes = t.codes();
            let zp = t.zero_points()[rw * 2 + 1];
            assert!(codes[rw * 64 + 40..rw * 64 + 64].iter().all(|&c| c == zp));
        }
        let d = t.dequantize();
        assert_eq!(d.len(), 80);
        let whole = quantize_blockwise(&v[..32], 1, 32, bits).unwrap();
        assert_eq!(&d[..32], whole.dequantize().as_slice(), "full blocks are unaffected");
    }
}

#[test]
fn non_finite_values_and_overflowing_ranges_are_errors() {
    for bits in WIDTHS {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = vec![0.5; 2 * 40];
            v[40 + 33] = bad;
            match quantize_blockwise(&v, 2, 40, bits).unwrap_err() {
                QuantError::NonFinite { index, row, col, .. } => assert_eq!((index, row, col), (73, 1, 33)),
                e => panic!("{e}"),
            }
        }
        let mut v = vec![0.0; 64];
        v[40] = 3e38;
        v[41] = -3e38;
        let err = quantize_blockwise(&v, 1, 64, bits).unwrap_err();
        assert!(matches!(err, QuantError::BadScale { .. }), "{err}");
        let msg = err.in_tensor("w").to_string();
        assert!(msg.contains("tensor `w`") && msg.contains("block 1 of row 0"), "{msg}");
        let err = quantize_blockwise(&[0.0; 5], 2, 3, bits).unwrap_err();
        assert!(
            matches!(
                err,
                QuantError::Shape {
                    expected: 6,
                    found: 5,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn every_element_is_within_half_a_step_of_its_value() {
    let mut r = SplitMix::new(11);
    let (rows, cols) = (24, 200);
    for bits in WIDTHS {
        // Each row spans several binades; some rows are all positive or all negative.
        let v: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let x = r.log_spread(-4.0, 1.0);
                match (i / cols) % 4 {
                    0 => x.abs(),
                    1 => -x.abs(),
                    _ => x,
                }
            })
            .collect();
        let t = quantize_blockwise(&v, rows, cols, bits).unwrap();
        let d = t.dequantize();
        let blocks = k_blocks(cols);
        for (i, (&x, &y)) in v.iter().zip(&d).enumerate() {
            let b = (i / cols) * blocks + (i % cols) / BLOCK;
            let (scale, zp) = (t.scales()[b], t.zero_points()[b]);
            assert!(
                (x - y).abs() <= scale * (0.5 + 1e-4),
                "{bits:?} [{i}]: {x} → {y}, step {scale}"
            );
            assert_eq!(y, decode(encode(x, scale, zp, bits), scale, zp));
        }
    }
}

#[test]
fn from_parts_round_trips_and_checks() {
    let mut r = SplitMix::new(5);
    let v: Vec<f32> = (0..3 * 48).map(|_| r.log_spread(-1.0, 0.0)).collect();
    for bits in WIDTHS {
        let t = quantize_blockwise(&v, 3, 48, bits).unwrap();
        let parts = || (t.packed().to_vec(), t.scales().to_vec(), t.zero_points().to_vec());
        let (p, s, z) = parts();
        assert_eq!(BlockwiseTensor::from_parts(bits, 3, 48, p, s, z).unwrap(), t);
        let (mut p, s, z) = parts();
        p.pop();
        let err = BlockwiseTensor::from_parts(bits, 3, 48, p, s, z).unwrap_err();
        assert!(err.to_string().contains("packed codes"), "{err}");
        let (p, mut s, z) = parts();
        s[4] = -1.0;
        let err = BlockwiseTensor::from_parts(bits, 3, 48, p, s, z).unwrap_err();
        assert!(err.to_string().contains("block 4"), "{err}");
        let (p, s, mut z) = parts();
        z.truncate(5);
        assert!(BlockwiseTensor::from_parts(bits, 3, 48, p, s, z).is_err());
    }
    let t = quantize_blockwise(&v, 3, 48, IntBits::Int4).unwrap();
    let mut z = t.zero_points().to_vec();
    z[0] = 16;
    let err =
        BlockwiseTensor::from_parts(IntBits::Int4, 3, 48, t.packed().to_vec(), t.scales().to_vec(), z).unwrap_err();
    assert!(err.to_string().contains("zero point of block 0"), "{err}");
}

// Obtained with ONNX Runtime 1.31.1's Python package (`/tmp` script, not part
// of the project): `quantize_matmul_{4,8}bits(packed, w.T, scales, zp, 32, N=3,
// K=64, is_symmetric=False)` on these values (row 0 has an outlier, row 1 block
// 0 is the constant 0.25, row 2 block 1 is all zero).
#[rustfmt::skip]
const ORT_VALUES: [f32; 3 * 64] = [
    0.0001, 0.0149, -0.0137, -0.0445, -0.0227, 1.2, 0.003, 0.067, -0.0246, -0.031, 0.0245, 0.0178, 0.0053,
    -0.0465, -0.0015, 0.0348, -0.0672, -0.0229, -0.0951, -0.0645, -0.0921, -0.0118, -0.0634, 0.0136, 0.0078,
    -0.0093, -0.1258, -0.0269, -0.0024, 0.0057, -0.0765, -0.0239, -0.0489, -0.0404, 0.053, -0.0404, -0.0016,
    0.0442, -0.0292, -0.0056, 0.0055, 0.0032, -0.0613, 0.0038, 0.0679, -0.0774, 0.043, 0.006, -0.0321, 0.1,
    0.0381, -0.06, 0.0037, 0.0288, -0.0094, 0.0341, -0.0033, 0.0334, 0.0719, -0.0338, 0.0102, -0.0232, 0.0064,
    -0.0594, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25,
    0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, 0.25, -1.2909,
    0.3467, -1.6882, -2.0353, -0.3045, -0.8999, 0.1641, 2.2448, -0.8317, -0.6239, 0.2054, 0.493, -0.1764,
    -0.2059, 0.7025, 0.5199, -1.0337, -0.0792, 0.0353, -1.0545, 0.2598, -0.858, 0.9721, 0.1927, 0.0893, -0.591,
    -0.1186, -1.9977, -1.1314, 0.3628, -2.1286, 0.8466, -0.5238, 0.227, -0.2536, 0.2337, 0.0393, -0.4611,
    0.3747, 0.4325, -0.0197, -0.0822, -0.048, -0.2925, 0.3296, -0.1629, -0.0154, -0.238, -0.1878, -0.3833,
    0.3771, -0.0462, 0.2898, 0.004, -0.2083, -0.098, -0.1681, 0.0024, -0.1126, -0.09, -0.4136, -0.2421, 0.4962,
    -0.2014, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
];
#[rustfmt::skip]
const ORT_INT4_PACKED: [u8; 96] = [
    0x11, 0x01, 0xf1, 0x21, 0x11, 0x11, 0x01, 0x11, 0x10, 0x00, 0x10, 0x10, 0x11, 0x10, 0x11, 0x10, 0x43, 0x4b,
    0xb7, 0x75, 0x77, 0x72, 0x0d, 0x8b, 0xf4, 0x2a, 0x97, 0xa6, 0xa7, 0x4d, 0x58, 0x28, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x83, 0x01, 0x46, 0xf8, 0x54, 0x98,
    0x66, 0x99, 0x73, 0x37, 0x48, 0x8a, 0x57, 0x07, 0x83, 0xa0, 0xb0, 0xb4, 0x19, 0xee, 0x78, 0x47, 0x6d, 0x58,
    0x25, 0x7e, 0x8c, 0x75, 0x86, 0x76, 0x42, 0x5f, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00
];
#[rustfmt::skip]
const ORT_INT4_SCALE_BITS: [u32; 6] = [1035273234, 1010943138, 1015580809, 1049970522, 1032536981, 0];
#[rustfmt::skip]
const ORT_INT4_ZERO_POINTS: [u8; 3] = [0x71, 0x70, 0x08];
#[rustfmt::skip]
const ORT_INT8_PACKED: [u8; 192] = [
    0x18, 0x1b, 0x15, 0x0f, 0x14, 0xff, 0x19, 0x25, 0x13, 0x12, 0x1d, 0x1b, 0x19, 0x0f, 0x18, 0x1f, 0x0b, 0x14,
    0x06, 0x0c, 0x06, 0x16, 0x0c, 0x1b, 0x1a, 0x16, 0x00, 0x13, 0x18, 0x19, 0x09, 0x13, 0x29, 0x35, 0xbb, 0x35,
    0x6d, 0xaf, 0x45, 0x67, 0x77, 0x74, 0x17, 0x74, 0xd1, 0x00, 0xad, 0x78, 0x41, 0xff, 0xa6, 0x19, 0x74, 0x98,
    0x61, 0xa0, 0x6a, 0x9f, 0xd6, 0x3e, 0x7e, 0x4e, 0x78, 0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x31, 0x90, 0x1a, 0x05, 0x6a, 0x48, 0x86, 0xff, 0x4c, 0x58, 0x88, 0x99,
    0x72, 0x70, 0xa5, 0x9a, 0x40, 0x77, 0x7e, 0x3f, 0x8b, 0x4a, 0xb5, 0x87, 0x81, 0x5a, 0x75, 0x08, 0x3a, 0x91,
    0x00, 0xad, 0x00, 0xbc, 0x44, 0xbd, 0x8d, 0x10, 0xe1, 0xef, 0x7e, 0x6e, 0x77, 0x3a, 0xd5, 0x5a, 0x7f, 0x48,
    0x54, 0x23, 0xe1, 0x77, 0xcb, 0x84, 0x4f, 0x6b, 0x59, 0x84, 0x67, 0x6d, 0x1c, 0x46, 0xff, 0x51, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00
];
#[rustfmt::skip]
const ORT_INT8_SCALE_BITS: [u32; 6] = [1001020975, 976641719, 981500033, 1015840611, 998445678, 0];
#[rustfmt::skip]
const ORT_INT8_ZERO_POINTS: [u8; 6] = [0x18, 0x6f, 0x00, 0x7c, 0x83, 0x00];

#[test]
fn matches_onnx_runtimes_own_quantizer() {
    type Parts<'a> = (IntBits, &'a [u8], &'a [u32], &'a [u8]);
    let cases: [Parts<'_>; 2] = [
        (
            IntBits::Int4,
            &ORT_INT4_PACKED,
            &ORT_INT4_SCALE_BITS,
            &ORT_INT4_ZERO_POINTS,
        ),
        (
            IntBits::Int8,
            &ORT_INT8_PACKED,
            &ORT_INT8_SCALE_BITS,
            &ORT_INT8_ZERO_POINTS,
        ),
    ];
    for (bits, packed, scale_bits, zero_points) in cases {
        let t = quantize_blockwise(&ORT_VALUES, 3, 64, bits).unwrap();
        assert_eq!(t.packed(), packed, "{bits:?}");
        let got: Vec<u32> = t.scales().iter().map(|s| s.to_bits()).collect();
        assert_eq!(got, scale_bits, "{bits:?}");
        assert_eq!(t.packed_zero_points(), zero_points, "{bits:?}");
    }
}
