//! The ledger: one row per peer session that reached a decoy.
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
//! Not here yet: seal records, retention and PostgreSQL (a later issue).
#![forbid(unsafe_code)]

/// Now, in UTC milliseconds since the Unix epoch: the ledger's timestamps.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub mod chain;
mod interest;
mod record;
mod store;
mod writer;

pub use interest::{InterestAggregator, InterestRow};
pub use record::{RecordKind, SessionRecord, Transport};
pub use store::{BadRecord, LedgerStore, LedgerSummary, StoredSession, Verification};
pub use writer::{LedgerWriter, WriterConfig};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("ledger writer thread stopped")]
    WriterGone,
    #[error("ledger database has no column {0:?}: it was written by an older warnseed; move it aside")]
    Schema(&'static str),
}
