//! The catalogue: the titles a node publishes decoys under.
//!
//! Titles come from operator files (CSV with a header row, or JSON Lines),
//! are validated row by row, and land in `catalog.sqlite` in one
//! transaction: a file with any invalid row imports nothing, and importing
//! the same file again changes nothing. The store also caches each title's
//! info hash (a pure function of the title, its size and the payload), so a
//! restart does not recompute a million info dictionaries.
//!
//! Not here: decoy bytes (`warnseed-payload`) or BitTorrent encoding
//! (`warnseed-bittorrent`).
#![forbid(unsafe_code)]

mod import;
mod schedule;
mod store;
mod title;
pub mod utc;

pub use import::{import_file, ImportOutcome, RowError};
pub use schedule::{NextRelease, ReleaseOrder, SchedulePolicy, ScheduleStatus, Tick};
pub use store::{CatalogStore, TitleRecord};
pub use title::{validate_title, TitleRow, MAX_SIZE_BYTES, MAX_TITLE_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("catalogue database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("{path}: {invalid} invalid row(s); nothing was imported")]
    Invalid {
        path: String,
        invalid: usize,
        errors: Vec<RowError>,
    },
}
