//! Seeding decoys on BitTorrent: the in-memory decoy table, the tokio peer
//! server that drives `warnseed-bittorrent`'s sans-IO sessions, and the HTTP
//! tracker announcer.
//!
//! Connections, not torrents, are the unit of work: one task per TCP
//! connection, one shared [`DecoyTable`] for every decoy. A million idle
//! decoys cost their table entries and nothing else.
#![forbid(unsafe_code)]

mod decoys;
mod dht;
mod framing;
mod limiter;
mod piece_file;
mod server;
mod status;
mod tracker;
mod udp_tracker;

pub use decoys::{Decoy, DecoyTable, LiveTable, LoadError, LoadProgress};
pub use dht::{run_dht, DhtSettings};
pub use piece_file::{PieceHashFile, PieceRecord};
pub use server::{ConnectionClosed, PeerServer, ServerConfig};
pub use status::{ScrapeStatus, StatusBoard, TrackerStatus};
pub use tracker::{
    announce_loop, announce_request, parse_announce_response, parse_scrape_response, scrape_request,
    AnnounceError, AnnounceSettings, Scheme, ScrapeCounts, TrackerUrl,
};
pub use udp_tracker::{parse_response as parse_udp_response, UdpResponse};

/// The client version we announce in BEP 10 `v` unless configured otherwise.
pub const DEFAULT_CLIENT_VERSION: &str = concat!("warnseed/", env!("CARGO_PKG_VERSION"));

/// The peer id prefix we use unless configured otherwise.
pub const DEFAULT_PEER_ID_PREFIX: &str = "-WS0100-";

/// A fresh peer id: `prefix` (at most 12 bytes, e.g. `-WS0100-`) then
/// characters that differ per process.
pub fn new_peer_id(prefix: &str) -> [u8; 20] {
    use getrandom::fill;
    let prefix = &prefix.as_bytes()[..prefix.len().min(12)];
    let mut random = [0u8; 20];
    fill(&mut random).expect("the operating system provides randomness");
    let mut id = [0u8; 20];
    id[..prefix.len()].copy_from_slice(prefix);
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (slot, b) in id[prefix.len()..].iter_mut().zip(random) {
        *slot = ALPHABET[usize::from(b) % ALPHABET.len()];
    }
    id
}
