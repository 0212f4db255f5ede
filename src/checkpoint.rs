//! Memory-mapped safetensors checkpoints in the Hugging Face layout: a directory
//! with `model.safetensors`, or `model.safetensors.index.json` plus the shards it
//! names. Tensors borrow straight from the maps; nothing is copied whole into RAM.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorInfo};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Single-file checkpoint name.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Sharded checkpoint index name.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of the data section (8 + header length).
    data_start: usize,
    tensors: HashMap<String, TensorInfo>,
}

/// A read-only view of one stored tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    /// Tensor name.
    pub name: &'a str,
    /// Stored dtype.
    pub dtype: Dtype,
    /// Shape, row-major.
    pub shape: &'a [usize],
    /// Little-endian bytes, borrowed from the memory map.
    pub data: &'a [u8],
    /// The file the tensor lives in.
    pub path: &'a Path,
}

impl TensorRef<'_> {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Decodes the tensor to `f32` (F32, F16 and BF16 storage).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0f32; self.numel()];
        self.read_f32_into(0, &mut out)?;
        Ok(out)
    }

    /// Decodes `out.len()` elements starting at element `start` into `out`, so
    /// large tensors can be streamed in chunks.
    pub fn read_f32_into(&self, start: usize, out: &mut [f32]) -> Result<()> {
        let end = start + out.len();
        if end > self.numel() {
            return Err(self.err(format!(
                "read of elements {start}..{end} past the end ({})",
                self.numel()
            )));
        }
        match self.dtype {
            Dtype::F32 => {
                for (o, c) in out.iter_mut().zip(self.data[start * 4..end * 4].chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::F16 => {
                for (o, c) in out.iter_mut().zip(self.data[start * 2..end * 2].chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(self.data[start * 2..end * 2].chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
                }
            }
            other => {
                return Err(self.err(format!(
                    "dtype {other:?} cannot be read as float (expected F32, F16 or BF16)"
                )));
            }
        }
        Ok(())
    }

    fn err(&self, message: String) -> Error {
        Error::Tensor {
            path: self.path.to_path_buf(),
            name: self.name.to_string(),
            message,
        }
    }
}

#[derive(Deserialize)]
struct Index {
    weight_map: BTreeMap<String, String>,
}

/// A HeartMuLa or HeartCodec checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    /// `model.safetensors` or the index: the file that lists every tensor.
    source: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    locations: BTreeMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("shards", &self.shards.iter().map(|s| &s.path).collect::<Vec<_>>())
            .field("tensors", &self.locations.len())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `dir`: `model.safetensors.index.json` + shards if present, else
    /// `model.safetensors`. Headers are parsed and checked (truncation, overlap);
    /// tensor data stays in the page cache until read.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        if index_path.is_file() {
            let text = crate::config::read_small_text(&index_path)?;
            let index: Index = serde_json::from_str(&text).map_err(|e| Error::Config {
                path: index_path.clone(),
                message: format!("not a safetensors index (expected {{\"weight_map\": {{name: file}}}}): {e}"),
            })?;
            let mut shard_ids: BTreeMap<String, usize> = BTreeMap::new();
            let mut shards = Vec::new();
            for file in index.weight_map.values() {
                if shard_ids.contains_key(file) {
                    continue;
                }
                let path = crate::safe_path::resolve_inside(dir, file).map_err(|message| Error::Layout {
                    path: index_path.clone(),
                    message: format!("shard {message}; shards must lie in the checkpoint directory"),
                })?;
                if !path.is_file() {
                    return Err(Error::Layout {
                        path: index_path.clone(),
                        message: format!(
                            "index points at shard `{file}`, which does not exist in {}",
                            dir.display()
                        ),
                    });
                }
                shard_ids.insert(file.clone(), shards.len());
                shards.push(Shard::open(&path)?);
            }
            let mut locations = BTreeMap::new();
            for (name, file) in &index.weight_map {
                let id = shard_ids[file];
                if !shards[id].tensors.contains_key(name) {
                    return Err(Error::Tensor {
                        path: shards[id].path.clone(),
                        name: name.clone(),
                        message: format!("listed in {INDEX_FILE} but not present in the shard"),
                    });
                }
                locations.insert(name.clone(), id);
            }
            for (id, shard) in shards.iter().enumerate() {
                for name in shard.tensors.keys() {
                    if locations.get(name) != Some(&id) {
                        return Err(Error::Tensor {
                            path: shard.path.clone(),
                            name: name.clone(),
                            message: format!("present in the shard but not mapped to it by {INDEX_FILE}"),
                        });
                    }
                }
            }
            Ok(Self {
                dir: dir.to_path_buf(),
                source: index_path,
                shards,
                locations,
            })
        } else if single.is_file() {
            let shard = Shard::open(&single)?;
            let locations = shard.tensors.keys().map(|n| (n.clone(), 0)).collect();
            Ok(Self {
                dir: dir.to_path_buf(),
                source: single,
                shards: vec![shard],
                locations,
            })
        } else {
            Err(Error::Layout {
                path: dir.to_path_buf(),
                message: format!("no `{SINGLE_FILE}` or `{INDEX_FILE}` in this directory"),
            })
        }
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that lists every tensor: `model.safetensors` for a single-file
    /// checkpoint, `model.safetensors.index.json` for a sharded one. Errors about
    /// missing tensors name this file.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The shard files, in index order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.shards.iter().map(|s| s.path.as_path())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.locations.keys().map(String::as_str)
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.locations.contains_key(name)
    }

    /// Looks up a tensor; a missing name is an error naming the checkpoint.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let id = *self.locations.get(name).ok_or_else(|| Error::Tensor {
            path: self.source.clone(),
            name: name.to_string(),
            message: "missing from the checkpoint".into(),
        })?;
        let shard = &self.shards[id];
        let (key, info) = shard.tensors.get_key_value(name).expect("location table is consistent");
        let (a, b) = info.data_offsets;
        Ok(TensorRef {
            name: key,
            dtype: info.dtype,
            shape: &info.shape,
            data: &shard.map[shard.data_start + a..shard.data_start + b],
            path: &shard.path,
        })
    }

    /// Convenience: a tensor decoded to `f32`.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        self.tensor(name)?.to_f32()
    }

    /// Tells the kernel this process is done with a tensor's pages, so a
    /// streaming pass over a 16 GB checkpoint does not keep every page it read
    /// resident (they count in RSS until the kernel reclaims them). The map is
    /// read-only and file-backed, so the bytes stay valid: a later read simply
    /// faults them in again. Best effort: errors are ignored.
    pub fn release(&self, name: &str) {
        let Some(&id) = self.locations.get(name) else {
            return;
        };
        let shard = &self.shards[id];
        let Some(info) = shard.tensors.get(name) else {
            return;
        };
        let page = 4096;
        let start = (shard.data_start + info.data_offsets.0) / page * page;
        let end = (shard.data_start + info.data_offsets.1).min(shard.map.len());
        if end > start {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only drops
            // this process's page references; contents are re-read from the
            // file on the next access, so no borrowed slice observes a change.
            let _ = unsafe {
                shard
                    .map
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }

    /// [`Checkpoint::release`] for every tensor whose name starts with
    /// `prefix` (e.g. `backbone.layers.3.` once that layer is exported).
    pub fn release_prefix(&self, prefix: &str) {
        for name in self.locations.keys().filter(|n| n.starts_with(prefix)) {
            self.release(name);
        }
    }
}

impl Shard {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: the map is read-only; checkpoints are not modified while open
        // (the same assumption every safetensors loader makes).
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            message: describe_safetensors_error(&e, map.len()),
        })?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            data_start: 8 + header_len,
            tensors,
        })
    }
}

fn describe_safetensors_error(e: &safetensors::SafeTensorError, file_len: usize) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::MetadataIncompleteBuffer => {
            format!(
                "file is truncated or has trailing bytes ({file_len} bytes on disk do not match the header's offsets)"
            )
        }
        E::HeaderTooSmall | E::InvalidHeaderLength => {
            format!("file is truncated: the header does not fit in {file_len} bytes")
        }
        other => other.to_string(),
    }
}
