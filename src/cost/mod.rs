//! The cost model: what one LM frame must read from memory ([`lm`], the
//! roofline of decoding) and what the codec must compute ([`codec`]), at every
//! precision and size, derived from the configs alone. `heart-run bench`
//! divides its measurements by these floors; [`ttfa`] adds up the floor of a
//! pipelined song's time to first audio.

pub mod codec;
pub mod lm;
pub mod ttfa;

pub use lm::{LmRoofline, compute_floor_ms, memory_floor_ms, percent_of_floor};
