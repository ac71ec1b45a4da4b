//! A run of consecutive records read from a spool, kept column by column:
//! that is the shape PostgreSQL's `unnest` takes, so a batch of thousands
//! of records is one statement with one array per column.

use crate::pg::PlanColumns;
use std::sync::Arc;
use warnseed_ledger::rollup::{Plan, RollupRow};

/// Records `first_seq..=last_seq` of one node (consecutive), their
/// geolocation rows, and the seals that end within them.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub seq: Vec<i64>,
    pub started_at_ms: Vec<i64>,
    pub ended_at_ms: Vec<i64>,
    pub network: Vec<String>,
    pub decoy_id: Vec<i64>,
    pub info_hash: Vec<Vec<u8>>,
    pub remote_ip: Vec<String>,
    pub remote_port: Vec<i32>,
    pub peer_id: Vec<Option<Vec<u8>>>,
    pub client_name: Vec<Option<String>>,
    pub client_version: Vec<Option<String>>,
    pub transport: Vec<String>,
    pub bytes_sent: Vec<i64>,
    pub pieces_sent: Vec<i64>,
    pub piece_count: Vec<i64>,
    pub peer_pieces_initial: Vec<Option<i64>>,
    pub peer_pieces_final: Vec<i64>,
    pub completed: Vec<bool>,
    pub close_reason: Vec<String>,
    pub ip_salt: Vec<Option<Vec<u8>>>,
    pub ip_commitment: Vec<Vec<u8>>,
    pub prev_hash: Vec<Vec<u8>>,
    pub record_hash: Vec<Vec<u8>>,
    pub kind: Vec<String>,
    pub session_key: Vec<i64>,
    /// The aggregates' key of `remote_ip` (see [`crate::ip_key`]).
    pub ip_key: Vec<Vec<u8>>,
    /// Geolocation per record (index into the columns above), if any.
    pub geo: Vec<Option<GeoRow>>,
    /// Seals whose records are all in this batch or before it.
    pub seals: Vec<SealRow>,
    /// The aggregates' updates if every record is new ([`Batch::prepare`]).
    pub(crate) prepared: Option<Arc<PlanColumns>>,
}

/// The `session_geo` row of one record.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GeoRow {
    pub country: Option<String>,
    pub country_name: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub accuracy_km: Option<i64>,
    pub kommune: Option<String>,
    pub kommune_name: Option<String>,
    pub kommune_confidence: Option<String>,
}

/// A seal as stored in the spool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealRow {
    pub id: i64,
    pub sealed_at_ms: i64,
    pub first_seq: i64,
    pub last_seq: i64,
    pub head_hash: Vec<u8>,
    pub merkle_root: Vec<u8>,
    pub clock_source: String,
    pub clock_synced: Option<i64>,
    pub clock_max_error_us: Option<i64>,
    pub clock_est_error_us: Option<i64>,
    pub prev_seal_hash: Vec<u8>,
    pub seal_hash: Vec<u8>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty() && self.seals.is_empty()
    }

    pub fn first_seq(&self) -> Option<i64> {
        self.seq.first().copied()
    }

    pub fn last_seq(&self) -> Option<i64> {
        self.seq.last().copied()
    }

    /// Works out the aggregates' updates as if every record were new (the
    /// usual case), so the forwarder does it while PostgreSQL is busy with
    /// the batch before. A batch some of whose records turn out to be
    /// there already gets its updates worked out again from the rest.
    pub fn prepare(&mut self) {
        let rows: Vec<RollupRow<'_>> = (0..self.len()).map(|i| self.rollup_row(i)).collect();
        self.prepared = PlanColumns::from_plan(&Plan::new(&rows)).ok().map(Arc::new);
    }

    /// The aggregates' input of record `i`.
    pub fn rollup_row(&self, i: usize) -> RollupRow<'_> {
        let geo = self.geo[i].as_ref();
        RollupRow {
            is_open: warnseed_ledger::kind_opens_closes(&self.kind[i]).0,
            is_close: warnseed_ledger::kind_opens_closes(&self.kind[i]).1,
            started_at_ms: self.started_at_ms[i],
            ended_at_ms: self.ended_at_ms[i],
            network: &self.network[i],
            decoy_id: self.decoy_id[i],
            ip_key: self.ip_key[i].as_slice().try_into().unwrap_or([0; 16]),
            // Erased on the node before it was forwarded: unknown, not one
            // address shared by every erased record. (A pseudonym still
            // tells one downloader from another.)
            address_known: self.remote_ip[i] != warnseed_ledger::chain::ERASED_IP,
            client: self.client_name[i].as_deref(),
            completed: self.completed[i],
            // As the ledger decides it: the peer lacked pieces at the start
            // (a seed reconnecting is no download).
            downloading: self.peer_pieces_initial[i].is_none_or(|p| p < self.piece_count[i]),
            bytes_sent: self.bytes_sent[i] as u64,
            country: geo.and_then(|g| g.country.as_deref()),
            kommune: geo.and_then(|g| g.kommune.as_deref()),
        }
    }
}
