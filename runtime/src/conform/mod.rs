//! Conformance against golden fixture sets.

pub mod codec;
