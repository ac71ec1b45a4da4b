//! Evidence exports check out offline, and any change to one is caught.

use warnseed_ledger::{
    verify_evidence, verify_evidence_anchored, Evidence, IpRange, LedgerStore, RecordKind, SessionRecord,
    Transport,
};

fn record(i: u32, ip: &str) -> SessionRecord {
    SessionRecord {
        kind: if i.is_multiple_of(2) {
            RecordKind::Close
        } else {
            RecordKind::Open
        },
        session_key: i64::from(i / 2),
        started_at_ms: 1_790_000_000_000 + i64::from(i) * 60_000,
        ended_at_ms: 1_790_000_000_500 + i64::from(i) * 60_000,
        network: "bittorrent",
        decoy_id: i64::from(i % 5),
        info_hash: [i as u8; 20],
        remote_ip: ip.parse().unwrap(),
        remote_port: 50_000 + i as u16,
        peer_id: (!i.is_multiple_of(3)).then_some(*b"-TR3000-bbbbbbbbbbbb"),
        client_name: Some("Transmission 3.00".into()),
        client_version: None,
        transport: Transport::TcpMsePlain,
        bytes_sent: 5000 * u64::from(i),
        pieces_sent: i,
        piece_count: 9,
        peer_pieces_initial: None,
        peer_pieces_final: 9,
        completed: i.is_multiple_of(4),
        close_reason: "peer_complete".into(),
    }
}

/// 120 records from four addresses, sealed in three uneven seals plus an
/// unsealed tail that the export seals itself.
fn export(ip: &str, from: i64, to: i64) -> (tempfile::TempDir, Evidence) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    let ips = ["198.51.100.7", "198.51.100.200", "2001:db8::5", "203.0.113.9"];
    let all: Vec<SessionRecord> = (0..120).map(|i| record(i, ips[i as usize % 4])).collect();
    let clock = warnseed_ledger::clock::read();
    for chunk in [&all[..7], &all[7..50], &all[50..100]] {
        store.append(chunk).unwrap();
        store.seal(&clock, 1_790_010_000_000).unwrap();
    }
    store.append(&all[100..]).unwrap();
    let e = store
        .evidence(
            ip.parse::<IpRange>().unwrap(),
            from,
            to,
            &clock,
            1_790_020_000_000,
        )
        .unwrap();
    (dir, e)
}

#[test]
fn an_export_for_one_address_verifies_offline() {
    let (_dir, e) = export("198.51.100.7", 0, i64::MAX);
    assert_eq!(e.records.len(), 30);
    assert!(e
        .records
        .iter()
        .all(|r| r.remote_ip.as_deref() == Some("198.51.100.7")));
    // Records span every seal, including the one the export made.
    let seals: std::collections::BTreeSet<i64> = e.records.iter().map(|r| r.proof.seal).collect();
    assert_eq!(seals.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    let check = verify_evidence(&e).unwrap();
    assert_eq!((check.records, check.seals), (30, 4));
    // It survives JSON, as the CLI writes and reads it.
    let text = serde_json::to_string(&e).unwrap();
    let back: Evidence = serde_json::from_str(&text).unwrap();
    assert_eq!(verify_evidence(&back).unwrap(), check);
    // The `evidence` fuzz target's seed is this export (fuzz/README.md).
    if let Some(dir) = std::env::var_os("WARNSEED_FUZZ_SEED_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join("seed-export.json"), &text).unwrap();
    }
}

#[test]
fn an_anchor_held_elsewhere_covers_the_records_it_seals() {
    let (_dir, e) = export("198.51.100.7", 0, i64::MAX);
    // Seal 2 (records up to 50) was "handed over" before the export.
    let anchor = e.seals.iter().find(|s| s.id == 2).unwrap().seal_hash.clone();
    let check = verify_evidence_anchored(&e, &anchor).unwrap();
    assert_eq!(
        check.anchored_records,
        Some(e.records.iter().filter(|r| r.seq <= 50).count())
    );
    assert!(verify_evidence_anchored(&e, &"ab".repeat(32)).is_err());
}

#[test]
fn ranges_and_windows_select_records() {
    let (_dir, e) = export("198.51.100.0/24", 0, i64::MAX);
    assert_eq!(e.records.len(), 60);
    let (_dir, e) = export("2001:db8::/32", 0, i64::MAX);
    assert_eq!(e.records.len(), 30);
    // Records 10..=19 by start time: 198.51.100.7 has 12 and 16.
    let from = 1_790_000_000_000 + 10 * 60_000;
    let (_dir, e) = export("198.51.100.7", from, from + 9 * 60_000);
    assert_eq!(e.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![13, 17]);
    verify_evidence(&e).unwrap();
    let (_dir, e) = export("192.0.2.1", 0, i64::MAX);
    assert!(e.records.is_empty());
    assert_eq!(e.seals.len(), 1, "the newest seal still shows the ledger's state");
    assert!("10.0.0.0/33".parse::<IpRange>().is_err());
}

#[test]
fn any_change_to_an_export_is_caught() {
    let (_dir, e) = export("198.51.100.7", 0, i64::MAX);
    type Change = Box<dyn Fn(&mut Evidence)>;
    let cases: Vec<(&str, Change)> = vec![
        ("bytes", Box::new(|e| e.records[3].bytes_sent += 1)),
        (
            "address",
            Box::new(|e| e.records[3].remote_ip = Some("198.51.100.8".into())),
        ),
        ("time", Box::new(|e| e.records[0].started_at_ms -= 1000)),
        (
            "client",
            Box::new(|e| e.records[5].client_name = Some("other".into())),
        ),
        (
            "completed",
            Box::new(|e| e.records[5].completed = !e.records[5].completed),
        ),
        ("path", Box::new(|e| e.records[4].proof.path[0] = "00".repeat(32))),
        ("position", Box::new(|e| e.records[4].proof.leaf_index += 1)),
        (
            "seal clock",
            Box::new(|e| {
                e.seals[0].clock_synced = Some(true).filter(|_| e.seals[0].clock_synced != Some(true))
            }),
        ),
        (
            "seal root",
            Box::new(|e| e.seals[1].merkle_root = "11".repeat(32)),
        ),
        (
            "dropped seal",
            Box::new(|e| {
                e.seals.remove(1);
            }),
        ),
        ("salt gone", Box::new(|e| e.records[2].ip_salt = None)),
        ("format", Box::new(|e| e.format = "something else".into())),
        // The header must describe the records: a narrower address or a
        // later window than they have is a lie.
        ("header address", Box::new(|e| e.ip = "198.51.100.8".into())),
        (
            "header window",
            Box::new(|e| e.from_ms = e.records[1].started_at_ms),
        ),
        (
            "duplicate",
            Box::new(|e| {
                let r = e.records[0].clone();
                e.records.insert(1, r);
            }),
        ),
    ];
    for (what, change) in cases {
        let mut forged = e.clone();
        change(&mut forged);
        assert_ne!(forged, e, "{what}: the change changed nothing");
        assert!(verify_evidence(&forged).is_err(), "{what} went unnoticed");
    }
}

#[test]
fn exports_taken_while_a_node_writes_cover_what_was_sealed_and_never_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut store = LedgerStore::open(&path).unwrap();
    let ip = "198.51.100.7";
    store.append(&[record(0, ip)]).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A second connection appends records of the same address, as a
    // running node's writer would.
    let writer = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut node = LedgerStore::open(&path).unwrap();
            let mut i = 1u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                node.append(&[record(i % 1000, ip)]).unwrap();
                // The node seals too (every minute in production), so a
                // seal can land between an export's bound and its reads;
                // that race is rare here, and the unit test in
                // src/evidence.rs makes it happen every time.
                if i.is_multiple_of(5) {
                    node.seal(&warnseed_ledger::clock::read(), 1_790_020_000_000)
                        .unwrap();
                }
                i += 1;
                // A commit every few milliseconds: SQLite's busy wait is
                // not fair, and a loop with no pause could starve the
                // export's seal.
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
            i
        })
    };
    let clock = warnseed_ledger::clock::read();
    let mut last = 0;
    for _ in 0..30 {
        // Exports may begin between a seal and the next append: each one
        // covers exactly what its seal covers.
        let e = store
            .evidence(
                ip.parse::<IpRange>().unwrap(),
                0,
                i64::MAX,
                &clock,
                1_790_020_000_000,
            )
            .unwrap();
        verify_evidence(&e).unwrap();
        let newest = e.records.last().unwrap().seq;
        assert!(newest >= last);
        // Every record is of this address: the export holds each one up
        // to its newest seal, and none beyond.
        let sealed = e.seals.last().unwrap().last_seq;
        assert_eq!(
            e.records.len() as i64,
            sealed,
            "a record under the export's seal is missing"
        );
        assert_eq!(newest, sealed);
        last = newest;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 1);
}

#[test]
fn exports_find_every_record_across_blocks_whatever_the_window() {
    // 1,500 records in blocks of 400, 400, 400 and 300 (appends of 400
    // and more never merge), five addresses, several seals: each export's
    // records are exactly those a scan of every record picks.
    let dir = tempfile::tempdir().unwrap();
    let mut store = LedgerStore::open(&dir.path().join("ledger.sqlite")).unwrap();
    let ips = [
        "198.51.100.7",
        "198.51.100.8",
        "2001:db8::5",
        "2001:db8::6",
        "203.0.113.9",
    ];
    let all: Vec<SessionRecord> = (0..1500)
        .map(|i| record(i, ips[(i as usize * 7 / 3) % 5]))
        .collect();
    let clock = warnseed_ledger::clock::read();
    for chunk in all.chunks(400) {
        store.append(chunk).unwrap();
        store.seal(&clock, 1_790_010_000_000).unwrap();
    }
    let start = |i: i64| 1_790_000_000_000 + i * 60_000;
    for (range, from, to) in [
        ("198.51.100.7", start(0), start(1499)),
        ("198.51.100.7", start(350), start(850)),
        ("198.51.100.0/24", start(399), start(401)),
        ("2001:db8::/32", start(799), start(1210)),
        ("2001:db8::6", start(1200), i64::MAX),
        ("203.0.113.0/24", i64::MIN, start(0)),
        ("192.0.2.1", i64::MIN, i64::MAX),
    ] {
        let want: Vec<i64> = all
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                range.parse::<IpRange>().unwrap().contains(r.remote_ip)
                    && r.started_at_ms >= from
                    && r.started_at_ms <= to
            })
            .map(|(i, _)| i as i64 + 1)
            .collect();
        let e = store
            .evidence(range.parse().unwrap(), from, to, &clock, 1_790_020_000_000)
            .unwrap();
        assert_eq!(
            e.records.iter().map(|r| r.seq).collect::<Vec<_>>(),
            want,
            "{range} {from}..{to}"
        );
        assert_eq!(verify_evidence(&e).unwrap().records, want.len(), "{range}");
    }
}
