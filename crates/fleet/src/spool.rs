//! Reading a node's SQLite ledger (the spool) beside the writer that
//! appends to it. WAL mode lets this connection read while the writer
//! commits; it never writes.

use crate::batch::{Batch, GeoRow, SealRow};
use crate::FleetError;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use warnseed_ledger::block::PackedAddress;

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
        let blocks: bool = conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'record_blocks'",
            [],
            |r| r.get(0),
        )?;
        if !blocks {
            return Err(FleetError::Config(format!(
                "{}: a ledger of an older warnseed: convert it before forwarding it (`warnseed run` \
                 or `warnseed init --data DIR` does)",
                path.display()
            )));
        }
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
            .query_row("SELECT coalesce(max(last_seq), 0) FROM record_blocks", [], |r| {
                r.get(0)
            })?)
    }

    /// The stored hash of record `seq`, if there is one.
    pub fn record_hash(&self, seq: i64) -> Result<Option<Vec<u8>>, FleetError> {
        let mut hash = None;
        warnseed_ledger::blockstore::for_each_seq(&self.conn, seq, seq, |_, _, r| {
            hash = Some(r.record_hash.to_vec());
            Ok(())
        })?;
        Ok(hash)
    }

    /// Up to `limit` records after `after_seq`, their geolocation, and the
    /// seals after `after_seal` that end at or before the batch's last
    /// record (or at or before `after_seq` when there is no new record).
    pub fn read(&mut self, after_seq: i64, limit: usize, after_seal: i64) -> Result<Batch, FleetError> {
        // One read transaction: a consistent snapshot of all three tables.
        let tx = self.conn.transaction()?;
        let mut b = Batch::default();
        let mut expected = after_seq + 1;
        let last = after_seq.saturating_add(limit as i64);
        warnseed_ledger::blockstore::for_each_seq(&tx, after_seq + 1, last, |seq, prev, r| {
            if seq != expected {
                return Err(warnseed_ledger::LedgerError::Io(format!(
                    "record {expected} is missing (found {seq} after {})",
                    expected - 1
                )));
            }
            expected += 1;
            let ip = warnseed_ledger::blockstore::address_text(&r.address);
            b.ip_key.push(ip_key(&self.secret, &ip).to_vec());
            b.seq.push(seq);
            b.started_at_ms.push(r.started_at_ms);
            b.ended_at_ms.push(r.ended_at_ms);
            b.network.push(r.network.to_string());
            b.decoy_id.push(r.decoy_id);
            b.info_hash.push(r.info_hash.to_vec());
            b.remote_ip.push(ip);
            b.remote_port.push(i32::from(r.remote_port));
            b.peer_id.push(r.peer_id.map(|p| p.to_vec()));
            b.client_name.push(r.client_name.map(str::to_string));
            b.client_version.push(r.client_version.map(str::to_string));
            b.transport.push(r.transport.to_string());
            b.bytes_sent.push(r.bytes_sent as i64);
            b.pieces_sent.push(i64::from(r.pieces_sent));
            b.piece_count.push(i64::from(r.piece_count));
            b.peer_pieces_initial.push(r.peer_pieces_initial.map(i64::from));
            b.peer_pieces_final.push(i64::from(r.peer_pieces_final));
            b.completed.push(r.completed);
            b.close_reason.push(r.close_reason.to_string());
            b.ip_salt.push(match r.address {
                PackedAddress::Raw { salt, .. } => Some(salt.to_vec()),
                _ => None,
            });
            b.ip_commitment.push(r.ip_commitment.to_vec());
            b.prev_hash.push(prev.to_vec());
            b.record_hash.push(r.record_hash.to_vec());
            b.kind.push(r.kind.as_str().to_string());
            b.session_key.push(r.session_key);
            let g = &r.geo;
            b.geo.push((!g.is_empty()).then(|| GeoRow {
                country: g.country.map(str::to_string),
                country_name: g.country_name.map(str::to_string),
                region: g.region.map(str::to_string),
                city: g.city.map(str::to_string),
                latitude: g.latitude,
                longitude: g.longitude,
                accuracy_km: g.accuracy_km.map(i64::from),
                kommune: g.kommune.map(str::to_string),
                kommune_name: g.kommune_name.map(str::to_string),
                kommune_confidence: g.kommune_confidence.map(str::to_string),
            }));
            Ok(())
        })
        .map_err(|e| match e {
            warnseed_ledger::LedgerError::Io(why) if why.starts_with("record ") => FleetError::Chain(why),
            other => FleetError::Ledger(other),
        })?;
        // Nothing in the window but records after it: the next record's
        // block is gone.
        if b.seq.is_empty() {
            let later: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM record_blocks WHERE last_seq > ?1)",
                [after_seq],
                |r| r.get(0),
            )?;
            if later {
                return Err(FleetError::Chain(format!("record {} is missing", after_seq + 1)));
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

#[cfg(test)]
mod tests {
    use super::*;
    use warnseed_ledger::{LedgerStore, RecordKind, SessionRecord, Transport};

    fn record(i: u32) -> SessionRecord {
        SessionRecord {
            kind: RecordKind::Close,
            session_key: i64::from(i),
            started_at_ms: 1_790_000_000_000 + i64::from(i),
            ended_at_ms: 1_790_000_001_000 + i64::from(i),
            network: "bittorrent",
            decoy_id: 1,
            info_hash: [1; 20],
            remote_ip: "192.0.2.7".parse().unwrap(),
            remote_port: 40_000,
            peer_id: None,
            client_name: None,
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: 5,
            pieces_sent: 1,
            piece_count: 1,
            peer_pieces_initial: Some(0),
            peer_pieces_final: 1,
            completed: true,
            close_reason: "peer_complete".into(),
        }
    }

    #[test]
    fn a_missing_block_is_a_broken_chain_not_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let mut store = LedgerStore::open(&path).unwrap();
        let all: Vec<SessionRecord> = (1..=900).map(record).collect();
        for batch in all.chunks(300) {
            store.append(batch).unwrap();
        }
        drop(store);
        let mut spool = Spool::open(&path, None).unwrap();
        assert_eq!(spool.head().unwrap(), 900);
        let b = spool.read(250, 100, 0).unwrap();
        assert_eq!((b.first_seq(), b.last_seq()), (Some(251), Some(350)));
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM record_blocks WHERE first_seq = 301", [])
            .unwrap();
        // The window lies inside the gap: no records, but more after it.
        match spool.read(300, 100, 0) {
            Err(FleetError::Chain(why)) => assert!(why.contains("record 301 is missing"), "{why}"),
            other => panic!("{:?}", other.map(|b| b.seq)),
        }
        // A window reaching into the gap: the records before it, then the
        // next read finds the gap.
        let b = spool.read(250, 100, 0).unwrap();
        assert_eq!((b.first_seq(), b.last_seq()), (Some(251), Some(300)));
        // Past the end: nothing, and no error.
        assert!(spool.read(900, 100, 0).unwrap().seq.is_empty());
    }
}
