//! Ledgers of the first layout (before session 8): one `sessions` row per
//! record, its place in `session_geo`.
//!
//! A writable open converts such a ledger to blocks ([`convert`]) once it
//! verifies: the chain hashes cover a record's fields, not how they are
//! stored, so every record keeps its hash and every seal still holds. A
//! ledger that fails verification is refused, not converted: it stays as
//! found, for whoever examines it. A read-only open (`ledger verify` on a
//! copy handed over as evidence) reads the old layout as it is.

use crate::block::{PackedAddress, PackedGeo, PackedRecord, MAX_BLOCK_RECORDS};
use crate::chain::{self, ChainedFields, GENESIS};
use crate::merkle::Hash;
use crate::store::{BadRecord, LedgerSummary, SealCheck};
use crate::{LedgerError, RecordKind};
use rusqlite::{Connection, OptionalExtension};

const COLUMNS: [&str; 25] = [
    "id",
    "started_at_ms",
    "ended_at_ms",
    "network",
    "decoy_id",
    "info_hash",
    "remote_ip",
    "remote_port",
    "peer_id",
    "client_name",
    "client_version",
    "transport",
    "bytes_sent",
    "pieces_sent",
    "piece_count",
    "peer_pieces_initial",
    "peer_pieces_final",
    "completed",
    "close_reason",
    "ip_salt",
    "ip_commitment",
    "prev_hash",
    "record_hash",
    "kind",
    "session_key",
];

const SELECT_RECORDS: &str =
    "SELECT id, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip, remote_port,
            peer_id, client_name, client_version, transport, bytes_sent, pieces_sent, piece_count,
            peer_pieces_initial, peer_pieces_final, completed, close_reason,
            ip_salt, ip_commitment, prev_hash, record_hash, kind, session_key
     FROM sessions";

/// Refuses a `sessions` table without every column of the first layout
/// (an even older warnseed's).
pub(crate) fn check_columns(conn: &Connection) -> Result<(), LedgerError> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('sessions')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for needed in COLUMNS {
        if !columns.iter().any(|c| c == needed) {
            return Err(LedgerError::Schema(needed));
        }
    }
    Ok(())
}

/// What a walk of the chain found.
pub(crate) struct Walk {
    pub records: u64,
    pub last_seq: i64,
    pub last_hash: Hash,
    pub first_bad: Option<BadRecord>,
}

/// Walks the first layout's chain, as `verify` did before blocks.
pub(crate) fn walk(conn: &Connection, sealing: &mut SealCheck<'_>) -> Result<Walk, LedgerError> {
    let mut stmt = conn.prepare(&format!("{SELECT_RECORDS} ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS;
    let mut expected_seq = 1i64;
    let mut records = 0u64;
    let mut first_bad = None;
    while let Some(r) = rows.next()? {
        let seq: i64 = r.get(0)?;
        let problem = match check_row(r, seq, expected_seq, &prev) {
            Ok(p) => p,
            // A value of the wrong type or range is tampering too.
            Err(e) => Some(format!("unreadable field: {e}")),
        };
        if let Some(reason) = problem {
            first_bad = Some(BadRecord { seq, reason });
            break;
        }
        let stored_hash: Vec<u8> = r.get(22).unwrap_or_default();
        prev = stored_hash.try_into().unwrap_or([0xff; 32]);
        if let Some(reason) = sealing.record(seq, &prev) {
            first_bad = Some(BadRecord { seq, reason });
            break;
        }
        expected_seq += 1;
        records += 1;
    }
    Ok(Walk {
        records,
        last_seq: expected_seq - 1,
        last_hash: prev,
        first_bad,
    })
}

/// Checks one row against the chain; `Ok(Some(reason))` for a bad record.
fn check_row(
    r: &rusqlite::Row<'_>,
    seq: i64,
    expected_seq: i64,
    prev: &[u8; 32],
) -> rusqlite::Result<Option<String>> {
    let stored_prev: Vec<u8> = r.get(21)?;
    let stored_hash: Vec<u8> = r.get(22)?;
    let commitment: Vec<u8> = r.get(20)?;
    let salt: Option<Vec<u8>> = r.get(19)?;
    let ip: Option<String> = r.get(6)?;
    let network: String = r.get(3)?;
    let info_hash: Vec<u8> = r.get(5)?;
    let peer_id: Option<Vec<u8>> = r.get(8)?;
    let client_name: Option<String> = r.get(9)?;
    let client_version: Option<String> = r.get(10)?;
    let transport: String = r.get(11)?;
    let close_reason: String = r.get(18)?;
    let completed: i64 = r.get(17)?;
    let remote_port: i64 = r.get(7)?;
    let kind: String = r.get(23)?;
    // SQLite would read 7 as true and 70000 as a port: both must be exact.
    if !(completed == 0 || completed == 1) {
        return Ok(Some(format!("completed is {completed}, not 0 or 1: altered")));
    }
    let Ok(remote_port) = u16::try_from(remote_port) else {
        return Ok(Some(format!("remote_port {remote_port} is not a port: altered")));
    };
    let fields = ChainedFields {
        seq,
        kind: &kind,
        session_key: r.get(24)?,
        started_at_ms: r.get(1)?,
        ended_at_ms: r.get(2)?,
        network: &network,
        decoy_id: r.get(4)?,
        info_hash: &info_hash,
        ip_commitment: &commitment,
        remote_port,
        peer_id: peer_id.as_deref(),
        client_name: client_name.as_deref(),
        client_version: client_version.as_deref(),
        transport: &transport,
        bytes_sent: r.get(12)?,
        pieces_sent: r.get(13)?,
        piece_count: r.get(14)?,
        peer_pieces_initial: r.get(15)?,
        peer_pieces_final: r.get(16)?,
        completed: completed == 1,
        close_reason: &close_reason,
    };
    Ok(if seq != expected_seq {
        Some(format!(
            "expected record {expected_seq} here, found {seq}: records deleted or inserted"
        ))
    } else if stored_prev[..] != prev[..] {
        Some("prev_hash does not match the record before: inserted or reordered".into())
    } else if chain::record_hash(prev, &fields)[..] != stored_hash[..] {
        Some("record_hash does not match the record's fields: altered".into())
    } else {
        match (&salt, &ip) {
            (Some(salt), Some(ip)) if chain::ip_commitment(salt, ip)[..] != commitment[..] => {
                Some("remote_ip does not match its commitment: altered".into())
            }
            // Without its salt an address cannot be checked, so only the
            // erasure marker or a pseudonym may stand there.
            (None, Some(ip)) if !chain::is_erased_ip(ip) => {
                Some("remote_ip is not an erasure marker but its salt is gone: altered".into())
            }
            (Some(_), None) => Some("remote_ip is missing but its salt is not: altered".into()),
            _ => None,
        }
    })
}

/// The ledger summary of the first layout.
pub(crate) fn summary(conn: &Connection) -> Result<LedgerSummary, LedgerError> {
    Ok(conn.query_row(
        "SELECT
            (SELECT count(*) FROM sessions WHERE kind IN ('close', 'session')),
            (SELECT count(*) FROM sessions o WHERE o.kind = 'open' AND NOT EXISTS
                (SELECT 1 FROM sessions c WHERE c.session_key = o.session_key AND c.kind = 'close')),
            (SELECT coalesce(sum(completed), 0) FROM sessions WHERE kind IN ('close', 'session')
                AND (peer_pieces_initial IS NULL OR peer_pieces_initial < piece_count)),
            (SELECT count(DISTINCT remote_ip) FROM sessions WHERE remote_ip != 'erased'),
            (SELECT coalesce(sum(bytes_sent), 0) FROM sessions WHERE kind IN ('close', 'session')),
            (SELECT min(started_at_ms) FROM sessions),
            (SELECT max(started_at_ms) FROM sessions)",
        [],
        |r| {
            let closed = r.get::<_, i64>(0)? as u64;
            let unterminated = r.get::<_, i64>(1)? as u64;
            Ok(LedgerSummary {
                sessions: closed + unterminated,
                unterminated,
                completed: r.get::<_, i64>(2)? as u64,
                unique_ips: r.get::<_, i64>(3)? as u64,
                bytes_sent: r.get::<_, i64>(4)? as u64,
                first_session_ms: r.get(5)?,
                last_session_ms: r.get(6)?,
            })
        },
    )?)
}

/// A first-layout row, owned, with its place.
struct Row {
    id: i64,
    kind: RecordKind,
    session_key: i64,
    started: i64,
    ended: i64,
    network: String,
    decoy_id: i64,
    info_hash: [u8; 20],
    address: PackedAddress,
    commitment: [u8; 32],
    port: u16,
    peer_id: Option<[u8; 20]>,
    client_name: Option<String>,
    client_version: Option<String>,
    transport: String,
    bytes_sent: i64,
    pieces_sent: u32,
    piece_count: u32,
    initial: Option<u32>,
    final_pieces: u32,
    completed: bool,
    close_reason: String,
    record_hash: [u8; 32],
    geo: crate::GeoFields,
}

impl Row {
    fn packed(&self) -> PackedRecord<'_> {
        PackedRecord {
            kind: self.kind,
            session_key: self.session_key,
            started_at_ms: self.started,
            ended_at_ms: self.ended,
            network: &self.network,
            decoy_id: self.decoy_id,
            info_hash: self.info_hash,
            address: self.address,
            ip_commitment: self.commitment,
            remote_port: self.port,
            peer_id: self.peer_id,
            client_name: self.client_name.as_deref(),
            client_version: self.client_version.as_deref(),
            transport: &self.transport,
            bytes_sent: self.bytes_sent as u64,
            pieces_sent: self.pieces_sent,
            piece_count: self.piece_count,
            peer_pieces_initial: self.initial,
            peer_pieces_final: self.final_pieces,
            completed: self.completed,
            close_reason: &self.close_reason,
            record_hash: self.record_hash,
            geo: PackedGeo::from_fields(&self.geo),
        }
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> Result<Row, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let id: i64 = r.get(0).map_err(e)?;
    let array = |i: usize| -> Result<Vec<u8>, String> { r.get::<_, Vec<u8>>(i).map_err(e) };
    let ip: String = r.get(6).map_err(e)?;
    let salt: Option<Vec<u8>> = r.get(19).map_err(e)?;
    let address = match salt {
        Some(salt) => {
            let parsed: std::net::IpAddr =
                ip.parse().map_err(|_| format!("address {ip:?} does not parse"))?;
            // The commitment covers the text: it must come back the same.
            if parsed.to_string() != ip {
                return Err(format!("address {ip:?} is not in canonical form"));
            }
            PackedAddress::Raw {
                ip: parsed,
                salt: salt.try_into().map_err(|_| "salt is not 16 bytes".to_string())?,
            }
        }
        None if ip == chain::ERASED_IP => PackedAddress::Erased,
        None => {
            let hex = ip
                .strip_prefix("pseudonym:")
                .filter(|h| h.len() == 64)
                .ok_or_else(|| format!("address {ip:?} without a salt"))?;
            let mut mac = [0u8; 32];
            for (i, b) in mac.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| format!("pseudonym {ip:?} is not hex"))?;
            }
            PackedAddress::Pseudonym(mac)
        }
    };
    let kind = match r.get::<_, String>(23).map_err(e)?.as_str() {
        "open" => RecordKind::Open,
        "close" => RecordKind::Close,
        "session" => RecordKind::Session,
        other => return Err(format!("kind {other:?}")),
    };
    let small = |i: usize| -> Result<u32, String> {
        let n: i64 = r.get(i).map_err(e)?;
        u32::try_from(n).map_err(|_| format!("column {i} holds {n}"))
    };
    Ok(Row {
        id,
        kind,
        session_key: r.get(24).map_err(e)?,
        started: r.get(1).map_err(e)?,
        ended: r.get(2).map_err(e)?,
        network: r.get(3).map_err(e)?,
        decoy_id: r.get(4).map_err(e)?,
        info_hash: array(5)?
            .try_into()
            .map_err(|_| "info_hash is not 20 bytes".to_string())?,
        address,
        commitment: array(20)?
            .try_into()
            .map_err(|_| "ip_commitment is not 32 bytes".to_string())?,
        port: u16::try_from(r.get::<_, i64>(7).map_err(e)?).map_err(|_| "port".to_string())?,
        peer_id: match r.get::<_, Option<Vec<u8>>>(8).map_err(e)? {
            Some(p) => Some(p.try_into().map_err(|_| "peer_id is not 20 bytes".to_string())?),
            None => None,
        },
        client_name: r.get(9).map_err(e)?,
        client_version: r.get(10).map_err(e)?,
        transport: r.get(11).map_err(e)?,
        bytes_sent: r.get(12).map_err(e)?,
        pieces_sent: small(13)?,
        piece_count: small(14)?,
        initial: match r.get::<_, Option<i64>>(15).map_err(e)? {
            Some(n) => Some(u32::try_from(n).map_err(|_| "peer_pieces_initial".to_string())?),
            None => None,
        },
        final_pieces: small(16)?,
        completed: r.get::<_, i64>(17).map_err(e)? == 1,
        close_reason: r.get(18).map_err(e)?,
        record_hash: array(22)?
            .try_into()
            .map_err(|_| "record_hash is not 32 bytes".to_string())?,
        geo: crate::GeoFields {
            country: r.get(25).map_err(e)?,
            country_name: r.get(26).map_err(e)?,
            region: r.get(27).map_err(e)?,
            city: r.get(28).map_err(e)?,
            latitude: r.get(29).map_err(e)?,
            longitude: r.get(30).map_err(e)?,
            accuracy_km: r.get(31).map_err(e)?,
            kommune: r.get(32).map_err(e)?,
            kommune_name: r.get(33).map_err(e)?,
            kommune_confidence: r.get(34).map_err(e)?,
        },
    })
}

/// Every field of a first-layout record with its place, as conversion
/// reads it.
const CONVERT_SELECT: &str =
    "SELECT s.id, s.started_at_ms, s.ended_at_ms, s.network, s.decoy_id, s.info_hash,
        s.remote_ip, s.remote_port, s.peer_id, s.client_name, s.client_version, s.transport, s.bytes_sent,
        s.pieces_sent, s.piece_count, s.peer_pieces_initial, s.peer_pieces_final, s.completed,
        s.close_reason, s.ip_salt, s.ip_commitment, s.prev_hash, s.record_hash, s.kind,
        s.session_key, g.country, g.country_name, g.region, g.city, g.latitude, g.longitude,
        g.accuracy_km, g.kommune, g.kommune_name, g.kommune_confidence
    FROM sessions s LEFT JOIN session_geo g ON g.seq = s.id";

/// Checks, before anything is written, that every record of a verified
/// first-layout ledger can be stored in a block (a record can verify and
/// still hold what a block has no room for: an address spelt another
/// way, a place of the wrong type, which the chain does not cover).
pub(crate) fn check_convertible(conn: &Connection) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare(CONVERT_SELECT)?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        if let Err(why) = read_row(r) {
            let seq = r.get::<_, i64>(0).unwrap_or(0);
            return Err(LedgerError::Io(format!(
                "this ledger has the layout of an older warnseed and record {seq} cannot be converted ({why}); \
                 it was not converted or changed: keep it as it is, move it aside, and start a new ledger"
            )));
        }
    }
    Ok(())
}

/// Why a first-layout ledger that does not verify is not converted.
pub(crate) fn refusal(bad: &BadRecord) -> LedgerError {
    LedgerError::Io(format!(
        "this ledger has the layout of an older warnseed and does not verify (record {}: {}); \
         it was not converted or changed: keep it as it is (it shows what happened to it), move it aside, \
         and start a new ledger",
        bad.seq, bad.reason
    ))
}

/// Converts a first-layout ledger, checked already ([`refusal`]), to blocks: records are read in order and written as blocks, 65,536 a
/// transaction (an interrupted conversion goes on where it stopped at the
/// next open), then the old tables are dropped. Returns how many records
/// were converted.
pub(crate) fn convert(conn: &mut Connection) -> Result<u64, LedgerError> {
    const PER_TRANSACTION: usize = 16 * MAX_BLOCK_RECORDS;
    let total: i64 = conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?;
    let mut converted = 0u64;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done = crate::blockstore::head(&tx)?;
        // Going on after an interruption: the blocks so far must end where
        // the old records they were made from do.
        if done.last_seq > 0 {
            let old: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT record_hash FROM sessions WHERE id = ?1",
                    [done.last_seq],
                    |r| r.get(0),
                )
                .optional()?;
            if old.as_deref() != Some(&done.last_hash[..]) {
                return Err(LedgerError::Io(format!(
                    "converting the older ledger: the blocks made so far end at record {} with another hash than \
                     the old record; nothing more was changed: keep the file as it is",
                    done.last_seq
                )));
            }
        }
        let rows: Vec<Row> = {
            let mut stmt = tx.prepare(&format!(
                "{CONVERT_SELECT} WHERE s.id > ?1 ORDER BY s.id LIMIT ?2"
            ))?;
            let mut rows = stmt.query(rusqlite::params![done.last_seq, PER_TRANSACTION as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let row = read_row(r).map_err(|why| {
                    LedgerError::Io(format!(
                        "cannot convert the older ledger at record {}: {why}",
                        r.get::<_, i64>(0).unwrap_or(0)
                    ))
                })?;
                out.push(row);
            }
            out
        };
        if rows.is_empty() {
            // The blocks must be the whole chain the old records were
            // before those go: walked as `verify` walks them.
            let old_end: Option<(i64, Vec<u8>)> = tx
                .query_row(
                    "SELECT id, record_hash FROM sessions ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let mut no_seals = crate::store::SealCheck::new(&[], "").0;
            let walk = crate::store::walk_blocks(&tx, &mut no_seals)?;
            let (old_last, old_hash) = old_end.unwrap_or((0, GENESIS.to_vec()));
            if walk.first_bad.is_some() || walk.last_seq != old_last || walk.last_hash[..] != old_hash[..] {
                return Err(LedgerError::Io(format!(
                    "converting the older ledger: the blocks do not hold the same chain as the old records \
                     ({}); the old records were kept: keep the file as it is",
                    walk.first_bad
                        .map_or_else(|| format!("they end at record {}", walk.last_seq), |b| b.reason)
                )));
            }
            tx.execute_batch("DROP TABLE sessions; DROP TABLE IF EXISTS session_geo;")?;
            tx.commit()?;
            return Ok(converted);
        }
        if rows[0].id != done.last_seq + 1 {
            return Err(LedgerError::Io(format!(
                "cannot convert the older ledger: record {} follows record {}",
                rows[0].id, done.last_seq
            )));
        }
        let packed: Vec<PackedRecord<'_>> = rows.iter().map(Row::packed).collect();
        if packed
            .iter()
            .any(|r| matches!(r.address, PackedAddress::Pseudonym(_)))
        {
            crate::store::mark_pseudonyms(&tx)?;
        }
        crate::blockstore::append(&tx, &done, &packed)?;
        tx.commit()?;
        converted += rows.len() as u64;
        tracing::info!(
            records = converted,
            of = total,
            "converting the ledger to blocks (the layout of this warnseed)"
        );
    }
}
