//! Helpers shared by the integration tests: the committed tiny fixture, and
//! rewriting (copies of) its checkpoints to provoke loader errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

pub use crate::fixture;

/// One stored tensor, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Stored {
    /// A float32 tensor of zeros.
    pub fn zeros_f32(shape: &[usize]) -> Self {
        Self {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: vec![0; 4 * shape.iter().product::<usize>()],
        }
    }
}

/// Every tensor of a safetensors file.
pub fn read_tensors(path: &Path) -> BTreeMap<String, Stored> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let stored = Stored {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            };
            (name, stored)
        })
        .collect()
}

/// Writes tensors as one safetensors file.
pub fn write_tensors(path: &Path, tensors: &BTreeMap<String, Stored>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Copies a folder recursively.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let target = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
            let mut perms = std::fs::metadata(&target).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms).unwrap();
        }
    }
}

/// A writable copy of the fixture's `heartmula/` and `heartcodec/` folders.
pub struct Scratch {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

impl Scratch {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        copy_dir(&fixture().join("heartmula"), &root.join("heartmula"));
        copy_dir(&fixture().join("heartcodec"), &root.join("heartcodec"));
        Self { _dir: dir, root }
    }

    pub fn mula(&self) -> PathBuf {
        self.root.join("heartmula")
    }

    pub fn codec(&self) -> PathBuf {
        self.root.join("heartcodec")
    }

    /// Rewrites `<model>/model.safetensors` through `edit`.
    pub fn edit_weights(&self, model_dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Stored>)) {
        let path = model_dir.join("model.safetensors");
        let mut tensors = read_tensors(&path);
        edit(&mut tensors);
        write_tensors(&path, &tensors);
    }

    /// Rewrites `<model>/<file>` (JSON) through `edit`.
    pub fn edit_json(&self, path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        edit(&mut value);
        std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
    }
}

/// A serialized ONNX `ModelProto` (hand-encoded protobuf) whose graph has one
/// initializer `w` stored externally at `location`, `offset`, `length`.
pub fn graph_with_external(location: &str, offset: u64, length: u64) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field(number: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(number << 3 | 2, &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }
    let entry = |k: &str, v: &str| [field(1, k.as_bytes()), field(2, v.as_bytes())].concat();
    // TensorProto: name = 8, external_data = 13, data_location = 14 (EXTERNAL = 1).
    let mut tensor = field(8, b"w");
    tensor.extend(field(13, &entry("location", location)));
    tensor.extend(field(13, &entry("offset", &offset.to_string())));
    tensor.extend(field(13, &entry("length", &length.to_string())));
    varint(14 << 3, &mut tensor);
    varint(1, &mut tensor);
    // ModelProto.graph = 7, GraphProto.initializer = 5.
    field(7, &field(5, &tensor))
}
