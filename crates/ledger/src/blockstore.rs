//! Where the chain is stored: its records packed in blocks
//! ([`crate::block`]), one `record_blocks` row per block.
//!
//! Why blocks: one SQLite row per record cannot go faster than SQLite
//! inserts rows (BENCHMARKS §6); a block of up to 4,096 records costs one
//! insert. A row also holds what finds a block without decoding it: its
//! range of sequence numbers, its earliest and latest session start, its
//! last record's hash (the chain's head), and the sorted list of the raw
//! addresses in it. Those columns follow from the block's bytes, and
//! `verify` checks that they do: a column edited to hide a block from a
//! time window or an address lookup is tampering like any other.
//!
//! Readers get records through [`for_each_seq`] and [`for_each_started`],
//! each with the hash of the record before it (which the block does not
//! store: it is the previous record's own hash).

use crate::block::{self, PackedAddress, PackedRecord, MAX_BLOCK_RECORDS};
use crate::chain::{ChainedFields, GENESIS};
use crate::merkle::Hash;
use crate::LedgerError;
use rusqlite::{params, Connection, OptionalExtension};
use std::net::IpAddr;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS record_blocks (
    -- The block's first record's place in the chain. Blocks follow each
    -- other with no gap: the next block starts at last_seq + 1.
    first_seq INTEGER PRIMARY KEY,
    last_seq INTEGER NOT NULL,
    -- The earliest and latest session start in the block (close records
    -- start before the records they follow), for time windows.
    min_started_ms INTEGER NOT NULL,
    max_started_ms INTEGER NOT NULL,
    -- The last record's hash: the head of the chain without decoding.
    last_hash BLOB NOT NULL,
    -- Every raw address in the block once, 16 bytes each (IPv4 as
    -- IPv4-mapped IPv6), sorted: look-ups by address skip other blocks,
    -- and a block with none has nothing left for retention to replace.
    addresses BLOB NOT NULL,
    data BLOB NOT NULL
);
";

/// A last block with fewer records than this takes the next commit's
/// records (it is rewritten with them), so a quiet node that commits a few
/// records at a time still fills blocks; a bigger one is left as it is, so
/// no commit rewrites more than this many old records.
const TAIL_MERGE_BELOW: usize = 256;

/// The fields a record's hash covers, as stored in a block.
pub fn chained_fields<'a>(seq: i64, r: &'a PackedRecord<'a>) -> ChainedFields<'a> {
    ChainedFields {
        seq,
        kind: r.kind.as_str(),
        session_key: r.session_key,
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        network: r.network,
        decoy_id: r.decoy_id,
        info_hash: &r.info_hash,
        ip_commitment: &r.ip_commitment,
        remote_port: r.remote_port,
        peer_id: r.peer_id.as_ref().map(|p| &p[..]),
        client_name: r.client_name,
        client_version: r.client_version,
        transport: r.transport,
        bytes_sent: r.bytes_sent as i64,
        pieces_sent: i64::from(r.pieces_sent),
        piece_count: i64::from(r.piece_count),
        peer_pieces_initial: r.peer_pieces_initial.map(i64::from),
        peer_pieces_final: i64::from(r.peer_pieces_final),
        completed: r.completed,
        close_reason: r.close_reason,
    }
}

/// An address as text: the address itself, `erased`, or `pseudonym:` and
/// 64 hex digits (what the commitment and the aggregates' keys are made of).
pub fn address_text(a: &PackedAddress) -> String {
    match a {
        PackedAddress::Raw { ip, .. } => ip.to_string(),
        PackedAddress::Erased => crate::chain::ERASED_IP.to_string(),
        PackedAddress::Pseudonym(mac) => {
            let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
            format!("pseudonym:{hex}")
        }
    }
}

/// An address in the 16-byte form of the `addresses` column.
pub(crate) fn address_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The `addresses` column of a block of `records`.
fn address_index(records: &[PackedRecord<'_>]) -> Vec<u8> {
    let mut raw: Vec<[u8; 16]> = records
        .iter()
        .filter_map(|r| match r.address {
            PackedAddress::Raw { ip, .. } => Some(address_bytes(ip)),
            _ => None,
        })
        .collect();
    raw.sort_unstable();
    raw.dedup();
    raw.concat()
}

/// Whether a sorted `addresses` column holds an address in `lo..=hi`.
fn has_address_in(addresses: &[u8], lo: &[u8; 16], hi: &[u8; 16]) -> bool {
    let n = addresses.len() / 16;
    let at = |i: usize| -> &[u8] { &addresses[i * 16..i * 16 + 16] };
    // The first entry not below `lo`.
    let (mut a, mut b) = (0, n);
    while a < b {
        let mid = (a + b) / 2;
        if at(mid) < &lo[..] {
            a = mid + 1;
        } else {
            b = mid;
        }
    }
    a < n && at(a) <= &hi[..]
}

/// The chain's end: the last record's seq and hash (0 and the genesis hash
/// for an empty ledger), and the last block's first seq and size.
pub(crate) struct Head {
    pub last_seq: i64,
    pub last_hash: Hash,
    tail: Option<(i64, usize)>,
}

pub(crate) fn head(conn: &Connection) -> Result<Head, LedgerError> {
    let row = conn
        .query_row(
            "SELECT first_seq, last_seq, last_hash FROM record_blocks ORDER BY first_seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1), r.get::<_, Vec<u8>>(2))),
        )
        .optional()?;
    let Some((first, last, hash)) = row else {
        return Ok(Head {
            last_seq: 0,
            last_hash: GENESIS,
            tail: None,
        });
    };
    // Columns a block could not have (edited) would put the next records
    // where others are, or nowhere: appending stops until someone looks.
    let last = last.ok();
    let len = last
        .and_then(|last| last.checked_sub(first))
        .and_then(|d| usize::try_from(d).ok())
        .filter(|&d| d < MAX_BLOCK_RECORDS && first >= 1)
        .map(|d| d + 1);
    let hash: Option<Hash> = hash.ok().and_then(|h| h.try_into().ok());
    let (Some(len), Some(last), Some(hash)) = (len, last, hash) else {
        return Err(damaged_row(first));
    };
    if last.checked_add(MAX_BLOCK_RECORDS as i64).is_none() {
        return Err(damaged_row(first));
    }
    Ok(Head {
        last_seq: last,
        last_hash: hash,
        tail: Some((first, len)),
    })
}

fn damaged_row(first_seq: i64) -> LedgerError {
    LedgerError::Io(format!(
        "the row of the newest block (records from {first_seq}) does not describe a block: nothing more is \
         written to this ledger; run `warnseed ledger verify`, keep the file as it is and start a new one"
    ))
}

/// Stores `records`, which follow `head` (the caller chained them to it).
pub(crate) fn append(
    conn: &Connection,
    head: &Head,
    records: &[PackedRecord<'_>],
) -> Result<(), LedgerError> {
    if records.is_empty() {
        return Ok(());
    }
    let mut next = head.last_seq + 1;
    let mut rest = records;
    if let Some((tail_first, tail_len)) = head.tail {
        if tail_len < TAIL_MERGE_BELOW {
            let data: Vec<u8> = conn.query_row(
                "SELECT data FROM record_blocks WHERE first_seq = ?1",
                [tail_first],
                |r| Ok(r.get_ref(0)?.as_blob().map(<[u8]>::to_vec).unwrap_or_default()),
            )?;
            // Only a tail that is what its row says takes more records: a
            // damaged or edited one stays as found (for `verify` to name),
            // and the records start a block of their own.
            if let Ok(old) = block::decode(&data) {
                let matches = old.first_seq == tail_first
                    && old.records.len() == tail_len
                    && old.records.last().map(|r| r.record_hash) == Some(head.last_hash);
                if matches {
                    let take = rest.len().min(MAX_BLOCK_RECORDS - old.records.len());
                    let mut merged = old.records;
                    merged.extend(rest[..take].iter().cloned());
                    write_block(conn, tail_first, &merged)?;
                    next += take as i64;
                    rest = &rest[take..];
                }
            }
        }
    }
    for chunk in rest.chunks(MAX_BLOCK_RECORDS) {
        store_block(conn, next, chunk, false)?;
        next += chunk.len() as i64;
    }
    Ok(())
}

/// Rewrites (or writes) the block of `records` starting at `first_seq`,
/// its row's columns made from them. It stores what it is given: keeping
/// the chain is the caller's part (the store's append, retention, which
/// only touches what the chain does not cover).
pub fn write_block(
    conn: &Connection,
    first_seq: i64,
    records: &[PackedRecord<'_>],
) -> Result<(), LedgerError> {
    store_block(conn, first_seq, records, true)
}

/// Writes a block; a new one (`replace` false) never takes the place of
/// a stored one: that is an error, not an overwrite.
fn store_block(
    conn: &Connection,
    first_seq: i64,
    records: &[PackedRecord<'_>],
    replace: bool,
) -> Result<(), LedgerError> {
    let last = records.last().expect("a block holds a record");
    let min = records.iter().map(|r| r.started_at_ms).min().expect("non-empty");
    let max = records.iter().map(|r| r.started_at_ms).max().expect("non-empty");
    let mut data = Vec::with_capacity(200 * records.len());
    block::encode(first_seq, records, &mut data);
    let sql = if replace {
        "INSERT OR REPLACE INTO record_blocks (first_seq, last_seq, min_started_ms, max_started_ms, last_hash,
         addresses, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    } else {
        "INSERT INTO record_blocks (first_seq, last_seq, min_started_ms, max_started_ms, last_hash,
         addresses, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    };
    conn.prepare_cached(sql)?.execute(params![
        first_seq,
        first_seq + records.len() as i64 - 1,
        min,
        max,
        &last.record_hash[..],
        address_index(records),
        data,
    ])?;
    Ok(())
}

/// The error of a block that does not decode (`verify` names the record).
pub(crate) fn damaged(first_seq: i64, e: block::BlockError) -> LedgerError {
    LedgerError::Io(format!(
        "the block of records from {first_seq} is unreadable ({e}): run `warnseed ledger verify`"
    ))
}

/// Column `i` of a block's row, which must be a blob.
fn blob<'r>(row: &'r rusqlite::Row<'_>, i: usize, first_seq: i64) -> Result<&'r [u8], LedgerError> {
    row.get_ref(i)?.as_blob().map_err(|_| {
        LedgerError::Io(format!(
            "the block of records from {first_seq} has a column that is not bytes: run `warnseed ledger verify`"
        ))
    })
}

/// The block of a row whose first seq is `first_seq`.
fn decode_at(data: &[u8], first_seq: i64) -> Result<block::Block<'_>, LedgerError> {
    let block = block::decode(data).map_err(|e| damaged(first_seq, e))?;
    if block.first_seq != first_seq {
        return Err(LedgerError::Io(format!(
            "the block of records from {first_seq} holds records from {}: run `warnseed ledger verify`",
            block.first_seq
        )));
    }
    Ok(block)
}

/// The hash of the record before `seq` (the genesis hash before record 1).
fn hash_before(conn: &Connection, seq: i64) -> Result<Hash, LedgerError> {
    let hash: Option<Vec<u8>> = conn
        .query_row(
            "SELECT last_hash FROM record_blocks WHERE first_seq < ?1 ORDER BY first_seq DESC LIMIT 1",
            [seq],
            |r| r.get(0),
        )
        .optional()?;
    Ok(hash.map_or(GENESIS, |h| h.try_into().unwrap_or([0xff; 32])))
}

/// Calls `f(seq, hash of the record before, record)` for every stored
/// record with `from <= seq <= to`, in order.
pub fn for_each_seq(
    conn: &Connection,
    from: i64,
    to: i64,
    mut f: impl FnMut(i64, &Hash, &PackedRecord<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    if from > to {
        return Ok(());
    }
    // A block holds at most MAX_BLOCK_RECORDS, so one holding `from` starts
    // after `from - MAX_BLOCK_RECORDS`.
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, data FROM record_blocks WHERE first_seq > ?1 AND first_seq <= ?2 ORDER BY first_seq",
    )?;
    let mut rows = stmt.query([from.saturating_sub(MAX_BLOCK_RECORDS as i64), to])?;
    let mut prev: Option<Hash> = None;
    while let Some(row) = rows.next()? {
        let first_seq: i64 = row.get(0)?;
        let data = blob(row, 1, first_seq)?;
        let block = decode_at(data, first_seq)?;
        let mut prev_hash = match prev {
            Some(h) => h,
            None => hash_before(conn, first_seq)?,
        };
        for (i, r) in block.records.iter().enumerate() {
            let seq = first_seq + i as i64;
            if seq >= from && seq <= to {
                f(seq, &prev_hash, r)?;
            }
            prev_hash = r.record_hash;
        }
        prev = Some(prev_hash);
    }
    Ok(())
}

/// The addresses a look-up is after: every address in `lo..=hi` (16-byte
/// form, [`address_bytes`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AddressBounds {
    pub lo: [u8; 16],
    pub hi: [u8; 16],
}

/// Calls `f(seq, hash of the record before, record)`, in order, for the
/// records up to `through` of every block that holds a session started in
/// `from_ms..=to_ms` (and, given `address`, a raw address in it); `f`
/// checks each record itself.
pub(crate) fn for_each_started(
    conn: &Connection,
    from_ms: i64,
    to_ms: i64,
    through: i64,
    address: Option<AddressBounds>,
    mut f: impl FnMut(i64, &Hash, &PackedRecord<'_>) -> Result<(), LedgerError>,
) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare_cached(
        "SELECT first_seq, addresses, data FROM record_blocks
         WHERE max_started_ms >= ?1 AND min_started_ms <= ?2 AND first_seq <= ?3 ORDER BY first_seq",
    )?;
    let mut rows = stmt.query([from_ms, to_ms, through])?;
    // The previous block read, if it ends right before this one.
    let mut prev: Option<(i64, Hash)> = None;
    while let Some(row) = rows.next()? {
        let first_seq: i64 = row.get(0)?;
        if let Some(b) = &address {
            if !has_address_in(blob(row, 1, first_seq)?, &b.lo, &b.hi) {
                continue;
            }
        }
        let block = decode_at(blob(row, 2, first_seq)?, first_seq)?;
        let mut prev_hash = match prev {
            Some((next, h)) if next == first_seq => h,
            _ => hash_before(conn, first_seq)?,
        };
        for (i, r) in block.records.iter().enumerate() {
            let seq = first_seq + i as i64;
            if seq > through {
                break;
            }
            f(seq, &prev_hash, r)?;
            prev_hash = r.record_hash;
        }
        prev = Some((first_seq + block.records.len() as i64, prev_hash));
    }
    Ok(())
}

/// Calls `f(records)` for every block that holds a raw address of a
/// session started before `before_ms`, oldest first, at most `limit`
/// blocks from `after` (a block's first seq) on, and stores what `f` left
/// when it returns true. Returns the last block's first seq, for the next
/// call, and the first seqs of blocks that could not be read (left as
/// they are: one damaged block must not keep every later one's addresses).
pub(crate) fn rewrite_blocks_before(
    conn: &Connection,
    before_ms: i64,
    after: i64,
    limit: usize,
    mut f: impl FnMut(&mut Vec<PackedRecord<'_>>) -> bool,
) -> Result<(Option<i64>, Vec<i64>), LedgerError> {
    // `data` that is not bytes (edited) reads as empty: unreadable below.
    let blocks: Vec<(i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT first_seq, data FROM record_blocks
             WHERE min_started_ms < ?1 AND length(addresses) > 0 AND first_seq > ?2 ORDER BY first_seq LIMIT ?3",
        )?
        .query_map(params![before_ms, after, limit as i64], |r| {
            Ok((r.get(0)?, r.get_ref(1)?.as_blob().map(<[u8]>::to_vec).unwrap_or_default()))
        })?
        .collect::<Result<_, _>>()?;
    let mut last = None;
    let mut unreadable = Vec::new();
    for (first_seq, data) in &blocks {
        last = Some(*first_seq);
        let Ok(block) = decode_at(data, *first_seq) else {
            unreadable.push(*first_seq);
            continue;
        };
        let mut records = block.records;
        if f(&mut records) {
            write_block(conn, *first_seq, &records)?;
        }
    }
    Ok((last, unreadable))
}

/// One stored block as `verify` checks it.
pub(crate) struct BlockRow {
    pub first_seq: i64,
    pub last_seq: i64,
    pub min_started_ms: i64,
    pub max_started_ms: i64,
    /// `None`: not bytes (edited).
    pub last_hash: Option<Vec<u8>>,
    pub addresses: Option<Vec<u8>>,
    pub data: Vec<u8>,
}

impl BlockRow {
    /// Why the row's own columns disagree with its records, if they do.
    pub fn index_mismatch(&self, records: &[PackedRecord<'_>]) -> Option<&'static str> {
        let min = records.iter().map(|r| r.started_at_ms).min();
        let max = records.iter().map(|r| r.started_at_ms).max();
        if Some(self.last_seq) != self.first_seq.checked_add(records.len() as i64 - 1) {
            Some("last_seq")
        } else if min != Some(self.min_started_ms) || max != Some(self.max_started_ms) {
            Some("min_started_ms/max_started_ms")
        } else if records.last().map(|r| &r.record_hash[..]) != self.last_hash.as_deref() {
            Some("last_hash")
        } else if Some(address_index(records)) != self.addresses {
            Some("addresses")
        } else {
            None
        }
    }
}

/// Calls `f` with every block row in order; stops when it returns false.
pub(crate) fn for_each_row(
    conn: &Connection,
    mut f: impl FnMut(BlockRow) -> bool,
) -> Result<(), LedgerError> {
    let mut stmt = conn.prepare(
        "SELECT first_seq, last_seq, min_started_ms, max_started_ms, last_hash, addresses, data
         FROM record_blocks ORDER BY first_seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        // A value of another type in a column (text for a number) is read
        // as what cannot match, so `verify` names the block.
        let int = |i: usize| r.get::<_, i64>(i).unwrap_or(i64::MIN);
        let blob = |i: usize| -> Option<Vec<u8>> {
            match r.get_ref(i) {
                Ok(rusqlite::types::ValueRef::Blob(b)) => Some(b.to_vec()),
                _ => None,
            }
        };
        let row = BlockRow {
            first_seq: r.get(0)?,
            last_seq: int(1),
            min_started_ms: int(2),
            max_started_ms: int(3),
            last_hash: blob(4),
            addresses: blob(5),
            data: blob(6).unwrap_or_default(),
        };
        if !f(row) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_lookup_finds_exactly_the_addresses_in_range() {
        let ips: Vec<IpAddr> = ["192.0.2.10", "192.0.2.200", "2001:db8::5", "198.51.100.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut list: Vec<[u8; 16]> = ips.iter().map(|ip| address_bytes(*ip)).collect();
        list.sort_unstable();
        let column = list.concat();
        let range = |lo: &str, hi: &str| {
            has_address_in(
                &column,
                &address_bytes(lo.parse().unwrap()),
                &address_bytes(hi.parse().unwrap()),
            )
        };
        assert!(range("192.0.2.10", "192.0.2.10"));
        assert!(range("192.0.2.0", "192.0.2.255"));
        assert!(!range("192.0.2.11", "192.0.2.199"));
        assert!(!range("192.0.2.201", "192.0.2.255"));
        assert!(range("2001:db8::", "2001:db8::ffff"));
        assert!(!range("2001:db8::6", "2001:db8::ffff"));
        assert!(range("198.51.100.1", "198.51.100.1"));
        assert!(!range("203.0.113.0", "203.0.113.255"));
        assert!(!has_address_in(&[], &[0; 16], &[0xff; 16]));
    }
}
