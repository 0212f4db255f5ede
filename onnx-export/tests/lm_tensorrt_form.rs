//! The TensorRT graph form of the LM computes what the CPU form computes, on
//! the tiny-a fixture, where its operators run on ONNX Runtime CPU (dense
//! fp32 / fp16 and FP8 weights; the FP4 TensorRT lowering has no CPU kernel):
//! backbone hidden states and codebook-0 logits, the decoder's logits for
//! every codebook (its head `Gather`ed from the stacked heads instead of
//! picked by `If`s, out-of-range codebooks clamped the same way), and the
//! whole-frame `logits_all` (empty on other calls in both forms). The form
//! itself has no `If` and no contrib operator.

use heart_test_support::lm_graphs as lm_support;

use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::MulaConfig;
use heart::engine::{self, io};
use heart::precision::Precision;
use lm_support::{FRAME_ROWS, OUTPUTS, ROWS, outputs, relative_max_diff, run_stack};
use onnx_export::lm::{self, GraphForm, LmOptions};
use onnx_export::proto::ModelProto;
use prost::Message;

fn load() -> (Checkpoint, MulaConfig) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartmula");
    (
        Checkpoint::open(&dir).unwrap(),
        MulaConfig::from_file(&dir.join("config.json")).unwrap(),
    )
}

fn export(ckpt: &Checkpoint, cfg: &MulaConfig, precision: Precision, form: GraphForm, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let opts = LmOptions::for_precision(precision).in_form(form).unwrap();
    lm::export_lm_with(ckpt, cfg, &opts, dir).unwrap();
}

/// Per output, the largest relative difference allowed between the forms:
/// f32 kernels summing in another order, or the fp16 bounds of the
/// conformance suite (hidden states 1e-2, logits 5e-2).
fn bound(precision: Precision) -> f64 {
    match precision {
        Precision::Fp32 => 1e-5,
        _ => 1e-2,
    }
}

#[test]
fn tensorrt_form_matches_the_cpu_form_on_onnx_runtime() {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    for precision in [Precision::Fp32, Precision::Fp16, Precision::Fp8] {
        let cpu = root.path().join(format!("{precision}-cpu"));
        let trt = root.path().join(format!("{precision}-trt"));
        export(&ckpt, &cfg, precision, GraphForm::Cpu, &cpu);
        export(&ckpt, &cfg, precision, GraphForm::TensorRt, &trt);
        let (want, got) = (outputs(&cpu, &cfg), outputs(&trt, &cfg));
        for (i, what) in OUTPUTS.iter().enumerate() {
            let diff = relative_max_diff(&got[i], &want[i]);
            println!("{precision} {what}: tensorrt form vs cpu form {diff:.2e}");
            assert!(diff <= bound(precision), "{precision} {what}: {diff:e}");
        }
    }
}

#[test]
fn gathered_heads_pick_the_same_head_for_every_codebook() {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    let (cpu, trt) = (root.path().join("cpu"), root.path().join("trt"));
    export(&ckpt, &cfg, Precision::Fp32, GraphForm::Cpu, &cpu);
    export(&ckpt, &cfg, Precision::Fp32, GraphForm::TensorRt, &trt);
    let width = cfg.backbone.embed_dim;
    let heads = cfg.audio_num_codebooks as i64 - 1;
    let logits = |dir: &Path, k: i64| {
        run_stack(
            &dir.join(engine::DECODER_GRAPH),
            &cfg.decoder,
            width,
            (ROWS, k),
            &[io::LOGITS, io::LOGITS_ALL],
        )
    };
    let mut per_head = Vec::new();
    for k in 0..=heads + 2 {
        let (want, got) = (logits(&cpu, k), logits(&trt, k));
        let diff = relative_max_diff(&got[0], &want[0]);
        assert!(diff <= 1e-5, "codebook {k}: {diff:e}");
        assert!(
            got[1].is_empty() && want[1].is_empty(),
            "logits_all is empty off whole-frame calls"
        );
        per_head.push(got.into_iter().next().unwrap());
    }
    // Clamping: codebook 0 uses the first head, codebooks past the last the last.
    assert_eq!(per_head[0], per_head[1]);
    assert_eq!(per_head[heads as usize], per_head[heads as usize + 2]);
    assert!(relative_max_diff(&per_head[1], &per_head[2]) > 1e-3, "distinct heads");
    let frame = run_stack(
        &trt.join(engine::DECODER_GRAPH),
        &cfg.decoder,
        width,
        (FRAME_ROWS, 1),
        &[io::LOGITS_ALL],
    );
    assert_eq!(frame[0].len(), heads as usize * cfg.audio_vocab_size);
}

#[test]
fn the_tensorrt_form_has_no_if_and_no_contrib_operator() {
    let (ckpt, cfg) = load();
    let root = tempfile::tempdir().unwrap();
    for precision in [Precision::Fp16, Precision::Fp8, Precision::Fp4] {
        let dir = root.path().join(precision.as_str());
        export(&ckpt, &cfg, precision, GraphForm::TensorRt, &dir);
        for graph in [engine::BACKBONE_GRAPH, engine::DECODER_GRAPH] {
            let m = ModelProto::decode(std::fs::read(dir.join(graph)).unwrap().as_slice()).unwrap();
            let nodes = m.graph.unwrap().node;
            assert!(!nodes.is_empty());
            for n in &nodes {
                assert_ne!(n.op_type.as_deref(), Some("If"), "{precision} {graph}");
                assert!(
                    matches!(n.domain.as_deref(), None | Some("") | Some("trt")),
                    "{precision} {graph}: {:?} of domain {:?}",
                    n.op_type,
                    n.domain
                );
            }
        }
    }
    let int4 = LmOptions::for_precision(Precision::Int4).in_form(GraphForm::TensorRt);
    let err = int4.unwrap_err().to_string();
    assert!(err.contains("MatMulNBits"), "{err}");
}
