//! Tampering with the ledger directly in SQLite is detected by `verify`,
//! which names the first bad record: a forger who decodes a block, edits
//! its records and writes it back with matching index columns, one who
//! edits the bytes or the columns, and one who deletes or inserts blocks.

use rusqlite::Connection;
use std::path::Path;
use warnseed_ledger::block::{self, PackedAddress, PackedRecord};
use warnseed_ledger::blockstore;
use warnseed_ledger::{ClockState, LedgerStore, RecordKind, SessionRecord, Transport};

fn record(i: u32) -> SessionRecord {
    SessionRecord {
        kind: RecordKind::Close,
        session_key: i64::from(i),
        started_at_ms: 1_790_000_000_000 + i64::from(i) * 1000,
        ended_at_ms: 1_790_000_000_500 + i64::from(i) * 1000,
        network: "bittorrent",
        decoy_id: i64::from(i % 7),
        info_hash: [i as u8; 20],
        remote_ip: format!("127.0.{}.{}", i / 200, i % 200 + 1).parse().unwrap(),
        remote_port: 40_000 + i as u16,
        peer_id: Some(*b"-LT2080-aaaaaaaaaaaa"),
        client_name: Some("libtorrent 2.0.8.0".into()),
        client_version: i.is_multiple_of(2).then(|| "libtorrent/2.0.8.0".to_string()),
        transport: Transport::Tcp,
        bytes_sent: 1000 * u64::from(i),
        pieces_sent: i,
        piece_count: 64,
        peer_pieces_initial: (!i.is_multiple_of(3)).then_some(0),
        peer_pieces_final: 64,
        completed: true,
        close_reason: "peer_complete".into(),
    }
}

fn clock() -> ClockState {
    warnseed_ledger::clock::read()
}

/// A ledger of 50 records written in three batches, as the writer does,
/// sealed after record 11 (seal 1) and 50 (seal 2); record 51 is unsealed.
fn ledger(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledger.sqlite");
    let mut store = LedgerStore::open(&path).unwrap();
    let all: Vec<SessionRecord> = (1..=50).map(record).collect();
    for batch in [&all[..10], &all[10..11], &all[11..]] {
        store.append(batch).unwrap();
        if batch.len() != 10 {
            store.seal(&clock(), 1_790_000_100_000).unwrap().unwrap();
        }
    }
    assert!(
        store.seal(&clock(), 1_790_000_200_000).unwrap().is_none(),
        "nothing new to seal"
    );
    drop(store);
    // Reopening continues the chain from the stored head.
    let mut store = LedgerStore::open(&path).unwrap();
    store.append(&[record(51)]).unwrap();
    path
}

fn first_bad(path: &Path) -> Option<(i64, String)> {
    // As `warnseed ledger verify` reads it: writing to a damaged ledger
    // is refused.
    LedgerStore::open_read_only(path)
        .unwrap()
        .verify()
        .unwrap()
        .first_bad
        .map(|b| (b.seq, b.reason))
}

fn tampered(sql: &str) -> Option<(i64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    Connection::open(&path).unwrap().execute_batch(sql).unwrap();
    first_bad(&path)
}

/// Rewrites the block that holds record `seq` in `path` after `edit`
/// changed its records, its row's columns made to match (as a forger who
/// knows the format would).
fn edit_block(path: &Path, seq: i64, edit: impl FnOnce(&mut Vec<PackedRecord<'_>>)) {
    let conn = Connection::open(path).unwrap();
    let (first, data): (i64, Vec<u8>) = conn
        .query_row(
            "SELECT first_seq, data FROM record_blocks WHERE first_seq <= ?1 ORDER BY first_seq DESC LIMIT 1",
            [seq],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let mut records = block::decode(&data).unwrap().records;
    edit(&mut records);
    blockstore::write_block(&conn, first, &records).unwrap();
}

/// The first bad record of the 51-record ledger after `edit` changed its
/// records ([`edit_block`]).
fn edited(edit: impl FnOnce(&mut Vec<PackedRecord<'_>>)) -> Option<(i64, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    edit_block(&path, 1, edit);
    first_bad(&path)
}

/// A ledger of 900 records in three blocks of 300, sealed at the end.
fn three_blocks(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledger.sqlite");
    let mut store = LedgerStore::open(&path).unwrap();
    let all: Vec<SessionRecord> = (1..=900).map(record).collect();
    for batch in all.chunks(300) {
        store.append(batch).unwrap();
    }
    store.seal(&clock(), 1_790_000_100_000).unwrap().unwrap();
    let blocks: Vec<i64> = Connection::open(&path)
        .unwrap()
        .prepare("SELECT first_seq FROM record_blocks ORDER BY first_seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(blocks, vec![1, 301, 601]);
    path
}

#[test]
fn a_ledger_from_an_older_layout_is_refused_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE sessions (id INTEGER PRIMARY KEY, started_at_ms INTEGER)")
        .unwrap();
    let err = LedgerStore::open(&path).err().expect("refused");
    assert!(err.to_string().contains("older warnseed"), "{err}");
}

#[test]
fn an_untouched_ledger_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let v = LedgerStore::open(&path).unwrap().verify().unwrap();
    assert_eq!((v.records, v.last_seq, v.first_bad), (51, 51, None));
    assert_eq!(v.last_hash.len(), 64);
    assert_eq!((v.seals, v.unsealed), (2, 1));
    assert_eq!(v.node_id.len(), 32);
    let seals = LedgerStore::open(&path).unwrap().seals().unwrap();
    assert_eq!(
        seals
            .iter()
            .map(|s| (s.first_seq, s.last_seq))
            .collect::<Vec<_>>(),
        vec![(1, 11), (12, 50)]
    );
    assert_eq!(seals[1].clock.source, "adjtimex");
}

#[test]
fn deleting_the_newest_sealed_records_is_detected() {
    let (seq, why) = edited(|r| r.truncate(44)).unwrap();
    assert_eq!(seq, 45);
    assert!(why.contains("45..=50") && why.contains("missing"), "{why}");
}

#[test]
fn tampering_with_seals_is_detected() {
    let (seq, why) = tampered("UPDATE seals SET sealed_at_ms = sealed_at_ms + 1 WHERE id = 2").unwrap();
    assert_eq!(seq, 12);
    assert!(why.contains("seal 2") && why.contains("altered"), "{why}");
    let (_, why) = tampered("DELETE FROM seals WHERE id = 1").unwrap();
    assert!(why.contains("seal 2 found where seal 1 belongs"), "{why}");
    // Re-pointing seal 2 at an earlier record, with its hash recomputed
    // by someone without the records' hashes, still fails on its hash.
    let (_, why) = tampered("UPDATE seals SET last_seq = 49 WHERE id = 2").unwrap();
    assert!(why.contains("seal 2"), "{why}");
}

#[test]
fn seals_with_impossible_or_mistyped_values_are_named_not_fatal() {
    // Extreme numbers: no overflow (tests build with overflow checks).
    for sql in [
        "UPDATE seals SET last_seq = -9223372036854775808 WHERE id = 2",
        "UPDATE seals SET last_seq = 9223372036854775807 WHERE id = 2",
        "UPDATE seals SET first_seq = -9223372036854775808 WHERE id = 2",
    ] {
        let (seq, why) = tampered(sql).unwrap();
        assert_eq!(seq, 12, "{sql}");
        assert!(why.contains("seal 2"), "{sql}: {why}");
    }
    // A value of the wrong type is a bad seal, not a database error.
    let (seq, why) = tampered("UPDATE seals SET sealed_at_ms = 'noon' WHERE id = 2").unwrap();
    assert_eq!(seq, 12);
    assert!(why.contains("unreadable"), "{why}");
    let (seq, why) = tampered("UPDATE seals SET head_hash = 7 WHERE id = 1").unwrap();
    assert_eq!(seq, 1);
    assert!(why.contains("unreadable"), "{why}");
}

#[test]
fn a_seal_moved_to_another_range_is_caught_even_when_its_head_and_root_are_forged() {
    // Moving a seal's start would once skip its own checks.
    let (seq, why) = tampered("UPDATE seals SET first_seq = 11, clock_synced = 1 WHERE id = 2").unwrap();
    assert_eq!(seq, 12);
    assert!(why.contains("seal 2"), "{why}");
    let (_, why) = tampered("UPDATE seals SET node_id = 'ff' WHERE id = 1").unwrap();
    assert!(why.contains("seal 1"), "{why}");
}

#[test]
fn a_rewritten_chain_is_caught_by_the_seal() {
    // The forger knows the algorithm: record 20 is changed and every record
    // after it re-chained, so each record checks against the one before.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let forged = dir.path().join("forged.sqlite");
    std::fs::copy(&path, &forged).unwrap();
    let conn = Connection::open(&forged).unwrap();
    conn.execute_batch("DELETE FROM seals;").unwrap();
    drop(conn);
    edit_block(&forged, 1, |r| r.truncate(19));
    let mut store = LedgerStore::open(&forged).unwrap();
    let mut rewritten: Vec<SessionRecord> = (20..=51).map(record).collect();
    rewritten[0].bytes_sent += 1;
    store.append(&rewritten).unwrap();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS forged", [forged.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "DELETE FROM record_blocks; INSERT INTO record_blocks SELECT * FROM forged.record_blocks;",
    )
    .unwrap();
    drop(conn);
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 50, "the end of seal 2");
    assert!(why.contains("seal 2"), "{why}");
}

#[test]
fn edits_are_detected_at_the_edited_record() {
    let (seq, why) = edited(|r| r[16].bytes_sent += 1).unwrap();
    assert_eq!(seq, 17);
    assert!(why.contains("altered"), "{why}");
    let (seq, why) = edited(|r| {
        let PackedAddress::Raw { salt, .. } = r[4].address else {
            panic!("raw")
        };
        r[4].address = PackedAddress::Raw {
            ip: "192.0.2.1".parse().unwrap(),
            salt,
        };
    })
    .unwrap();
    assert_eq!(seq, 5);
    assert!(why.contains("remote_ip"), "{why}");
    let (seq, _) = edited(|r| r[50].completed = !r[50].completed).unwrap();
    assert_eq!(seq, 51);
    let (seq, _) = edited(|r| r[1].client_version = None).unwrap();
    assert_eq!(seq, 2);
    // A record whose hash the forger recomputed is caught at the next one,
    // whose link to it no longer holds.
    let (seq, why) = edited(|r| {
        r[5].bytes_sent += 1;
        r[5].record_hash = warnseed_ledger::chain::record_hash(
            &r[4].record_hash,
            &blockstore::chained_fields(6, &r[5].clone()),
        );
    })
    .unwrap();
    assert_eq!(seq, 7);
    assert!(why.contains("the record before"), "{why}");
}

#[test]
fn damaged_blocks_and_edited_index_columns_are_detected() {
    for (sql, column) in [
        (
            "UPDATE record_blocks SET data = substr(data, 1, length(data) - 1)",
            "unreadable",
        ),
        ("UPDATE record_blocks SET data = 'lots'", "unreadable"),
        ("UPDATE record_blocks SET data = zeroblob(100)", "unreadable"),
        // Hiding the block from a time window or an address look-up.
        (
            "UPDATE record_blocks SET min_started_ms = min_started_ms + 1",
            "min_started_ms",
        ),
        ("UPDATE record_blocks SET max_started_ms = 0", "min_started_ms"),
        ("UPDATE record_blocks SET addresses = x''", "addresses"),
        ("UPDATE record_blocks SET last_hash = zeroblob(32)", "last_hash"),
        ("UPDATE record_blocks SET last_seq = 50", "last_seq"),
        ("UPDATE record_blocks SET last_seq = 'many'", "last_seq"),
    ] {
        let (seq, why) = tampered(sql).unwrap();
        assert_eq!(seq, 1, "{sql}");
        assert!(why.contains(column) && why.contains("altered"), "{sql}: {why}");
    }
}

#[test]
fn an_edited_newest_row_stops_appending_and_overwrites_nothing() {
    for sql in [
        // Would have put the next records over record 1 on.
        "UPDATE record_blocks SET last_seq = 0",
        "UPDATE record_blocks SET last_seq = -9223372036854775808",
        "UPDATE record_blocks SET last_seq = 9223372036854775807",
        "UPDATE record_blocks SET last_hash = 'x'",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(dir.path());
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        let mut store = LedgerStore::open(&path).unwrap();
        let err = store.append(&[record(52)]).unwrap_err().to_string();
        assert!(err.contains("does not describe a block"), "{sql}: {err}");
        drop(store);
        let (seq, why) = first_bad(&path).unwrap();
        assert_eq!(seq, 1, "{sql}");
        assert!(why.contains("altered"), "{sql}: {why}");
        // Every record is still there, as it was.
        let conn = Connection::open(&path).unwrap();
        let mut n = 0;
        blockstore::for_each_seq(&conn, 1, i64::MAX, |seq, _, r| {
            assert_eq!(r.session_key, seq, "{sql}");
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 51, "{sql}");
    }
}

#[test]
fn a_damaged_or_edited_last_block_is_left_as_found_and_named() {
    // Its bytes: new records start a block of their own.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE record_blocks SET data = substr(data, 1, 100)")
        .unwrap();
    LedgerStore::open(&path).unwrap().append(&[record(52)]).unwrap();
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 1);
    assert!(why.contains("unreadable"), "{why}");
    let blocks: i64 = Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM record_blocks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(blocks, 2);
    // Its last hash, edited to what a forger wants the next record to
    // follow: not merged (which would write the column afresh), named.
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE record_blocks SET last_hash = zeroblob(32)")
        .unwrap();
    LedgerStore::open(&path).unwrap().append(&[record(52)]).unwrap();
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 1);
    assert!(why.contains("last_hash"), "{why}");
}

#[test]
fn an_address_list_that_is_not_bytes_is_named() {
    // A block whose addresses are all erased has an empty list: a number
    // or text there is still an edit.
    for value in ["0", "''"] {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(dir.path());
        let mut store = LedgerStore::open(&path).unwrap();
        store
            .retain(i64::MAX, &warnseed_ledger::Retention::Erase)
            .unwrap();
        drop(store);
        Connection::open(&path)
            .unwrap()
            .execute_batch(&format!("UPDATE record_blocks SET addresses = {value}"))
            .unwrap();
        let (seq, why) = first_bad(&path).unwrap();
        assert_eq!(seq, 1);
        assert!(why.contains("addresses"), "{value}: {why}");
    }
}

#[test]
fn retention_goes_past_a_damaged_block_and_names_it() {
    use warnseed_ledger::Retention;
    let dir = tempfile::tempdir().unwrap();
    let path = three_blocks(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE record_blocks SET data = substr(data, 1, 100) WHERE first_seq = 301")
        .unwrap();
    let out = LedgerStore::open(&path)
        .unwrap()
        .retain(i64::MAX, &Retention::Erase)
        .unwrap();
    assert_eq!(out.sessions, 600, "the blocks before and after it");
    assert_eq!(out.unreadable_blocks, vec![301]);
}

#[test]
fn deletions_are_detected_where_the_gap_is() {
    // A record taken out of a block: the next one sits in its place, and
    // its place is in its hash.
    let (seq, why) = edited(|r| {
        r.remove(22);
    })
    .unwrap();
    assert_eq!(seq, 23);
    assert!(why.contains("altered"), "{why}");
    let (seq, _) = edited(|r| {
        r.remove(0);
    })
    .unwrap();
    assert_eq!(seq, 1);
    // A whole block.
    let dir = tempfile::tempdir().unwrap();
    let path = three_blocks(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM record_blocks WHERE first_seq = 301", [])
        .unwrap();
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 601);
    assert!(why.contains("expected record 301"), "{why}");
    // The newest block.
    let dir = tempfile::tempdir().unwrap();
    let path = three_blocks(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute("DELETE FROM record_blocks WHERE first_seq = 601", [])
        .unwrap();
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 601);
    assert!(why.contains("601..=900") && why.contains("missing"), "{why}");
}

#[test]
fn insertions_are_detected_at_the_inserted_record() {
    // A copy of record 10 inserted at 30: the sequence stays gap-free, the
    // chain does not.
    let (seq, why) = edited(|r| {
        let copy = r[9].clone();
        r.insert(29, copy);
    })
    .unwrap();
    assert_eq!(seq, 30);
    assert!(why.contains("altered"), "{why}");
    // Appending a fabricated record past the end breaks the chain too.
    let (seq, _) = edited(|r| {
        let copy = r[50].clone();
        r.push(copy);
    })
    .unwrap();
    assert_eq!(seq, 52);
    // A block copied in twice (renumbered to follow the end).
    let dir = tempfile::tempdir().unwrap();
    let path = three_blocks(dir.path());
    let conn = Connection::open(&path).unwrap();
    let data: Vec<u8> = conn
        .query_row("SELECT data FROM record_blocks WHERE first_seq = 301", [], |r| {
            r.get(0)
        })
        .unwrap();
    let records = block::decode(&data).unwrap().records;
    blockstore::write_block(&conn, 901, &records).unwrap();
    drop(conn);
    let (seq, why) = first_bad(&path).unwrap();
    assert_eq!(seq, 901);
    assert!(why.contains("altered"), "{why}");
}

#[test]
fn erasing_an_ip_and_its_salt_keeps_the_chain_valid() {
    // Data protection: the chain commits to the IP through a salted hash, so
    // erasing both leaves every record verifiable.
    assert_eq!(
        edited(|r| r[..20].iter_mut().for_each(|r| r.address = PackedAddress::Erased)),
        None
    );
    assert_eq!(
        edited(|r| r[8].address = PackedAddress::Pseudonym([0xab; 32])),
        None
    );
}

#[test]
fn retention_replaces_old_addresses_and_the_ledger_still_verifies() {
    use warnseed_ledger::Retention;
    let dir = tempfile::tempdir().unwrap();
    let path = ledger(dir.path());
    let mut store = LedgerStore::open(&path).unwrap();
    let before: Vec<String> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| s.remote_ip)
        .collect();
    // Records 1..=20 started before this.
    let cutoff = 1_790_000_000_000 + 21 * 1000;
    let key = b"operator key, 32 bytes or so....".to_vec();
    let out = store
        .retain(cutoff, &Retention::Pseudonym { key: key.clone() })
        .unwrap();
    assert_eq!(out.sessions, 20);
    let after: Vec<String> = store
        .sessions()
        .unwrap()
        .into_iter()
        .map(|s| s.remote_ip)
        .collect();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        if i < 20 {
            assert_eq!(a, &warnseed_ledger::pseudonym(&key, b), "record {}", i + 1);
        } else {
            assert_eq!(a, b);
        }
    }
    // Distinct addresses stay distinct: counts of downloaders survive.
    let distinct = |v: &[String]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
    assert_eq!(distinct(&before), distinct(&after));
    assert_eq!(store.verify().unwrap().first_bad, None);
    // Running it again changes nothing; erasing the rest keeps it valid.
    assert_eq!(
        store
            .retain(cutoff, &Retention::Pseudonym { key })
            .unwrap()
            .sessions,
        0
    );
    assert_eq!(store.retain(i64::MAX, &Retention::Erase).unwrap().sessions, 31);
    assert_eq!(store.verify().unwrap().first_bad, None);
    assert!(store.sessions().unwrap()[30].remote_ip == "erased");
    // The summary counts the pseudonyms apart and no erased "address".
    assert_eq!(
        store.summary().unwrap().unique_ips as usize,
        distinct(&before[..20])
    );
}

/// The needles that occur somewhere in `haystack` (one pass per needle
/// length, not per needle: the files are megabytes).
fn found<'a>(haystack: &[u8], needles: &'a [Vec<u8>]) -> Vec<&'a [u8]> {
    use std::collections::{BTreeMap, HashSet};
    let mut by_len: BTreeMap<usize, HashSet<&[u8]>> = BTreeMap::new();
    for n in needles {
        by_len.entry(n.len()).or_default().insert(n);
    }
    let mut out = Vec::new();
    for (len, set) in by_len {
        let mut seen = HashSet::new();
        for w in haystack.windows(len) {
            if let Some(n) = set.get(w) {
                seen.insert(*n);
            }
        }
        out.extend(seen);
    }
    out
}

#[test]
fn erased_addresses_and_their_salts_are_gone_from_the_files() {
    use warnseed_ledger::Retention;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut store = LedgerStore::open(&path).unwrap();
    // Enough records, with distinct addresses of several lengths, that the
    // address index splits its pages many times over.
    let addresses: Vec<String> = (0..1_500u32)
        .map(|i| match i % 3 {
            0 => format!("203.0.{}.{}", 113 + i / 250 % 10, i % 250 + 1),
            1 => format!("2001:db8:77:{:x}::{:x}", i / 100, i % 100 + 1),
            _ => format!("198.51.{}.{}", i / 250 % 100, i % 250 + 1),
        })
        // As the ledger writes them.
        .map(|ip| ip.parse::<std::net::IpAddr>().unwrap().to_string())
        .collect();
    for chunk in addresses.chunks(250).enumerate() {
        let batch: Vec<SessionRecord> = chunk
            .1
            .iter()
            .enumerate()
            .map(|(j, ip)| SessionRecord {
                remote_ip: ip.parse().unwrap(),
                ..record((chunk.0 * 250 + j) as u32)
            })
            .collect();
        store.append(&batch).unwrap();
    }
    // Each address as stored: in its record (the address's bytes, then
    // its salt) and in its block's address list (16 bytes).
    let (stored, salts): (Vec<Vec<u8>>, Vec<Vec<u8>>) = {
        let conn = Connection::open(&path).unwrap();
        let mut out = Vec::new();
        blockstore::for_each_seq(&conn, 1, i64::MAX, |_, _, r| {
            let PackedAddress::Raw { ip, salt } = r.address else {
                panic!("raw")
            };
            let mut bytes = match ip {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            bytes.extend_from_slice(&salt);
            out.push((bytes, salt.to_vec()));
            Ok(())
        })
        .unwrap();
        out.into_iter().unzip()
    };
    let listed: Vec<Vec<u8>> = addresses
        .iter()
        .map(|a| match a.parse::<std::net::IpAddr>().unwrap() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        })
        .collect();
    let files = || -> Vec<u8> {
        let mut all = std::fs::read(&path).unwrap();
        all.extend(std::fs::read(path.with_extension("sqlite-wal")).unwrap_or_default());
        all
    };
    let needles: Vec<Vec<u8>> = stored.iter().chain(&listed).cloned().collect();
    // Before: the addresses are in the files (record and address list).
    // Not quite every one: a block is a blob over several pages, and the
    // few that straddle a page boundary have the next page's number in
    // between.
    let straddling = |n: usize| n - n / 100;
    assert!(found(&files(), &needles).len() >= straddling(2 * addresses.len()));
    assert!(found(&files(), &salts).len() >= straddling(salts.len()));
    // A second connection, like a running node's writer, keeps the WAL.
    let _node = Connection::open(&path).unwrap();
    // Half pseudonymised, then the rest erased.
    let cutoff = 1_790_000_000_000 + 750 * 1000;
    let pseudonymised = store
        .retain(
            cutoff,
            &Retention::Pseudonym {
                key: b"operator key".to_vec(),
            },
        )
        .unwrap();
    assert_eq!(pseudonymised.sessions, 750);
    assert_eq!(store.retain(i64::MAX, &Retention::Erase).unwrap().sessions, 750);
    assert_eq!(store.verify().unwrap().first_bad, None);
    // Read while the ledger is still open, as on a running node: closing
    // the last connection would checkpoint and delete the WAL anyway.
    let after = files();
    // A reader that holds a snapshot keeps the WAL: retention still
    // succeeds and says so; the next run, once the reader is done, empties it.
    let reader = Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM record_blocks;")
        .unwrap();
    store
        .append(&[SessionRecord {
            remote_ip: "192.0.2.200".parse().unwrap(),
            ..record(9_999)
        }])
        .unwrap();
    let held = store.retain(i64::MAX, &Retention::Erase).unwrap();
    assert_eq!((held.sessions, held.wal_emptied), (1, false));
    reader.execute_batch("COMMIT").unwrap();
    let next = store.retain(i64::MAX, &Retention::Erase).unwrap();
    assert_eq!((next.sessions, next.wal_emptied), (0, true));
    let late = "192.0.2.200".parse::<std::net::Ipv4Addr>().unwrap();
    assert!(found(&files(), &[late.to_ipv6_mapped().octets().to_vec()]).is_empty());
    let left = found(&after, &needles);
    assert!(
        left.is_empty(),
        "{} addresses still in the ledger's files after erasure, e.g. {:?}",
        left.len(),
        String::from_utf8_lossy(left[0])
    );
    assert!(
        found(&after, &salts).is_empty(),
        "salts still in the ledger's files"
    );
}
