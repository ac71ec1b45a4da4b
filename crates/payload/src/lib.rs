//! Warning payloads and the bytes of decoys built from them.
//!
//! A node serves a [`PayloadSet`]: one [`Variant`] per container (MP4,
//! Matroska, AVI, stills, zip, PDF, text), each holding the warning in that
//! container. A decoy is its variant's media, then container-valid padding
//! up to the decoy's exact size ([`layout`]), filled with zeros or keyed
//! pseudo-random bytes ([`Fill`]). Nothing per decoy is stored: a
//! [`DecoyLayout`] computes any byte range, and [`piece_hash`] computes
//! piece hashes so that what decoys share is hashed once.
//!
//! Not here: rendering and encoding the warning (`warnseed-media`), or
//! choosing which variants a node builds (the `warnseed` binary).
#![forbid(unsafe_code)]

mod crc;
mod fill;
mod hashes;
pub mod layout;
mod parallel;
mod pdf;
mod set;
mod warning;
mod zip;

pub use crc::{crc32_combine, crc32_of_zeros};
pub use fill::{Fill, FillMode};
pub use hashes::{piece_hash, DecoyPieceHashes, ZeroHasher, MAX_PIECE_LENGTH};
pub use layout::{CellKind, DecoyLayout, Padding, Segment, Variant};
pub use parallel::map_indexed;
pub use pdf::MAX_PDF_SIZE;
pub use set::{PayloadError, PayloadSet, EXTENSIONS, FALLBACK_VARIANT};
pub use warning::BUILTIN_WARNING;
pub use zip::PADDING_NAME;

#[cfg(test)]
mod layout_tests;
