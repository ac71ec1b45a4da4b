//! The ledger: a record per peer session that reached a decoy (two while
//! it runs: when it opens and when it closes), packed in blocks of up to
//! 4,096 records ([`blockstore`]).
//!
//! Adapters (the BitTorrent seeder today) hand finished sessions to a
//! [`LedgerWriter`], which batches them into SQLite transactions on its own
//! thread so the network path never waits on disk. Closing the writer drains
//! everything queued, which is how a graceful stop loses nothing. Reports
//! read the same file through [`LedgerStore`].
//!
//! Every row is chained to the one before by SHA-256 ([`chain`]);
//! [`LedgerStore::verify`] walks the chain and names the first bad record.
//!
//! Seals ([`seal`]) summarise the chain every minute with a Merkle root
//! and the clock's state, so truncation is detected and single records
//! can be proven to a third party.
// Only `clock` reads the kernel's clock state through one syscall.
#![deny(unsafe_code)]

/// Now, in UTC milliseconds since the Unix epoch: the ledger's timestamps.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub mod block;
pub mod blockstore;
pub mod chain;
pub mod clock;
mod evidence;
pub mod geo;
mod interest;
mod legacy;
pub mod merkle;
mod record;
pub mod report;
mod retention;
pub mod rollup;
mod seal;
mod store;
pub mod uniques;
mod writer;

pub use clock::ClockState;
pub use evidence::{
    verify_evidence, verify_evidence_anchored, Evidence, EvidenceCheck, EvidenceRecord, EvidenceSeal,
    InclusionProof, IpRange, EVIDENCE_FORMAT,
};
pub use geo::{Enricher, GeoFields};
pub use interest::{InterestAggregator, InterestRow};
pub use record::{coalesce_short_sessions, kind_opens_closes, RecordKind, SessionRecord, Transport};
pub use retention::{hmac_sha256, pseudonym, Retention, RetentionOutcome};
pub use seal::Seal;
pub use store::{BadRecord, LedgerStore, LedgerSummary, StoredSession, UnrolledRecords, Verification};
pub use writer::{LedgerWriter, WriterConfig};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{0}")]
    Io(String),
    #[error("record {0} is not sealed yet; export again in a minute")]
    Unsealed(i64),
    #[error("ledger writer thread stopped")]
    WriterGone,
    #[error("ledger database has no column {0:?}: it was written by an older warnseed; move it aside")]
    Schema(&'static str),
}
