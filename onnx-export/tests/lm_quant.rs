//! Quantized LM export on the tiny-a fixture: FP8 / NVFP4 graphs load and run
//! on ONNX Runtime CPU; a quantized linear inside the exported backbone gives
//! `x · dequantize(W)ᵀ` of the Rust reference quantizers (weight-only, W4A4,
//! W8A8); calibration variants expose their probes; layer taps; errors.

use heart_test_support::ort_graphs as quant_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use heart::checkpoint::Checkpoint;
use heart::config::MulaConfig;
use heart::engine::{self, io};
use heart::precision::Precision;
use heart::quant::blockwise::quantize_blockwise;
use heart::quant::fp8::{Fp8Granularity, e4m3_to_f32, encode_scaled, fp8_scale, quantize_fp8};
use heart::quant::nvfp4::{nvfp4_global_scale, quantize_nvfp4, quantize_nvfp4_with_global};
use onnx_export::linears::{Activations, Lowering};
use onnx_export::lm::{self, DEFAULT_QUANTIZED, GraphForm, LinearGroup, LmOptions, QuantFormat, QuantPlan};
use onnx_export::proto::{ModelProto, TypeProto, ValueInfoProto, type_proto};
use prost::Message;
use quant_support::{Opts, assert_within, matmul_f64, rng, session, transpose};
use rand_distr::{Distribution, Normal};

const D: usize = 64;
const ROWS: usize = 3;
const CAPACITY: usize = 2;

fn load() -> (Checkpoint, MulaConfig) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tiny-a/heartmula");
    (
        Checkpoint::open(&dir).unwrap(),
        MulaConfig::from_file(&dir.join("config.json")).unwrap(),
    )
}

/// fp32 compute with the default groups quantized to `weights`, activations
/// quantized to `acts` with amax `amax` for every linear, and the backbone's
/// attention and MLP inputs probed.
fn options(cfg: &MulaConfig, weights: QuantFormat, acts: Option<QuantFormat>, amax: f32) -> LmOptions {
    let linears = linear_names(cfg);
    LmOptions {
        numerics: lm::numerics(Precision::Fp32),
        quant: Some(QuantPlan {
            weights,
            lowering: Lowering::Portable,
            groups: DEFAULT_QUANTIZED.into_iter().collect(),
            activations: acts.map(|format| Activations {
                format,
                amax: linears.iter().map(|n| (n.clone(), amax)).collect(),
            }),
        }),
        probes: [LinearGroup::BackboneAttention, LinearGroup::BackboneMlp].into(),
        layer_taps: true,
        form: GraphForm::Cpu,
    }
}

/// Every linear of both stacks and the projection.
fn linear_names(cfg: &MulaConfig) -> Vec<String> {
    let mut out = vec!["projection".to_string()];
    for (stack, layers) in [
        ("backbone", cfg.backbone.num_layers),
        ("decoder", cfg.decoder.num_layers),
    ] {
        for i in 0..layers {
            for l in [
                "attn.q_proj",
                "attn.k_proj",
                "attn.v_proj",
                "attn.output_proj",
                "mlp.w1",
                "mlp.w2",
                "mlp.w3",
            ] {
                out.push(format!("{stack}.layers.{i}.{l}"));
            }
        }
    }
    out
}

/// Adds the output of the `MatMul` of linear `linear` to the graph outputs
/// (as `matmul.<linear>`), writing the model next to the original.
fn expose_matmul(onnx: &Path, linear: &str) -> std::path::PathBuf {
    let mut m = ModelProto::decode(std::fs::read(onnx).unwrap().as_slice()).unwrap();
    let g = m.graph.as_mut().unwrap();
    let prefix = format!("{linear}/MatMul_");
    let node = g
        .node
        .iter()
        .find(|n| n.op_type.as_deref() == Some("MatMul") && n.output[0].starts_with(&prefix))
        .unwrap_or_else(|| panic!("no MatMul of {linear}"));
    let out = node.output[0].clone();
    g.node.push(onnx_export::proto::NodeProto {
        op_type: Some("Identity".into()),
        input: vec![out],
        output: vec![format!("matmul.{linear}")],
        ..Default::default()
    });
    g.output.push(ValueInfoProto {
        name: Some(format!("matmul.{linear}")),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: None,
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    let path = onnx.with_file_name(format!("exposed-{linear}.onnx"));
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    path
}

/// Runs a backbone graph (batch 1, `ROWS` new positions, an empty cache of
/// capacity `CAPACITY`, f32 or f16 as the graph declares) and returns the
/// named f32 outputs.
fn run_backbone(path: &Path, cfg: &MulaConfig, outputs: &[&str]) -> Vec<Vec<f32>> {
    let mut s = session(path, Opts::Default);
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut r = rng(5);
    let embeds: Vec<f32> = (0..ROWS * D).map(|_| normal.sample(&mut r)).collect();
    let bias: Vec<f32> = (0..ROWS)
        .flat_map(|row| {
            (0..CAPACITY + ROWS).map(move |c| {
                if c >= CAPACITY && c - CAPACITY <= row {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    let (kv, hd) = (cfg.backbone.num_kv_heads, cfg.backbone.head_dim());
    let n = kv * hd * CAPACITY;
    let (cache32, cache16) = (vec![0f32; n], vec![half::f16::ZERO; n]);
    let f16 = cache_is_f16(path);
    let positions: Vec<i64> = (0..ROWS as i64).collect();
    let cache = |dims: Vec<usize>| -> ort::session::SessionInputValue<'_> {
        if f16 {
            ort::value::TensorRef::from_array_view((dims, cache16.as_slice()))
                .unwrap()
                .into()
        } else {
            ort::value::TensorRef::from_array_view((dims, cache32.as_slice()))
                .unwrap()
                .into()
        }
    };
    let mut feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
        (io::EMBEDS.into(), view(vec![1, ROWS, D], &embeds)),
        (io::ATTN_BIAS.into(), view(vec![ROWS, CAPACITY + ROWS], &bias)),
        (
            io::POSITIONS.into(),
            ort::value::TensorRef::from_array_view(([ROWS], positions.as_slice()))
                .unwrap()
                .into(),
        ),
    ];
    for i in 0..cfg.backbone.num_layers {
        feeds.push((io::past_key(i), cache(vec![1, kv, hd, CAPACITY])));
        feeds.push((io::past_value(i), cache(vec![1, kv, CAPACITY, hd])));
    }
    let out = s.run(feeds).unwrap();
    outputs
        .iter()
        .map(|n| out[*n].try_extract_tensor::<f32>().unwrap().1.to_vec())
        .collect()
}

/// Whether the graph's cache inputs are f16.
fn cache_is_f16(path: &Path) -> bool {
    let m = ModelProto::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
    m.graph.unwrap().input.iter().any(|i| {
        i.name.as_deref() == Some("past_key_0")
            && matches!(
                i.r#type.as_ref().and_then(|t| t.value.as_ref()),
                Some(type_proto::Value::TensorType(t)) if t.elem_type == Some(10)
            )
    })
}

/// The reference fake-quantization of an activation `[rows, k]`.
fn fake_quant(x: &[f32], k: usize, acts: Option<QuantFormat>, amax: f32) -> Vec<f32> {
    match acts {
        None => x.to_vec(),
        Some(QuantFormat::Nvfp4) => quantize_nvfp4_with_global(x, x.len() / k, k, nvfp4_global_scale(amax))
            .unwrap()
            .dequantize(),
        Some(QuantFormat::Fp8) => {
            let s = fp8_scale(amax);
            x.iter().map(|&v| e4m3_to_f32(encode_scaled(v, s)) * s).collect()
        }
        Some(QuantFormat::Int(_)) => panic!("int formats are weight-only"),
    }
}

/// The reference dequantized weight `[out, in]`.
fn dequantized(ckpt: &Checkpoint, name: &str, weights: QuantFormat) -> (Vec<f32>, usize, usize) {
    let t = ckpt.tensor(&format!("{name}.weight")).unwrap();
    let (out, inp) = (t.shape[0], t.shape[1]);
    let v = t.to_f32().unwrap();
    let w = match weights {
        QuantFormat::Nvfp4 => quantize_nvfp4(&v, out, inp).unwrap().dequantize(),
        QuantFormat::Fp8 => quantize_fp8(&v, out, inp, Fp8Granularity::PerRow).unwrap().dequantize(),
        QuantFormat::Int(nb) => quantize_blockwise(&v, out, inp, nb.bits).unwrap().dequantize(),
    };
    (w, out, inp)
}

#[test]
fn quantized_linears_in_the_backbone_match_the_reference() {
    let (ckpt, cfg) = load();
    const AMAX: f32 = 3.0;
    for (weights, acts) in [
        (QuantFormat::Nvfp4, None),
        (QuantFormat::Nvfp4, Some(QuantFormat::Nvfp4)),
        (QuantFormat::Fp8, None),
        (QuantFormat::Fp8, Some(QuantFormat::Fp8)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(&cfg, weights, acts, AMAX);
        let onnx = dir.path().join(engine::BACKBONE_GRAPH);
        let (_, probes) = lm::export_backbone(&ckpt, &cfg, &opts, &onnx).unwrap();
        assert_eq!(
            probes.len(),
            4 * cfg.backbone.num_layers,
            "q/k/v and w1/w3 share a probe"
        );
        for (linear, probe) in [
            ("backbone.layers.1.attn.q_proj", "backbone.layers.1.attn.q_proj"),
            ("backbone.layers.1.attn.v_proj", "backbone.layers.1.attn.q_proj"),
            ("backbone.layers.2.mlp.w2", "backbone.layers.2.mlp.w2"),
        ] {
            let path = expose_matmul(&onnx, linear);
            let matmul = format!("matmul.{linear}");
            let probe = io::probe(probe);
            let got = run_backbone(&path, &cfg, &[&matmul, &probe]);
            let (w, out, inp) = dequantized(&ckpt, linear, weights);
            let x = fake_quant(&got[1], inp, acts, AMAX);
            let (want, bound) = matmul_f64(&x, &transpose(&w, out, inp), ROWS, inp, out);
            let what = format!("{weights:?} weights, {acts:?} activations, {linear}");
            let (err, _) = assert_within(&what, &got[0], &want, &bound);
            assert!(got[0].iter().any(|&v| v != 0.0), "{what}: all zeros");
            println!("{what}: max |err| {err:e}");
        }
    }
}

#[test]
fn fp8_and_fp4_engines_load_and_run_with_quantized_initializers() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let fp16 = dir.path().join("fp16");
    std::fs::create_dir(&fp16).unwrap();
    lm::export_lm(&ckpt, &cfg, Precision::Fp16, &fp16).unwrap();
    let reference = run_backbone(&fp16.join(engine::BACKBONE_GRAPH), &cfg, &[io::C0_LOGITS]).remove(0);
    for (precision, suffix) in [(Precision::Fp8, "fp8_codes"), (Precision::Fp4, "nvfp4_codes")] {
        let out = dir.path().join(precision.as_str());
        std::fs::create_dir(&out).unwrap();
        lm::export_lm(&ckpt, &cfg, precision, &out).unwrap();
        for graph in [engine::BACKBONE_GRAPH, engine::DECODER_GRAPH] {
            let m = ModelProto::decode(std::fs::read(out.join(graph)).unwrap().as_slice()).unwrap();
            let names: BTreeSet<String> = m
                .graph
                .unwrap()
                .initializer
                .into_iter()
                .filter_map(|t| t.name)
                .collect();
            let stack = graph.trim_end_matches(".onnx");
            let q = format!("{stack}.layers.0.attn.q_proj.weight");
            assert!(
                names.contains(&format!("{q}.{suffix}")),
                "{precision} {graph}: {q} quantized"
            );
            assert!(!names.contains(&q), "{precision} {graph}: no dense {q}");
            let head = if stack == "backbone" {
                "codebook0_head.weight"
            } else {
                "audio_head.0"
            };
            assert!(names.contains(head), "{precision} {graph}: {head} stays dense");
        }
        let logits = run_backbone(&out.join(engine::BACKBONE_GRAPH), &cfg, &[io::C0_LOGITS]).remove(0);
        let cos = cosine(&logits, &reference);
        println!("{precision}: c0 logits cosine vs fp16 {cos:.5}");
        assert!(logits.iter().all(|v| v.is_finite()));
        assert!(cos > 0.9, "{precision}: cosine {cos} vs fp16");
        assert!(
            logits != reference,
            "{precision}: identical to fp16, nothing was quantized"
        );
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn calibration_variants_expose_probes_and_taps() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let opts = LmOptions {
        numerics: lm::numerics(Precision::Fp32),
        quant: None,
        probes: LinearGroup::ALL.into_iter().collect(),
        layer_taps: true,
        form: GraphForm::Cpu,
    };
    let export = lm::export_lm_with(&ckpt, &cfg, &opts, dir.path()).unwrap();
    let first = &export.backbone_probes[0];
    assert_eq!(first.output, "probe.backbone.layers.0.attn.q_proj");
    assert_eq!(first.features, D);
    assert_eq!(
        first.linears,
        [
            "backbone.layers.0.attn.q_proj",
            "backbone.layers.0.attn.k_proj",
            "backbone.layers.0.attn.v_proj"
        ]
    );
    assert_eq!(export.backbone_probes.len(), 4 * 3 + 1, "+ codebook0_head");
    assert_eq!(
        export.decoder_probes.len(),
        1 + 4 * 2 + 1,
        "projection + layers + audio_head"
    );
    assert_eq!(export.decoder_probes[0].output, "probe.projection");
    assert_eq!(export.decoder_probes.last().unwrap().output, "probe.audio_head");
    let all: Vec<String> = [&export.backbone_probes, &export.decoder_probes]
        .into_iter()
        .flatten()
        .flat_map(|p| p.linears.clone())
        .collect();
    let mut expected = linear_names(&cfg);
    expected.extend(["codebook0_head".to_string(), "audio_head".to_string()]);
    assert_eq!(
        all.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>()
    );

    let outs = run_backbone(
        &dir.path().join(engine::BACKBONE_GRAPH),
        &cfg,
        &[&io::layer_tap(2), io::HIDDEN, "probe.codebook0_head"],
    );
    assert_eq!(outs[0].len(), D, "tap: last position of one batch row");
    assert_eq!(
        outs[2].len(),
        ROWS * D,
        "the head reads the final norm at every position"
    );
    assert_eq!(outs[1], outs[2][(ROWS - 1) * D..], "whose last row is `hidden`");
}

#[test]
fn quantization_errors_name_the_tensor() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&cfg, QuantFormat::Nvfp4, Some(QuantFormat::Nvfp4), 1.0);
    let plan = opts.quant.as_mut().unwrap();
    plan.activations
        .as_mut()
        .unwrap()
        .amax
        .remove("backbone.layers.1.mlp.w2");
    let err = lm::export_lm_with(&ckpt, &cfg, &opts, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`backbone.layers.1.mlp.w2`") && err.contains("calibrated"),
        "{err}"
    );

    let mut opts = options(&cfg, QuantFormat::Nvfp4, None, 1.0);
    opts.quant.as_mut().unwrap().groups.insert(LinearGroup::Codebook0Head);
    let err = lm::export_lm_with(&ckpt, &cfg, &opts, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("codebook0_head.weight") && err.contains("even"), "{err}");

    let mut opts = options(&cfg, QuantFormat::Fp8, None, 1.0);
    let plan = opts.quant.as_mut().unwrap();
    plan.groups.extend([LinearGroup::Codebook0Head, LinearGroup::AudioHead]);
    lm::export_lm_with(&ckpt, &cfg, &opts, dir.path()).expect("FP8 heads export (any vocabulary size)");

    let mut opts = options(&cfg, QuantFormat::Fp8, Some(QuantFormat::Fp8), 1.0);
    let acts = opts.quant.as_mut().unwrap().activations.as_mut().unwrap();
    acts.amax = BTreeMap::from_iter(acts.amax.keys().map(|k| (k.clone(), 0.0)));
    let err = lm::export_lm_with(&ckpt, &cfg, &opts, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("FP8 scale 0"), "{err}");
}

#[test]
fn tensorrt_lowering_of_the_lm_has_fp4_initializers_and_trt_quantizers() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&cfg, QuantFormat::Nvfp4, Some(QuantFormat::Nvfp4), 3.0);
    opts.numerics = lm::numerics(Precision::Fp16);
    opts.quant.as_mut().unwrap().lowering = Lowering::TensorRt;
    lm::export_lm_with(&ckpt, &cfg, &opts, dir.path()).unwrap();
    for graph in [engine::BACKBONE_GRAPH, engine::DECODER_GRAPH] {
        let m = ModelProto::decode(std::fs::read(dir.path().join(graph)).unwrap().as_slice()).unwrap();
        let opset = m.opset_import.iter().find(|o| o.domain.as_deref() == Some("")).unwrap();
        assert!(opset.version.unwrap() >= 23, "{graph}: FLOAT4E2M1 needs opset 23");
        let g = m.graph.unwrap();
        let stack = graph.trim_end_matches(".onnx");
        let codes = format!("{stack}.layers.0.mlp.w2.weight.nvfp4_codes");
        let t = g
            .initializer
            .iter()
            .find(|t| t.name.as_deref() == Some(codes.as_str()))
            .unwrap();
        assert_eq!(
            t.data_type,
            Some(onnx_export::proto::tensor_proto::DataType::Float4e2m1 as i32)
        );
        let trt_quantizers = g
            .node
            .iter()
            .filter(|n| n.op_type.as_deref() == Some("TRT_FP4DynamicQuantize"))
            .count();
        // One per distinct linear input: q/k/v and w1/w3 share theirs (+ the projection's).
        let expected = 4 * if stack == "backbone" { 3 } else { 2 } + usize::from(stack == "decoder");
        assert_eq!(trt_quantizers, expected, "{graph}");
    }
}

/// Runs the decoder on one whole frame (`heads + 1` rows, empty cache) with
/// `codebook` and returns (`logits`, `logits_all`).
fn run_decoder_frame(path: &Path, cfg: &MulaConfig, codebook: i64) -> (Vec<f32>, Vec<f32>) {
    let mut s = session(path, Opts::Default);
    let rows = cfg.audio_num_codebooks;
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let mut r = rng(9);
    let embeds: Vec<f32> = (0..rows * D).map(|_| normal.sample(&mut r)).collect();
    let bias: Vec<f32> = (0..rows)
        .flat_map(|row| (0..rows).map(move |c| if c <= row { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    let positions: Vec<i64> = (0..rows as i64).collect();
    let (kv, hd) = (cfg.decoder.num_kv_heads, cfg.decoder.head_dim());
    let cache: Vec<f32> = Vec::new();
    let k = [codebook];
    let mut feeds: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
        (io::EMBEDS.into(), view(vec![1, rows, D], &embeds)),
        (io::ATTN_BIAS.into(), view(vec![rows, rows], &bias)),
        (
            io::POSITIONS.into(),
            ort::value::TensorRef::from_array_view(([rows], positions.as_slice()))
                .unwrap()
                .into(),
        ),
        (
            io::CODEBOOK.into(),
            ort::value::TensorRef::from_array_view(((), &k[..])).unwrap().into(),
        ),
    ];
    for i in 0..cfg.decoder.num_layers {
        feeds.push((io::past_key(i), view(vec![1, kv, hd, 0], &cache)));
        feeds.push((io::past_value(i), view(vec![1, kv, 0, hd], &cache)));
    }
    let out = s.run(feeds).unwrap();
    let get = |n: &str| out[n].try_extract_tensor::<f32>().unwrap().1.to_vec();
    (get(io::LOGITS), get(io::LOGITS_ALL))
}

fn view(dims: Vec<usize>, data: &[f32]) -> ort::session::SessionInputValue<'_> {
    ort::value::TensorRef::from_array_view((dims, data)).unwrap().into()
}

#[test]
fn whole_frame_logits_match_the_per_codebook_logits_with_quantized_head_inputs() {
    let (ckpt, cfg) = load();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(&cfg, QuantFormat::Fp8, Some(QuantFormat::Fp8), 3.0);
    let plan = opts.quant.as_mut().unwrap();
    plan.groups.insert(LinearGroup::AudioHead);
    plan.activations.as_mut().unwrap().amax.insert("audio_head".into(), 0.5);
    let path = dir.path().join(engine::DECODER_GRAPH);
    lm::export_decoder(&ckpt, &cfg, &opts, &path).unwrap();
    let heads = cfg.audio_num_codebooks - 1;
    let (logits, all) = run_decoder_frame(&path, &cfg, heads as i64);
    let v = cfg.audio_vocab_size;
    assert_eq!(all.len(), heads * v);
    assert_eq!(
        &all[(heads - 1) * v..],
        logits.as_slice(),
        "the last head's row of logits_all is the per-codebook logits, fake-quantized input included"
    );
    let dense = dir.path().join("dense.onnx");
    lm::export_decoder(&ckpt, &cfg, &options(&cfg, QuantFormat::Fp8, None, 3.0), &dense).unwrap();
    assert_ne!(
        run_decoder_frame(&dense, &cfg, heads as i64).0,
        logits,
        "the head input was quantized"
    );
}
