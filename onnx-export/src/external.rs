//! The external-data side file of one graph (`<graph>.onnx.data`).
//!
//! Initializers are appended one after another while the graph is built, so the
//! weights pass through RAM one chunk at a time and are never held whole. Every
//! tensor starts at a 64-byte aligned offset; tensors of at least
//! [`PAGE_ALIGN_THRESHOLD`] bytes start on a 4096-byte page so ONNX Runtime can
//! memory-map them in place (the same rule the `onnx` Python package uses).
//! Offsets are 64-bit: data files above 4 GiB are fine.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{ExportError, Result};
use crate::proto::StringStringEntryProto;

/// Alignment of every tensor's start offset, in bytes.
pub const ALIGN: u64 = 64;
/// Alignment of large tensors (a memory page).
pub const PAGE_ALIGN: u64 = 4096;
/// Tensors at least this large (bytes) are page-aligned.
pub const PAGE_ALIGN_THRESHOLD: u64 = 1 << 20;

/// A file the exporter wrote, with its size on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// Full path of the file.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
}

/// Where one tensor landed in the data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset from the start of the file.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// Append-only writer of one external data file.
pub struct ExternalData {
    path: PathBuf,
    location: String,
    file: BufWriter<File>,
    pos: u64,
    open: Option<u64>,
}

impl ExternalData {
    /// Creates (truncates) `path`. Graphs refer to it by its file name, so it
    /// must stay next to the `.onnx` file.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|source| io_err(path, source))?;
        let location = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ExportError::Unsupported {
                what: format!("external data path {} has no file name", path.display()),
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            location,
            file: BufWriter::with_capacity(1 << 20, file),
            pos: 0,
            open: None,
        })
    }

    /// The file name graphs use as `location`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Pads to the alignment a tensor of `length` bytes needs and starts it.
    pub fn begin(&mut self, length: u64) -> Result<()> {
        let align = if length >= PAGE_ALIGN_THRESHOLD {
            PAGE_ALIGN
        } else {
            ALIGN
        };
        let pad = (align - self.pos % align) % align;
        const ZEROS: [u8; PAGE_ALIGN as usize] = [0; PAGE_ALIGN as usize];
        self.write_raw(&ZEROS[..pad as usize])?;
        self.open = Some(self.pos);
        Ok(())
    }

    /// Appends bytes to the tensor started by [`Self::begin`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        debug_assert!(self.open.is_some(), "write outside begin/end");
        self.write_raw(bytes)
    }

    /// Ends the current tensor and returns where it is.
    pub fn end(&mut self) -> Extent {
        let offset = self.open.take().unwrap_or(self.pos);
        Extent {
            offset,
            length: self.pos - offset,
        }
    }

    /// The `external_data` entries of a tensor proto for `extent`.
    pub fn entries(&self, extent: Extent) -> Vec<StringStringEntryProto> {
        let entry = |k: &str, v: String| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v),
        };
        vec![
            entry("location", self.location.clone()),
            entry("offset", extent.offset.to_string()),
            entry("length", extent.length.to_string()),
        ]
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.pos
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Flushes and closes the file. An empty file is deleted and `None` returned.
    pub fn finish(self) -> Result<Option<WrittenFile>> {
        let Self { path, file, pos, .. } = self;
        let file = file.into_inner().map_err(|e| io_err(&path, e.into_error()))?;
        file.sync_all().map_err(|source| io_err(&path, source))?;
        drop(file);
        if pos == 0 {
            std::fs::remove_file(&path).map_err(|source| io_err(&path, source))?;
            return Ok(None);
        }
        Ok(Some(WrittenFile { path, bytes: pos }))
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|source| io_err(&self.path, source))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

fn io_err(path: &Path, source: std::io::Error) -> ExportError {
    ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_aligned_and_empty_files_removed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g.onnx.data");
        let mut d = ExternalData::create(&p).unwrap();
        d.begin(3).unwrap();
        d.write(&[1, 2, 3]).unwrap();
        let a = d.end();
        d.begin(PAGE_ALIGN_THRESHOLD).unwrap();
        d.write(&vec![7; PAGE_ALIGN_THRESHOLD as usize]).unwrap();
        let b = d.end();
        d.begin(5).unwrap();
        d.write(&[9; 5]).unwrap();
        let c = d.end();
        assert_eq!(a, Extent { offset: 0, length: 3 });
        assert_eq!(b.offset, PAGE_ALIGN);
        assert_eq!(c.offset % ALIGN, 0);
        assert_eq!(c.offset, PAGE_ALIGN + PAGE_ALIGN_THRESHOLD);
        let written = d.finish().unwrap().unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(&bytes[c.offset as usize..], &[9; 5]);

        let empty = dir.path().join("e.onnx.data");
        assert!(ExternalData::create(&empty).unwrap().finish().unwrap().is_none());
        assert!(!empty.exists());
    }
}
