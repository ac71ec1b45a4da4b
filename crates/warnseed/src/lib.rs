//! The parts of the `warnseed` binary other crates reuse: the node's
//! configuration and the payload set it serves (the benchmarks build the
//! same set). The commands themselves live in the binary.

pub mod config;
pub mod evidence;
pub mod geo;
pub mod payloads;
pub mod reports;
pub mod schedule;
