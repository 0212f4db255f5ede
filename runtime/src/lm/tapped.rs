//! A frame loop that also returns extra graph outputs ("taps") of every step:
//! the calibration run reads the `probe.*` inputs of the linear layers, the A/B
//! the `tap.layer_*` residual streams.
//!
//! [`TappedLm::run`] is [`crate::lm::try_generate`] on a [`HeartMula`] with
//! the [`Taps`] asked for here, its frame events handed to a [`TapObserver`]
//! as steps and frames.

pub use crate::lm::GraphKind;
use crate::lm::{
    CodePicker, FrameEvent, GenParams, Generation, HeartMula, LmDims, LmError, Prompt, Taps, try_generate,
};

/// The tapped outputs of one graph step.
#[derive(Debug)]
pub struct TapStep<'a> {
    /// The graph that ran.
    pub graph: GraphKind,
    /// Frame index (0 = the prompt's frame).
    pub frame: usize,
    /// Decoder: the codebook whose logits the step produced (1..); backbone: 0.
    pub codebook: usize,
    /// Batch rows × new positions of the step.
    pub rows: usize,
    /// The tap names asked for this graph, in order.
    pub names: &'a [String],
    /// Their values, flattened f32, in the same order.
    pub values: &'a [Vec<f32>],
}

/// What a run produced for one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TappedFrame {
    /// Frame index.
    pub index: usize,
    /// Row 0's codes (column 0 = c0).
    pub codes: Vec<i64>,
    /// Whether the frame was kept (false for the end-of-audio frame).
    pub kept: bool,
    /// Backbone final-norm hidden state, `[B, D]`.
    pub hidden: Vec<f32>,
    /// The (CFG-guided) logits each code was picked from, `[codebooks][V]`.
    pub logits: Vec<Vec<f32>>,
}

/// Observer of a tapped run: every graph step's taps, then every frame.
pub trait TapObserver {
    /// Called after each graph step that has taps, with their values.
    fn step(&mut self, _step: &TapStep<'_>) -> Result<(), LmError> {
        Ok(())
    }
    /// Called once per frame, after its decoder walk.
    fn frame(&mut self, _frame: &TappedFrame) -> Result<(), LmError> {
        Ok(())
    }
}

/// The LM graphs of an engine folder, run with extra outputs.
pub struct TappedLm {
    lm: HeartMula,
    taps: Taps,
}

impl TappedLm {
    /// `lm`, asked for no taps yet.
    pub fn new(lm: HeartMula) -> Self {
        Self {
            lm,
            taps: Taps::default(),
        }
    }

    /// Sizes and ids.
    pub fn dims(&self) -> LmDims {
        self.lm.dims()
    }

    /// Every output name of the graph `kind`.
    pub fn outputs(&self, kind: GraphKind) -> Result<Vec<String>, LmError> {
        self.lm.outputs(kind)
    }

    /// Asks every step of graph `kind` for the outputs `names` too; an error
    /// names the first one the graph does not have.
    pub fn set_taps(&mut self, kind: GraphKind, names: Vec<String>) -> Result<(), LmError> {
        let mut taps = self.taps.clone();
        match kind {
            GraphKind::Backbone => taps.backbone = names,
            GraphKind::Decoder => taps.decoder = names,
        }
        self.lm.check_taps(&taps)?;
        self.taps = taps;
        Ok(())
    }

    /// Runs the frame loop on `prompt` with codes from `picker`, reporting the
    /// taps of every step that has some, then every frame, to `observer`.
    pub fn run(
        &mut self,
        prompt: &Prompt,
        params: &GenParams,
        picker: &mut dyn CodePicker,
        observer: &mut dyn TapObserver,
    ) -> Result<Generation, LmError> {
        let taps = &self.taps;
        try_generate(&mut self.lm, prompt, params, taps, picker, &mut |event| {
            report(event, taps, observer)
        })
    }
}

/// Hands one frame event to `observer`: its steps' taps, then the frame.
fn report(event: &FrameEvent<'_>, taps: &Taps, observer: &mut dyn TapObserver) -> Result<(), LmError> {
    for tap in event.taps {
        observer.step(&TapStep {
            graph: tap.graph,
            frame: event.index,
            codebook: tap.codebook,
            rows: tap.rows,
            names: taps.names(tap.graph),
            values: &tap.values,
        })?;
    }
    observer.frame(&TappedFrame {
        index: event.index,
        codes: event.codes[0].clone(),
        kept: event.kept,
        hidden: event.backbone.hidden.clone(),
        logits: event.sampler_logits.to_vec(),
    })
}

/// A [`CodePicker`] that replays recorded frames (`frames[frame][codebook]`).
#[derive(Debug, Clone)]
pub struct ForcedCodes<'a> {
    /// The frames to replay.
    pub frames: &'a [Vec<i64>],
}

impl CodePicker for ForcedCodes<'_> {
    fn pick(&mut self, frame: usize, codebook: usize, _logits: &[f32]) -> Result<i64, LmError> {
        self.frames
            .get(frame)
            .and_then(|f| f.get(codebook))
            .copied()
            .ok_or_else(|| {
                LmError::Input(format!(
                    "forced codes end before frame {frame}, codebook {codebook} ({} frames recorded)",
                    self.frames.len()
                ))
            })
    }
}
