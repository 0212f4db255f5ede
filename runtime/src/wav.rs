//! WAV output of decoded audio.
//!
//! 16-bit PCM by default (clamped to [-1, 1], scaled by 32767, rounded half away
//! from zero), or 32-bit float with the samples unchanged. Channels are interleaved
//! and the sample count is exact. The file is written next to its destination
//! under a temporary name and renamed into place, so a crash or error never leaves
//! a half-written WAV at the requested path.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::codec::Audio;

/// Sample encoding of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// Signed 16-bit integer PCM.
    #[default]
    Pcm16,
    /// IEEE 32-bit float.
    Float32,
}

/// Errors while writing a WAV file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WavError {
    /// The audio has no channels or a ragged sample buffer.
    #[error("{}: cannot write audio with {channels} channels and {samples} samples", path.display())]
    BadAudio {
        /// Destination.
        path: PathBuf,
        /// Channel count.
        channels: u16,
        /// Total samples.
        samples: usize,
    },
    /// Creating, writing or renaming the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The WAV encoder failed (e.g. more than 4 GiB of data).
    #[error("{}: WAV encoder: {source}", path.display())]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// hound's error.
        source: hound::Error,
    },
}

/// Converts one float sample to 16-bit PCM: clamp to [-1, 1], × 32767, round.
pub fn to_pcm16(x: f32) -> i16 {
    let v = if x.is_nan() { 0.0 } else { x.clamp(-1.0, 1.0) };
    (v * 32767.0).round() as i16
}

/// Writes `audio` (planar) to `path` atomically (temp file in the same folder + rename).
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> Result<(), WavError> {
    let channels = usize::from(audio.channels);
    if channels == 0 || !audio.samples.len().is_multiple_of(channels) {
        return Err(WavError::BadAudio {
            path: path.to_path_buf(),
            channels: audio.channels,
            samples: audio.samples.len(),
        });
    }
    let tmp = temp_path(path);
    let result = write_interleaved(&tmp, audio, format).and_then(|()| {
        std::fs::rename(&tmp, path).map_err(|source| WavError::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if result.is_err() {
        // Best effort: the temp file is ours and useless after a failure.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The temporary file [`write_wav`] writes before renaming it to `path`
/// (removed by interrupt handlers so no partial output is left).
pub fn temp_path(path: &Path) -> PathBuf {
    path.with_file_name(format!(".{}.{}.part", file_name(path), std::process::id()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Removes the temporary files of writes of `path` by processes that died
/// mid-write (`kill -9`): [`write_wav`] holds an advisory lock on its
/// temporary file while writing, so one whose lock can be taken is
/// abandoned. Best effort: a file that cannot be inspected is left alone.
pub fn remove_abandoned_parts(path: &Path) {
    let prefix = format!(".{}.", file_name(path));
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(&prefix) && name.ends_with(".part")) {
            continue;
        }
        if File::open(entry.path()).is_ok_and(|f| f.try_lock().is_ok()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The encoder settings of a `channels`-channel WAV at `sample_rate` in `format`.
pub fn spec(channels: u16, sample_rate: u32, format: WavFormat) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate,
        bits_per_sample: match format {
            WavFormat::Pcm16 => 16,
            WavFormat::Float32 => 32,
        },
        sample_format: match format {
            WavFormat::Pcm16 => hound::SampleFormat::Int,
            WavFormat::Float32 => hound::SampleFormat::Float,
        },
    }
}

fn write_interleaved(tmp: &Path, audio: &Audio, format: WavFormat) -> Result<(), WavError> {
    let spec = spec(audio.channels, audio.sample_rate, format);
    // I/O failures (a full disk above all) are reported as such, not as
    // encoder errors.
    let encode = |source| match source {
        hound::Error::IoError(source) => WavError::Io {
            path: tmp.to_path_buf(),
            source,
        },
        source => WavError::Encode {
            path: tmp.to_path_buf(),
            source,
        },
    };
    let file = File::create(tmp).map_err(|source| WavError::Io {
        path: tmp.to_path_buf(),
        source,
    })?;
    // Marks the file as being written by a live process (see
    // `remove_abandoned_parts`); released when the writer closes it.
    file.try_lock().map_err(|e| WavError::Io {
        path: tmp.to_path_buf(),
        source: e.into(),
    })?;
    let mut writer = hound::WavWriter::new(BufWriter::new(file), spec).map_err(encode)?;
    let frames = audio.frames();
    for i in 0..frames {
        for c in 0..usize::from(audio.channels) {
            let x = audio.samples[c * frames + i];
            match format {
                WavFormat::Pcm16 => writer.write_sample(to_pcm16(x)),
                WavFormat::Float32 => writer.write_sample(x),
            }
            .map_err(encode)?;
        }
    }
    writer.finalize().map_err(encode)?;
    // On disk before the rename makes it visible: a crash right after leaves
    // the whole file or none.
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| WavError::Io {
            path: tmp.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo() -> Audio {
        Audio {
            channels: 2,
            sample_rate: 300,
            samples: vec![0.0, 0.5, 2.0, -1.0, -0.25, -3.0],
        }
    }

    #[test]
    fn pcm16_clamps_and_rounds() {
        assert_eq!(to_pcm16(1.5), 32767);
        assert_eq!(to_pcm16(-1.5), -32767);
        assert_eq!(to_pcm16(0.5), 16384);
        assert_eq!(to_pcm16(f32::NAN), 0);
    }

    #[test]
    fn writes_interleaved_pcm16_and_float() {
        let dir = tempfile::tempdir().unwrap();
        let p16 = dir.path().join("a.wav");
        write_wav(&p16, &stereo(), WavFormat::Pcm16).unwrap();
        let mut r = hound::WavReader::open(&p16).unwrap();
        let spec = r.spec();
        assert_eq!((spec.channels, spec.sample_rate, spec.bits_per_sample), (2, 300, 16));
        assert_eq!(r.duration(), 3);
        let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert_eq!(s, [0, -32767, 16384, -8192, 32767, -32767]);

        let pf = dir.path().join("b.wav");
        write_wav(&pf, &stereo(), WavFormat::Float32).unwrap();
        let mut r = hound::WavReader::open(&pf).unwrap();
        assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
        let s: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(s, [0.0, -1.0, 0.5, -0.25, 2.0, -3.0]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn abandoned_temporary_files_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("song.wav");
        let dead = dir.path().join(".song.wav.999999999.part");
        let live = dir.path().join(".song.wav.1.part");
        let other = dir.path().join(".other.wav.2.part");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"RIFF").unwrap();
        }
        let held = File::open(&live).unwrap();
        held.try_lock().unwrap();
        remove_abandoned_parts(&out);
        assert!(!dead.exists(), "a dead writer's file is removed");
        assert!(live.exists(), "a live writer's file is kept");
        assert!(other.exists(), "another output's file is not touched");
    }

    #[test]
    fn failures_leave_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("missing-dir").join("x.wav");
        let err = write_wav(&target, &stereo(), WavFormat::Pcm16).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
        let mut bad = stereo();
        bad.samples.pop();
        let err = write_wav(&dir.path().join("y.wav"), &bad, WavFormat::Pcm16).unwrap_err();
        assert!(matches!(err, WavError::BadAudio { samples: 5, .. }));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
