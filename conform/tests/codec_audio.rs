//! Detokenize behaviour beyond the fixture cases: WAV output, seeded determinism,
//! the tail policy at a quirk length, out-of-range and malformed codes, fp16.

use heart::layout::CodecCheckpoint;
use heart::precision::Precision;
use heart_conform::codec as conform;
use heart_runtime::codec::{Codec, DetokenizeParams, SeededNoise, TailPolicy};
use heart_runtime::wav::{WavFormat, write_wav};
use ndarray::Array2;

use heart_test_support::fixture_set as fixture;

fn open(precision: Precision) -> (Codec, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let codec = CodecCheckpoint::discover_and_open(&fixture().codec_dir()).unwrap();
    onnx_export::codec::export_codec(&codec.checkpoint, &codec.config, precision, dir.path()).unwrap();
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    (Codec::open(&rt, dir.path()).unwrap(), dir)
}

/// Codes `[8, frames]` looped from the fixture's 400-frame case.
fn codes(frames: usize) -> Array2<i64> {
    let f = fixture();
    let case = f.load(f.case("codec_detok_T400_steps10_2seg").unwrap()).unwrap();
    let (data, shape) = case.i64("codes").unwrap();
    Array2::from_shape_fn((8, frames), |(q, t)| data[q * shape[1] + t % shape[1]])
}

#[test]
fn decoded_codes_become_a_stereo_wav_of_the_exact_length() {
    let (mut codec, dir) = open(Precision::Fp32);
    let params = DetokenizeParams::default();
    let audio = codec
        .detokenize(codes(40).view(), params, &mut SeededNoise::new(1234))
        .unwrap();
    assert_eq!((audio.channels, audio.sample_rate, audio.frames()), (2, 300, 960));
    let again = codec
        .detokenize(codes(40).view(), params, &mut SeededNoise::new(1234))
        .unwrap();
    assert_eq!(audio, again);
    let other = codec
        .detokenize(codes(40).view(), params, &mut SeededNoise::new(1235))
        .unwrap();
    assert_ne!(audio.samples, other.samples);

    let path = dir.path().join("song.wav");
    write_wav(&path, &audio, WavFormat::Float32).unwrap();
    let mut r = hound::WavReader::open(&path).unwrap();
    let spec = r.spec();
    assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 300, 32));
    assert_eq!(r.duration(), 960);
    let interleaved: Vec<f32> = r.samples::<f32>().map(Result::unwrap).collect();
    assert_eq!(interleaved.len(), 1920);
    assert_eq!(
        (interleaved[0], interleaved[1]),
        (audio.channel(0)[0], audio.channel(1)[0])
    );
    assert_eq!(interleaved[1919], audio.channel(1)[959]);

    let pcm = dir.path().join("song16.wav");
    write_wav(&pcm, &audio, WavFormat::Pcm16).unwrap();
    let r = hound::WavReader::open(&pcm).unwrap();
    assert_eq!((r.spec().bits_per_sample, r.duration()), (16, 960));
    assert_eq!(std::fs::metadata(&pcm).unwrap().len(), 44 + 960 * 2 * 2);
}

#[test]
fn quirk_length_is_fully_decoded_unless_upstream_compat_is_asked_for() {
    let (mut codec, _dir) = open(Precision::Fp32);
    let c = codes(424);
    let full = DetokenizeParams::default();
    let audio = codec.detokenize(c.view(), full, &mut SeededNoise::new(1)).unwrap();
    assert_eq!(audio.frames(), 10_176); // int(424 / 12.5 · 300)
    let quirk = DetokenizeParams {
        tail: TailPolicy::UpstreamQuirk,
        ..full
    };
    let audio = codec.detokenize(c.view(), quirk, &mut SeededNoise::new(1)).unwrap();
    assert_eq!(audio.frames(), 744 * 12); // one window: the last 52 code frames are lost
}

#[test]
fn out_of_range_codes_are_clamped_and_bad_matrices_rejected() {
    let (mut codec, _dir) = open(Precision::Fp32);
    let mut high = codes(10);
    let mut last = codes(10);
    high[[2, 3]] = 64;
    high[[5, 7]] = 8192;
    last[[2, 3]] = 63;
    last[[5, 7]] = 63;
    let a = codec.tables().condition(high.view()).unwrap();
    let b = codec.tables().condition(last.view()).unwrap();
    assert_eq!((a.clamped, b.clamped), (2, 0));
    assert_eq!(a.mu, b.mu);

    let mut neg = codes(10);
    neg[[1, 4]] = -1;
    let err = codec.tables().condition(neg.view()).unwrap_err();
    assert!(
        err.to_string().contains("negative code -1 at quantizer 1, frame 4"),
        "{err}"
    );
    let err = codec
        .tables()
        .condition(Array2::<i64>::zeros((7, 10)).view())
        .unwrap_err();
    assert!(err.to_string().contains("7 rows, the codec has 8 quantizers"), "{err}");
    let err = codec
        .detokenize(
            Array2::<i64>::zeros((8, 0)).view(),
            DetokenizeParams::default(),
            &mut SeededNoise::new(0),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no code frames"), "{err}");
}

#[test]
fn fp16_engine_stays_close_to_the_reference() {
    let (mut codec, _dir) = open(Precision::Fp16);
    let f = fixture();
    let est = f.case("codec_estimator").unwrap();
    let dec = f.case("codec_scalar_decode").unwrap();
    for check in conform::check_estimator(&mut codec, &f, est)
        .unwrap()
        .into_iter()
        .chain(conform::check_scalar_decode(&mut codec, &f, dec).unwrap())
    {
        println!("fp16 {}: max_abs_err {:.3e}", check.name, check.max_abs_err);
        assert!(check.max_abs_err < 5e-3, "{check:?}");
    }
}
