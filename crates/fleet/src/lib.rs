//! Fleet mode: many nodes, one PostgreSQL.
//!
//! Each node keeps writing its own SQLite ledger exactly as a lone node
//! does; that file is the node's *spool*. A [`Forwarder`] copies its
//! records, geolocation rows and seals to a central PostgreSQL schema
//! ([`PgStore`]) in order, in batches, and keeps the fleet-wide aggregates
//! there with the same [`warnseed_ledger::rollup::Plan`] the SQLite store
//! applies, so [`warnseed_ledger::report`] gives the fleet's figures from
//! PostgreSQL exactly as it gives one node's from SQLite.
//!
//! What this crate guarantees:
//! - **Idempotent**: a record is keyed by `(node_id, seq)`. A batch is one
//!   PostgreSQL transaction that inserts the records with `ON CONFLICT DO
//!   NOTHING ... RETURNING seq` and updates the aggregates only for the
//!   records it actually inserted; a retry after a lost commit
//!   acknowledgement neither duplicates a record nor counts it twice.
//! - **Never blocking the node**: the node only writes SQLite. When
//!   PostgreSQL is away the forwarder backs off (1 s doubling to 30 s),
//!   the spool keeps everything, and forwarding resumes from
//!   `max(seq)` of this node in PostgreSQL when it is back.
//! - **Ordered**: records arrive in chain order with no gaps, and a seal
//!   arrives only after every record it covers.
//!
//! What it is not: a replacement for the local ledger (the SQLite file
//! stays the node's evidence, with its chain and seals), nor a way to
//! write the chain from several nodes into one sequence (every node keeps
//! its own chain; PostgreSQL holds them side by side).
#![forbid(unsafe_code)]

mod batch;
mod forwarder;
mod pg;
mod schema;
mod spool;
mod tls;

pub use batch::{Batch, SealRow};
pub use forwarder::{Forwarder, ForwarderConfig, ForwarderStatus, StatusHandle};
pub use pg::{ForwardOutcome, NodeHead, PgClient, PgStore};
pub use spool::{ip_key, Spool};
pub use tls::{split_conninfo, TlsMode, TlsSettings};

/// Where the fleet's PostgreSQL is and which schema holds warnseed's tables.
#[derive(Clone, Debug)]
pub struct PgConfig {
    /// A libpq-style connection string: `host=127.0.0.1 user=postgres
    /// dbname=warnseed` or `postgresql://user@host:5432/db`, with libpq's
    /// TLS keywords (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`; see
    /// [`TlsSettings`]).
    pub conninfo: String,
    /// The PostgreSQL schema (created if missing).
    pub schema: String,
}

impl PgConfig {
    pub fn new(conninfo: impl Into<String>, schema: impl Into<String>) -> Result<Self, FleetError> {
        let config = Self {
            conninfo: conninfo.into(),
            schema: schema.into(),
        };
        config.check()?;
        Ok(config)
    }

    /// Schema names are put into SQL text, so only plain identifiers pass.
    pub fn check(&self) -> Result<(), FleetError> {
        let s = &self.schema;
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(FleetError::Config(format!(
                "fleet schema {s:?}: use 1 to 63 lowercase letters, digits and underscores, not starting with a digit"
            )));
        }
        if self.conninfo.trim().is_empty() {
            return Err(FleetError::Config("fleet.postgres is empty".into()));
        }
        self.parse()?;
        Ok(())
    }

    /// What tokio-postgres is given, and how the connection is protected.
    pub fn parse(&self) -> Result<(tokio_postgres::Config, TlsSettings), FleetError> {
        let (rest, tls) = split_conninfo(&self.conninfo)?;
        let pg = rest
            .parse::<tokio_postgres::Config>()
            .map_err(|e| FleetError::Config(format!("fleet.postgres: {e}")))?;
        Ok((pg, tls))
    }

    /// The TLS mode a connection with these settings uses.
    pub fn tls_mode(&self) -> Result<TlsMode, FleetError> {
        let (pg, tls) = self.parse()?;
        Ok(tls.mode_for(&pg))
    }
}

/// Reads a shared address-key secret from a file: its content without
/// surrounding white space, at least 16 bytes (e.g. `openssl rand -hex 32`).
pub fn read_secret_file(path: &std::path::Path) -> Result<Vec<u8>, FleetError> {
    let text =
        std::fs::read(path).map_err(|e| FleetError::Config(format!("reading {}: {e}", path.display())))?;
    let secret = text.trim_ascii();
    if secret.len() < 16 {
        return Err(FleetError::Config(format!(
            "{}: an address-key secret needs at least 16 bytes",
            path.display()
        )));
    }
    Ok(secret.to_vec())
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// With its causes in the message (a connection refused, the server's
    /// own words), as a status line and a log need them.
    #[error("PostgreSQL: {}", pg_message(.0))]
    Pg(tokio_postgres::Error),
    #[error("PostgreSQL did not answer within {0} s")]
    Timeout(u64),
    #[error("spool (local ledger): {0}")]
    Spool(#[from] rusqlite::Error),
    #[error("spool (local ledger): {0}")]
    Ledger(#[from] warnseed_ledger::LedgerError),
    #[error("spool (local ledger) is not a clean chain: {0}")]
    Chain(String),
    #[error(
        "record {seq} of node {node_id} in PostgreSQL differs from the local ledger's: two ledgers share one node id, \
         or one was replaced; forwarding stopped"
    )]
    Diverged { node_id: String, seq: i64 },
    #[error("fleet configuration: {0}")]
    Config(String),
    #[error("cannot start a runtime for PostgreSQL: {0}")]
    Runtime(std::io::Error),
}

impl From<tokio_postgres::Error> for FleetError {
    fn from(e: tokio_postgres::Error) -> Self {
        FleetError::Pg(e)
    }
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

impl FleetError {
    /// Errors a retry cannot cure: forwarding stops instead of looping.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            FleetError::Diverged { .. } | FleetError::Chain(_) | FleetError::Config(_)
        )
    }
}
