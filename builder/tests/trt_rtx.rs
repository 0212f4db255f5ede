//! `heart-build --target tensorrt-rtx` end to end with NVIDIA's own builder
//! (TensorRT-RTX 1.7.1, installed by `scripts/setup-trt-rtx.sh`; without it
//! these tests fail with heart-build's message naming that script): every
//! graph of the tiny-a fixture, the frame graph included, gets a GB10 (sm121)
//! engine at fp16, fp8, fp4 and fp4-w4a4 and with a speculative draft, each
//! with an EP-context model whose node names the engine's tensors; the
//! exported graphs are the TensorRT forms (no `If`, no contrib operators, FP4
//! weights as FLOAT4E2M1), which at fp16 pass every fixture conformance case
//! on ONNX Runtime CPU, and whose frame graph samples the CPU form's codes;
//! and on the synthesized small LM the fp4 backbone engine is at most 0.45×
//! the fp16 one (FP4 stays FP4 in the engine).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use heart::engine;
use heart::manifest::{EngineKind, Manifest, Target, Verify};
use heart::precision::Precision;
use heart_backend::SessionConfig;
use heart_conform::{ConformContext, Verdict};
use heart_runtime::lm::{
    GenParams, Generation, HeartMula, NoiseSource, Prompt, SamplerParams, SeededNoise, generate_frames,
};
use heart_test_support::generate_cases::generate_cases;
use heart_test_support::{fixture_set, mula_configs, open_lm};
use onnx_export::ep_context::{NV_TENSORRT_RTX_SOURCE, read_ep_context_node};
use onnx_export::proto::ModelProto;
use onnx_export::proto::tensor_proto::DataType;
use prost::Message;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn heart_build(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heart-build"))
        .args(args)
        .output()
        .expect("heart-build runs")
}

fn build_ok(args: &[&str]) {
    let o = heart_build(args);
    assert!(
        o.status.success(),
        "heart-build {args:?} failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tiny_a(out: &Path, extra: &[&str]) {
    let (mula, codec) = (
        repo("tests/fixtures/tiny-a/heartmula"),
        repo("tests/fixtures/tiny-a/heartcodec"),
    );
    let mut args = vec![
        "--mula",
        s(&mula),
        "--codec",
        s(&codec),
        "--target",
        "tensorrt-rtx",
        "--out",
        s(out),
        "-q",
    ];
    args.extend_from_slice(extra);
    build_ok(&args);
}

fn model(path: &Path) -> ModelProto {
    ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap()
}

/// Checks one graph's engine and EP-context model against its source graph.
fn check_engine(dir: &Path, graph: &str) {
    let engine_path = dir.join(engine::tensorrt_engine(graph));
    let bytes = std::fs::metadata(&engine_path)
        .unwrap_or_else(|e| panic!("{}: {e}", engine_path.display()))
        .len();
    assert!(bytes > 100_000, "{graph}: a {bytes}-byte engine is not a built network");
    let (node, attrs) = read_ep_context_node(&dir.join(engine::context_model(graph))).unwrap();
    let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let file = Path::new(&engine::tensorrt_engine(graph))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(attr("ep_cache_context"), Some(file.as_str()), "{graph}");
    assert_eq!(attr("embed_mode"), Some("0"));
    assert_eq!(attr("source"), Some(NV_TENSORRT_RTX_SOURCE));
    assert_eq!(attr("hardware_architecture"), Some("121"));
    assert!(attr("ep_sdk_version").unwrap().starts_with("1.7.1."), "{attrs:?}");
    let source = model(&dir.join(graph)).graph.unwrap();
    let names =
        |v: &[onnx_export::proto::ValueInfoProto]| v.iter().map(|i| i.name.clone().unwrap()).collect::<Vec<_>>();
    let mut want_in = names(&source.input);
    want_in.retain(|n| !source.initializer.iter().any(|t| t.name.as_deref() == Some(n.as_str())));
    assert_eq!(
        node.input, want_in,
        "{graph}: EP-context inputs are the engine's (= the graph's) inputs"
    );
    assert_eq!(node.output, names(&source.output), "{graph}: outputs");
}

/// Checks that `graph` is in the TensorRT form: no `If`, no ONNX Runtime contrib operator.
fn check_tensorrt_form(dir: &Path, graph: &str) -> ModelProto {
    let m = model(&dir.join(graph));
    for n in &m.graph.as_ref().unwrap().node {
        assert_ne!(n.op_type.as_deref(), Some("If"), "{graph}: {:?}", n.name);
        assert_ne!(n.domain.as_deref(), Some("com.microsoft"), "{graph}: {:?}", n.name);
    }
    m
}

fn check_folder(dir: &Path, graphs: &[&str]) -> Manifest {
    let m = Manifest::load(dir, Verify::Full).unwrap();
    let Target::TensorRtRtx {
        tensorrt_rtx_version,
        gpu_arch,
        compute_capability,
        execution_provider,
        engines,
    } = &m.target
    else {
        panic!("target {:?}", m.target);
    };
    assert!(tensorrt_rtx_version.starts_with("1.7.1."), "{tensorrt_rtx_version}");
    assert_eq!((gpu_arch.as_str(), compute_capability.as_str()), ("sm121", "12.1"));
    assert_eq!(execution_provider, NV_TENSORRT_RTX_SOURCE);
    let built: Vec<&str> = engines.iter().map(|e| e.graph.as_str()).collect();
    assert_eq!(built, graphs);
    for e in engines {
        check_engine(dir, &e.graph);
        for f in [&e.engine, &e.context_model] {
            let entry = m
                .files
                .iter()
                .find(|x| &x.path == f)
                .unwrap_or_else(|| panic!("{f} not in the manifest"));
            assert_eq!(entry.kind, EngineKind::TensorRt);
        }
        assert!(!e.profile.is_empty(), "{}: every graph has dynamic inputs", e.graph);
    }
    for g in graphs.iter().filter(|g| !g.contains("flow") && !g.contains("scalar")) {
        check_tensorrt_form(dir, g);
    }
    m
}

const TINY_GRAPHS: [&str; 5] = [
    engine::BACKBONE_GRAPH,
    engine::DECODER_GRAPH,
    engine::FRAME_GRAPH,
    engine::FLOW_ESTIMATOR_GRAPH,
    engine::SCALAR_DECODER_GRAPH,
];

fn initializer_types(m: &ModelProto) -> Vec<i32> {
    m.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter_map(|t| t.data_type)
        .collect()
}

/// Also: the folder's TensorRT-form graphs pass every fixture case on ONNX
/// Runtime CPU (the fp16 bounds), like a CPU-form fp16 folder.
#[test]
fn fp16_engines_for_every_tiny_a_graph_and_the_graphs_pass_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    tiny_a(&out, &["--precision", "fp16"]);
    check_folder(&out, &TINY_GRAPHS);
    let mut ctx = ConformContext::open(&repo("tests/fixtures/tiny-a"))
        .unwrap()
        .with_engines(&out)
        .unwrap();
    let mut log = Vec::new();
    let report = heart_conform::run(&mut ctx, None, &mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(report.cases.len() >= 23, "{log}");
    assert!(report.cases.iter().all(|c| c.outcome.verdict == Verdict::Pass), "{log}");
}

fn frames(
    lm: &mut HeartMula,
    prompt: &Prompt,
    params: &GenParams,
    sampler: SamplerParams,
    noise: &mut dyn NoiseSource,
) -> Generation {
    generate_frames(lm, prompt, params, sampler, noise, &mut |_| Ok(())).expect("frame-graph generation")
}

/// The TensorRT form of the frame graph (its `TopK` sorts a constant number of
/// candidates and reads the k-th) samples the CPU form's codes: run on ONNX
/// Runtime CPU, the frame graphs of sm121 folders at fp32 and fp16 give
/// exactly (integer codes, no tolerance) the frames of the CPU form and of the
/// fixture on the fixture's four recorded-noise `mula_generate` cases, and
/// the CPU form's frames and stop on seeded songs at top-k 1, 20, the whole
/// vocabulary (the last sorted candidate) and more than it.
#[test]
fn the_tensorrt_form_frame_graph_samples_the_cpu_form_s_codes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = heart_backend::init(None).expect("ONNX Runtime: run scripts/setup-ort.sh first");
    let (cfg, gen_cfg) = mula_configs();
    let fixture = fixture_set();
    let cases = generate_cases();
    assert_eq!(cases.len(), 4, "the fixture's generate cases");
    for precision in [Precision::Fp32, Precision::Fp16] {
        let out = dir.path().join(precision.to_string());
        let mula = repo("tests/fixtures/tiny-a/heartmula");
        let p = precision.to_string();
        build_ok(&[
            "--mula",
            s(&mula),
            "--precision",
            &p,
            "--target",
            "tensorrt-rtx",
            "--out",
            s(&out),
            "-q",
        ]);
        let graph = model(&out.join(engine::FRAME_GRAPH)).graph.unwrap();
        let topk: Vec<_> = graph
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("TopK"))
            .collect();
        assert_eq!(topk.len(), cfg.audio_num_codebooks, "one TopK per codebook");
        assert!(
            topk.iter().all(|n| n.input[1] != engine::frame_io::TOP_K),
            "the TensorRT form's TopK takes a constant K"
        );
        let mut trt = HeartMula::open(&rt, &out, &cfg, &gen_cfg, &SessionConfig::default()).unwrap();
        assert!(trt.has_frame_graph());
        let mut cpu = open_lm(precision);
        for case in &cases {
            let on_trt = frames(
                &mut trt,
                &case.prompt,
                &case.params,
                case.sampler,
                case.noise().as_mut(),
            );
            let on_cpu = frames(
                &mut cpu,
                &case.prompt,
                &case.params,
                case.sampler,
                case.noise().as_mut(),
            );
            assert_eq!(
                on_trt, on_cpu,
                "{} at {precision}: TensorRT form vs CPU form",
                case.name
            );
            let by_codebook: Vec<i64> = on_trt.codes_by_codebook().into_iter().flatten().collect();
            assert_eq!(by_codebook, case.frames, "{} at {precision}", case.name);
        }
        let case = fixture.case("generate_sampled_cfg1p5").unwrap();
        let prompt = Prompt::from_fixture(&fixture.load(case).unwrap()).unwrap();
        let params = GenParams {
            cfg_scale: 1.5,
            max_audio_length_ms: 60 * 80,
        };
        for (seed, top_k) in [1, 20, cfg.audio_vocab_size, 1000].into_iter().enumerate() {
            let sampler = SamplerParams {
                temperature: 1.0,
                top_k,
            };
            let on_trt = frames(&mut trt, &prompt, &params, sampler, &mut SeededNoise::new(seed as u64));
            let on_cpu = frames(&mut cpu, &prompt, &params, sampler, &mut SeededNoise::new(seed as u64));
            assert_eq!(on_trt, on_cpu, "top-k {top_k} at {precision}");
            assert!(
                !on_trt.frames.is_empty(),
                "top-k {top_k}: a song, not an empty generation"
            );
        }
    }
}

#[test]
fn fp4_engines_keep_fp4_weights() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    tiny_a(&out, &["--precision", "fp4"]);
    check_folder(&out, &TINY_GRAPHS);
    for g in [engine::BACKBONE_GRAPH, engine::DECODER_GRAPH, engine::FRAME_GRAPH] {
        let types = initializer_types(&model(&out.join(g)));
        assert!(
            types.contains(&(DataType::Float4e2m1 as i32)),
            "{g}: the TensorRT form stores NVFP4 weights as FLOAT4E2M1"
        );
    }
}

#[test]
fn fp4_w4a4_engines_quantize_activations_with_tensorrt_s_dynamic_quantizer() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    tiny_a(
        &out,
        &["--profile", "fp4-w4a4", "--calibration", s(&repo("calibration"))],
    );
    check_folder(&out, &TINY_GRAPHS);
    let m = model(&out.join(engine::BACKBONE_GRAPH));
    let dynamic = m
        .graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("TRT_FP4DynamicQuantize"))
        .count();
    assert!(dynamic > 0, "W4A4 quantizes activations in the engine");
}

#[test]
fn fp8_engines_quantize_activations_with_qdq_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    tiny_a(&out, &["--precision", "fp8", "--calibration", s(&repo("calibration"))]);
    check_folder(&out, &TINY_GRAPHS);
    let m = model(&out.join(engine::BACKBONE_GRAPH));
    let g = m.graph.as_ref().unwrap();
    let quantize = g
        .node
        .iter()
        .filter(|n| n.op_type.as_deref() == Some("QuantizeLinear"))
        .count();
    assert!(
        quantize > 0,
        "W8A8 activations are QuantizeLinear/DequantizeLinear pairs"
    );
    assert!(initializer_types(&m).contains(&(DataType::Float8e4m3fn as i32)));
}

#[test]
fn a_speculative_draft_gets_engines_and_the_target_decoder_takes_the_scorer_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    tiny_a(&out, &["--precision", "fp16", "--draft-precision", "fp4"]);
    let mut graphs = TINY_GRAPHS.to_vec();
    graphs.extend(["draft/backbone.onnx", "draft/decoder.onnx"]);
    let m = check_folder(&out, &graphs);
    let Target::TensorRtRtx { engines, .. } = &m.target else {
        unreachable!()
    };
    let batch_max = |graph: &str| {
        let e = engines.iter().find(|e| e.graph == graph).unwrap();
        e.profile.iter().find(|i| i.name == "embeds").unwrap().max[0]
    };
    assert_eq!(batch_max("decoder.onnx"), 16, "K ≤ 8 drafted frames × 2 CFG rows");
    assert_eq!(batch_max("draft/decoder.onnx"), 2);
    assert_eq!(batch_max("backbone.onnx"), 2);
}

#[test]
fn int_weights_fp4_on_ampere_and_a_missing_install_fail_before_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e");
    let mula = repo("tests/fixtures/tiny-a/heartmula");
    let base = ["--mula", s(&mula), "--target", "tensorrt-rtx", "--out", s(&out)];
    let o = heart_build(&[&base[..], &["--precision", "int4"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("MatMulNBits") && err.contains("tensorrt graph form"),
        "{err}"
    );
    let o = heart_build(&[&base[..], &["--precision", "fp4", "--gpu-arch", "sm86"]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--precision fp4: sm86") && err.contains("sm120 and sm121"),
        "{err}"
    );
    let empty = dir.path().join("no-install");
    std::fs::create_dir_all(&empty).unwrap();
    let o = heart_build(&[&base[..], &["--precision", "fp16", "--trt-rtx", s(&empty)]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("bash scripts/setup-trt-rtx.sh") && err.contains(s(&empty)),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
}

/// The bar: on the synthesized small LM (backbone 6 × 1024-wide
/// layers, ~100 M parameters) NVFP4 weights must reach the engine as FP4.
/// Measured: 64.8 MB against 160.8 MB (0.40×); TensorRT constant-folding the
/// portable lowering gave 164 MB.
#[test]
fn small_lm_fp4_backbone_engine_is_at_most_045_of_fp16() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt");
    build_ok(&["synth", "--size", "small", "--out", s(&ckpt), "-q"]);
    let mula = ckpt.join("HeartMuLa-oss-3B");
    let engine_bytes = |precision: &str| {
        let out = dir.path().join(precision);
        build_ok(&[
            "--mula",
            s(&mula),
            "--precision",
            precision,
            "--target",
            "tensorrt-rtx",
            "--out",
            s(&out),
            "-q",
        ]);
        let bytes = std::fs::metadata(out.join(engine::tensorrt_engine(engine::BACKBONE_GRAPH)))
            .unwrap()
            .len();
        std::fs::remove_dir_all(&out).unwrap();
        bytes
    };
    let fp16 = engine_bytes("fp16");
    let fp4 = engine_bytes("fp4");
    let ratio = fp4 as f64 / fp16 as f64;
    assert!(
        fp16 > 100_000_000,
        "the fp16 backbone engine holds ~160 MB of f16 weights: {fp16}"
    );
    assert!(
        ratio <= 0.45,
        "fp4 backbone engine {fp4} B is {ratio:.3}× the fp16 one ({fp16} B)"
    );
}
