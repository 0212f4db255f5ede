//! The graph builder writes loadable protobuf with initializers in the external
//! data file at aligned offsets, transposing and converting on the way.

use std::path::Path;

use heart::checkpoint::TensorRef;
use onnx_export::proto::{ModelProto, TensorProto};
use onnx_export::{DType, Dim, GraphBuilder, Layout};
use prost::Message;
use safetensors::Dtype;

fn external(t: &TensorProto) -> (String, u64, u64) {
    let get = |k: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(k))
            .and_then(|e| e.value.clone())
            .unwrap()
    };
    (
        get("location"),
        get("offset").parse().unwrap(),
        get("length").parse().unwrap(),
    )
}

#[test]
fn writes_graph_with_external_transposed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.onnx");
    // [3, 400] weight in PyTorch layout: value = 1000 r + c.
    let w: Vec<f32> = (0..3 * 400).map(|i| (1000 * (i / 400) + i % 400) as f32).collect();
    let bytes: Vec<u8> = bytemuck::cast_slice(&w).to_vec();
    let t = TensorRef {
        name: "lin.weight",
        dtype: Dtype::F32,
        shape: &[3, 400],
        data: &bytes,
        path: Path::new("mem"),
    };
    let mut g = GraphBuilder::create(&path, "tiny").unwrap();
    let x = g.input("x", DType::F32, &[Dim::from("batch"), 400.into()]);
    let wt = g.weight(&t, DType::F32, Layout::Transposed).unwrap();
    let w16 = g.weight_named("lin.weight.f16", &t, DType::F16, Layout::AsIs).unwrap();
    let y = g.with_scope("lin", |g| g.matmul(&x, &wt));
    g.output(&y, "y", DType::F32, &[Dim::from("batch"), 3.into()]);
    let _ = w16;
    let files = g.finish().unwrap();
    assert_eq!(files.len(), 2);
    assert!(files[1].path.ends_with("tiny.onnx.data"));
    for f in &files {
        assert_eq!(std::fs::metadata(&f.path).unwrap().len(), f.bytes);
    }

    let model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    assert_eq!(model.ir_version, Some(10));
    let graph = model.graph.unwrap();
    assert_eq!(graph.output[0].name.as_deref(), Some("y"));
    assert!(
        graph
            .node
            .iter()
            .any(|n| n.name.as_deref().unwrap_or("").starts_with("lin/MatMul"))
    );
    let data = std::fs::read(dir.path().join("tiny.onnx.data")).unwrap();
    let init = |name: &str| {
        graph
            .initializer
            .iter()
            .find(|i| i.name.as_deref() == Some(name))
            .unwrap()
    };

    let wt = init("lin.weight");
    assert_eq!(wt.dims, vec![400, 3]);
    let (loc, off, len) = external(wt);
    assert_eq!((loc.as_str(), off % 64, len), ("tiny.onnx.data", 0, 4800));
    let stored: &[f32] = bytemuck::cast_slice(&data[off as usize..(off + len) as usize]);
    for c in 0..400 {
        for r in 0..3 {
            assert_eq!(stored[c * 3 + r], w[r * 400 + c]);
        }
    }

    let (_, off, len) = external(init("lin.weight.f16"));
    assert_eq!((off % 64, len), (0, 2400));
    let h = half::f16::from_le_bytes([data[off as usize + 2 * 401], data[off as usize + 2 * 401 + 1]]);
    assert_eq!(h.to_f32(), 1001.0);
}

#[test]
fn size_mismatch_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GraphBuilder::create(&dir.path().join("bad.onnx"), "bad").unwrap();
    let err = g.init_f32("short", DType::F32, &[4], &[1.0, 2.0]).unwrap_err();
    assert!(err.to_string().contains("`short`"), "{err}");
    g.init_f32("ok", DType::F32, &[2], &[1.0, 2.0]).unwrap();
    let err = g.init_f32("ok", DType::F32, &[2], &[1.0, 2.0]).unwrap_err();
    assert!(err.to_string().contains("duplicate"), "{err}");
    let err = g.init_f32("ints", DType::I32, &[1], &[1.0]).unwrap_err();
    assert!(err.to_string().contains("cannot be stored as I32"), "{err}");
}

#[test]
fn index_layout_streams_one_slice_and_subgraphs_keep_their_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sel.onnx");
    let w: Vec<f32> = (0..3 * 2 * 300).map(|i| i as f32).collect();
    let bytes: Vec<u8> = bytemuck::cast_slice(&w).to_vec();
    let t = TensorRef {
        name: "stack",
        dtype: Dtype::F32,
        shape: &[3, 2, 300],
        data: &bytes,
        path: Path::new("mem"),
    };
    let mut g = GraphBuilder::create(&path, "sel").unwrap();
    let c = g.input("c", DType::Bool, &[]);
    let x = g.input("x", DType::F32, &[Dim::from("b"), 2.into()]);
    let w1 = g.weight_named("stack.1", &t, DType::F32, Layout::Index(1)).unwrap();
    let w2 = g.weight_named("stack.2", &t, DType::F32, Layout::Index(2)).unwrap();
    let err = g.weight_named("stack.3", &t, DType::F32, Layout::Index(3)).unwrap_err();
    assert!(err.to_string().contains("index 3"), "{err}");
    let then = g
        .subgraph("then", |g| Ok(vec![(g.matmul(&x, &w1), DType::F32)]))
        .unwrap();
    let other = g
        .subgraph("else", |g| Ok(vec![(g.matmul(&x, &w2), DType::F32)]))
        .unwrap();
    let y = g.if_(&c, then, other, 1).remove(0);
    g.output(&y, "y", DType::F32, &[Dim::from("b"), 300.into()]);
    g.finish().unwrap();

    let model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = model.graph.unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_deref().unwrap()).collect();
    assert_eq!(ops, ["If", "Identity"], "the MatMuls live in the branches");
    let branch = graph.node[0].attribute[0].g.as_ref().unwrap();
    assert_eq!(branch.node[0].op_type.as_deref(), Some("MatMul"));
    assert_eq!(branch.node[0].input, ["x", "stack.1"]);
    let init = graph
        .initializer
        .iter()
        .find(|i| i.name.as_deref() == Some("stack.2"))
        .unwrap();
    assert_eq!(init.dims, [2, 300]);
    let (_, off, len) = external(init);
    let data = std::fs::read(dir.path().join("sel.onnx.data")).unwrap();
    let stored: &[f32] = bytemuck::cast_slice(&data[off as usize..(off + len) as usize]);
    assert_eq!(stored, &w[1200..1800]);
}
