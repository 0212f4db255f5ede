//! WAV onto a stream whose length is not known when the header goes out
//! (`heart-run --out -`, a server's response body).
//!
//! The header is the one [`crate::wav::write_wav`] writes (hound's layout for
//! the same format) with the RIFF size and the `data` size set to
//! `0xFFFF_FFFF`: the largest value the fields hold, which readers that stream
//! (ffmpeg/ffplay's WAV demuxer, SoX) take as "data until the end of the
//! stream", where a 0 would read as an empty file to some. The samples are
//! encoded exactly as in a file, so the bytes after the header equal the
//! file's. Seekable outputs should use `write_wav`, which writes the true sizes.

use std::io::{Cursor, Write};

use crate::codec::AudioChunk;
use crate::wav::{WavFormat, to_pcm16};

/// The value of the RIFF and `data` size fields of a streamed WAV.
pub const UNKNOWN_SIZE: u32 = u32::MAX;

/// Errors of a streamed WAV.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavStreamError {
    /// The WAV encoder refused the format.
    #[error("WAV encoder: {0}")]
    Encode(#[from] hound::Error),
    /// A chunk does not fit the stream's format or follow the previous one.
    #[error("{0}")]
    Chunk(String),
    /// Writing to the output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A WAV being written chunk by chunk.
pub struct WavStream<W: Write> {
    out: W,
    format: WavFormat,
    channels: u16,
    sample_rate: u32,
    written: usize,
    buf: Vec<u8>,
}

impl<W: Write> WavStream<W> {
    /// Writes the header of a `channels`-channel WAV at `sample_rate` to `out`.
    pub fn new(mut out: W, channels: u16, sample_rate: u32, format: WavFormat) -> Result<Self, WavStreamError> {
        out.write_all(&header(channels, sample_rate, format)?)?;
        out.flush()?;
        Ok(Self {
            out,
            format,
            channels,
            sample_rate,
            written: 0,
            buf: Vec::new(),
        })
    }

    /// Samples per channel written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Appends `chunk` (interleaved, encoded like a file) and flushes, so a
    /// reader gets it now. Chunks must come in order without gaps.
    pub fn write_chunk(&mut self, chunk: &AudioChunk) -> Result<(), WavStreamError> {
        if chunk.channels != self.channels || chunk.sample_rate != self.sample_rate {
            return Err(WavStreamError::Chunk(format!(
                "chunk of {} channels at {} Hz in a stream of {} channels at {} Hz",
                chunk.channels, chunk.sample_rate, self.channels, self.sample_rate
            )));
        }
        if chunk.offset != self.written {
            return Err(WavStreamError::Chunk(format!(
                "chunk starts at sample {} but {} samples were written",
                chunk.offset, self.written
            )));
        }
        let n = chunk.len();
        let channels = usize::from(self.channels);
        self.buf.clear();
        for i in 0..n {
            for c in 0..channels {
                let x = chunk.samples[c * n + i];
                match self.format {
                    WavFormat::Pcm16 => self.buf.extend_from_slice(&to_pcm16(x).to_le_bytes()),
                    WavFormat::Float32 => self.buf.extend_from_slice(&x.to_le_bytes()),
                }
            }
        }
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        self.written += n;
        Ok(())
    }

    /// The output, after a final flush.
    pub fn into_inner(mut self) -> Result<W, WavStreamError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// hound's header for an empty WAV of this format, with both sizes set to
/// [`UNKNOWN_SIZE`].
pub fn header(channels: u16, sample_rate: u32, format: WavFormat) -> Result<Vec<u8>, WavStreamError> {
    let spec = crate::wav::spec(channels, sample_rate, format);
    let mut bytes = Vec::new();
    hound::WavWriter::new(Cursor::new(&mut bytes), spec)?.finalize()?;
    let n = bytes.len();
    if n < 12 || &bytes[..4] != b"RIFF" || &bytes[n - 8..n - 4] != b"data" {
        return Err(WavStreamError::Chunk(format!(
            "unexpected WAV header layout from the encoder ({n} bytes)"
        )));
    }
    bytes[4..8].copy_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    bytes[n - 4..].copy_from_slice(&UNKNOWN_SIZE.to_le_bytes());
    Ok(bytes)
}

/// Writes the true RIFF and `data` sizes into a whole streamed WAV held in
/// memory (`header_len` = [`header`]'s length), which makes its bytes the
/// file [`crate::wav::write_wav`] writes. Sizes past `u32::MAX` stay at
/// [`UNKNOWN_SIZE`]; a buffer shorter than the header is left as it is.
pub fn set_sizes(wav: &mut [u8], header_len: usize) {
    let n = wav.len();
    if n < header_len || header_len < 8 {
        return;
    }
    let size = |len: usize| u32::try_from(len).unwrap_or(UNKNOWN_SIZE).to_le_bytes();
    wav[4..8].copy_from_slice(&size(n - 8));
    wav[header_len - 4..header_len].copy_from_slice(&size(n - header_len));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Audio;
    use crate::wav::write_wav;

    fn chunk(offset: usize, samples: Vec<f32>) -> AudioChunk {
        AudioChunk {
            offset,
            channels: 2,
            sample_rate: 300,
            samples,
        }
    }

    #[test]
    fn streamed_bytes_equal_the_file_but_for_the_two_sizes() {
        let dir = tempfile::tempdir().unwrap();
        for format in [WavFormat::Pcm16, WavFormat::Float32] {
            let audio = Audio {
                channels: 2,
                sample_rate: 300,
                samples: vec![0.0, 0.5, 2.0, 0.1, -1.0, -0.25, -3.0, 0.2],
            };
            let path = dir.path().join("a.wav");
            write_wav(&path, &audio, format).unwrap();
            let file = std::fs::read(&path).unwrap();
            let mut s = WavStream::new(Vec::new(), 2, 300, format).unwrap();
            s.write_chunk(&chunk(0, vec![0.0, 0.5, -1.0, -0.25])).unwrap();
            s.write_chunk(&chunk(2, vec![2.0, 0.1, -3.0, 0.2])).unwrap();
            assert_eq!(s.written(), 4);
            let streamed = s.into_inner().unwrap();
            assert_eq!(streamed.len(), file.len(), "{format:?}");
            let head = header(2, 300, format).unwrap().len();
            let differ: Vec<usize> = (0..file.len()).filter(|&i| file[i] != streamed[i]).collect();
            assert!(
                differ
                    .iter()
                    .all(|&i| (4..8).contains(&i) || (head - 4..head).contains(&i)),
                "{format:?}: bytes {differ:?} differ"
            );
            assert_eq!(&streamed[4..8], &[0xFF; 4]);
            assert_eq!(&streamed[head - 4..head], &[0xFF; 4]);
            let mut sized = streamed;
            set_sizes(&mut sized, head);
            assert_eq!(sized, file, "{format:?}: the sized stream is the file");
        }
    }

    #[test]
    fn out_of_order_or_foreign_chunks_are_refused() {
        let mut s = WavStream::new(Vec::new(), 2, 300, WavFormat::Pcm16).unwrap();
        let e = s.write_chunk(&chunk(1, vec![0.0, 0.0])).unwrap_err();
        assert!(e.to_string().contains("starts at sample 1 but 0"), "{e}");
        let mut mono = chunk(0, vec![0.0]);
        mono.channels = 1;
        let e = s.write_chunk(&mono).unwrap_err();
        assert!(e.to_string().contains("1 channels at 300 Hz in a stream of 2"), "{e}");
    }
}
