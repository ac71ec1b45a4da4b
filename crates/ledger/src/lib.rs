//! The ledger: one row per peer session that reached a decoy.
//!
//! Adapters (the BitTorrent seeder today) hand finished sessions to a
//! [`LedgerWriter`], which batches them into SQLite transactions on its own
//! thread so the network path never waits on disk. Closing the writer drains
//! everything queued, which is how a graceful stop loses nothing. Reports
//! read the same file through [`LedgerStore`].
//!
//! Not here yet: the hash chain, retention and PostgreSQL (a later issue).
#![forbid(unsafe_code)]

mod record;
mod store;
mod writer;

pub use record::{SessionRecord, Transport};
pub use store::{LedgerStore, LedgerSummary, StoredSession};
pub use writer::{LedgerWriter, WriterConfig};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("ledger writer thread stopped")]
    WriterGone,
}
