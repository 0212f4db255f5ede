//! The frame graph (`frame.onnx`: one call per frame, sampling in the graph)
//! against the per-step graphs on the tiny-a fixture: the fixture's recorded-
//! noise `mula_generate` cases give the fixture's frames on both paths, and
//! seeded sampling over a long song (cache growth, guided and unguided, wide
//! and narrow top-k) gives the same frames and stop on both; plain decoding
//! through the frame graph never creates the per-step sessions, and a
//! per-step graph that disagrees with the frame graph is refused, by name,
//! when first used. int4 (heart's int4 kernel) agrees between the paths too.

use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::{
    GenParams, Generation, HeartMula, NoiseSource, Prompt, RecordedNoise, SamplerParams, Sampling, SeededNoise,
    generate, generate_frames,
};
use heart_test_support::generate_cases::generate_cases;
use heart_test_support::{fixture_set, lm_engine, mula_configs, open_lm};

fn per_step(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    sampler: SamplerParams,
    noise: &mut dyn NoiseSource,
) -> Generation {
    let mut picker = Sampling { params: sampler, noise };
    generate(lm, prompt, params, &mut picker, &mut |_| {}).expect("per-step generation")
}

fn whole_frames(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    sampler: SamplerParams,
    noise: &mut dyn NoiseSource,
) -> (Generation, usize) {
    let mut calls = 0;
    let g = generate_frames(lm, prompt, params, sampler, noise, &mut |_| {
        calls += 1;
        Ok(())
    })
    .expect("frame-graph generation");
    (g, calls)
}

#[test]
fn recorded_noise_cases_give_the_fixture_frames_on_both_paths() {
    let cases = generate_cases();
    assert_eq!(cases.len(), 4, "the fixture's generate cases");
    for precision in [Precision::Fp32, Precision::Fp16] {
        let mut lm = open_lm(precision);
        assert!(lm.has_frame_graph(), "the test engine has a frame graph");
        for case in &cases {
            let (prompt, params, sampler) = (&case.prompt, &case.params, case.sampler);
            let stepped = per_step(&mut lm, prompt, params, sampler, case.noise().as_mut());
            let (framed, calls) = whole_frames(&mut lm, prompt, params, sampler, case.noise().as_mut());
            assert_eq!(framed, stepped, "{} at {precision}: frame graph vs per-step", case.name);
            assert_eq!(calls, case.calls, "{}", case.name);
            let by_codebook: Vec<i64> = framed.codes_by_codebook().into_iter().flatten().collect();
            assert_eq!(by_codebook, case.frames, "{} at {precision}", case.name);
        }
    }
}

/// int4 engines run heart's own int4 kernel (`ai.heart.MatMulInt4x16`, the
/// int4 default) in both graphs; a call's result does not depend on its row
/// count, so the two paths still pick the same codes.
#[test]
fn int4_kernel_gives_the_same_frames_on_both_paths() {
    let mut lm = open_lm(Precision::Int4);
    assert!(lm.has_frame_graph(), "the test engine has a frame graph");
    for case in &generate_cases() {
        let (prompt, params, sampler) = (&case.prompt, &case.params, case.sampler);
        let stepped = per_step(&mut lm, prompt, params, sampler, case.noise().as_mut());
        let (framed, _) = whole_frames(&mut lm, prompt, params, sampler, case.noise().as_mut());
        assert!(!framed.frames.is_empty(), "{}", case.name);
        assert_eq!(framed, stepped, "{}: frame graph vs per-step", case.name);
    }
}

/// The fp32 fixture LM with no end-of-audio id in its vocabulary, so sampled
/// songs run to their length limit.
fn endless_lm() -> HeartMula {
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let (cfg, mut gen_cfg) = mula_configs();
    gen_cfg.audio_eos_id = i64::MAX;
    let dir = lm_engine(Precision::Fp32);
    HeartMula::open(&rt, dir, &cfg, &gen_cfg, &SessionConfig::default()).expect("open the fixture LM")
}

#[test]
fn seeded_sampling_gives_the_same_song_on_both_paths() {
    let mut lm = endless_lm();
    let fixture = fixture_set();
    let case = fixture.case("generate_sampled_cfg1p5").expect("fixture case");
    let prompt = Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap();
    // As many frames as the backbone's 512 positions hold: its cache grows
    // past its first 256 positions. Top-k 100 exceeds the 69-code vocabulary.
    let frames = lm.dims().max_seq_len - prompt.len() - 1;
    assert!(prompt.len() + frames > 256);
    let runs = [(1.5, 20, 1.0), (1.0, 100, 1.3), (3.0, 2, 0.7), (1.5, 1, 1.0)];
    for (seed, (cfg_scale, top_k, temperature)) in runs.into_iter().enumerate() {
        let params = GenParams {
            cfg_scale,
            max_audio_length_ms: frames as u64 * 80,
        };
        let sampler = SamplerParams { temperature, top_k };
        let stepped = per_step(&mut lm, &prompt, &params, sampler, &mut SeededNoise::new(seed as u64));
        let (framed, _) = whole_frames(&mut lm, &prompt, &params, sampler, &mut SeededNoise::new(seed as u64));
        assert_eq!(
            framed, stepped,
            "cfg {cfg_scale}, top-k {top_k}, temperature {temperature}"
        );
        assert_eq!(framed.frames.len(), frames + 1, "every frame up to the limit");
    }
}

#[test]
fn exhausted_recorded_noise_is_an_error_not_a_short_song() {
    let mut lm = open_lm(Precision::Fp32);
    let fixture = fixture_set();
    let case = fixture.case("generate_sampled_cfg1p5").expect("fixture case");
    let prompt = Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap();
    let params = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: 960,
    };
    let sampler = SamplerParams {
        temperature: 1.0,
        top_k: 5,
    };
    let mut noise = RecordedNoise::new(vec![1.0; lm.dims().audio_vocab * 8 * 2]);
    let err = generate_frames(&mut lm, &prompt, &params, sampler, &mut noise, &mut |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("exhausted"), "{err}");
}

/// The sampled fixture case's prompt, guided, at top-k 20, for `frames` frames.
fn short_song(frames: u64) -> (Prompt, GenParams, SamplerParams) {
    let fixture = fixture_set();
    let case = fixture.case("generate_sampled_cfg1p5").expect("fixture case");
    let prompt = Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap();
    let params = GenParams {
        cfg_scale: 1.5,
        max_audio_length_ms: frames * 80,
    };
    let sampler = SamplerParams {
        temperature: 1.0,
        top_k: 20,
    };
    (prompt, params, sampler)
}

#[test]
fn plain_decoding_through_the_frame_graph_never_opens_the_per_step_graphs() {
    let mut lm = open_lm(Precision::Fp32);
    let (prompt, params, sampler) = short_song(20);
    assert!(!lm.per_step_graphs_open(), "opening an engine with a frame graph");
    let (framed, _) = whole_frames(&mut lm, &prompt, &params, sampler, &mut SeededNoise::new(3));
    assert!(!lm.per_step_graphs_open(), "after a song through the frame graph");
    let stepped = per_step(&mut lm, &prompt, &params, sampler, &mut SeededNoise::new(3));
    assert!(lm.per_step_graphs_open(), "the per-step path opens them when it runs");
    assert_eq!(framed, stepped);
}

#[test]
fn a_per_step_graph_unlike_the_frame_graph_is_refused_by_name_when_first_used() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(lm_engine(Precision::Fp32)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    // The fp16 backbone keeps its cache in f16, the fp32 frame graph in f32.
    for name in ["backbone.onnx", "backbone.onnx.data"] {
        std::fs::copy(lm_engine(Precision::Fp16).join(name), dir.path().join(name)).unwrap();
    }
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = mula_configs();
    let mut lm = HeartMula::open(&rt, dir.path(), &cfg, &gen_cfg, &SessionConfig::default()).unwrap();
    let (prompt, params, sampler) = short_song(4);
    whole_frames(&mut lm, &prompt, &params, sampler, &mut SeededNoise::new(0));
    let mut picker = Sampling {
        params: sampler,
        noise: &mut SeededNoise::new(0),
    };
    let err = generate(&mut lm, &prompt, &params, &mut picker, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("backbone.onnx") && err.contains("differ"), "{err}");
}
