//! The device-resident frame loop, run over ONNX Runtime CPU buffers
//! (`LoopKind::Device` on the CPU backend: the same binding plans, fixed
//! buffers, strided appends, rollback and frame-graph binding a GPU backend
//! uses, with `memcpy` in place of the CUDA stream), against the host loop
//! on the tiny-a engine: same codes per step, through the frame graph and
//! speculatively; buffers that keep their addresses across steps and songs.

use heart::engine::io;
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_runtime::lm::device::LoopKind;
use heart_runtime::lm::device::layout::{Buffer, Graph};
use heart_runtime::lm::{
    GenParams, Generation, HeartMula, LmError, LmFiles, Prompt, SamplerParams, Sampling, SeededNoise, SpecParams, Taps,
    generate, generate_frames, generate_speculative,
};
use heart_test_support::drafts::prompt;

const SESSIONS: SessionConfig = SessionConfig {
    intra_threads: 1,
    optimization: heart_backend::Optimization::All,
    memory_pattern: true,
};

fn open(precision: Precision, kind: LoopKind) -> HeartMula {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = heart_test_support::mula_configs();
    let files = LmFiles::target(heart_test_support::lm_engine(precision));
    HeartMula::open_files_with_loop(&rt, &files, &cfg, &gen_cfg, &SESSIONS, kind).unwrap()
}

const PARAMS: GenParams = GenParams {
    cfg_scale: 1.5,
    max_audio_length_ms: 1200,
};

const SAMPLED: SamplerParams = SamplerParams {
    temperature: 1.0,
    top_k: 50,
};

fn per_step(lm: &mut HeartMula, p: &Prompt, sampler: SamplerParams, seed: u64) -> Generation {
    let mut noise = SeededNoise::new(seed);
    let mut picker = Sampling {
        params: sampler,
        noise: &mut noise,
    };
    generate(lm, p, &PARAMS, &mut picker, &mut |_| {}).unwrap()
}

fn whole_frames(lm: &mut HeartMula, p: &Prompt, seed: u64) -> Generation {
    let mut noise = SeededNoise::new(seed);
    generate_frames(lm, p, &PARAMS, SAMPLED, &mut noise, &mut |_| Ok(())).unwrap()
}

#[test]
fn the_device_loop_samples_the_host_loops_codes_per_step_and_through_the_frame_graph() {
    let mut host = open(Precision::Fp32, LoopKind::Host);
    let mut device = open(Precision::Fp32, LoopKind::Device);
    assert_eq!(
        (host.loop_kind(), device.loop_kind()),
        (LoopKind::Host, LoopKind::Device)
    );
    let p = prompt("generate_greedy_cfg1p5");
    let mut frames = [0, 0];
    for seed in [3, 11, 19, 27] {
        let expected = per_step(&mut host, &p, SAMPLED, seed);
        assert_eq!(
            per_step(&mut device, &p, SAMPLED, seed),
            expected,
            "per-step graphs, seed {seed}"
        );
        frames[0] += expected.frames.len();
        let expected = whole_frames(&mut host, &p, seed);
        assert_eq!(
            whole_frames(&mut device, &p, seed),
            expected,
            "frame graph, seed {seed}"
        );
        frames[1] += expected.frames.len();
    }
    eprintln!("frames compared (per step, frame graph): {frames:?}");
    assert!(frames.iter().all(|&n| n >= 12), "too few frames to compare: {frames:?}");
}

#[test]
fn speculative_decoding_on_the_device_loop_reproduces_plain_decoding() {
    let greedy = SamplerParams {
        temperature: 1.0,
        top_k: 1,
    };
    let p = prompt("generate_greedy_cfg1p5");
    let expected = per_step(&mut open(Precision::Fp32, LoopKind::Host), &p, greedy, 0);
    assert!(expected.frames.len() >= 5, "too short to speculate over: {expected:?}");
    let mut target = open(Precision::Fp32, LoopKind::Device);
    let mut draft = open(Precision::Fp16, LoopKind::Device);
    for k in [1, 3, 5] {
        let spec = SpecParams {
            generation: PARAMS,
            sampler: greedy,
            draft_frames: k,
        };
        let mut noise = SeededNoise::new(k as u64);
        let out = generate_speculative(&mut target, &mut draft, &p, &spec, &mut noise, &mut |_| {}).unwrap();
        assert_eq!(out.generation, expected, "K = {k}");
        assert!(out.stats.rounds > 0);
    }
}

#[test]
fn caches_and_step_buffers_keep_their_addresses_across_steps_and_songs() {
    let mut lm = open(Precision::Fp32, LoopKind::Device);
    let p = prompt("generate_greedy_cfg1p5");
    let step_outputs = [io::HIDDEN, io::C0_LOGITS];
    let song = |lm: &mut HeartMula| per_step(lm, &p, SAMPLED, 5);
    let first = song(&mut lm);
    let device = lm.device().unwrap();
    let epoch = device.epoch();
    let caches = device.cache_addresses();
    let backbone = device.bindings(Graph::Backbone).unwrap();
    let step = backbone
        .addresses(2, 1, &step_outputs)
        .expect("the 1-row backbone shape");
    assert!(
        backbone.addresses(2, p.len(), &step_outputs).is_none(),
        "the prompt's one-off shape is not kept"
    );
    let decoder = lm.device().unwrap().bindings(Graph::Decoder).unwrap();
    let walk = [
        decoder.addresses(2, 2, &[io::LOGITS]).expect("2-row decoder shape"),
        decoder.addresses(2, 1, &[io::LOGITS]).expect("1-row decoder shape"),
    ];
    assert!(step.contains_key(&Buffer::Input(io::ATTN_BIAS)) && step.contains_key(&Buffer::NewKey(0)));
    assert!(
        !step.keys().any(Buffer::is_cache),
        "caches are bound, not owned, by shapes"
    );

    // A second song of the same size reuses every buffer (a captured CUDA
    // graph would replay these addresses) and gives the same codes.
    assert_eq!(song(&mut lm), first);
    let device = lm.device().unwrap();
    assert_eq!((device.epoch(), device.cache_addresses()), (epoch, caches.clone()));
    assert_eq!(
        device.bindings(Graph::Backbone).unwrap().addresses(2, 1, &step_outputs),
        Some(step)
    );
    let decoder = device.bindings(Graph::Decoder).unwrap();
    assert_eq!(decoder.addresses(2, 2, &[io::LOGITS]), Some(walk[0].clone()));
    assert_eq!(decoder.addresses(2, 1, &[io::LOGITS]), Some(walk[1].clone()));

    // A longer generation reallocates (new epoch); the older state is refused.
    let mut old = lm.new_state(2, p.len() + 4).unwrap();
    let mut longer = lm.new_state(2, p.len() + 400).unwrap();
    assert_eq!(lm.device().unwrap().epoch(), epoch + 1);
    assert_ne!(lm.device().unwrap().cache_addresses(), caches);
    lm.prefill(&mut longer, &p).unwrap();
    let err = lm.prefill(&mut old, &p).unwrap_err();
    assert!(err.to_string().contains("reallocated by a newer generation"), "{err}");
}

#[test]
fn rollback_moves_only_the_length_and_refeeding_matches() {
    let mut lm = open(Precision::Fp32, LoopKind::Device);
    let p = prompt("generate_greedy_cfg1p5");
    let frames: Vec<Vec<i64>> = (0..3)
        .map(|f| (0..8).map(|k| (f * 11 + k * 5) % 64).collect())
        .collect();
    let mut st = lm.new_state(2, p.len() + 8).unwrap();
    lm.prefill(&mut st, &p).unwrap();
    let scored = lm.score_positions(&mut st, &frames).unwrap();
    assert_eq!(st.backbone.len(), p.len() + 3);
    st.backbone.truncate(p.len() + 1);
    assert_eq!(st.backbone.len(), p.len() + 1);
    let again = lm.feed_frames(&mut st, &frames[1..]).unwrap();
    let err = scored
        .at(2)
        .c0_logits
        .iter()
        .zip(&again.c0_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-4, "{err}");
    // Past the capacity is refused, the length unchanged.
    let many: Vec<Vec<i64>> = vec![frames[0].clone(); 8];
    assert!(matches!(lm.feed_frames(&mut st, &many), Err(LmError::CacheFull { .. })));
    assert_eq!(st.backbone.len(), p.len() + 3);
}

#[test]
fn taps_are_refused_on_the_device_loop() {
    let mut lm = open(Precision::Fp32, LoopKind::Device);
    let taps = Taps {
        backbone: vec![io::HIDDEN_ALL.to_string()],
        decoder: vec![],
    };
    let err = lm.new_tapped_state(1, 64, taps).unwrap_err();
    assert!(err.to_string().contains("host loop"), "{err}");
}

#[test]
fn the_device_loop_on_a_gpu_backend_without_a_gpu_is_a_clear_error() {
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let plan = heart_backend::ExecutionPlan {
        backend: heart_backend::Backend::Cuda { device: 0 },
        ..Default::default()
    };
    let rt = rt.with_plan(plan);
    let (cfg, gen_cfg) = heart_test_support::mula_configs();
    let files = LmFiles::target(heart_test_support::lm_engine(Precision::Fp32));
    let err = HeartMula::open_files_with_loop(&rt, &files, &cfg, &gen_cfg, &SESSIONS, LoopKind::Device).unwrap_err();
    let message = err.to_string();
    if cfg!(feature = "gpu") {
        // The stream is created before any session: no driver here.
        assert!(message.contains("CUDA: driver probe failed"), "{message}");
    } else {
        assert!(message.contains("needs a build with `--features gpu`"), "{message}");
    }
    assert!(!message.contains('\n'), "one line: {message}");
}
