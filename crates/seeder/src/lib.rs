//! Seeding decoys on BitTorrent: the in-memory decoy table, the tokio peer
//! server that drives `warnseed-bittorrent`'s sans-IO sessions, and the HTTP
//! tracker announcer.
//!
//! Connections, not torrents, are the unit of work: one task per TCP
//! connection, one shared [`DecoyTable`] for every decoy. A million idle
//! decoys cost their table entries and nothing else.
#![forbid(unsafe_code)]

mod decoys;
mod framing;
mod limiter;
mod server;
mod tracker;
mod udp_tracker;

pub use decoys::{content_key, Decoy, DecoyTable, LoadProgress};
pub use server::{ConnectionClosed, PeerServer, ServerConfig};
pub use tracker::{
    announce_loop, announce_request, parse_announce_response, AnnounceError, Scheme, TrackerUrl,
};

/// The client version we announce in BEP 10 `v` unless configured otherwise.
pub const DEFAULT_CLIENT_VERSION: &str = concat!("warnseed/", env!("CARGO_PKG_VERSION"));

/// A fresh peer id: `-WS0100-` then 12 characters that differ per process.
pub fn new_peer_id() -> [u8; 20] {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::time::SystemTime::now()).as_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let digest = h.finalize();
    let mut id = *b"-WS0100-000000000000";
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (slot, b) in id[8..].iter_mut().zip(digest.iter()) {
        *slot = ALPHABET[usize::from(*b) % ALPHABET.len()];
    }
    id
}
