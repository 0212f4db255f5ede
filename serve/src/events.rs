//! The events of a song, as `GET /v1/songs/{id}/events` sends them
//! (server-sent events: the event name is [`Event::name`], the data the
//! JSON of the event, `type` included).
//!
//! Order for one song: `queued` (again whenever its place changes),
//! `started`, `frames` per LM frame, `windows` per codec window (interleaved
//! with `frames` once the first window's codes exist), then exactly one of
//! `done`, `failed`, `cancelled`, after which the stream ends.

use serde::Serialize;

/// One event of a song.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// Waiting, `position`-th in line (1 = next).
    Queued {
        /// 1-based place among the waiting songs.
        position: usize,
    },
    /// The worker took the song.
    Started {
        /// Seconds it waited in the queue.
        waited_s: f64,
    },
    /// The LM wrote frame `frames` (12.5 per second of audio).
    Frames {
        /// Frames so far.
        frames: usize,
        /// The most frames the song's duration allows.
        max_frames: usize,
    },
    /// The codec finished a window of audio.
    Windows {
        /// Windows decoded so far.
        done: usize,
        /// Windows of the song, known once the LM is done.
        total: Option<usize>,
        /// Seconds of audio that can be fetched now.
        audio_seconds: f64,
    },
    /// The song is complete.
    Done(Outcome),
    /// Generation failed.
    Failed {
        /// Why, as `heart-run` would print it.
        error: String,
    },
    /// Cancelled by a client or by shutdown.
    Cancelled,
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Queued { .. } => "queued",
            Self::Started { .. } => "started",
            Self::Frames { .. } => "frames",
            Self::Windows { .. } => "windows",
            Self::Done(_) => "done",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the song ends with this event.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Done(_) | Self::Failed { .. } | Self::Cancelled)
    }
}

/// Figures of a finished song (`heart-run --json`'s summary, for one request).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// LM frames generated.
    pub frames: usize,
    /// Why the LM stopped: `end_of_audio` or `max_length`.
    pub stop: &'static str,
    /// Length of the song.
    pub audio_seconds: f64,
    /// Samples per second.
    pub sample_rate: u32,
    /// Channels.
    pub channels: u16,
    /// Size of the WAV file.
    pub wav_bytes: usize,
    /// Prompt building.
    pub prompt_s: f64,
    /// The frame loop, without the windows decoded between frames.
    pub lm_s: f64,
    /// Every codec window.
    pub codec_s: f64,
    /// From the start of generation to the first audio.
    pub ttfa_s: f64,
    /// From the start of generation to the end.
    pub total_s: f64,
    /// LM frames per second.
    pub lm_frames_per_s: f64,
    /// Wall time over audio time (< 1 is faster than real time).
    pub real_time_factor: f64,
}
