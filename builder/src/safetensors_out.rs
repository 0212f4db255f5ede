//! Streaming safetensors writer: the header is computed from names and shapes,
//! then each tensor's f32 data is produced chunk by chunk, so multi-GB
//! checkpoints are written without ever being held in memory. Large outputs are
//! split into Hugging Face style shards (`model-0000k-of-0000n.safetensors` plus
//! `model.safetensors.index.json`).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// Elements produced per fill call.
const CHUNK: usize = 1 << 20;

/// One tensor to write: name and shape (stored as F32).
#[derive(Debug, Clone)]
pub struct OutTensor {
    /// Checkpoint tensor name.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
}

impl OutTensor {
    fn bytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * 4
    }
}

/// Writes `tensors` into `dir` as `model.safetensors`, or as shards of at most
/// `max_shard_bytes` plus an index when they do not fit in one. `fill(tensor,
/// start, out)` writes elements `start..start + out.len()` of `tensor`.
/// Returns the files written.
pub fn write_checkpoint(
    dir: &Path,
    tensors: &[OutTensor],
    max_shard_bytes: u64,
    mut fill: impl FnMut(&OutTensor, usize, &mut [f32]),
    mut progress: impl FnMut(u64),
) -> Result<Vec<PathBuf>> {
    let shards = split_into_shards(tensors, max_shard_bytes);
    let n = shards.len();
    let mut files = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (k, shard) in shards.iter().enumerate() {
        let name = if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, n)
        };
        let path = dir.join(&name);
        write_one(&path, shard, &mut fill, &mut progress)?;
        for t in shard {
            weight_map.insert(t.name.clone(), name.clone());
        }
        files.push(path);
    }
    if n > 1 {
        let total: u64 = tensors.iter().map(OutTensor::bytes).sum();
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let path = dir.join("model.safetensors.index.json");
        std::fs::write(&path, serde_json::to_string_pretty(&index)?)
            .with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

fn split_into_shards(tensors: &[OutTensor], max_shard_bytes: u64) -> Vec<Vec<OutTensor>> {
    let mut shards: Vec<Vec<OutTensor>> = vec![Vec::new()];
    let mut used = 0u64;
    for t in tensors {
        let last = shards.last_mut().expect("at least one shard");
        if !last.is_empty() && used + t.bytes() > max_shard_bytes {
            shards.push(Vec::new());
            used = 0;
        }
        used += t.bytes();
        shards.last_mut().expect("at least one shard").push(t.clone());
    }
    shards
}

fn write_one(
    path: &Path,
    tensors: &[OutTensor],
    fill: &mut impl FnMut(&OutTensor, usize, &mut [f32]),
    progress: &mut impl FnMut(u64),
) -> Result<()> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({ "format": "pt" }));
    let mut offset = 0u64;
    for t in tensors {
        let end = offset + t.bytes();
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))?;
    // Pad the header with spaces so the data section starts 8-byte aligned.
    while (8 + header.len()) % 8 != 0 {
        header.push(b' ');
    }
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = BufWriter::with_capacity(4 << 20, file);
    let writing = || format!("writing {}", path.display());
    out.write_all(&(header.len() as u64).to_le_bytes())
        .with_context(writing)?;
    out.write_all(&header).with_context(writing)?;
    let mut buf = vec![0f32; CHUNK];
    for t in tensors {
        let numel: usize = t.shape.iter().product();
        let mut start = 0;
        while start < numel {
            let len = CHUNK.min(numel - start);
            fill(t, start, &mut buf[..len]);
            out.write_all(bytemuck::cast_slice(&buf[..len])).with_context(writing)?;
            progress(len as u64 * 4);
            start += len;
        }
    }
    out.flush().with_context(writing)?;
    Ok(())
}
