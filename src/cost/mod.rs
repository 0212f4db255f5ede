//! The cost model: what one LM frame must read from memory ([`lm`], the
//! roofline of decoding) and what the codec must compute ([`codec`]), at every
//! precision and size, derived from the configs alone. `heart-run bench`
//! divides its measurements by these floors.

pub mod codec;
pub mod lm;

pub use lm::{LmRoofline, compute_floor_ms, memory_floor_ms, percent_of_floor};
