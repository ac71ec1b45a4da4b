//! BitTorrent protocol cores for warnseed: bencode, v1 metainfo, magnet
//! links, peer-id decoding and the seeding peer session.
//!
//! Everything here is sans-IO: functions and state machines over bytes and
//! instants, with no sockets, threads or clocks. The tokio driver lives in
//! `warnseed-seeder`. This crate is not a general BitTorrent client: it only
//! seeds single-file v1 torrents whose bytes it can compute.
#![forbid(unsafe_code)]

pub mod bencode;
pub mod client;
pub mod metainfo;
pub mod mse;
pub mod session;
pub mod wire;

pub use metainfo::{InfoHash, PieceHash};
