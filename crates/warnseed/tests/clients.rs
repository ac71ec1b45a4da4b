//! Real BitTorrent clients download decoys from a warnseed node on
//! loopback; each download must be byte-exact and registered in the ledger
//! as exactly one completed session for that client.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PIECE: u64 = 16 * 1024;
const BIG: u64 = 100 * 1024 * 1024 + 7;

fn check_one_completed(node: &Node, ip: &str, info_hash: &str, size: u64, client_prefix: &str) -> Session {
    let sessions = node.wait_for_completed(ip, info_hash);
    let completed: Vec<&Session> = sessions.iter().filter(|s| s.completed).collect();
    assert_eq!(completed.len(), 1, "exactly one completed session for {ip}: {sessions:#?}");
    let s = completed[0].clone();
    assert_eq!(s.bytes_sent, size, "bytes sent = file length: {s:#?}");
    let client = s.client.clone().unwrap_or_default();
    assert!(client.starts_with(client_prefix), "client {client:?} should start with {client_prefix:?}");
    assert!(s.port > 0);
    assert!(s.ended_at_ms >= s.started_at_ms && s.started_at_ms > 1_600_000_000_000);
    s
}

#[test]
fn libtorrent_downloads_every_size_by_torrent_and_by_magnet() {
    require_libtorrent();
    let sizes = [PIECE - 1, PIECE, PIECE + 1, BIG];
    let rows: String = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("sample-title-{:06}.mp4,{s}\n", i + 1))
        .collect();
    let mut node = Node::new(&rows, None);
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);
    assert!(!node.data.join("payload.bin").exists(), "this node serves the built-in payload");

    let mut expected_payload = None;
    for (i, (info_hash, _id, size, title)) in index.iter().enumerate() {
        let bind = Ipv4Addr::new(127, 0, 1, 10 + i as u8);
        let out = node.dir.path().join(format!("lt-{i}"));
        let torrent = torrents.join(format!("{info_hash}.torrent"));
        let r = libtorrent_download(("--torrent", torrent.to_str().unwrap()), Some(listen), bind, &out);
        let path = Path::new(r["path"].as_str().unwrap());
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), title);
        assert_eq!(std::fs::metadata(path).unwrap().len(), *size);
        // The first bytes of every decoy are the same payload.
        let head = std::fs::read(path).unwrap();
        let payload = expected_payload
            .get_or_insert_with(|| {
                let n = head.iter().rposition(|b| *b != 0).map(|p| p + 1).unwrap_or(0);
                head[..n].to_vec()
            })
            .clone();
        assert!(payload.starts_with(b"WARNING"), "decoys start with the warning");
        assert_eq!(file_sha256(path), expected_sha256(&payload, *size), "{title}");
        let s = check_one_completed(&node, &bind.to_string(), info_hash, *size, "libtorrent 2.0");
        let ports: Vec<u64> = r["local_ports"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
        assert!(ports.contains(&u64::from(s.port)), "ledger port {} among {ports:?}", s.port);
        assert!(s.version.as_deref().unwrap_or("").starts_with("libtorrent"), "{s:?}");
    }

    // Magnet links alone (plus our address): metadata comes from us, over
    // several ut_metadata pieces for the 100 MiB decoy.
    let magnets_path = node.dir.path().join("magnets.txt");
    warnseed(&[
        "decoys",
        "export",
        "--format",
        "magnet",
        "--out",
        magnets_path.to_str().unwrap(),
        "--data",
        node.data_arg(),
        "--peer",
        &listen.to_string(),
    ]);
    let magnets = std::fs::read_to_string(&magnets_path).unwrap();
    for (i, (info_hash, _id, size, _title)) in index.iter().enumerate() {
        if *size != PIECE + 1 && *size != BIG {
            continue;
        }
        let magnet = magnets.lines().find(|m| m.contains(info_hash.as_str())).unwrap();
        assert!(magnet.contains("&x.pe="), "{magnet}");
        let bind = Ipv4Addr::new(127, 0, 2, 10 + i as u8);
        let out = node.dir.path().join(format!("magnet-{i}"));
        let r = libtorrent_download(("--magnet", magnet), Some(listen), bind, &out);
        let path = Path::new(r["path"].as_str().unwrap());
        assert_eq!(file_sha256(path), expected_sha256(expected_payload.as_ref().unwrap(), *size));
        check_one_completed(&node, &bind.to_string(), info_hash, *size, "libtorrent 2.0");
    }
    let out = node.stop();
    assert!(out.contains("stopped:"), "{out}");
}

#[test]
fn libtorrent_downloads_a_one_byte_decoy() {
    require_libtorrent();
    // A one-byte decoy needs a one-byte warning: decoys never cut the payload.
    let mut node = Node::new("sample-title-000001.txt,1\n", Some(b"W"));
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    assert_eq!(index[0].2, 1);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);
    let bind = Ipv4Addr::new(127, 0, 3, 10);
    let torrent = torrents.join(format!("{}.torrent", index[0].0));
    let r = libtorrent_download(("--torrent", torrent.to_str().unwrap()), Some(listen), bind, &node.dir.path().join("dl"));
    assert_eq!(std::fs::read(r["path"].as_str().unwrap()).unwrap(), b"W");
    check_one_completed(&node, &bind.to_string(), &index[0].0, 1, "libtorrent 2.0");
    node.stop();
}

/// A node announcing to a local opentracker, and its decoys' info hashes.
fn tracked_node(sizes: &[u64]) -> (Node, Opentracker, std::path::PathBuf, Vec<(String, i64, u64, String)>) {
    let rows: String = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("sample-title-{:06}.mkv,{s}\n", i + 1))
        .collect();
    let mut node = Node::new(&rows, Some(&test_payload()));
    let wl = node.dir.path().join("wl.txt");
    warnseed(&["decoys", "export", "--format", "whitelist", "--out", wl.to_str().unwrap(), "--data", node.data_arg()]);
    let hashes: Vec<String> = std::fs::read_to_string(&wl).unwrap().lines().map(String::from).collect();
    assert_eq!(hashes.len(), sizes.len());
    let tracker_dir = node.dir.path().join("tracker");
    std::fs::create_dir_all(&tracker_dir).unwrap();
    let tracker = Opentracker::start(&tracker_dir, Ipv4Addr::LOCALHOST, &hashes);
    let torrents = node.export_torrents(std::slice::from_ref(&tracker.url));
    let index = Node::index(&torrents);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &["--tracker", &tracker.url]);
    let log_has_round = || node.log().contains("tracker round done");
    wait_until("the first tracker round", Duration::from_secs(30), log_has_round);
    assert!(!node.log().contains("announce failed"), "{}", node.log());
    (node, tracker, torrents, index)
}

/// The warning the tracker tests serve: known here, so expected bytes are
/// computed without asking warnseed.
fn test_payload() -> Vec<u8> {
    b"WARNING: this file came from a police computer (test payload).\n".repeat(40)
}

#[test]
fn transmission_finds_the_node_through_opentracker() {
    require("transmission-daemon", "transmission-daemon");
    require("transmission-remote", "transmission-cli");
    let sizes = [PIECE + 1, BIG];
    let (mut node, tracker, torrents, index) = tracked_node(&sizes);
    let payload = test_payload();
    let tdir = node.dir.path().join("transmission");
    let download = tdir.join("downloads");
    std::fs::create_dir_all(&download).unwrap();
    let bind = Ipv4Addr::new(127, 0, 4, 10);
    let rpc_port = free_port(Ipv4Addr::LOCALHOST);
    let settings = serde_json::json!({
        "bind-address-ipv4": bind.to_string(),
        "bind-address-ipv6": "::1",
        "peer-port": free_port(bind),
        "peer-port-random-on-start": false,
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "rpc-enabled": true,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": rpc_port,
        "rpc-authentication-required": false,
        "rpc-whitelist-enabled": false,
        "rpc-host-whitelist-enabled": false,
        "download-dir": download.to_str().unwrap(),
        "incomplete-dir-enabled": false,
        "start-added-torrents": true,
        "encryption": 1,
        "message-level": 2,
    });
    std::fs::write(tdir.join("settings.json"), settings.to_string()).unwrap();
    let daemon = Proc::spawn(
        "transmission-daemon",
        Command::new("transmission-daemon").args(["-f", "-g", tdir.to_str().unwrap()]),
        &tdir.join("daemon.log"),
    );
    wait_for_port(SocketAddr::from((Ipv4Addr::LOCALHOST, rpc_port)));
    let remote = format!("127.0.0.1:{rpc_port}");
    for (info_hash, ..) in &index {
        let t = torrents.join(format!("{info_hash}.torrent"));
        run_ok(Command::new("transmission-remote").args([&remote, "-a", t.to_str().unwrap()]));
    }
    for (info_hash, _id, size, title) in &index {
        let path = download.join(title);
        let want = expected_sha256(&payload, *size);
        wait_until(&format!("Transmission to finish {title}"), Duration::from_secs(180), || {
            std::fs::metadata(&path).map(|m| m.len() == *size).unwrap_or(false) && file_sha256(&path) == want
        });
        // Transmission keeps seeding: the session ends when we stop it.
        let _ = info_hash;
    }
    daemon.stop(Duration::from_secs(10));
    for (info_hash, _id, size, _title) in &index {
        check_one_completed(&node, &bind.to_string(), info_hash, *size, "Transmission");
    }
    node.stop();
    drop(tracker);
}

#[test]
fn aria2_finds_the_node_through_opentracker() {
    require("aria2c", "aria2");
    let sizes = [PIECE - 1, BIG];
    let (mut node, tracker, torrents, index) = tracked_node(&sizes);
    let payload = test_payload();
    let out = node.dir.path().join("aria2");
    std::fs::create_dir_all(&out).unwrap();
    let bind = Ipv4Addr::new(127, 0, 5, 10);
    for (info_hash, _id, size, title) in &index {
        let t = torrents.join(format!("{info_hash}.torrent"));
        run_ok(Command::new("aria2c").args([
            "--dir",
            out.to_str().unwrap(),
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-save-metadata=false",
            "--check-integrity=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            &format!("--interface={bind}"),
            &format!("--listen-port={}", free_port(bind)),
            "--bt-stop-timeout=120",
            t.to_str().unwrap(),
        ]));
        let path = out.join(title);
        assert_eq!(file_sha256(&path), expected_sha256(&payload, *size), "{title}");
        check_one_completed(&node, &bind.to_string(), info_hash, *size, "aria2");
    }
    node.stop();
    drop(tracker);
}
