//! Tampering with the ledger directly in SQLite is detected by `verify`,
//! which names the first bad record.

use rusqlite::Connection;
use std::path::Path;
use warnseed_ledger::{LedgerStore, RecordKind, SessionRecord, Transport};

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

/// A ledger of 50 records written in three batches, as the writer does.
fn ledger(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ledger.sqlite");
    let mut store = LedgerStore::open(&path).unwrap();
    let all: Vec<SessionRecord> = (1..=50).map(record).collect();
    for batch in [&all[..10], &all[10..11], &all[11..]] {
        store.append(batch).unwrap();
    }
    drop(store);
    // Reopening continues the chain from the stored head.
    let mut store = LedgerStore::open(&path).unwrap();
    store.append(&[record(51)]).unwrap();
    path
}

fn first_bad(path: &Path) -> Option<(i64, String)> {
    LedgerStore::open(path)
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
}

#[test]
fn edits_are_detected_at_the_edited_record() {
    let (seq, why) = tampered("UPDATE sessions SET bytes_sent = bytes_sent + 1 WHERE id = 17").unwrap();
    assert_eq!(seq, 17);
    assert!(why.contains("altered"), "{why}");
    let (seq, why) = tampered("UPDATE sessions SET remote_ip = '192.0.2.1' WHERE id = 5").unwrap();
    assert_eq!(seq, 5);
    assert!(why.contains("remote_ip"), "{why}");
    let (seq, _) = tampered("UPDATE sessions SET completed = 0 WHERE id = 51").unwrap();
    assert_eq!(seq, 51);
    let (seq, _) = tampered("UPDATE sessions SET client_version = NULL WHERE id = 2").unwrap();
    assert_eq!(seq, 2);
    // Values SQLite would still read as true, or a port out of range.
    let (seq, why) = tampered("UPDATE sessions SET completed = 7 WHERE id = 3").unwrap();
    assert_eq!(seq, 3);
    assert!(why.contains("completed is 7"), "{why}");
    let (seq, _) = tampered("UPDATE sessions SET remote_port = 70000 WHERE id = 4").unwrap();
    assert_eq!(seq, 4);
    let (seq, why) = tampered("UPDATE sessions SET bytes_sent = 'lots' WHERE id = 6").unwrap();
    assert_eq!(seq, 6);
    assert!(why.contains("unreadable"), "{why}");
}

#[test]
fn deletions_are_detected_where_the_gap_is() {
    let (seq, why) = tampered("DELETE FROM sessions WHERE id = 23").unwrap();
    assert_eq!(seq, 24);
    assert!(why.contains("expected record 23"), "{why}");
    let (seq, _) = tampered("DELETE FROM sessions WHERE id = 1").unwrap();
    assert_eq!(seq, 2);
}

#[test]
fn insertions_are_detected_at_the_inserted_record() {
    // Make room at 30 by renumbering, then insert a copy of record 10 there:
    // the forger keeps the sequence gap-free, but not the chain.
    let sql = "
        UPDATE sessions SET id = -id WHERE id >= 30;
        UPDATE sessions SET id = -id + 1 WHERE id <= -30;
        INSERT INTO sessions SELECT 30, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip,
            remote_port, peer_id, client_name, client_version, transport, bytes_sent, pieces_sent, piece_count,
            peer_pieces_initial, peer_pieces_final, completed, close_reason, ip_salt, ip_commitment, prev_hash,
            record_hash, kind, session_key FROM sessions WHERE id = 10;
    ";
    let (seq, why) = tampered(sql).unwrap();
    assert_eq!(seq, 30);
    assert!(why.contains("prev_hash"), "{why}");
    // Appending a fabricated record past the end breaks the chain too.
    let sql = "INSERT INTO sessions SELECT 52, started_at_ms, ended_at_ms, network, decoy_id, info_hash,
            remote_ip, remote_port, peer_id, client_name, client_version, transport, bytes_sent, pieces_sent,
            piece_count, peer_pieces_initial, peer_pieces_final, completed, close_reason, ip_salt,
            ip_commitment, prev_hash, record_hash, kind, session_key FROM sessions WHERE id = 51";
    assert_eq!(tampered(sql).unwrap().0, 52);
}

#[test]
fn erasing_an_ip_and_its_salt_keeps_the_chain_valid() {
    // Data protection: the chain commits to the IP through a salted hash, so
    // erasing both leaves every record verifiable.
    assert_eq!(
        tampered("UPDATE sessions SET remote_ip = 'erased', ip_salt = NULL WHERE id <= 20"),
        None
    );
    // Dropping the salt is no way to swap in another address, in any
    // spelling a reader would take for one.
    for fake in ["192.0.2.9", "010.1.2.3", "1.2.3.4:80", " 1.2.3.4", "[::1]"] {
        let sql = format!("UPDATE sessions SET remote_ip = '{fake}', ip_salt = NULL WHERE id = 8");
        let (seq, why) = tampered(&sql).unwrap();
        assert_eq!(seq, 8, "{fake}");
        assert!(why.contains("salt"), "{why}");
    }
    let pseudonym = format!("pseudonym:{}", "ab".repeat(32));
    let sql = format!("UPDATE sessions SET remote_ip = '{pseudonym}', ip_salt = NULL WHERE id = 9");
    assert_eq!(tampered(&sql), None);
}
