//! A small typed builder over the generated ONNX protobuf types.
//!
//! One [`GraphBuilder`] writes one graph: `<name>.onnx` plus, for initializers
//! above the inline limit, one external data file `<name>.onnx.data` that is
//! appended to while the graph is built (see [`crate::external`]). Weights are
//! streamed from the memory-mapped checkpoint in chunks ([`GraphBuilder::weight`],
//! [`GraphBuilder::init_stream`]), so exporting a 16 GB model needs no second
//! copy of it in RAM.
//!
//! Tensors inside the graph are [`Value`]s (their ONNX names). Node helpers (in
//! [`crate::ops`]) take `&Value`s and return fresh, uniquely named outputs; the
//! current scope (see [`GraphBuilder::with_scope`]) prefixes node and value names
//! so a graph stays readable in Netron. Graph outputs get their public names
//! through an `Identity` when needed.
//!
//! Opsets: default domain 21 unless raised with [`GraphBuilder::set_opset`];
//! `com.microsoft` version 1 is imported automatically on first use. The IR
//! version is derived from the default-domain opset and never exceeds 11
//! (ONNX Runtime 1.31 rejects the IR 14 that `onnx` 1.23 writes by default).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use heart::checkpoint::TensorRef;
use prost::Message;

use crate::error::{ExportError, Result};
use crate::external::{ExternalData, WrittenFile};
use crate::proto::{
    GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    tensor_proto::DataLocation, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};
pub use crate::types::{Attr, DType, Dim, Layout, Value};

/// Domain of ONNX Runtime's contrib operators.
pub const MS_DOMAIN: &str = "com.microsoft";
/// Default-domain opset used unless a graph asks for more.
pub const DEFAULT_OPSET: i64 = 21;
/// Initializers up to this many bytes are stored inside the `.onnx` file.
pub const DEFAULT_INLINE_LIMIT: u64 = 1024;
/// Elements converted per chunk when streaming checkpoint tensors.
const CHUNK: usize = 1 << 18;

/// Builds one ONNX graph and writes it with its external data file.
pub struct GraphBuilder {
    onnx_path: PathBuf,
    graph: GraphProto,
    data: ExternalData,
    opsets: BTreeMap<String, i64>,
    inline_limit: u64,
    names: HashSet<String>,
    weights: HashMap<String, (DType, Layout)>,
    counter: usize,
    scope: Vec<String>,
    metadata: Vec<(String, String)>,
}

impl GraphBuilder {
    /// Starts graph `name`, to be written to `onnx_path`; its external data goes
    /// to `<onnx_path>.data` (created now, appended to as initializers are added).
    pub fn create(onnx_path: &Path, name: &str) -> Result<Self> {
        let mut data_name = onnx_path.as_os_str().to_owned();
        data_name.push(".data");
        let data = ExternalData::create(Path::new(&data_name))?;
        Ok(Self {
            onnx_path: onnx_path.to_path_buf(),
            graph: GraphProto {
                name: Some(name.to_string()),
                ..Default::default()
            },
            data,
            opsets: BTreeMap::from([(String::new(), DEFAULT_OPSET)]),
            inline_limit: DEFAULT_INLINE_LIMIT,
            names: HashSet::new(),
            weights: HashMap::new(),
            counter: 0,
            scope: Vec::new(),
            metadata: Vec::new(),
        })
    }

    /// Sets the opset version of `domain` (`""` = the default ONNX domain).
    pub fn set_opset(&mut self, domain: &str, version: i64) {
        self.opsets.insert(domain.to_string(), version);
    }

    /// Initializers up to `bytes` are stored inline; larger ones go to the data file.
    pub fn set_inline_limit(&mut self, bytes: u64) {
        self.inline_limit = bytes;
    }

    /// Adds a `metadata_props` entry to the model.
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.to_string(), value.to_string()));
    }

    /// Runs `f` with `name` appended to the scope that prefixes generated names.
    pub fn with_scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scope.push(name.to_string());
        let r = f(self);
        self.scope.pop();
        r
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, dtype: DType, dims: &[Dim]) -> Value {
        self.names.insert(name.to_string());
        self.graph.input.push(value_info(name, dtype, dims));
        Value::new(name)
    }

    /// Declares `value` a graph output called `name` (renamed through an
    /// `Identity` if its name differs).
    pub fn output(&mut self, value: &Value, name: &str, dtype: DType, dims: &[Dim]) {
        if value.name() != name {
            self.names.insert(name.to_string());
            self.push_node("", "Identity", &[Some(value)], vec![name.to_string()], Vec::new());
        }
        self.graph.output.push(value_info(name, dtype, dims));
    }

    /// Adds a node of the default domain with one output.
    pub fn node(&mut self, op: &str, inputs: &[&Value], attrs: Vec<Attr>) -> Value {
        let inputs: Vec<Option<&Value>> = inputs.iter().map(|v| Some(*v)).collect();
        self.node_ext("", op, &inputs, 1, attrs).remove(0)
    }

    /// Adds a node of any domain with `n_outputs` outputs; `None` inputs are
    /// omitted optional inputs (written as empty names).
    pub fn node_ext(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[Option<&Value>],
        n_outputs: usize,
        attrs: Vec<Attr>,
    ) -> Vec<Value> {
        if !domain.is_empty() && !self.opsets.contains_key(domain) {
            self.opsets.insert(domain.to_string(), 1);
        }
        let outputs: Vec<String> = (0..n_outputs).map(|_| self.fresh(op)).collect();
        self.push_node(domain, op, inputs, outputs.clone(), attrs);
        outputs.iter().map(|n| Value::new(n)).collect()
    }

    /// Builds a subgraph (for `If`/`Loop` attributes): nodes `f` adds go to it,
    /// initializers and constants to the main graph (visible from inside).
    /// `f` returns the subgraph's outputs with their element types.
    pub fn subgraph(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Self) -> Result<Vec<(Value, DType)>>,
    ) -> Result<GraphProto> {
        let outer = std::mem::take(&mut self.graph.node);
        let outputs = f(self);
        let node = std::mem::replace(&mut self.graph.node, outer);
        let output = outputs?
            .iter()
            .map(|(v, dtype)| ValueInfoProto {
                name: Some(v.name().to_string()),
                r#type: Some(TypeProto {
                    value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                        elem_type: Some(dtype.onnx()),
                        shape: None,
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        Ok(GraphProto {
            name: Some(name.to_string()),
            node,
            output,
            ..Default::default()
        })
    }

    /// Stores an f32 initializer as `dtype` (F32, F16, BF16 or F64).
    pub fn init_f32(&mut self, name: &str, dtype: DType, dims: &[usize], data: &[f32]) -> Result<Value> {
        self.init_stream(name, dtype, dims, |sink| sink.push_f32(data))
    }

    /// Stores an int64 initializer.
    pub fn init_i64(&mut self, name: &str, dims: &[usize], data: &[i64]) -> Result<Value> {
        self.init_stream(name, DType::I64, dims, |sink| {
            sink.push_bytes(bytemuck::cast_slice(data))
        })
    }

    /// Stores an initializer whose data `fill` streams into the sink, in order,
    /// as f32 (converted to `dtype`) or as raw little-endian bytes of `dtype`.
    /// The pushed amount must match `dims` exactly.
    pub fn init_stream(
        &mut self,
        name: &str,
        dtype: DType,
        dims: &[usize],
        fill: impl FnOnce(&mut TensorSink<'_>) -> Result<()>,
    ) -> Result<Value> {
        if !self.names.insert(name.to_string()) {
            return Err(ExportError::Shape {
                tensor: name.to_string(),
                expected: "a name not used before in this graph".into(),
                got: "a duplicate".into(),
            });
        }
        let expected = dims.iter().product::<usize>() as u64 * dtype.size() as u64;
        let inline = expected <= self.inline_limit;
        let mut tensor = TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(dtype.onnx()),
            ..Default::default()
        };
        let mut buf = Vec::new();
        if !inline {
            self.data.begin(expected)?;
        }
        let mut sink = TensorSink {
            name,
            dtype,
            expected,
            written: 0,
            dest: if inline {
                Dest::Inline(&mut buf)
            } else {
                Dest::External(&mut self.data)
            },
        };
        fill(&mut sink)?;
        sink.check_complete()?;
        if inline {
            tensor.raw_data = Some(buf);
        } else {
            let extent = self.data.end();
            tensor.data_location = Some(DataLocation::External as i32);
            tensor.external_data = self.data.entries(extent);
        }
        self.graph.initializer.push(tensor);
        Ok(Value::new(name))
    }

    /// Streams checkpoint tensor `t` into an initializer named after it, converted
    /// to `dtype` (F32, F16, BF16) and laid out as `layout`.
    pub fn weight(&mut self, t: &TensorRef<'_>, dtype: DType, layout: Layout) -> Result<Value> {
        self.weight_named(t.name, t, dtype, layout)
    }

    /// Like [`Self::weight`] but with an explicit initializer name. Asking
    /// again for a weight already stored under `name` with the same dtype and
    /// layout returns it (a graph that runs a stack several times stores its
    /// weights once); with another dtype or layout it is an error.
    pub fn weight_named(&mut self, name: &str, t: &TensorRef<'_>, dtype: DType, layout: Layout) -> Result<Value> {
        match self.weights.get(name) {
            Some(&stored) if stored == (dtype, layout) => return Ok(Value::new(name)),
            Some(stored) => {
                return Err(ExportError::Shape {
                    tensor: name.to_string(),
                    expected: format!("the dtype and layout it was stored with, {stored:?}"),
                    got: format!("{:?}", (dtype, layout)),
                });
            }
            None => {}
        }
        let value = self.stream_weight(name, t, dtype, layout)?;
        self.weights.insert(name.to_string(), (dtype, layout));
        Ok(value)
    }

    fn stream_weight(&mut self, name: &str, t: &TensorRef<'_>, dtype: DType, layout: Layout) -> Result<Value> {
        match layout {
            Layout::AsIs => self.init_stream(name, dtype, t.shape, |sink| stream_range(t, 0, t.numel(), sink)),
            Layout::Index(i) => {
                let (Some(&outer), Some(inner)) = (t.shape.first(), t.shape.get(1..).filter(|s| !s.is_empty())) else {
                    return Err(ExportError::Shape {
                        tensor: t.name.to_string(),
                        expected: "at least 2 dimensions to index axis 0".into(),
                        got: format!("shape {:?}", t.shape),
                    });
                };
                if i >= outer {
                    return Err(ExportError::Shape {
                        tensor: t.name.to_string(),
                        expected: format!("index {i} on axis 0"),
                        got: format!("shape {:?}", t.shape),
                    });
                }
                let n: usize = inner.iter().product();
                self.init_stream(name, dtype, inner, |sink| stream_range(t, i * n, n, sink))
            }
            Layout::Transposed => {
                let &[rows, cols] = t.shape else {
                    return Err(ExportError::Shape {
                        tensor: t.name.to_string(),
                        expected: "a 2-D tensor to transpose".into(),
                        got: format!("shape {:?}", t.shape),
                    });
                };
                self.init_stream(name, dtype, &[cols, rows], |sink| {
                    stream_transposed(t, rows, cols, sink)
                })
            }
        }
    }

    /// A 1-D int64 constant stored inline (shapes, axes, indices).
    pub fn const_i64(&mut self, values: &[i64]) -> Value {
        let name = self.fresh("const");
        self.push_inline(
            &name,
            DType::I64,
            &[values.len()],
            bytemuck::cast_slice(values).to_vec(),
        )
    }

    /// A 0-D int64 constant stored inline.
    pub fn scalar_i64(&mut self, v: i64) -> Value {
        let name = self.fresh("const");
        self.push_inline(&name, DType::I64, &[], v.to_le_bytes().to_vec())
    }

    /// A 0-D float constant stored inline as `dtype` (F16, BF16 or F64; any
    /// other dtype stores F32).
    pub fn scalar_f(&mut self, v: f32, dtype: DType) -> Value {
        let name = self.fresh("const");
        let dtype = match dtype {
            DType::F16 | DType::BF16 | DType::F64 => dtype,
            _ => DType::F32,
        };
        let bytes = float_bytes(&[v], dtype).unwrap_or_default();
        self.push_inline(&name, dtype, &[], bytes)
    }

    /// Writes `<name>.onnx` (and its data file, if any initializer went there)
    /// and returns the files written with their sizes.
    pub fn finish(self) -> Result<Vec<WrittenFile>> {
        let default_opset = self.opsets.get("").copied().unwrap_or(DEFAULT_OPSET);
        let model = ModelProto {
            ir_version: Some(ir_version_for(default_opset)),
            opset_import: self
                .opsets
                .iter()
                .map(|(domain, &version)| OperatorSetIdProto {
                    domain: Some(domain.clone()),
                    version: Some(version),
                })
                .collect(),
            producer_name: Some("heart onnx-export".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            metadata_props: self
                .metadata
                .iter()
                .map(|(k, v)| crate::proto::StringStringEntryProto {
                    key: Some(k.clone()),
                    value: Some(v.clone()),
                })
                .collect(),
            graph: Some(self.graph),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        std::fs::write(&self.onnx_path, &bytes).map_err(|source| ExportError::Io {
            path: self.onnx_path.clone(),
            source,
        })?;
        let mut files = vec![WrittenFile {
            path: self.onnx_path,
            bytes: bytes.len() as u64,
        }];
        files.extend(self.data.finish()?);
        Ok(files)
    }

    fn fresh(&mut self, op: &str) -> String {
        loop {
            self.counter += 1;
            let mut name = self.scope.join(".");
            if !name.is_empty() {
                name.push('/');
            }
            name.push_str(&format!("{op}_{}", self.counter));
            if self.names.insert(name.clone()) {
                return name;
            }
        }
    }

    fn push_node(&mut self, domain: &str, op: &str, inputs: &[Option<&Value>], outputs: Vec<String>, attrs: Vec<Attr>) {
        let name = format!("{}_node", outputs.first().map(String::as_str).unwrap_or(op));
        self.graph.node.push(NodeProto {
            input: inputs
                .iter()
                .map(|v| v.map(|v| v.name().to_string()).unwrap_or_default())
                .collect(),
            output: outputs,
            name: Some(name),
            op_type: Some(op.to_string()),
            domain: Some(domain.to_string()),
            attribute: attrs.into_iter().map(Attr::into_proto).collect(),
            ..Default::default()
        });
    }

    fn push_inline(&mut self, name: &str, dtype: DType, dims: &[usize], raw: Vec<u8>) -> Value {
        self.graph.initializer.push(TensorProto {
            name: Some(name.to_string()),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: Some(dtype.onnx()),
            raw_data: Some(raw),
            ..Default::default()
        });
        Value::new(name)
    }
}

enum Dest<'a> {
    Inline(&'a mut Vec<u8>),
    External(&'a mut ExternalData),
}

/// Receives an initializer's data in order (see [`GraphBuilder::init_stream`]).
pub struct TensorSink<'a> {
    name: &'a str,
    dtype: DType,
    expected: u64,
    written: u64,
    dest: Dest<'a>,
}

impl TensorSink<'_> {
    /// Appends f32 values, converted to the initializer's float dtype.
    pub fn push_f32(&mut self, values: &[f32]) -> Result<()> {
        let Some(bytes) = float_bytes(values, self.dtype) else {
            return Err(ExportError::Unsupported {
                what: format!(
                    "initializer `{}`: f32 data cannot be stored as {:?}",
                    self.name, self.dtype
                ),
            });
        };
        self.push_bytes(&bytes)
    }

    /// Appends raw little-endian bytes of the initializer's dtype.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        self.written += bytes.len() as u64;
        if self.written > self.expected {
            return Err(self.size_error());
        }
        match &mut self.dest {
            Dest::Inline(buf) => buf.extend_from_slice(bytes),
            Dest::External(data) => data.write(bytes)?,
        }
        Ok(())
    }

    fn check_complete(&self) -> Result<()> {
        if self.written == self.expected {
            Ok(())
        } else {
            Err(self.size_error())
        }
    }

    fn size_error(&self) -> ExportError {
        ExportError::Shape {
            tensor: self.name.to_string(),
            expected: format!("{} bytes of {:?} data", self.expected, self.dtype),
            got: format!("{} bytes", self.written),
        }
    }
}

/// Converts f32 values to the little-endian bytes of a float dtype (F32, F16
/// round-to-nearest-even, BF16 round-to-nearest-even, F64); `None` otherwise.
pub fn float_bytes(values: &[f32], dtype: DType) -> Option<Vec<u8>> {
    Some(match dtype {
        DType::F32 => bytemuck::cast_slice(values).to_vec(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        DType::F64 => values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect(),
        _ => return None,
    })
}

/// Streams elements `start..start + n` of `t` in chunks.
fn stream_range(t: &TensorRef<'_>, start: usize, n: usize, sink: &mut TensorSink<'_>) -> Result<()> {
    let mut chunk = vec![0f32; CHUNK.min(n)];
    let mut done = 0;
    while done < n {
        let len = chunk.len().min(n - done);
        t.read_f32_into(start + done, &mut chunk[..len])?;
        sink.push_f32(&chunk[..len])?;
        done += len;
    }
    Ok(())
}

/// Streams `t` (`[rows, cols]`) as `[cols, rows]`, a band of output rows at a
/// time: each band reads a short contiguous run from every input row, so memory
/// stays at `rows × BAND` floats.
fn stream_transposed(t: &TensorRef<'_>, rows: usize, cols: usize, sink: &mut TensorSink<'_>) -> Result<()> {
    const BAND: usize = 64;
    let mut run = [0f32; BAND];
    let mut band = vec![0f32; rows * BAND];
    for c0 in (0..cols).step_by(BAND) {
        let w = BAND.min(cols - c0);
        for r in 0..rows {
            t.read_f32_into(r * cols + c0, &mut run[..w])?;
            for (j, &v) in run[..w].iter().enumerate() {
                band[j * rows + r] = v;
            }
        }
        sink.push_f32(&band[..w * rows])?;
    }
    Ok(())
}

/// IR version matching a default-domain opset (onnx release table), capped at 11.
pub fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=21 => 10,
        22 => 10,
        _ => 11,
    }
}

fn value_info(name: &str, dtype: DType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(dtype.onnx()),
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}
