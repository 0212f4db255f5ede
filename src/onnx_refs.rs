//! The external-data references of an ONNX model, read straight from the
//! protobuf wire format: just enough of `onnx.proto` to find every
//! `TensorProto` and its `external_data` entries (`location`, `offset`,
//! `length`), so an engine folder's graphs can be checked before ONNX Runtime
//! opens any file they name. The full schema lives in `onnx-export`; this
//! reader keeps the core crate (and the runtime) free of a protobuf dependency.
//!
//! Tensors are found wherever a graph can hold one: graph initializers and
//! sparse initializers, node attributes (`t`, `tensors`, `sparse_tensor(s)`),
//! subgraphs of attributes (`g`, `graphs`, e.g. `If`/`Loop` bodies), model-local
//! functions and training-info graphs. Nesting is bounded by [`MAX_DEPTH`] so a
//! hostile file cannot exhaust the stack.

/// Deepest message nesting followed (a real model nests a few levels per
/// subgraph; ONNX Runtime's own protobuf limit is 100).
pub const MAX_DEPTH: usize = 100;

/// One tensor stored outside the model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalRef {
    /// The tensor's name (`TensorProto.name`), for messages.
    pub tensor: String,
    /// `location`: the data file, relative to the model's folder.
    pub location: String,
    /// `offset` in bytes (0 when absent).
    pub offset: u64,
    /// `length` in bytes, when given.
    pub length: Option<u64>,
}

/// Every external-data reference of the serialized `ModelProto` in `bytes`.
/// Malformed protobuf is an error, never a panic.
pub fn external_refs(bytes: &[u8]) -> Result<Vec<ExternalRef>, String> {
    let mut out = Vec::new();
    walk(bytes, Message::Model, 0, &mut out)?;
    Ok(out)
}

/// The messages of `onnx.proto` that can (transitively) hold a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Model,
    TrainingInfo,
    Function,
    Graph,
    Node,
    Attribute,
    SparseTensor,
}

impl Message {
    /// What a length-delimited field of this message holds, if it matters here
    /// (field numbers from `onnx.proto`).
    fn child(self, field: u64) -> Option<Child> {
        use Child::{Msg, Tensor};
        Some(match (self, field) {
            (Self::Model, 7) => Msg(Self::Graph),
            (Self::Model, 20) => Msg(Self::TrainingInfo),
            (Self::Model, 25) => Msg(Self::Function),
            (Self::TrainingInfo, 1 | 2) => Msg(Self::Graph),
            (Self::Function, 7) => Msg(Self::Node),
            (Self::Graph, 1) => Msg(Self::Node),
            (Self::Graph, 5) => Tensor,
            (Self::Graph, 15) => Msg(Self::SparseTensor),
            (Self::Node, 5) => Msg(Self::Attribute),
            (Self::Attribute, 5 | 10) => Tensor,
            (Self::Attribute, 6 | 11) => Msg(Self::Graph),
            (Self::Attribute, 22 | 23) => Msg(Self::SparseTensor),
            (Self::SparseTensor, 1 | 2) => Tensor,
            _ => return None,
        })
    }
}

enum Child {
    Msg(Message),
    Tensor,
}

const TENSOR_NAME: u64 = 8;
const TENSOR_EXTERNAL_DATA: u64 = 13;
const TENSOR_DATA_LOCATION: u64 = 14;
const DATA_LOCATION_EXTERNAL: u64 = 1;

fn walk(bytes: &[u8], msg: Message, depth: usize, out: &mut Vec<ExternalRef>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("messages nested deeper than {MAX_DEPTH} levels"));
    }
    let mut r = Reader { bytes, pos: 0 };
    while let Some((field, value)) = r.field()? {
        if let (Value::Bytes(inner), Some(child)) = (value, msg.child(field)) {
            match child {
                Child::Msg(m) => walk(inner, m, depth + 1, out)?,
                Child::Tensor => tensor(inner, out)?,
            }
        }
    }
    Ok(())
}

fn tensor(bytes: &[u8], out: &mut Vec<ExternalRef>) -> Result<(), String> {
    let mut name = String::new();
    let mut entries = Vec::new();
    let mut external = false;
    let mut r = Reader { bytes, pos: 0 };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (TENSOR_NAME, Value::Bytes(b)) => name = String::from_utf8_lossy(b).into_owned(),
            (TENSOR_EXTERNAL_DATA, Value::Bytes(b)) => entries.push(entry(b)?),
            (TENSOR_DATA_LOCATION, Value::Varint(v)) => external = v == DATA_LOCATION_EXTERNAL,
            _ => {}
        }
    }
    if !external && entries.is_empty() {
        return Ok(());
    }
    let get = |key: &str| entries.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| format!("tensor `{name}`: external-data {key} `{v}` is not a byte count"))
            })
            .transpose()
    };
    let location = get("location")
        .ok_or_else(|| format!("tensor `{name}` is stored externally but names no location"))?
        .to_string();
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    out.push(ExternalRef {
        tensor: name,
        location,
        offset,
        length,
    });
    Ok(())
}

/// A `StringStringEntryProto` (`key` = 1, `value` = 2).
fn entry(bytes: &[u8]) -> Result<(String, String), String> {
    let (mut key, mut value) = (String::new(), String::new());
    let mut r = Reader { bytes, pos: 0 };
    while let Some((field, v)) = r.field()? {
        match (field, v) {
            (1, Value::Bytes(b)) => key = utf8(b)?,
            (2, Value::Bytes(b)) => value = utf8(b)?,
            _ => {}
        }
    }
    Ok((key, value))
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "external-data entry is not UTF-8".to_string())
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next field number and value; `None` at the end of the message.
    fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.pos == self.bytes.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => self.skip(8)?,
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| self.bad("length does not fit in memory"))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|&e| e <= self.bytes.len())
                    .ok_or_else(|| self.bad("length runs past the end of the data"))?;
                let inner = &self.bytes[self.pos..end];
                self.pos = end;
                Value::Bytes(inner)
            }
            5 => self.skip(4)?,
            other => return Err(self.bad(&format!("unsupported wire type {other}"))),
        };
        if field == 0 {
            return Err(self.bad("field number 0"));
        }
        Ok(Some((field, value)))
    }

    fn skip(&mut self, n: usize) -> Result<Value<'a>, String> {
        if self.bytes.len() - self.pos < n {
            return Err(self.bad("fixed-width value runs past the end of the data"));
        }
        self.pos += n;
        Ok(Value::Fixed)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(self.bad("varint runs past the end of the data"));
            };
            self.pos += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad("varint longer than 10 bytes"))
    }

    fn bad(&self, what: &str) -> String {
        format!("not an ONNX model: malformed protobuf at byte {}: {what}", self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes_field(field: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(field << 3 | 2, &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn entry(key: &str, value: &str) -> Vec<u8> {
        [bytes_field(1, key.as_bytes()), bytes_field(2, value.as_bytes())].concat()
    }

    fn external_tensor(name: &str, location: &str, offset: &str) -> Vec<u8> {
        let mut t = bytes_field(TENSOR_NAME, name.as_bytes());
        t.extend(bytes_field(TENSOR_EXTERNAL_DATA, &entry("location", location)));
        t.extend(bytes_field(TENSOR_EXTERNAL_DATA, &entry("offset", offset)));
        t.extend(bytes_field(TENSOR_EXTERNAL_DATA, &entry("length", "16")));
        varint(TENSOR_DATA_LOCATION << 3, &mut t);
        varint(DATA_LOCATION_EXTERNAL, &mut t);
        t
    }

    #[test]
    fn finds_initializers_and_tensors_in_subgraph_attributes() {
        let inline = bytes_field(TENSOR_NAME, b"inline");
        let mut graph = bytes_field(5, &external_tensor("w", "backbone.onnx.data", "4096"));
        graph.extend(bytes_field(5, &inline));
        let body = bytes_field(5, &external_tensor("then_w", "../x", "0"));
        let attribute = bytes_field(6, &body);
        graph.extend(bytes_field(1, &bytes_field(5, &attribute)));
        let mut model = Vec::new();
        varint(1 << 3, &mut model); // ir_version
        varint(10, &mut model);
        model.extend(bytes_field(7, &graph));
        let refs = external_refs(&model).unwrap();
        assert_eq!(
            refs,
            [
                ExternalRef {
                    tensor: "w".into(),
                    location: "backbone.onnx.data".into(),
                    offset: 4096,
                    length: Some(16)
                },
                ExternalRef {
                    tensor: "then_w".into(),
                    location: "../x".into(),
                    offset: 0,
                    length: Some(16)
                },
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        let graph = bytes_field(5, &external_tensor("w", "a.data", "x12"));
        let err = external_refs(&bytes_field(7, &graph)).unwrap_err();
        assert!(err.contains("offset `x12` is not a byte count"), "{err}");
        let mut truncated = bytes_field(7, &graph);
        truncated.pop();
        assert!(external_refs(&truncated).unwrap_err().contains("past the end"));
        let mut deep = bytes_field(5, &external_tensor("w", "a.data", "0"));
        for _ in 0..50 {
            // A graph whose one node has an attribute holding the previous graph.
            deep = bytes_field(1, &bytes_field(5, &bytes_field(6, &deep)));
        }
        let nested = external_refs(&bytes_field(7, &deep)).unwrap_err();
        assert!(nested.contains("nested deeper"), "{nested}");
    }
}
