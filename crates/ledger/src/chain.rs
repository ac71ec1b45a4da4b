//! The hash chain that makes the ledger tamper-evident.
//!
//! Each record's hash covers the previous record's hash and a canonical
//! encoding of every field, so editing, deleting or inserting a row breaks
//! the chain at that row. The remote IP enters only through a salted
//! commitment, SHA-256(salt ‖ ip) with a random 16-byte salt per record:
//! erasing the IP and its salt for data protection later leaves the chain
//! verifiable, and without the salt the commitment cannot be brute-forced
//! back to an address.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];
const RECORD_TAG: &[u8] = b"warnseed ledger record v1\0";
const IP_TAG: &[u8] = b"warnseed ip commitment v1\0";

/// What stands in `remote_ip` once an address is erased (its salt goes
/// with it). A keyed pseudonym is written `pseudonym:` and 64 hex digits.
pub const ERASED_IP: &str = "erased";

/// True for the erasure marker and for pseudonyms, the only values that may
/// stand in `remote_ip` without a salt.
pub fn is_erased_ip(value: &str) -> bool {
    value == ERASED_IP
        || value
            .strip_prefix("pseudonym:")
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

pub fn ip_commitment(salt: &[u8], ip: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(IP_TAG);
    h.update((salt.len() as u32).to_be_bytes());
    h.update(salt);
    h.update(ip.as_bytes());
    h.finalize().into()
}

pub fn new_salt() -> [u8; 16] {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system provides randomness");
    salt
}

/// Every field a record's hash covers, in hashing order.
#[derive(Clone, Debug)]
pub struct ChainedFields<'a> {
    pub seq: i64,
    pub kind: &'a str,
    pub session_key: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: &'a str,
    pub decoy_id: i64,
    pub info_hash: &'a [u8],
    pub ip_commitment: &'a [u8],
    pub remote_port: u16,
    pub peer_id: Option<&'a [u8]>,
    pub client_name: Option<&'a str>,
    pub client_version: Option<&'a str>,
    pub transport: &'a str,
    pub bytes_sent: i64,
    pub pieces_sent: i64,
    pub piece_count: i64,
    pub peer_pieces_initial: Option<i64>,
    pub peer_pieces_final: i64,
    pub completed: bool,
    pub close_reason: &'a str,
}

/// Length-prefixed, typed encoding: no two different field lists encode to
/// the same bytes.
struct Canonical(Sha256);

impl Canonical {
    fn int(&mut self, n: i64) {
        self.0.update([b'i']);
        self.0.update(n.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.update([b'b']);
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
    }
    fn opt_bytes(&mut self, b: Option<&[u8]>) {
        match b {
            None => self.0.update([b'n']),
            Some(b) => self.bytes(b),
        }
    }
    fn opt_int(&mut self, n: Option<i64>) {
        match n {
            None => self.0.update([b'n']),
            Some(n) => self.int(n),
        }
    }
}

pub fn record_hash(prev: &[u8; 32], f: &ChainedFields<'_>) -> [u8; 32] {
    let mut c = Canonical(Sha256::new());
    c.0.update(RECORD_TAG);
    c.0.update(prev);
    c.int(f.seq);
    c.bytes(f.kind.as_bytes());
    c.int(f.session_key);
    c.int(f.started_at_ms);
    c.int(f.ended_at_ms);
    c.bytes(f.network.as_bytes());
    c.int(f.decoy_id);
    c.bytes(f.info_hash);
    c.bytes(f.ip_commitment);
    c.int(i64::from(f.remote_port));
    c.opt_bytes(f.peer_id);
    c.opt_bytes(f.client_name.map(str::as_bytes));
    c.opt_bytes(f.client_version.map(str::as_bytes));
    c.bytes(f.transport.as_bytes());
    c.int(f.bytes_sent);
    c.int(f.pieces_sent);
    c.int(f.piece_count);
    c.opt_int(f.peer_pieces_initial);
    c.int(f.peer_pieces_final);
    c.int(i64::from(f.completed));
    c.bytes(f.close_reason.as_bytes());
    c.0.finalize().into()
}
