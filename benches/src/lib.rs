//! `heart-bench`: benchmarks of HeartMuLa / HeartCodec engine folders against
//! the machine's roofline (`heart-run bench`, or the `heart-bench` binary).
//!
//! The pieces, each usable on its own:
//! - [`machine`]: CPU model, cores, memory and OS of the benchmark machine.
//! - [`stream`]: a STREAM-like memory-bandwidth measurement (GB/s).
//! - [`peak`]: an FMA loop measuring peak f32 FLOP/s.
//! - the floors come from the core crate's cost model ([`heart::cost`]:
//!   bytes per LM frame at each precision, FLOPs of the codec).
//! - [`stats`]: median / extremes / spread of repeats, and a timer.
//! - [`drive`]: measurement drivers over two small traits, [`FrameStepper`]
//!   (one LM frame) and [`CodecStepper`] (one Euler step, one window decode),
//!   that the LM and codec runtimes implement ([`steppers`]: the real engines).
//! - [`speculative`]: speculative decoding against plain decoding in one run.
//! - [`song`]: one whole song end to end: time to first audio and total.
//! - [`cli`]: the command line shared by `heart-run bench` and `heart-bench`.
//! - [`report`]: the [`BenchRecord`] (machine, engine identity, rows) as an
//!   aligned table or JSON.
//!
//! Benchmarks print figures; tests never assert on time.

pub mod cli;
pub mod drive;
pub mod machine;
pub mod peak;
pub mod report;
pub mod song;
pub mod speculative;
pub mod stats;
pub mod steppers;
pub mod stream;

pub use drive::{CodecFloor, CodecPlan, CodecStepper, FrameStepper, LmFloor, LmPlan, bench_codec, bench_lm};
pub use heart::cost::LmRoofline;
pub use machine::MachineInfo;
pub use report::{BenchRecord, EngineIdentity};
pub use stats::{Repeats, Row, Stats, time_repeats};
pub use stream::{StreamConfig, StreamResult};

/// Errors of the benchmark harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A benchmark plan or measurement is invalid (zero repeats, no samples, ...).
    #[error("benchmark plan: {0}")]
    Plan(String),
    /// The engine under test failed while being measured.
    #[error("{what}: {source}")]
    Engine {
        /// What was being measured (stage and position).
        what: String,
        /// The engine's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The report could not be serialized.
    #[error("benchmark report: {0}")]
    Report(String),
}

impl BenchError {
    /// An engine failure while measuring `what`.
    pub fn engine(what: impl Into<String>, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Engine {
            what: what.into(),
            source: source.into(),
        }
    }
}
