//! Value types of the graph builder: element types, dimensions, tensor
//! handles, node attributes and weight layouts.

use crate::proto::{AttributeProto, GraphProto, attribute_proto::AttributeType};

/// Element types of graph tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// IEEE float16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE float64.
    F64,
    /// Signed 64-bit integer.
    I64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Boolean (one byte).
    Bool,
    /// FP8 E4M3FN.
    F8E4M3FN,
}

impl DType {
    /// The `TensorProto.DataType` code.
    pub fn onnx(self) -> i32 {
        use crate::proto::tensor_proto::DataType as D;
        (match self {
            Self::F32 => D::Float,
            Self::F16 => D::Float16,
            Self::BF16 => D::Bfloat16,
            Self::F64 => D::Double,
            Self::I64 => D::Int64,
            Self::I32 => D::Int32,
            Self::I8 => D::Int8,
            Self::U8 => D::Uint8,
            Self::Bool => D::Bool,
            Self::F8E4M3FN => D::Float8e4m3fn,
        }) as i32
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::I8 | Self::U8 | Self::Bool | Self::F8E4M3FN => 1,
        }
    }
}

/// One dimension of a graph input or output: fixed, or a named symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A symbolic size shared by every dimension with the same name.
    Sym(String),
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Self::Fixed(n)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Self::Sym(s.to_string())
    }
}

/// A tensor inside a graph, identified by its ONNX name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Value(String);

impl Value {
    /// A reference to the graph tensor called `name`.
    pub(crate) fn new(name: &str) -> Self {
        Self(name.to_string())
    }

    /// The ONNX name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A node attribute.
#[derive(Debug, Clone)]
pub struct Attr(AttributeProto);

impl Attr {
    /// The protobuf form.
    pub(crate) fn into_proto(self) -> AttributeProto {
        self.0
    }

    fn proto(name: &str, ty: AttributeType) -> AttributeProto {
        AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(ty as i32),
            ..Default::default()
        }
    }

    /// An integer attribute.
    pub fn int(name: &str, v: i64) -> Self {
        Self(AttributeProto {
            i: Some(v),
            ..Self::proto(name, AttributeType::Int)
        })
    }

    /// An integer-list attribute.
    pub fn ints(name: &str, v: &[i64]) -> Self {
        Self(AttributeProto {
            ints: v.to_vec(),
            ..Self::proto(name, AttributeType::Ints)
        })
    }

    /// A float attribute.
    pub fn float(name: &str, v: f32) -> Self {
        Self(AttributeProto {
            f: Some(v),
            ..Self::proto(name, AttributeType::Float)
        })
    }

    /// A float-list attribute.
    pub fn floats(name: &str, v: &[f32]) -> Self {
        Self(AttributeProto {
            floats: v.to_vec(),
            ..Self::proto(name, AttributeType::Floats)
        })
    }

    /// A subgraph attribute (`then_branch`, `else_branch`, `body`).
    pub fn graph(name: &str, g: GraphProto) -> Self {
        Self(AttributeProto {
            g: Some(g),
            ..Self::proto(name, AttributeType::Graph)
        })
    }

    /// A string attribute.
    pub fn string(name: &str, v: &str) -> Self {
        Self(AttributeProto {
            s: Some(v.as_bytes().to_vec()),
            ..Self::proto(name, AttributeType::String)
        })
    }
}

/// How a 2-D checkpoint tensor is laid out in the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Stored as in the checkpoint.
    AsIs,
    /// A 2-D `[r, c]` tensor stored as `[c, r]` (PyTorch Linear `[out, in]` →
    /// MatMul's `[in, out]`).
    Transposed,
    /// The sub-tensor `t[i]` of a tensor with at least 2 dimensions (axis 0
    /// dropped), e.g. one head of the stacked `audio_head`.
    Index(usize),
}
