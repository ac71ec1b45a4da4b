//! Reading a node's SQLite ledger (the spool) beside the writer that
//! appends to it. WAL mode lets this connection read while the writer
//! commits; it never writes.

use crate::batch::{Batch, GeoRow, SealRow};
use crate::FleetError;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;

/// The aggregates' key of an address under `secret`: the first 16 bytes
/// of HMAC-SHA256, exactly as [`warnseed_ledger::LedgerStore::ip_key`].
pub fn ip_key(secret: &[u8], ip: &str) -> [u8; 16] {
    warnseed_ledger::hmac_sha256(secret, ip.as_bytes())[..16]
        .try_into()
        .expect("16 bytes")
}

pub struct Spool {
    conn: Connection,
    node_id: String,
    secret: Vec<u8>,
}

impl Spool {
    /// Opens the ledger at `path` for reading. Addresses are keyed with
    /// `shared_secret` when given (a fleet's nodes share one, so one
    /// downloader seen by two nodes counts once), else with the ledger's
    /// own secret, as its local aggregates are.
    pub fn open(path: &Path, shared_secret: Option<&[u8]>) -> Result<Self, FleetError> {
        if !path.exists() {
            return Err(FleetError::Config(format!("no ledger at {}", path.display())));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let meta = |key: &str| -> Result<String, FleetError> {
            conn.query_row("SELECT value FROM ledger_meta WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| {
                FleetError::Config(format!("{}: no {key} (not a warnseed ledger)", path.display()))
            })
        };
        let node_id = meta("node_id")?;
        let secret = match shared_secret {
            Some(s) => s.to_vec(),
            None => meta("ip_key_secret")?.into_bytes(),
        };
        Ok(Self {
            conn,
            node_id,
            secret,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The newest record's seq (0 for an empty ledger).
    pub fn head(&self) -> Result<i64, FleetError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM sessions", [], |r| r.get(0))?)
    }

    /// The stored hash of record `seq`, if there is one.
    pub fn record_hash(&self, seq: i64) -> Result<Option<Vec<u8>>, FleetError> {
        Ok(self
            .conn
            .query_row("SELECT record_hash FROM sessions WHERE id = ?1", [seq], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// Up to `limit` records after `after_seq`, their geolocation, and the
    /// seals after `after_seal` that end at or before the batch's last
    /// record (or at or before `after_seq` when there is no new record).
    pub fn read(&mut self, after_seq: i64, limit: usize, after_seal: i64) -> Result<Batch, FleetError> {
        // One read transaction: a consistent snapshot of all three tables.
        let tx = self.conn.transaction()?;
        let mut b = Batch::default();
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip, remote_port,
                        peer_id, client_name, client_version, transport, bytes_sent, pieces_sent, piece_count,
                        peer_pieces_initial, peer_pieces_final, completed, close_reason,
                        ip_salt, ip_commitment, prev_hash, record_hash, kind, session_key
                 FROM sessions WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let mut rows = stmt.query(rusqlite::params![after_seq, limit as i64])?;
            let mut expected = after_seq + 1;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                if seq != expected {
                    return Err(FleetError::Chain(format!(
                        "record {expected} is missing (found {seq} after {})",
                        expected - 1
                    )));
                }
                expected += 1;
                let ip: String = r.get(6)?;
                b.ip_key.push(ip_key(&self.secret, &ip).to_vec());
                b.seq.push(seq);
                b.started_at_ms.push(r.get(1)?);
                b.ended_at_ms.push(r.get(2)?);
                b.network.push(r.get(3)?);
                b.decoy_id.push(r.get(4)?);
                b.info_hash.push(r.get(5)?);
                b.remote_ip.push(ip);
                b.remote_port.push(r.get(7)?);
                b.peer_id.push(r.get(8)?);
                b.client_name.push(r.get(9)?);
                b.client_version.push(r.get(10)?);
                b.transport.push(r.get(11)?);
                b.bytes_sent.push(r.get(12)?);
                b.pieces_sent.push(r.get(13)?);
                b.piece_count.push(r.get(14)?);
                b.peer_pieces_initial.push(r.get(15)?);
                b.peer_pieces_final.push(r.get(16)?);
                b.completed.push(r.get::<_, i64>(17)? != 0);
                b.close_reason.push(r.get(18)?);
                b.ip_salt.push(r.get(19)?);
                b.ip_commitment.push(r.get(20)?);
                b.prev_hash.push(r.get(21)?);
                b.record_hash.push(r.get(22)?);
                b.kind.push(r.get(23)?);
                b.session_key.push(r.get(24)?);
            }
        }
        b.geo = vec![None; b.seq.len()];
        if let (Some(first), Some(last)) = (b.first_seq(), b.last_seq()) {
            let mut stmt = tx.prepare_cached(
                "SELECT seq, country, country_name, region, city, latitude, longitude, accuracy_km,
                        kommune, kommune_name, kommune_confidence
                 FROM session_geo WHERE seq >= ?1 AND seq <= ?2",
            )?;
            let mut rows = stmt.query([first, last])?;
            while let Some(r) = rows.next()? {
                let seq: i64 = r.get(0)?;
                b.geo[(seq - first) as usize] = Some(GeoRow {
                    country: r.get(1)?,
                    country_name: r.get(2)?,
                    region: r.get(3)?,
                    city: r.get(4)?,
                    latitude: r.get(5)?,
                    longitude: r.get(6)?,
                    accuracy_km: r.get(7)?,
                    kommune: r.get(8)?,
                    kommune_name: r.get(9)?,
                    kommune_confidence: r.get(10)?,
                });
            }
        }
        let through = b.last_seq().unwrap_or(after_seq);
        {
            let mut stmt = tx.prepare_cached(
                "SELECT id, sealed_at_ms, first_seq, last_seq, head_hash, merkle_root, clock_source,
                        clock_synced, clock_max_error_us, clock_est_error_us, prev_seal_hash, seal_hash
                 FROM seals WHERE id > ?1 AND last_seq <= ?2 ORDER BY id",
            )?;
            let mut rows = stmt.query([after_seal, through])?;
            while let Some(r) = rows.next()? {
                b.seals.push(SealRow {
                    id: r.get(0)?,
                    sealed_at_ms: r.get(1)?,
                    first_seq: r.get(2)?,
                    last_seq: r.get(3)?,
                    head_hash: r.get(4)?,
                    merkle_root: r.get(5)?,
                    clock_source: r.get(6)?,
                    clock_synced: r.get(7)?,
                    clock_max_error_us: r.get(8)?,
                    clock_est_error_us: r.get(9)?,
                    prev_seal_hash: r.get(10)?,
                    seal_hash: r.get(11)?,
                });
            }
        }
        tx.commit()?;
        b.prepare();
        Ok(b)
    }
}
