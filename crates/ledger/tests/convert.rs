//! Ledgers of the first layout (one `sessions` row per record) are
//! converted to blocks on a writable open, every record hash and seal
//! kept; one that does not verify is refused and left as found.
//!
//! `fixtures/ledger-v1.sqlite` was written by warnseed at commit 7474563
//! (the last with that layout): 60 records from documentation addresses
//! (192.0.2.0/24, 2001:db8::/32) in three batches, two seals, geolocation
//! on most records, records 1–10 erased and 11–20 pseudonymised by
//! retention.

use rusqlite::Connection;
use std::path::{Path, PathBuf};
use warnseed_ledger::{blockstore, ClockState, IpRange, LedgerStore, RecordKind, SessionRecord, Transport};

fn fixture(dir: &Path) -> PathBuf {
    let path = dir.join("ledger.sqlite");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v1.sqlite"),
        &path,
    )
    .unwrap();
    path
}

/// (seq, kind, address, record hash, bytes sent, country, city, kommune)
/// of every record.
type Row = (
    i64,
    String,
    String,
    Vec<u8>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn first_layout_rows(path: &Path) -> Vec<Row> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT s.id, s.kind, s.remote_ip, s.record_hash, s.bytes_sent, g.country, g.city, g.kommune
             FROM sessions s LEFT JOIN session_geo g ON g.seq = s.id ORDER BY s.id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn block_rows(path: &Path) -> Vec<Row> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    blockstore::for_each_seq(&conn, 1, i64::MAX, |seq, _, r| {
        out.push((
            seq,
            r.kind.as_str().to_string(),
            blockstore::address_text(&r.address),
            r.record_hash.to_vec(),
            r.bytes_sent as i64,
            r.geo.country.map(str::to_string),
            r.geo.city.map(str::to_string),
            r.geo.kommune.map(str::to_string),
        ));
        Ok(())
    })
    .unwrap();
    out
}

fn tables(path: &Path) -> Vec<String> {
    Connection::open(path)
        .unwrap()
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn clock() -> ClockState {
    warnseed_ledger::clock::read()
}

#[test]
fn a_first_layout_ledger_is_converted_with_every_hash_and_seal_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    let before = first_layout_rows(&path);
    assert_eq!(before.len(), 60);
    assert!(before.iter().any(|r| r.2 == "erased") && before.iter().any(|r| r.2.starts_with("pseudonym:")));

    // Read-only, as `ledger verify` reads a copy handed over: as it is.
    let old = LedgerStore::open_read_only(&path).unwrap();
    let old_verify = old.verify().unwrap();
    assert_eq!((old_verify.records, old_verify.first_bad.as_ref()), (60, None));
    let old_summary = old.summary().unwrap();
    let figures = |s: &mut LedgerStore| {
        use warnseed_ledger::report::{report, Granularity};
        let day = |ms: i64| ms.div_euclid(86_400_000);
        let (from, to) = (day(1_790_000_000_000), day(1_790_300_000_000));
        ["all", "country", "kommune", "title"].map(|dim| {
            let rows = report(s, dim, from, to, Granularity::Week).unwrap();
            serde_json::to_string(&rows).unwrap()
        })
    };
    let mut old = old;
    let old_figures = figures(&mut old);
    assert!(old_figures[0].contains("\"unique_ips\":"), "{}", old_figures[0]);
    let refused = old.sessions().unwrap_err().to_string();
    assert!(refused.contains("older warnseed"), "{refused}");
    drop(old);
    assert!(
        tables(&path).contains(&"sessions".to_string()),
        "read-only changed nothing"
    );

    // Writable: converted.
    let mut store = LedgerStore::open(&path).unwrap();
    let v = store.verify().unwrap();
    assert_eq!(v.first_bad, None);
    assert_eq!(
        (
            v.records,
            v.last_seq,
            &v.last_hash,
            v.seals,
            &v.last_seal_hash,
            v.unsealed
        ),
        (
            60,
            60,
            &old_verify.last_hash,
            2,
            &old_verify.last_seal_hash,
            old_verify.unsealed
        )
    );
    assert_eq!(store.summary().unwrap(), old_summary);
    // The distinct addresses moved from a row each into runs: the same
    // figures.
    assert_eq!(figures(&mut store), old_figures);
    assert!(!tables(&path).contains(&"rollup_uniques".to_string()));
    assert!(store.has_pseudonyms().unwrap());
    let names = tables(&path);
    assert!(
        !names.contains(&"sessions".to_string()) && !names.contains(&"session_geo".to_string()),
        "{names:?}"
    );
    assert_eq!(block_rows(&path), before);

    // The chain goes on from the converted head, and seals it.
    let next = SessionRecord {
        kind: RecordKind::Close,
        session_key: 77,
        started_at_ms: 1_790_300_000_000,
        ended_at_ms: 1_790_300_001_000,
        network: "bittorrent",
        decoy_id: 3,
        info_hash: [3; 20],
        remote_ip: "192.0.2.77".parse().unwrap(),
        remote_port: 51_000,
        peer_id: None,
        client_name: Some("Transmission 4.0.5".into()),
        client_version: None,
        transport: Transport::Tcp,
        bytes_sent: 9,
        pieces_sent: 1,
        piece_count: 1,
        peer_pieces_initial: Some(0),
        peer_pieces_final: 1,
        completed: true,
        close_reason: "peer_complete".into(),
    };
    store.append(&[next]).unwrap();
    let seal = store.seal(&clock(), 1_790_300_100_000).unwrap().unwrap();
    assert_eq!((seal.id, seal.last_seq), (3, 61));
    let v = store.verify().unwrap();
    assert_eq!((v.records, v.first_bad), (61, None));

    // Evidence of an address with raw records, proven against the seals
    // the first layout made.
    let ip = "192.0.2.8";
    let raw: Vec<i64> = before.iter().filter(|r| r.2 == ip).map(|r| r.0).collect();
    assert!(!raw.is_empty());
    let e = store
        .evidence(
            ip.parse::<IpRange>().unwrap(),
            0,
            i64::MAX,
            &clock(),
            1_790_300_200_000,
        )
        .unwrap();
    assert_eq!(e.records.iter().map(|r| r.seq).collect::<Vec<_>>(), raw);
    let check = warnseed_ledger::verify_evidence(&e).unwrap();
    assert_eq!(check.records, raw.len());
    let anchored = old_verify.last_seal_hash.unwrap();
    assert!(
        e.records.iter().any(|r| r.proof.seal == 2),
        "a record under a converted seal"
    );
    warnseed_ledger::verify_evidence_anchored(&e, &anchored).unwrap();
}

#[test]
fn a_first_layout_ledger_that_does_not_verify_is_refused_and_left_as_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE sessions SET bytes_sent = bytes_sent + 1 WHERE id = 30",
            [],
        )
        .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let err = LedgerStore::open(&path).err().expect("refused").to_string();
    assert!(
        err.contains("older warnseed") && err.contains("record 30") && err.contains("not converted"),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not a byte changed");
    assert!(!path.with_extension("sqlite-wal").exists());
}

#[test]
fn a_first_layout_record_that_verifies_but_cannot_be_converted_is_refused_before_any_write() {
    // Places are not chained: a verifying ledger can hold one a block has
    // no room for.
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    Connection::open(&path)
        .unwrap()
        .execute("UPDATE session_geo SET accuracy_km = 'far' WHERE seq = 25", [])
        .unwrap();
    assert_eq!(
        LedgerStore::open_read_only(&path)
            .unwrap()
            .verify()
            .unwrap()
            .first_bad,
        None
    );
    let bytes = std::fs::read(&path).unwrap();
    let err = LedgerStore::open(&path).err().expect("refused").to_string();
    assert!(err.contains("record 25 cannot be converted"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not a byte changed");
}

#[test]
fn an_interrupted_conversion_whose_blocks_were_altered_keeps_the_old_records() {
    let dir = tempfile::tempdir().unwrap();
    // The blocks a conversion makes, with one record's bytes sent altered
    // (its stored hash kept, so the blocks still end on the right hash).
    let converted = dir.path().join("converted.sqlite");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ledger-v1.sqlite"),
        &converted,
    )
    .unwrap();
    drop(LedgerStore::open(&converted).unwrap());
    let conn = Connection::open(&converted).unwrap();
    let data: Vec<u8> = conn
        .query_row("SELECT data FROM record_blocks WHERE first_seq = 1", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut records = warnseed_ledger::block::decode(&data).unwrap().records;
    assert_eq!(records.len(), 60);
    records[29].bytes_sent += 1;
    blockstore::write_block(&conn, 1, &records).unwrap();
    drop(conn);
    // The old ledger, interrupted after writing those blocks.
    let path = fixture(dir.path());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "ATTACH DATABASE '{}' AS done;
         CREATE TABLE record_blocks AS SELECT * FROM done.record_blocks;",
        converted.display()
    ))
    .unwrap();
    drop(conn);
    let err = LedgerStore::open(&path).err().expect("refused").to_string();
    assert!(err.contains("do not hold the same chain"), "{err}");
    assert!(
        tables(&path).contains(&"sessions".to_string()),
        "old records kept"
    );
    assert_eq!(
        LedgerStore::open_read_only(&path)
            .unwrap()
            .verify()
            .unwrap()
            .first_bad,
        None
    );
}

#[test]
fn an_older_warnseed_cannot_start_a_second_chain_in_a_converted_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture(dir.path());
    drop(LedgerStore::open(&path).unwrap());
    // What the first layout's open did: the table, then its columns.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY, started_at_ms INTEGER)")
        .unwrap();
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('sessions')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !columns.contains(&"id".to_string()),
        "{columns:?}: it would refuse the file"
    );
    drop(conn);
    // And this warnseed still opens it.
    assert_eq!(LedgerStore::open(&path).unwrap().verify().unwrap().records, 60);
}
