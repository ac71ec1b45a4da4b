//! The command line end to end, without peers: init, import, export,
//! report, and `run` starting from nothing.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;

fn warnseed_fails(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn import_reports_every_bad_row_and_imports_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data = data.to_str().unwrap();
    warnseed(&["init", "--data", data]);
    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        "title,size_bytes\nsample-title-000001.mp4,10\nsample/title.mp4,1\nsample-title-000002.mp4,zero\nsample-title-000001.mp4,10\n",
    )
    .unwrap();
    let err = warnseed_fails(&["catalog", "import", bad.to_str().unwrap(), "--data", data]);
    let b = bad.display().to_string();
    assert!(
        err.contains(&format!("{b}:3: title contains the path separator")),
        "{err}"
    );
    assert!(err.contains(&format!("{b}:4: size_bytes \"zero\"")), "{err}");
    assert!(
        err.contains(&format!("{b}:5: duplicate title (first at line 2)")),
        "{err}"
    );
    assert!(
        err.contains("3 invalid row(s); nothing of this file was imported"),
        "{err}"
    );
    let summary = warnseed(&["report", "summary", "--data", data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["decoys_active"], 0);

    let unknown = dir.path().join("unknown.csv");
    std::fs::write(&unknown, "title,genre\nsample-title-000001.mp4,x\n").unwrap();
    let err = warnseed_fails(&["catalog", "import", unknown.to_str().unwrap(), "--data", data]);
    assert!(err.contains("unknown column \"genre\""), "{err}");

    // Several files: each is its own transaction, and the error says which
    // stayed imported.
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "title\nsample-title-000009.mp4\n").unwrap();
    let err = warnseed_fails(&[
        "catalog",
        "import",
        good.to_str().unwrap(),
        bad.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert!(
        err.contains(&format!("imported before it: {}", good.display())),
        "{err}"
    );
    assert!(err.contains("nothing of this file was imported"), "{err}");
    let summary = warnseed(&["report", "summary", "--data", data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["titles"], 1, "{v}");
}

#[test]
fn import_is_idempotent_and_exports_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let rows = "title,size_bytes,campaign,language\nsample-title-000001.mp4,5000000,c,en\nsample-title-000002.mkv,,c,nb\n";
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, rows).unwrap();
    let mut whitelists = Vec::new();
    for node in ["a", "b"] {
        let data = dir.path().join(node);
        let data = data.to_str().unwrap();
        warnseed(&["init", "--data", data]);
        let first = warnseed(&["catalog", "import", csv.to_str().unwrap(), "--data", data]);
        assert!(first.contains("2 rows, 2 added, 0 already present"), "{first}");
        let again = warnseed(&["catalog", "import", csv.to_str().unwrap(), "--data", data]);
        assert!(again.contains("2 rows, 0 added, 2 already present"), "{again}");
        let wl = warnseed(&[
            "decoys",
            "export",
            "--format",
            "whitelist",
            "--out",
            "-",
            "--data",
            data,
        ]);
        whitelists.push(wl);
    }
    assert_eq!(
        whitelists[0], whitelists[1],
        "same catalogue and payload, same info hashes"
    );
    assert_eq!(whitelists[0].lines().count(), 2);
    assert!(whitelists[0]
        .lines()
        .all(|l| l.len() == 40 && l.chars().all(|c| c.is_ascii_hexdigit())));

    let data = dir.path().join("a");
    let out = dir.path().join("torrents");
    warnseed(&[
        "decoys",
        "export",
        "--format",
        "torrent",
        "--out",
        out.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--tracker",
        "http://127.0.0.1:6969/announce",
    ]);
    let index = Node::index(&out);
    assert_eq!(index.len(), 2);
    for (hash, _id, size, title) in &index {
        let bytes = std::fs::read(out.join(format!("{hash}.torrent"))).unwrap();
        // Decode with a real client's parser: libtorrent must agree on the
        // info hash, name and length.
        let probe = "import libtorrent as lt, sys; t = lt.torrent_info(sys.argv[1]); \
            print(str(t.info_hash()), t.name(), t.total_size(), list(t.trackers())[0].url)";
        require_libtorrent();
        let p = out.join(format!("{hash}.torrent"));
        let said = run_ok(Command::new("/usr/bin/python3").args(["-c", probe, p.to_str().unwrap()]));
        assert_eq!(
            said.trim(),
            format!("{hash} {title} {size} http://127.0.0.1:6969/announce")
        );
        assert!(bytes.starts_with(b"d8:announce"));
    }
    let magnets = warnseed(&[
        "decoys",
        "export",
        "--format",
        "magnet",
        "--out",
        "-",
        "--data",
        data.to_str().unwrap(),
    ]);
    for (hash, _id, size, title) in &index {
        let line = magnets.lines().find(|l| l.contains(hash.as_str())).unwrap();
        assert!(
            line.starts_with(&format!("magnet:?xt=urn:btih:{hash}&dn={title}&xl={size}")),
            "{line}"
        );
    }
}

#[test]
fn run_initialises_imports_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let catalog = repo_root().join("examples/catalog.csv");
    let ip = Ipv4Addr::LOCALHOST;
    let listen = SocketAddr::from((ip, free_port(ip)));
    let log = dir.path().join("run.log");
    let out = dir.path().join("run.out");
    let child = Command::new(bin())
        .args([
            "run",
            "--data",
            data.to_str().unwrap(),
            "--listen",
            &listen.to_string(),
        ])
        .args(["--catalog", catalog.to_str().unwrap(), "--no-dht"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc {
        child,
        name: "warnseed".into(),
    };
    wait_until("ready", std::time::Duration::from_secs(60), || {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("ready listen=")
    });
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(
        printed.contains("examples/catalog.csv: 100 rows, 100 added"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("ready listen={listen} decoys=100")),
        "{printed}"
    );
    // Ctrl-C: SIGINT stops as gracefully as SIGTERM (the node tests use that).
    let mut proc = proc;
    proc.signal("-INT");
    let status = proc.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("stopped: 0 ledger records written"));
    assert!(data.join("warnseed.toml").is_file());
    let summary = warnseed(&["report", "summary", "--data", data.to_str().unwrap()]);
    assert!(summary.contains("decoys active       100"), "{summary}");
}

#[test]
fn a_million_rows_import() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data = data.to_str().unwrap();
    warnseed(&["init", "--data", data]);
    let csv = dir.path().join("million.csv");
    let mut body = String::with_capacity(40 << 20);
    body.push_str("title,size_bytes\n");
    for i in 0..1_000_000u32 {
        body.push_str(&format!("sample-title-{i:07}.mp4,{}\n", 1_000_000 + u64::from(i)));
    }
    std::fs::write(&csv, body).unwrap();
    let out = warnseed(&["catalog", "import", csv.to_str().unwrap(), "--data", data]);
    assert!(out.contains("1000000 rows, 1000000 added"), "{out}");
    let summary = warnseed(&["report", "summary", "--data", data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(v["titles"], 1_000_000);
    // Nothing is released before a node runs the schedule.
    assert_eq!(v["decoys_active"], 0);
}

#[test]
fn ledger_verify_names_the_first_bad_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data_s = data.to_str().unwrap();
    warnseed(&["init", "--data", data_s]);
    let ok = warnseed(&["ledger", "verify", "--data", data_s]);
    assert!(ok.starts_with("ledger ok: 0 records"), "{ok}");
    // Three chained records as a node writes them, then an edit behind
    // the ledger's back.
    let store = warnseed_ledger_fixture(&data.join("ledger.sqlite"));
    let edit = |change: &dyn Fn(&mut Vec<warnseed_ledger::block::PackedRecord<'_>>)| {
        let bytes: Vec<u8> = store
            .query_row("SELECT data FROM record_blocks WHERE first_seq = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mut records = warnseed_ledger::block::decode(&bytes).unwrap().records;
        change(&mut records);
        warnseed_ledger::blockstore::write_block(&store, 1, &records).unwrap();
    };
    edit(&|r| r[1].bytes_sent = 1);
    let err = warnseed_fails(&["ledger", "verify", "--data", data_s]);
    assert!(
        err.contains("failed at record 2: record_hash does not match"),
        "{err}"
    );
    edit(&|r| {
        r.remove(0);
    });
    let err = warnseed_fails(&["ledger", "verify", "--data", data_s]);
    assert!(
        err.contains("failed at record 1: record_hash does not match"),
        "{err}"
    );
    store.execute("DELETE FROM record_blocks", []).unwrap();
    let err = warnseed_fails(&["ledger", "verify", "--data", data_s]);
    assert!(err.contains("sealed") && err.contains("missing"), "{err}");
}

/// Writes three chained records the way a node does and returns a raw
/// connection to tamper with.
fn warnseed_ledger_fixture(path: &std::path::Path) -> rusqlite::Connection {
    let mut store = warnseed_ledger::LedgerStore::open(path).unwrap();
    let records: Vec<_> = (0..3u16)
        .map(|i| warnseed_ledger::SessionRecord {
            kind: warnseed_ledger::RecordKind::Close,
            session_key: i64::from(i),
            started_at_ms: 1_790_000_000_000,
            ended_at_ms: 1_790_000_001_000,
            network: "bittorrent",
            decoy_id: 1,
            info_hash: [9; 20],
            remote_ip: "127.0.0.5".parse().unwrap(),
            remote_port: 50_000 + i,
            peer_id: None,
            client_name: None,
            client_version: None,
            transport: warnseed_ledger::Transport::Tcp,
            bytes_sent: 10,
            pieces_sent: 1,
            piece_count: 1,
            peer_pieces_initial: None,
            peer_pieces_final: 1,
            completed: true,
            close_reason: "peer_complete".into(),
        })
        .collect();
    store.append(&records).unwrap();
    store
        .seal(&warnseed_ledger::clock::read(), 1_790_000_100_000)
        .unwrap()
        .unwrap();
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn status_shows_a_failing_tracker_then_a_stopped_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    let data_s = data.to_str().unwrap();
    warnseed(&["init", "--data", data_s]);
    let csv = dir.path().join("t.csv");
    std::fs::write(&csv, "title\nsample-title-000001.mp4\n").unwrap();
    warnseed(&["catalog", "import", csv.to_str().unwrap(), "--data", data_s]);
    let none = warnseed(&["status", "--data", data_s]);
    assert!(none.contains("no node has run here yet"), "{none}");
    // A tracker on a loopback port nobody listens on: refused at once.
    let ip = Ipv4Addr::LOCALHOST;
    let dead = format!("http://127.0.0.1:{}/announce", free_port(ip));
    let listen = SocketAddr::from((ip, free_port(ip)));
    let out = dir.path().join("run.out");
    let child = Command::new(bin())
        .args([
            "run",
            "--data",
            data_s,
            "--listen",
            &listen.to_string(),
            "--tracker",
            &dead,
        ])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc {
        child,
        name: "warnseed".into(),
    };
    let mut v = serde_json::Value::Null;
    wait_until(
        "a tracker round in the status",
        std::time::Duration::from_secs(60),
        || {
            let s = warnseed(&["status", "--data", data_s, "--json"]);
            v = serde_json::from_str(&s).unwrap_or_default();
            v["trackers"][0]["rounds"].as_u64().unwrap_or(0) >= 1
        },
    );
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["trackers"][0]["state"], "failing", "{v}");
    assert!(
        v["trackers"][0]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("refused"),
        "{v}"
    );
    let text = warnseed(&["status", "--data", data_s]);
    assert!(text.contains(&format!("tracker       {dead}  failing")), "{text}");
    // A second node on the same data directory is refused.
    let other = SocketAddr::from((ip, free_port(ip)));
    let err = warnseed_fails(&["run", "--data", data_s, "--listen", &other.to_string()]);
    assert!(err.contains("another warnseed is already running"), "{err}");
    proc.stop(std::time::Duration::from_secs(20)).expect("stops");
    let v: serde_json::Value =
        serde_json::from_str(&warnseed(&["status", "--data", data_s, "--json"])).unwrap();
    assert_eq!(v["state"], "stopped", "{v}");
}

#[test]
fn a_node_whose_ledger_cannot_be_written_stops_instead_of_serving_unregistered() {
    use std::io::{Read, Write};
    let mut node = Node::new("sample-title-000001.mp4,1000000\n", None);
    let torrents = node.export_torrents(&[]);
    let info_hash = Node::index(&torrents)[0].0.clone();
    let ip = Ipv4Addr::LOCALHOST;
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);
    // Every insert into the ledger now fails with an error no retry can
    // pass (as a corrupt or read-only database would).
    rusqlite::Connection::open(node.data.join("ledger.sqlite"))
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON record_blocks BEGIN SELECT RAISE(ABORT, 'test refuses inserts'); END;",
        )
        .unwrap();
    // A peer names the decoy: its open record cannot be written.
    let mut peer = std::net::TcpStream::connect(listen).unwrap();
    let mut handshake = vec![19u8];
    handshake.extend_from_slice(b"BitTorrent protocol");
    handshake.extend_from_slice(&[0; 8]);
    handshake.extend_from_slice(
        &(0..20)
            .map(|i| u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).unwrap())
            .collect::<Vec<_>>(),
    );
    handshake.extend_from_slice(b"-LT2080-testtesttest");
    peer.write_all(&handshake).unwrap();
    let mut reply = [0u8; 68];
    peer.read_exact(&mut reply).unwrap();
    let mut proc = node.proc.take().unwrap();
    let mut status = None;
    wait_until(
        "the node to stop on its own",
        std::time::Duration::from_secs(60),
        || {
            status = proc.child.try_wait().unwrap();
            status.is_some()
        },
    );
    let status = status.unwrap();
    assert!(
        !status.success(),
        "a node that cannot register must exit with an error"
    );
    let log = node.log();
    assert!(log.contains("test refuses inserts"), "{log}");
    assert!(log.contains("the ledger writer stopped"), "{log}");
    assert!(log.contains("records_not_written"), "{log}");
}
