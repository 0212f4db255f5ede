//! The TensorRT NVFP4 lowering, checked structurally (no TensorRT here): the
//! written model's opsets, the FLOAT4E2M1 / FLOAT8E4M3FN initializers and their
//! bytes against the reference quantizer, and the node chain ModelOpt emits —
//! `TRT_FP4DynamicQuantize` → DQ → DQ(blocked) → Cast for activations,
//! DQ → DQ(blocked) → Transpose → Cast for weights, into one MatMul.

use std::collections::HashMap;
use std::path::Path;

use heart::quant::nvfp4::{nvfp4_global_scale, quantize_nvfp4};
use onnx_export::proto::{AttributeProto, ModelProto, NodeProto, TensorProto, tensor_proto::DataType};
use onnx_export::quant::tensorrt::{FP4_DYNAMIC_QUANTIZE, TENSORRT_MIN_OPSET, TRT_DOMAIN};
use onnx_export::quant::{QuantEmitter, WeightScheme};
use onnx_export::{DType, Dim, GraphBuilder};
use prost::Message;

const OUT: usize = 48;
const IN: usize = 96;
const W: &str = "layers.3.mlp.w2.weight";
const ACT: &str = "layers.3.mlp.w2.input";

fn weights() -> Vec<f32> {
    (0..OUT * IN)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 97.0)
        .collect()
}

/// Exports `y = fq(x) · dq(W)ᵀ` in the TensorRT form at `dtype`.
fn export(dir: &Path, dtype: DType) -> (ModelProto, Vec<u8>) {
    let w = weights();
    let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let t = heart::checkpoint::TensorRef {
        name: W,
        dtype: safetensors::Dtype::F32,
        shape: &[OUT, IN],
        data: &bytes,
        path: Path::new("mem"),
    };
    let path = dir.join("trt.onnx");
    let mut g = GraphBuilder::create(&path, "trt").unwrap();
    let mut em = QuantEmitter::new();
    let x = g.input("x", dtype, &[Dim::from("tokens"), IN.into()]);
    let y = em
        .linear(
            &mut g,
            &x,
            &t,
            WeightScheme::Nvfp4TensorRt,
            Some(nvfp4_global_scale(12.0)),
            dtype,
        )
        .unwrap();
    g.output(&y, "y", dtype, &[Dim::from("tokens"), OUT.into()]);
    let files = em.finish(g).unwrap();
    for f in &files {
        assert_eq!(
            std::fs::metadata(&f.path).unwrap().len(),
            f.bytes,
            "{}",
            f.path.display()
        );
    }
    let model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let data = std::fs::read(dir.join("trt.onnx.data")).unwrap();
    (model, data)
}

/// The bytes of an initializer, inline or external.
fn stored<'a>(t: &'a TensorProto, data: &'a [u8]) -> &'a [u8] {
    if let Some(raw) = &t.raw_data {
        return raw;
    }
    let get = |k: &str| -> usize {
        let e = t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).unwrap();
        e.value.as_deref().unwrap().parse().unwrap()
    };
    &data[get("offset")..get("offset") + get("length")]
}

fn attrs(n: &NodeProto) -> HashMap<&str, &AttributeProto> {
    n.attribute.iter().map(|a| (a.name.as_deref().unwrap(), a)).collect()
}

fn int_attr(n: &NodeProto, name: &str) -> Option<i64> {
    attrs(n).get(name).and_then(|a| a.i)
}

/// Walks producer links of a model's nodes.
struct Graph<'a> {
    producers: HashMap<&'a str, &'a NodeProto>,
}

impl<'a> Graph<'a> {
    fn new(m: &'a ModelProto) -> Self {
        let mut producers = HashMap::new();
        for n in &m.graph.as_ref().unwrap().node {
            for o in &n.output {
                producers.insert(o.as_str(), n);
            }
        }
        Self { producers }
    }

    /// The node producing input `i` of `n`, which must be an `op`.
    fn input(&self, n: &NodeProto, i: usize, op: &str) -> &'a NodeProto {
        let p = self.producers[n.input[i].as_str()];
        assert_eq!(p.op_type.as_deref(), Some(op), "input {i} of {:?}", n.name);
        p
    }
}

#[test]
fn tensorrt_form_has_modelopt_structure_and_reference_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = export(dir.path(), DType::F16);
    let q = quantize_nvfp4(&weights(), OUT, IN).unwrap();

    assert_eq!(model.ir_version, Some(11));
    let opsets: HashMap<&str, i64> = model
        .opset_import
        .iter()
        .map(|o| (o.domain.as_deref().unwrap_or(""), o.version.unwrap()))
        .collect();
    assert_eq!(opsets[""], TENSORRT_MIN_OPSET);
    assert_eq!(opsets[TRT_DOMAIN], 1);

    // Initializers: types, dims and bytes.
    let graph = model.graph.as_ref().unwrap();
    let init: HashMap<&str, &TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_deref().unwrap(), t))
        .collect();
    let codes = init[format!("{W}.nvfp4_codes").as_str()];
    assert_eq!(codes.data_type, Some(DataType::Float4e2m1 as i32));
    assert_eq!(codes.dims, [OUT as i64, IN as i64]);
    assert_eq!(
        stored(codes, &data),
        q.packed(),
        "FP4 codes: flat row-major, low nibble first"
    );
    assert_eq!(stored(codes, &data).len(), OUT * IN / 2);
    let scales = init[format!("{W}.nvfp4_block_scales").as_str()];
    assert_eq!(scales.data_type, Some(DataType::Float8e4m3fn as i32));
    assert_eq!(scales.dims, [OUT as i64, (IN / 16) as i64]);
    assert_eq!(stored(scales, &data), q.block_scales());
    let global = init[format!("{W}.nvfp4_global").as_str()];
    assert_eq!(global.data_type, Some(DataType::Float as i32));
    assert!(global.dims.is_empty());
    assert_eq!(stored(global, &data), q.global_scale().to_le_bytes());
    let act_global = init[format!("{ACT}.nvfp4_global").as_str()];
    assert_eq!(stored(act_global, &data), nvfp4_global_scale(12.0).to_le_bytes());

    // The node chain, from the MatMul back to the inputs and initializers.
    let g = Graph::new(&model);
    let y = graph.output.iter().find(|o| o.name.as_deref() == Some("y")).unwrap();
    let ident = g.producers[y.name.as_deref().unwrap()];
    let mm = g.input(ident, 0, "MatMul");

    let cast_x = g.input(mm, 0, "Cast");
    assert_eq!(int_attr(cast_x, "to"), Some(DataType::Float16 as i64));
    let dq_x = g.input(cast_x, 0, "DequantizeLinear");
    assert_eq!(
        (int_attr(dq_x, "axis"), int_attr(dq_x, "block_size")),
        (Some(-1), Some(16))
    );
    let dyn_q = g.input(dq_x, 0, FP4_DYNAMIC_QUANTIZE);
    assert_eq!(dyn_q.domain.as_deref(), Some(TRT_DOMAIN));
    assert_eq!(dyn_q.input, ["x".to_string(), format!("{ACT}.nvfp4_global")]);
    assert_eq!(dyn_q.output.len(), 2);
    assert_eq!(dq_x.input[0], dyn_q.output[0], "x_f4 first");
    let a = attrs(dyn_q);
    assert_eq!(a.len(), 3);
    assert_eq!(
        (
            int_attr(dyn_q, "axis"),
            int_attr(dyn_q, "block_size"),
            int_attr(dyn_q, "scale_type")
        ),
        (Some(-1), Some(16), Some(DataType::Float8e4m3fn as i64))
    );
    let dq_sx = g.input(dq_x, 1, "DequantizeLinear");
    assert!(dq_sx.attribute.is_empty());
    assert_eq!(dq_sx.input, [dyn_q.output[1].clone(), format!("{ACT}.nvfp4_global")]);

    let cast_w = g.input(mm, 1, "Cast");
    assert_eq!(int_attr(cast_w, "to"), Some(DataType::Float16 as i64));
    let tr = g.input(cast_w, 0, "Transpose");
    assert_eq!(attrs(tr)["perm"].ints, [1, 0]);
    let dq_w = g.input(tr, 0, "DequantizeLinear");
    assert_eq!(
        (int_attr(dq_w, "axis"), int_attr(dq_w, "block_size")),
        (Some(-1), Some(16))
    );
    assert_eq!(dq_w.input[0], format!("{W}.nvfp4_codes"));
    let dq_s = g.input(dq_w, 1, "DequantizeLinear");
    assert!(dq_s.attribute.is_empty());
    assert_eq!(
        dq_s.input,
        [format!("{W}.nvfp4_block_scales"), format!("{W}.nvfp4_global")]
    );

    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "DequantizeLinear").count(), 4, "{ops:?}");
    assert_eq!(ops.len(), 10, "nothing else in the graph: {ops:?}");
}

#[test]
fn f32_tensorrt_form_has_no_casts() {
    let dir = tempfile::tempdir().unwrap();
    let (model, _) = export(dir.path(), DType::F32);
    let ops: Vec<&str> = model
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| n.op_type.as_deref().unwrap())
        .collect();
    assert!(!ops.contains(&"Cast"), "{ops:?}");
}

#[test]
fn portable_graphs_keep_their_opset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.onnx");
    let mut g = GraphBuilder::create(&path, "p").unwrap();
    let mut em = QuantEmitter::new();
    let x = g.input("x", DType::F32, &[Dim::from("tokens"), IN.into()]);
    let q = quantize_nvfp4(&weights(), OUT, IN).unwrap();
    let w = em.nvfp4_portable(&mut g, W, &q, DType::F32).unwrap();
    let y = g.matmul(&x, &w);
    g.output(&y, "y", DType::F32, &[Dim::from("tokens"), OUT.into()]);
    em.finish(g).unwrap();
    let model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    assert_eq!(model.ir_version, Some(10));
    assert!(
        model.opset_import.iter().all(|o| o.version == Some(21)),
        "{:?}",
        model.opset_import
    );
}

#[test]
fn bypassing_the_emitter_finish_fails_loudly() {
    // Written with GraphBuilder::finish, the codes stay u8 [out, in/2]: the
    // blocked DQ's scale no longer fits, and ONNX Runtime refuses to run it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.onnx");
    let mut g = GraphBuilder::create(&path, "raw").unwrap();
    let mut em = QuantEmitter::new();
    let q = quantize_nvfp4(&weights(), OUT, IN).unwrap();
    let w = em.nvfp4_tensorrt(&mut g, W, &q, DType::F32).unwrap();
    g.output(&w, "w", DType::F32, &[IN.into(), OUT.into()]);
    g.finish().unwrap();
    let rt = heart_backend::init(None).expect("run scripts/setup-ort.sh first");
    let result = ort::session::Session::builder(&rt.env)
        .unwrap()
        .commit_from_file(&path)
        .and_then(|mut s| {
            let none: Vec<(String, ort::session::SessionInputValue<'_>)> = Vec::new();
            s.run(none).map(|_| ())
        });
    let err = result.expect_err("a u8 placeholder must not dequantize").to_string();
    assert!(err.contains("x_scale must be ceil(Di/block_size)"), "{err}");
}
