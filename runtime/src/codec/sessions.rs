//! ONNX Runtime sessions of the two codec graphs.
//!
//! - `flow_estimator.onnx`: `x` f32 `[B, T, in_channels]` (channel concat of the
//!   Euler state, the in-context latents and `mu`), `timestep` f32 `[B]` →
//!   `velocity` f32 `[B, T, out_channels]`.
//! - `scalar_decoder.onnx`: `latents` f32 `[N, latent_hidden_dim, T]` →
//!   `audio` f32 `[N, 1, T · samples_per_latent]` (`N` = 2 audio channels).
//!
//! Both sessions run with ONNX Runtime's memory pattern off. With it on, the
//! first run at an input shape grows the arena and the second allocates the
//! planned pattern as one more block next to it: at the released widths that
//! took the estimator's working set (batch 2 × 744 frames) from 0.38 to 0.68 GB
//! and a whole-window decoder call's from 1.0 to 1.65 GB, with no measurable
//! speed difference. The decoder also sees three input lengths per window
//! when chunked ([`super::chunks`]), each of which would get its own pattern.
//! The arena stays on (turning it off made decoding 1.7× slower and did not
//! lower the peak).

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;

use heart::engine::codec_io::{DECODER_INPUT, DECODER_OUTPUT, ESTIMATOR_INPUT, ESTIMATOR_OUTPUT, ESTIMATOR_TIMESTEP};
use heart::engine::{FLOW_ESTIMATOR_GRAPH, SCALAR_DECODER_GRAPH};

use super::chunks::ChunkSpan;
use super::error::{CodecError, Result};
use heart_backend::{OrtRuntime, SessionConfig};

/// Both codec graphs run with ONNX Runtime's memory pattern off (module doc).
const SESSIONS: SessionConfig = SessionConfig {
    intra_threads: 0,
    optimization: heart_backend::Optimization::All,
    memory_pattern: false,
};

/// One loaded graph with the path it came from (for error messages).
struct Graph {
    session: Session,
    path: PathBuf,
}

impl Graph {
    fn open(rt: &OrtRuntime, path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(CodecError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "graph file missing from the engine folder",
                ),
            });
        }
        let session = rt.open_session(path, &SESSIONS).map_err(|e| CodecError::Ort {
            path: e.path,
            message: format!("loading: {}", e.message),
        })?;
        Ok(Self {
            session,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, what: &str, e: ort::Error) -> CodecError {
        CodecError::Ort {
            path: self.path.clone(),
            message: format!("{what}: {e}"),
        }
    }
}

/// The flow-matching estimator (`LlamaTransformer`).
pub struct FlowEstimator {
    graph: Graph,
    in_channels: usize,
    out_channels: usize,
}

impl FlowEstimator {
    /// Opens `flow_estimator.onnx` in `dir`.
    pub fn open(rt: &OrtRuntime, dir: &Path, in_channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Self {
            graph: Graph::open(rt, &dir.join(FLOW_ESTIMATOR_GRAPH))?,
            in_channels,
            out_channels,
        })
    }

    /// Velocity `[B, T, out_channels]` for `input` `[B, T, in_channels]` and one
    /// flow time per batch row.
    pub fn velocity(&mut self, input: &[f32], frames: usize, timesteps: &[f32]) -> Result<Vec<f32>> {
        let batch = timesteps.len();
        check_len("estimator input", input.len(), batch * frames * self.in_channels)?;
        let x = TensorRef::from_array_view(([batch, frames, self.in_channels], input))
            .map_err(|e| self.graph.err("binding x", e))?;
        let t = TensorRef::from_array_view(([batch], timesteps)).map_err(|e| self.graph.err("binding timestep", e))?;
        let outputs = self
            .graph
            .session
            .run(ort::inputs![ESTIMATOR_INPUT => x, ESTIMATOR_TIMESTEP => t])
            .map_err(|e| CodecError::Ort {
                path: self.graph.path.clone(),
                message: format!("running: {e}"),
            })?;
        take_output(
            &self.graph.path,
            &outputs,
            ESTIMATOR_OUTPUT,
            &[batch, frames, self.out_channels],
        )
    }
}

/// The scalar-model decoder (latents → waveform).
pub struct ScalarDecoder {
    graph: Graph,
    latent_dim: usize,
    samples_per_latent: usize,
}

impl ScalarDecoder {
    /// Opens `scalar_decoder.onnx` in `dir`.
    pub fn open(rt: &OrtRuntime, dir: &Path, latent_dim: usize, samples_per_latent: usize) -> Result<Self> {
        Ok(Self {
            graph: Graph::open(rt, &dir.join(SCALAR_DECODER_GRAPH))?,
            latent_dim,
            samples_per_latent,
        })
    }

    /// Audio `[N, T · samples_per_latent]` for `latents` `[N, latent_dim, T]`.
    pub fn decode(&mut self, latents: &[f32], n: usize, frames: usize) -> Result<Vec<f32>> {
        check_len("decoder input", latents.len(), n * self.latent_dim * frames)?;
        let x = TensorRef::from_array_view(([n, self.latent_dim, frames], latents))
            .map_err(|e| self.graph.err("binding latents", e))?;
        let outputs = self
            .graph
            .session
            .run(ort::inputs![DECODER_INPUT => x])
            .map_err(|e| CodecError::Ort {
                path: self.graph.path.clone(),
                message: format!("running: {e}"),
            })?;
        take_output(
            &self.graph.path,
            &outputs,
            DECODER_OUTPUT,
            &[n, 1, frames * self.samples_per_latent],
        )
    }

    /// Audio `[frames · samples_per_latent]` of one channel's `latents`
    /// `[latent_dim, frames]`, one decoder call per span of `spans` (from
    /// [`super::chunks::plan_chunks`]), keeping each span's own frames.
    pub fn decode_chunked(&mut self, latents: &[f32], frames: usize, spans: &[ChunkSpan]) -> Result<Vec<f32>> {
        check_len("decoder input", latents.len(), self.latent_dim * frames)?;
        if !tiles(spans, frames) {
            return Err(CodecError::ChunkPlan {
                spans: format!("{spans:?}"),
                frames,
            });
        }
        let spl = self.samples_per_latent;
        let mut audio = Vec::with_capacity(frames * spl);
        let mut piece = Vec::new();
        for span in spans {
            piece.clear();
            for row in latents.chunks_exact(frames) {
                piece.extend_from_slice(&row[span.input.clone()]);
            }
            let out = self.decode(&piece, 1, span.input.len())?;
            audio.extend_from_slice(&out[span.kept_samples(spl)]);
        }
        Ok(audio)
    }
}

/// Whether the kept ranges of `spans` tile `0..frames` in order, each inside its
/// input range, every input inside the window.
fn tiles(spans: &[ChunkSpan], frames: usize) -> bool {
    let mut next = 0;
    for s in spans {
        let inside = s.input.start <= s.keep.start && s.keep.end <= s.input.end && s.input.end <= frames;
        if !inside || s.keep.start != next || s.keep.is_empty() {
            return false;
        }
        next = s.keep.end;
    }
    next == frames
}

/// Copies output `name` out of `outputs`, checking its shape.
fn take_output(
    path: &Path,
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
    expected: &[usize],
) -> Result<Vec<f32>> {
    let value = outputs.get(name).ok_or_else(|| CodecError::Ort {
        path: path.to_path_buf(),
        message: format!("graph has no output `{name}`"),
    })?;
    let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| CodecError::Ort {
        path: path.to_path_buf(),
        message: format!("reading output `{name}`: {e}"),
    })?;
    let got: Vec<usize> = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
    if got != expected {
        return Err(CodecError::OutputShape {
            path: path.to_path_buf(),
            output: name.to_string(),
            expected: expected.to_vec(),
            got,
        });
    }
    Ok(data.to_vec())
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(CodecError::InputLength { what, expected, got });
    }
    Ok(())
}
