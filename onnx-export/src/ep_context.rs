//! EP-context models: a one-node ONNX model that hands ONNX Runtime a
//! prebuilt engine instead of a graph to compile.
//!
//! ONNX Runtime's contrib operator `com.microsoft.EPContext` names the engine
//! file and the execution provider that can run it; the provider deserializes
//! the engine and binds the node's inputs and outputs to the engine's tensors
//! **by name**. So the node's I/O are the engine's I/O tensors, with the source
//! graph's names, dtypes and dims (symbolic dims keep their names).
//!
//! Attributes written (those the NvTensorRTRTX plugin provider reads, per
//! NVIDIA/TensorRT-RTX-EP-ABI `src/onnx_ctx_model_helper.{h,cc}`, plus the
//! ones ONNX Runtime's EP-context design lists):
//!
//! | attribute | value |
//! |---|---|
//! | `embed_mode` | 0: the engine is a file next to the model |
//! | `ep_cache_context` | the engine's path relative to the model's folder (the provider refuses absolute paths and `..`) |
//! | `source` | the provider's name, e.g. `NvTensorRTRTXExecutionProvider` |
//! | `main_context` | 1: this node owns its engine |
//! | `hardware_architecture` | compute capability as `major·10 + minor` (`121` for the GB10) |
//! | `partition_name` | a name unique per engine folder (the provider keys its runtime cache on it) |
//! | `ep_sdk_version` | the builder's version, e.g. `1.7.1.116` |
//! | `onnx_model_filename` | the source graph's file name (what a weight refit would read) |

use std::path::Path;

use prost::Message;

use crate::error::{ExportError, Result};
use crate::graph::Attr;
use crate::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};

/// The operator of an EP-context node.
pub const EP_CONTEXT_OP: &str = "EPContext";
/// Its domain.
pub const EP_CONTEXT_DOMAIN: &str = "com.microsoft";
/// `source` of engines for ONNX Runtime's NvTensorRTRTX execution provider.
pub const NV_TENSORRT_RTX_SOURCE: &str = "NvTensorRTRTXExecutionProvider";

/// What one EP-context model says about its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpContext<'a> {
    /// `ep_cache_context`: the engine file relative to the model's folder.
    pub engine: &'a str,
    /// `source`: the execution provider that runs the engine.
    pub source: &'a str,
    /// `hardware_architecture`: compute capability, `major·10 + minor`.
    pub hardware_architecture: &'a str,
    /// `partition_name`: unique within the engine folder.
    pub partition_name: &'a str,
    /// `ep_sdk_version`: the engine builder's version.
    pub sdk_version: &'a str,
    /// `onnx_model_filename`: the graph the engine was built from.
    pub onnx_model_filename: &'a str,
}

/// Writes to `out` an EP-context model whose node takes the inputs and gives
/// the outputs of the ONNX model `source` named in `inputs` and `outputs`, in
/// that order (the engine's tensor order). A name the source graph does not
/// declare is an error naming both files.
pub fn write_ep_context_model(
    source: &Path,
    inputs: &[String],
    outputs: &[String],
    ctx: &EpContext<'_>,
    out: &Path,
) -> Result<u64> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    let bytes = std::fs::read(source).map_err(io(source))?;
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| ExportError::Shape {
        tensor: source.display().to_string(),
        expected: "an ONNX model".into(),
        got: format!("undecodable protobuf ({e})"),
    })?;
    let graph = model.graph.unwrap_or_default();
    let pick = |names: &[String], declared: &[ValueInfoProto], what: &str| -> Result<Vec<ValueInfoProto>> {
        names
            .iter()
            .map(|name| {
                declared
                    .iter()
                    .find(|v| v.name.as_deref() == Some(name.as_str()))
                    .cloned()
                    .ok_or_else(|| ExportError::Shape {
                        tensor: name.clone(),
                        expected: format!("a graph {what} of {}", source.display()),
                        got: format!("an engine {what} that {} does not declare", source.display()),
                    })
            })
            .collect()
    };
    let input = pick(inputs, &graph.input, "input")?;
    let output = pick(outputs, &graph.output, "output")?;
    let attrs = [
        Attr::int("embed_mode", 0),
        Attr::string("ep_cache_context", ctx.engine),
        Attr::string("source", ctx.source),
        Attr::int("main_context", 1),
        Attr::string("hardware_architecture", ctx.hardware_architecture),
        Attr::string("partition_name", ctx.partition_name),
        Attr::string("ep_sdk_version", ctx.sdk_version),
        Attr::string("onnx_model_filename", ctx.onnx_model_filename),
    ];
    let node = NodeProto {
        name: Some(format!("{}_{}", ctx.partition_name, EP_CONTEXT_OP)),
        op_type: Some(EP_CONTEXT_OP.into()),
        domain: Some(EP_CONTEXT_DOMAIN.into()),
        input: inputs.to_vec(),
        output: outputs.to_vec(),
        attribute: attrs.into_iter().map(Attr::into_proto).collect(),
        ..Default::default()
    };
    let opset = |domain: &str, version: i64| OperatorSetIdProto {
        domain: Some(domain.into()),
        version: Some(version),
    };
    let ctx_model = ModelProto {
        ir_version: Some(10),
        opset_import: vec![opset("", 21), opset(EP_CONTEXT_DOMAIN, 1)],
        producer_name: Some("heart-build".into()),
        producer_version: Some(env!("CARGO_PKG_VERSION").into()),
        graph: Some(GraphProto {
            name: Some(format!("{}_ctx", ctx.partition_name)),
            node: vec![node],
            input,
            output,
            ..Default::default()
        }),
        ..Default::default()
    };
    let encoded = ctx_model.encode_to_vec();
    std::fs::write(out, &encoded).map_err(io(out))?;
    Ok(encoded.len() as u64)
}

/// The `EPContext` node of the model at `path` and its string attributes, for
/// checks and for loaders: `(node, attribute name → value)`.
pub fn read_ep_context_node(path: &Path) -> Result<(NodeProto, Vec<(String, String)>)> {
    let bytes = std::fs::read(path).map_err(|source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |got: String| ExportError::Shape {
        tensor: path.display().to_string(),
        expected: "an EP-context model with exactly one com.microsoft.EPContext node".into(),
        got,
    };
    let model = ModelProto::decode(bytes.as_slice()).map_err(|e| bad(format!("undecodable protobuf ({e})")))?;
    let nodes = model.graph.map(|g| g.node).unwrap_or_default();
    let [node] = nodes.as_slice() else {
        return Err(bad(format!("{} nodes", nodes.len())));
    };
    if node.op_type.as_deref() != Some(EP_CONTEXT_OP) || node.domain.as_deref() != Some(EP_CONTEXT_DOMAIN) {
        return Err(bad(format!("a {:?} node of domain {:?}", node.op_type, node.domain)));
    }
    let strings = node
        .attribute
        .iter()
        .filter_map(|a| {
            let value = match (&a.s, a.i) {
                (Some(s), _) => String::from_utf8_lossy(s).into_owned(),
                (None, Some(i)) => i.to_string(),
                (None, None) => return None,
            };
            Some((a.name.clone()?, value))
        })
        .collect();
    Ok((node.clone(), strings))
}
