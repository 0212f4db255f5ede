//! Chunked scalar decoding (`codec::chunks`) gives the whole-window audio: on the
//! `tiny-a` fixture codec and on a narrow codec with the released 48 kHz strides
//! (`[5, 4, 4, 4, 3]` × 2, 1920 samples per latent frame), for chunk sizes from
//! one frame to the whole window. Half the left context `DecoderContext::of`
//! gives must change the audio, so the comparison can fail.

use std::num::NonZeroUsize;
use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::CodecConfig;
use heart::geometry::WINDOW_LATENTS;
use heart::layout::CodecCheckpoint;
use heart::precision::Precision;
use heart::tensors::codec_tensor_specs;
use heart_runtime::codec::chunks::{DEFAULT_CHUNK_LATENTS, plan_chunks};
use heart_runtime::codec::{Codec, DecoderContext};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::{Dtype, tensor::TensorView};

/// Chunked audio may differ from the whole-window audio by this much relative
/// to the audio's peak. Observed: 0 at the default 256-frame chunks (here and
/// at the released widths); up to 1.09e-6 (about 15 ulp at the peak) with
/// chunks of 1 to 100 frames or 700, where a short call makes MLAS block its
/// GEMM sums differently.
const TOLERANCE: f32 = 2e-6;

fn runtime() -> heart_backend::OrtRuntime {
    heart_backend::init(None).expect("run scripts/setup-ort.sh first")
}

/// An engine folder exported from the `tiny-a` fixture codec.
fn fixture_engine() -> tempfile::TempDir {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartcodec");
    let codec = CodecCheckpoint::discover_and_open(&fixture).unwrap();
    let dir = tempfile::tempdir().unwrap();
    onnx_export::codec::export_codec(&codec.checkpoint, &codec.config, Precision::Fp32, dir.path()).unwrap();
    dir
}

/// The fixture's codec config with the released decoder strides, kernels and
/// sample rate, and two channels in the last up block (64 after `decoder.0`).
fn narrow_48k() -> CodecConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartcodec/config.json");
    let mut cfg = CodecConfig::from_file(&path).unwrap();
    cfg.upsample_factors = vec![5, 4, 4, 4, 3];
    cfg.upsample_kernel_sizes = vec![10, 8, 8, 8, 6];
    cfg.sample_rate = 48_000;
    cfg.init_channel = 2;
    cfg
}

/// An engine folder for `cfg` from random weights (norm and weight-norm gains 1,
/// PReLU slopes 0.25, everything else uniform in ±0.3).
fn synthetic_engine(cfg: &CodecConfig) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt_dir).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let tensors: Vec<(String, Vec<u8>, Vec<usize>)> = codec_tensor_specs(cfg)
        .into_iter()
        .map(|s| {
            let n: usize = s.shape.iter().product();
            let values: Vec<f32> = if s.name.ends_with("norm.weight") || s.name.ends_with("original0") {
                vec![1.0; n]
            } else if s.name.contains("activation") {
                vec![0.25; n]
            } else {
                (0..n).map(|_| rng.random_range(-0.3f32..0.3)).collect()
            };
            (s.name, bytemuck::cast_slice(&values).to_vec(), s.shape)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, data, shape)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &ckpt_dir.join("model.safetensors")).unwrap();
    let ckpt = Checkpoint::open(&ckpt_dir).unwrap();
    onnx_export::codec::export_codec(&ckpt, cfg, Precision::Fp32, dir.path()).unwrap();
    dir
}

/// One window of latents `[744, 256]`, uniform in ±1.5 (so `round(9x)/9` bites).
fn window_latents(cfg: &CodecConfig) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (0..WINDOW_LATENTS * cfg.out_channels)
        .map(|_| rng.random_range(-1.5f32..1.5))
        .collect()
}

/// Largest `|a − b|` over the peak `|b|`.
fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let peak = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    diff / peak
}

/// Decodes one window whole, then in chunks of each of `chunks`, and checks
/// that every chunked decode matches.
fn assert_chunks_match_whole(codec: &mut Codec, chunks: &[usize]) {
    let latents = window_latents(codec.config());
    codec.set_decode_chunk(None);
    let whole = codec.decode_latents(&latents).unwrap();
    let spl = codec.config().samples_per_latent();
    assert_eq!(whole.len(), 2 * WINDOW_LATENTS * spl);
    assert!(whole.iter().any(|&v| v != whole[0]), "constant audio tests nothing");
    for &c in chunks {
        codec.set_decode_chunk(NonZeroUsize::new(c));
        let chunked = codec.decode_latents(&latents).unwrap();
        let rel = relative_diff(&chunked, &whole);
        println!("chunk {c:>3}: max |chunked − whole| / max |whole| = {rel:.3e}");
        assert!(rel <= TOLERANCE, "chunk {c}: relative difference {rel:e}");
    }
}

/// Decodes channel 0 of one window in chunks with half the left context that
/// [`DecoderContext::of`] gives and checks that the audio moves far beyond the
/// tolerance: the comparison above can fail, and the history matters. (The
/// effect fades towards the far edge of the context, below float rounding in
/// the last frame or two, so a missing last frame cannot be told from rounding.)
fn assert_half_context_differs(codec: &mut Codec) {
    let cfg = codec.config().clone();
    let latents = window_latents(&cfg);
    let half = cfg.latent_hidden_dim;
    let channel0: Vec<f32> = (0..half)
        .flat_map(|k| (0..WINDOW_LATENTS).map(move |t| (k, t)))
        .map(|(k, t)| latents[t * cfg.out_channels + k])
        .collect();
    let ctx = DecoderContext::of(&cfg);
    let short = DecoderContext {
        left: ctx.left / 2,
        ..ctx
    };
    let chunk = NonZeroUsize::new(100).unwrap();
    let decoder = codec.decoder();
    let whole = decoder.decode(&channel0, 1, WINDOW_LATENTS).unwrap();
    let truncated = decoder
        .decode_chunked(&channel0, WINDOW_LATENTS, &plan_chunks(WINDOW_LATENTS, chunk, short))
        .unwrap();
    let rel = relative_diff(&truncated, &whole);
    println!(
        "left context {} instead of {}: relative difference {rel:.3e}",
        short.left, ctx.left
    );
    assert!(rel > 1e-3, "half the context should change the audio, got {rel:e}");
}

#[test]
fn fixture_codec_chunks_match_the_whole_window() {
    let dir = fixture_engine();
    let mut codec = Codec::open(&runtime(), dir.path()).unwrap();
    assert_eq!(
        DecoderContext::of(codec.config()),
        DecoderContext { left: 80, right: 2 }
    );
    assert_eq!(codec.decode_chunk(), Some(DEFAULT_CHUNK_LATENTS), "CPU default");
    assert_chunks_match_whole(&mut codec, &[1, 37, 256, 743, 744]);
    assert_half_context_differs(&mut codec);
}

#[test]
fn released_strides_chunks_match_the_whole_window() {
    let cfg = narrow_48k();
    assert_eq!(cfg.samples_per_latent(), 1920);
    let dir = synthetic_engine(&cfg);
    let mut codec = Codec::open_with_config(&runtime(), dir.path(), cfg).unwrap();
    assert_eq!(
        DecoderContext::of(codec.config()),
        DecoderContext { left: 44, right: 2 }
    );
    assert_chunks_match_whole(&mut codec, &[3, 100, 256, 700]);
    assert_half_context_differs(&mut codec);
}

#[test]
fn spans_that_do_not_tile_the_window_are_refused() {
    let dir = fixture_engine();
    let mut codec = Codec::open(&runtime(), dir.path()).unwrap();
    let channel = vec![0f32; 128 * 10];
    let mut spans = plan_chunks(10, NonZeroUsize::new(4).unwrap(), DecoderContext { left: 2, right: 1 });
    spans.remove(1);
    let err = codec.decoder().decode_chunked(&channel, 10, &spans).unwrap_err();
    assert!(
        err.to_string().contains("do not tile a window of 10 latent frames"),
        "{err}"
    );
}
