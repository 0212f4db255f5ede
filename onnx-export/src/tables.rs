//! A streaming safetensors writer for f32 tables (embedding tables the runtime
//! reads through mmap). The header is written first, then each tensor is
//! converted and copied in chunks, so a 1.6 GB text table is never held in RAM.
//!
//! Layout (safetensors spec): 8-byte little-endian header length, a JSON header
//! padded with spaces to a multiple of 8 (so the f32 data is 8-byte aligned),
//! then the tensors back to back in header order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use heart::checkpoint::TensorRef;

use crate::error::{ExportError, Result};
use crate::external::WrittenFile;

/// Elements converted per chunk.
const CHUNK: usize = 1 << 18;

/// One table to write: the stored name, the source tensor and the stored shape
/// (same element count as the source; lets `[D]` become `[1, D]` and so on).
#[derive(Debug, Clone)]
pub struct Table<'a> {
    /// Name in the output file.
    pub name: &'a str,
    /// Source tensor (any float dtype the checkpoint reader decodes).
    pub source: TensorRef<'a>,
    /// Stored shape.
    pub shape: Vec<usize>,
}

/// Writes `tables` as F32 to `path`.
pub fn write_f32_tables(path: &Path, tables: &[Table<'_>]) -> Result<WrittenFile> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    let mut offset = 0usize;
    for t in tables {
        let n: usize = t.shape.iter().product();
        if n != t.source.numel() {
            return Err(ExportError::Shape {
                tensor: t.name.to_string(),
                expected: format!("{n} elements for shape {:?}", t.shape),
                got: format!("{} elements (shape {:?})", t.source.numel(), t.source.shape),
            });
        }
        let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
        entries.push(format!(
            "\"{}\":{{\"dtype\":\"F32\",\"shape\":[{shape}],\"data_offsets\":[{offset},{}]}}",
            t.name,
            offset + 4 * n
        ));
        offset += 4 * n;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');

    let mut out = BufWriter::with_capacity(1 << 20, File::create(path).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io)?;
    out.write_all(&header).map_err(io)?;
    let mut chunk = vec![0f32; CHUNK];
    for t in tables {
        let n = t.source.numel();
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            t.source.read_f32_into(start, &mut chunk[..len])?;
            out.write_all(bytemuck::cast_slice(&chunk[..len])).map_err(io)?;
            start += len;
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok(WrittenFile {
        path: path.to_path_buf(),
        bytes: (8 + header.len() + offset) as u64,
    })
}
