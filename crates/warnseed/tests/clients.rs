//! Real BitTorrent clients download decoys from a warnseed node on
//! loopback; each download must be byte-exact and registered in the ledger
//! as exactly one completed session for that client.

mod common;

use common::*;
// The built-in warning's text, read from its source here: the expected
// bytes of a decoy are then computed without asking warnseed.
const BUILTIN_WARNING: &str = include_str!("../../payload/src/warning.txt");
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const PIECE: u64 = 16 * 1024;
const BIG: u64 = 100 * 1024 * 1024 + 7;

fn check_one_completed(node: &Node, ip: &str, info_hash: &str, size: u64, client_prefix: &str) -> Session {
    let sessions = node.wait_for_completed(ip, info_hash);
    let completed: Vec<&Session> = sessions.iter().filter(|s| s.completed).collect();
    assert_eq!(
        completed.len(),
        1,
        "exactly one completed session for {ip}: {sessions:#?}"
    );
    let s = completed[0].clone();
    assert_eq!(s.bytes_sent, size, "bytes sent = file length: {s:#?}");
    let client = s.client.clone().unwrap_or_default();
    assert!(
        client.starts_with(client_prefix),
        "client {client:?} should start with {client_prefix:?}"
    );
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
    // One payload file for every title (payload.file), so the expected
    // bytes are known here; rendered payloads have tests of their own.
    let mut node = Node::new(&rows, Some(BUILTIN_WARNING.as_bytes()));
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);

    let payload = BUILTIN_WARNING.as_bytes();
    for (i, (info_hash, _id, size, title)) in index.iter().enumerate() {
        let bind = Ipv4Addr::new(127, 0, 1, 10 + i as u8);
        let out = node.dir.path().join(format!("lt-{i}"));
        let torrent = torrents.join(format!("{info_hash}.torrent"));
        let r = libtorrent_download(("--torrent", torrent.to_str().unwrap()), Some(listen), bind, &out);
        let path = Path::new(r["path"].as_str().unwrap());
        assert_eq!(path.file_name().unwrap().to_str().unwrap(), title);
        assert_eq!(std::fs::metadata(path).unwrap().len(), *size);
        assert_eq!(file_sha256(path), expected_sha256(payload, *size), "{title}");
        let s = check_one_completed(&node, &bind.to_string(), info_hash, *size, "libtorrent 2.0");
        // libtorrent opens with MSE offering both methods; we pick plaintext.
        assert_eq!(s.transport, "tcp+mse-plain");
        let ports: Vec<u64> = r["local_ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect();
        assert!(
            ports.contains(&u64::from(s.port)),
            "ledger port {} among {ports:?}",
            s.port
        );
        assert!(
            s.version.as_deref().unwrap_or("").starts_with("libtorrent"),
            "{s:?}"
        );
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
        assert_eq!(file_sha256(path), expected_sha256(payload, *size));
        check_one_completed(&node, &bind.to_string(), info_hash, *size, "libtorrent 2.0");
    }
    let out = node.stop();
    assert!(out.contains("stopped:"), "{out}");
    let verified = warnseed(&["ledger", "verify", "--data", node.data_arg()]);
    let records = node.ledger_records();
    // An open and a close record per session, or one `session` record for
    // a session that ended within its commit window.
    assert!(records >= node.sessions().len(), "a record per session");
    assert!(
        verified.starts_with(&format!("ledger ok: {records} records")),
        "{verified}"
    );
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
    let r = libtorrent_download(
        ("--torrent", torrent.to_str().unwrap()),
        Some(listen),
        bind,
        &node.dir.path().join("dl"),
    );
    assert_eq!(std::fs::read(r["path"].as_str().unwrap()).unwrap(), b"W");
    check_one_completed(&node, &bind.to_string(), &index[0].0, 1, "libtorrent 2.0");
    node.stop();
}

#[test]
fn libtorrent_requiring_rc4_encryption_downloads() {
    require_libtorrent();
    let size = 3 * 1024 * 1024 + 11;
    let mut node = Node::new(
        &format!("sample-title-000001.avi,{size}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);
    let torrent = torrents.join(format!("{}.torrent", index[0].0));
    let bind = Ipv4Addr::new(127, 0, 3, 20);
    let dl = node.dir.path().join("dl");
    let r = libtorrent_download_with(
        ("--torrent", torrent.to_str().unwrap()),
        Some(listen),
        bind,
        &dl,
        "forced-rc4",
    );
    let got = file_sha256(Path::new(r["path"].as_str().unwrap()));
    assert_eq!(got, expected_sha256(BUILTIN_WARNING.as_bytes(), size));
    let s = check_one_completed(&node, &bind.to_string(), &index[0].0, size, "libtorrent 2.0");
    assert_eq!(s.transport, "tcp+mse-rc4");
    node.stop();
}

#[test]
fn libtorrent_downloads_over_ipv6() {
    require_libtorrent();
    let mut node = Node::new(
        &format!("sample-title-000001.mp4,{}\n", 3 * PIECE + 5),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let port = std::net::TcpListener::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    node.start(listen, &[]);
    let torrent = torrents.join(format!("{}.torrent", index[0].0));
    let bind: std::net::Ipv6Addr = "::1".parse().unwrap();
    let r = libtorrent_download(
        ("--torrent", torrent.to_str().unwrap()),
        Some(listen),
        bind,
        &node.dir.path().join("dl"),
    );
    let got = file_sha256(Path::new(r["path"].as_str().unwrap()));
    assert_eq!(got, expected_sha256(BUILTIN_WARNING.as_bytes(), 3 * PIECE + 5));
    check_one_completed(&node, "::1", &index[0].0, 3 * PIECE + 5, "libtorrent 2.0");
    node.stop();
}

/// Addresses inside a test's own namespace: the node and tracker, and the
/// client under test.
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// A node and opentracker (whitelisting the node's decoys) inside a fresh
/// namespace; the node is not started yet.
struct TrackerSetup {
    node: Node,
    ns: Netns,
    tracker: Opentracker,
    /// The decoys' info hashes (hex), in catalogue order.
    hashes: Vec<String>,
}

fn tracker_setup(tag: &str, sizes: &[u64]) -> TrackerSetup {
    let ns = Netns::new(tag, &[NODE_IP, CLIENT_IP]);
    let rows: String = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| format!("sample-title-{:06}.mkv,{s}\n", i + 1))
        .collect();
    let node = Node::new(&rows, Some(&test_payload()));
    let wl = node.dir.path().join("wl.txt");
    warnseed(&[
        "decoys",
        "export",
        "--format",
        "whitelist",
        "--out",
        wl.to_str().unwrap(),
        "--data",
        node.data_arg(),
    ]);
    let hashes: Vec<String> = std::fs::read_to_string(&wl)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(hashes.len(), sizes.len());
    let tracker_dir = node.dir.path().join("tracker");
    std::fs::create_dir_all(&tracker_dir).unwrap();
    let tracker = Opentracker::start_in(&ns, &tracker_dir, NODE_IP, &hashes);
    TrackerSetup {
        node,
        ns,
        tracker,
        hashes,
    }
}

fn status_json(node: &Node) -> serde_json::Value {
    serde_json::from_str(&warnseed(&["status", "--data", node.data_arg(), "--json"])).unwrap_or_default()
}

/// Polls `warnseed status --json` (rewritten every 2 s) until `ready`.
fn wait_for_status(node: &Node, what: &str, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let mut v = serde_json::Value::Null;
    wait_until(what, Duration::from_secs(90), || {
        v = status_json(node);
        ready(&v)
    });
    v
}

/// The status entry of the tracker with this URL (`null` if none).
fn tracker_status<'a>(v: &'a serde_json::Value, url: &str) -> &'a serde_json::Value {
    v["trackers"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["url"] == url))
        .unwrap_or(&serde_json::Value::Null)
}

/// A node announcing to opentracker, both inside a fresh namespace.
struct TrackedNode {
    node: Node,
    ns: Netns,
    _tracker: Opentracker,
    torrents: std::path::PathBuf,
    index: Vec<(String, i64, u64, String)>,
}

/// `udp` picks the tracker's UDP (BEP 15) URL over its HTTP one, for both
/// the node's announces and the client's.
fn tracked_node(tag: &str, sizes: &[u64], udp: bool) -> TrackedNode {
    let TrackerSetup {
        mut node,
        ns,
        tracker,
        ..
    } = tracker_setup(tag, sizes);
    let url = if udp { &tracker.udp_url } else { &tracker.url };
    let torrents = node.export_torrents(std::slice::from_ref(url));
    let index = Node::index(&torrents);
    node.start_in(Some(&ns), SocketAddr::from((NODE_IP, 6881)), &["--tracker", url]);
    wait_until("the first tracker round", Duration::from_secs(30), || {
        node.log().contains("tracker round done")
    });
    assert!(!node.log().contains("announce failed"), "{}", node.log());
    let v = wait_for_status(&node, "the tracker round in warnseed status", |v| {
        v["trackers"][0]["rounds"].as_u64().unwrap_or(0) >= 1
    });
    assert_eq!(v["state"], "running", "{v}");
    assert_eq!(v["trackers"][0]["url"], url.as_str());
    assert_eq!(v["trackers"][0]["tier"], 1, "{v}");
    assert_eq!(v["trackers"][0]["state"], "ok", "{v}");
    assert_eq!(v["trackers"][0]["announced"], sizes.len(), "{v}");
    TrackedNode {
        node,
        ns,
        _tracker: tracker,
        torrents,
        index,
    }
}

/// The ledger's port must be one the client itself connected from. A
/// 100 MiB transfer lasts long enough for the watcher's 20 ms polls to see
/// its connection; a tiny one may come and go between two polls, so for
/// those an unseen port is only reported.
fn assert_port_seen(s: &Session, size: u64, seen: &std::collections::BTreeSet<u16>) {
    if size >= BIG {
        assert!(
            seen.contains(&s.port),
            "ledger port {} not among the client's {seen:?}",
            s.port
        );
    } else if !seen.contains(&s.port) {
        eprintln!(
            "note: the {size}-byte session's port {} was too short-lived to observe",
            s.port
        );
    }
}

/// The warning the tracker tests serve: known here, so expected bytes are
/// computed without asking warnseed.
fn test_payload() -> Vec<u8> {
    b"WARNING: this file came from a police computer (test payload).\n".repeat(40)
}

#[test]
fn transmission_finds_the_node_through_opentracker_over_udp() {
    transmission_finds_the_node_through_opentracker("tr", true);
}

#[test]
fn transmission_finds_the_node_through_opentracker_over_http() {
    transmission_finds_the_node_through_opentracker("trh", false);
}

/// Transmission, requiring encryption, given .torrent files naming only
/// the tracker (its UDP URL when `udp`, else its HTTP one).
fn transmission_finds_the_node_through_opentracker(tag: &str, udp: bool) {
    require("transmission-daemon", "transmission-daemon");
    require("transmission-remote", "transmission-cli");
    let mut t = tracked_node(tag, &[PIECE + 1, BIG], udp);
    let payload = test_payload();
    let tdir = t.node.dir.path().join("transmission");
    let download = tdir.join("downloads");
    std::fs::create_dir_all(&download).unwrap();
    let settings = serde_json::json!({
        "bind-address-ipv4": CLIENT_IP.to_string(),
        "bind-address-ipv6": "::1",
        "peer-port": 51413,
        "peer-port-random-on-start": false,
        "dht-enabled": false,
        "lpd-enabled": false,
        "pex-enabled": false,
        "utp-enabled": false,
        "port-forwarding-enabled": false,
        "rpc-enabled": true,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": 9091,
        "rpc-authentication-required": false,
        "rpc-whitelist-enabled": false,
        "rpc-host-whitelist-enabled": false,
        "download-dir": download.to_str().unwrap(),
        "incomplete-dir-enabled": false,
        "start-added-torrents": true,
        // "Require encryption": Transmission then offers RC4 only.
        "encryption": 2,
        "message-level": 2,
    });
    std::fs::write(tdir.join("settings.json"), settings.to_string()).unwrap();
    let daemon = Proc::spawn(
        "transmission-daemon",
        t.ns.command("transmission-daemon")
            .args(["-f", "-g", tdir.to_str().unwrap()]),
        &tdir.join("daemon.log"),
    );
    t.ns.wait_for_port(SocketAddr::from((Ipv4Addr::LOCALHOST, 9091)));
    let watcher = PortWatcher::start(&t.ns, SocketAddr::from((NODE_IP, 6881)));
    for (info_hash, ..) in &t.index {
        let file = t.torrents.join(format!("{info_hash}.torrent"));
        run_ok(
            t.ns.command("transmission-remote")
                .args(["127.0.0.1:9091", "-a", file.to_str().unwrap()]),
        );
    }
    for (_info_hash, _id, size, title) in &t.index {
        let path = download.join(title);
        let want = expected_sha256(&payload, *size);
        wait_until(
            &format!("Transmission to finish {title}"),
            Duration::from_secs(240),
            || {
                std::fs::metadata(&path)
                    .map(|m| m.len() == *size)
                    .unwrap_or(false)
                    && file_sha256(&path) == want
            },
        );
    }
    // Transmission keeps seeding; its sessions end when it stops.
    daemon.stop(Duration::from_secs(10));
    let seen = watcher.finish();
    for (info_hash, _id, size, _title) in &t.index {
        let s = check_one_completed(&t.node, &CLIENT_IP.to_string(), info_hash, *size, "Transmission");
        assert_eq!(s.transport, "tcp+mse-rc4");
        assert_port_seen(&s, *size, &seen);
    }
    t.node.stop();
}

#[test]
fn aria2_finds_the_node_through_opentracker_over_http() {
    require("aria2c", "aria2");
    // aria2 reaches UDP trackers only through its DHT socket, and the DHT
    // stays off in tests: it uses the tracker's HTTP side.
    let mut t = tracked_node("a2", &[PIECE - 1, BIG], false);
    let payload = test_payload();
    let out = t.node.dir.path().join("aria2");
    std::fs::create_dir_all(&out).unwrap();
    for (info_hash, _id, size, title) in &t.index {
        let file = t.torrents.join(format!("{info_hash}.torrent"));
        let watcher = PortWatcher::start(&t.ns, SocketAddr::from((NODE_IP, 6881)));
        run_ok(t.ns.command("aria2c").args([
            "--dir",
            out.to_str().unwrap(),
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--bt-save-metadata=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            &format!("--interface={CLIENT_IP}"),
            "--listen-port=6890",
            "--bt-stop-timeout=120",
            file.to_str().unwrap(),
        ]));
        let path = out.join(title);
        assert_eq!(file_sha256(&path), expected_sha256(&payload, *size), "{title}");
        let s = check_one_completed(&t.node, &CLIENT_IP.to_string(), info_hash, *size, "aria2");
        // aria2 opens with MSE offering both methods; we pick plaintext.
        assert_eq!(s.transport, "tcp+mse-plain");
        assert_port_seen(&s, *size, &watcher.finish());
    }
    t.node.stop();
}

#[test]
fn status_shows_scrape_totals_from_opentracker_over_http_and_udp() {
    let sizes = [PIECE - 1, PIECE, PIECE + 1];
    let n = sizes.len() as u64;
    let mut s = tracker_setup("scr", &sizes);
    let (http, udp) = (s.tracker.url.clone(), s.tracker.udp_url.clone());
    // Two tiers in warnseed.toml, one per protocol, on the same opentracker.
    set_config(
        &s.node.data,
        "node",
        &format!("trackers = [[{http:?}], [{udp:?}]]"),
    );
    s.node
        .start_in(Some(&s.ns), SocketAddr::from((NODE_IP, 6881)), &[]);
    let v = wait_for_status(&s.node, "both trackers' scrapes", |v| {
        [&http, &udp]
            .iter()
            .all(|u| tracker_status(v, u)["scrape"]["at_ms"].is_i64())
    });
    for (tier, url) in [(1, &http), (2, &udp)] {
        let t = tracker_status(&v, url);
        assert_eq!(t["tier"], tier, "{v}");
        assert_eq!(t["state"], "ok", "{v}");
        assert_eq!(
            (t["announced"].as_u64(), t["failed"].as_u64()),
            (Some(n), Some(0)),
            "{v}"
        );
        assert_eq!(
            (t["tracked"].as_u64(), t["started"].as_u64()),
            (Some(n), Some(n)),
            "{v}"
        );
        let scrape = &t["scrape"];
        assert_eq!(scrape["supported"], true, "{v}");
        assert_eq!(scrape["decoys"].as_u64(), Some(n), "{v}");
        assert_eq!(scrape["listed"].as_u64(), Some(n), "{v}");
        assert!(scrape["seeders"].as_u64().unwrap() >= n, "{v}");
        assert_eq!(scrape["failed"].as_u64(), Some(0), "{v}");
    }
    // What opentracker itself says, by our own scrape.
    let seeders = s.tracker.seeders(&s.ns, &s.hashes);
    assert!(seeders.iter().all(|&c| c >= 1), "{seeders:?}");
    let text = warnseed(&["status", "--data", s.node.data_arg()]);
    assert!(
        text.contains(&format!(
            "tracker       {http}  ok  tier 1  announced {n} failed 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tracker       {udp}  ok  tier 2  announced {n} failed 0"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("scrape: {n} of {n} decoys listed, {n} seeders")),
        "{text}"
    );
    s.node.stop();
}

#[test]
fn a_dead_tracker_in_a_tier_gives_way_to_opentracker() {
    let sizes = [PIECE, PIECE + 1];
    let n = sizes.len() as u64;
    let mut s = tracker_setup("tier", &sizes);
    let (http, udp) = (s.tracker.url.clone(), s.tracker.udp_url.clone());
    // Ports nobody listens on in the namespace: refused at once (a TCP
    // reset, an ICMP port unreachable).
    let dead_udp = format!("udp://{NODE_IP}:6970/announce");
    let dead_http = format!("http://{NODE_IP}:6971/announce");
    set_config(
        &s.node.data,
        "node",
        &format!("trackers = [[{dead_udp:?}, {http:?}], [{dead_http:?}, {udp:?}]]"),
    );
    s.node
        .start_in(Some(&s.ns), SocketAddr::from((NODE_IP, 6881)), &[]);
    let v = wait_for_status(&s.node, "opentracker's scrapes in both tiers", |v| {
        [&http, &udp]
            .iter()
            .all(|u| tracker_status(v, u)["scrape"]["listed"].as_u64() == Some(n))
    });
    for (tier, live, dead) in [(1, &http, &dead_udp), (2, &udp, &dead_http)] {
        let t = tracker_status(&v, live);
        assert_eq!(
            (t["tier"].as_u64(), t["state"].as_str()),
            (Some(tier), Some("ok")),
            "{v}"
        );
        assert_eq!(t["tracked"].as_u64(), Some(n), "{v}");
        // Each tier is shuffled at start (BEP 12): the dead tracker was
        // tried first and failed, or was never needed.
        let d = tracker_status(&v, dead);
        assert_eq!(d["tier"].as_u64(), Some(tier), "{v}");
        match d["state"].as_str() {
            Some("failing") => {
                assert!(d["last_error"].as_str().unwrap_or("").contains("refused"), "{v}");
                assert_eq!(d["announced"].as_u64(), Some(0), "{v}");
            }
            Some("standby") => assert_eq!(d["rounds"].as_u64(), Some(0), "{v}"),
            other => panic!("dead tracker {dead} is {other:?}: {v}"),
        }
        assert_eq!(d["tracked"].as_u64(), Some(0), "{v}");
    }
    let seeders = s.tracker.seeders(&s.ns, &s.hashes);
    assert!(seeders.iter().all(|&c| c >= 1), "{seeders:?}");
    s.node.stop();
}

#[test]
fn a_title_imported_while_the_node_runs_reaches_opentracker() {
    let sizes = [PIECE, PIECE + 1, PIECE + 2];
    let rows = |n: usize| -> String {
        sizes[..n]
            .iter()
            .enumerate()
            .map(|(i, s)| format!("sample-title-{:06}.mkv,{s}\n", i + 1))
            .collect()
    };
    // opentracker whitelists all three decoys (the setup's node, never
    // started, only names them); the node under test starts with two.
    let s = tracker_setup("imp", &sizes);
    let mut node = Node::new(&rows(2), Some(&test_payload()));
    set_config(&node.data, "node", &format!("trackers = [{:?}]", s.tracker.url));
    node.start_in(Some(&s.ns), SocketAddr::from((NODE_IP, 6881)), &[]);
    let url = s.tracker.url.clone();
    wait_for_status(&node, "the tracker to take both decoys", |v| {
        tracker_status(v, &url)["started"].as_u64() == Some(2)
    });
    let csv = node.dir.path().join("more.csv");
    std::fs::write(&csv, format!("title,size_bytes\n{}", &rows(3)[rows(2).len()..])).unwrap();
    warnseed(&[
        "catalog",
        "import",
        csv.to_str().unwrap(),
        "--data",
        node.data_arg(),
    ]);
    // Loaded, released (the default quota has room) and announced on the
    // reconcile tick, without a restart and long before the next round.
    let v = wait_for_status(&node, "the imported decoy to reach the tracker", |v| {
        let t = tracker_status(v, &url);
        v["decoys_loaded"] == 3 && t["started"].as_u64() == Some(3) && t["tracked"].as_u64() == Some(3)
    });
    assert_eq!(tracker_status(&v, &url)["rounds"], 1, "{v}");
    assert_eq!(
        s.tracker.seeders(&s.ns, &s.hashes),
        vec![1, 1, 1],
        "opentracker lists all three"
    );
    node.stop();
}

#[test]
fn retired_decoys_leave_opentracker() {
    let sizes = [PIECE, PIECE + 1, PIECE + 2];
    let n = sizes.len() as u64;
    let mut s = tracker_setup("ret", &sizes);
    let (http, udp) = (s.tracker.url.clone(), s.tracker.udp_url.clone());
    set_config(&s.node.data, "node", &format!("trackers = [{http:?}, {udp:?}]"));
    // Every decoy is released at start and retired 30 s later.
    set_config(&s.node.data, "schedule", "lifetime = \"30s\"");
    s.node
        .start_in(Some(&s.ns), SocketAddr::from((NODE_IP, 6881)), &[]);
    wait_for_status(&s.node, "both trackers to take every decoy", |v| {
        [&http, &udp]
            .iter()
            .all(|u| tracker_status(v, u)["started"].as_u64() == Some(n))
    });
    // Retired: each tracker gets its stopped on the next reconcile tick,
    // not at its next full round half an hour on.
    let v = wait_for_status(&s.node, "both trackers to stop every decoy", |v| {
        [&http, &udp].iter().all(|u| {
            let t = tracker_status(v, u);
            t["stopped"].as_u64() == Some(n) && t["tracked"].as_u64() == Some(0)
        })
    });
    for url in [&http, &udp] {
        let t = tracker_status(&v, url);
        assert_eq!(
            (t["state"].as_str(), t["rounds"].as_u64()),
            (Some("ok"), Some(1)),
            "{v}"
        );
    }
    let seeders = s.tracker.seeders(&s.ns, &s.hashes);
    assert_eq!(seeders, vec![0; sizes.len()], "opentracker no longer lists them");
    s.node.stop();
}

#[test]
fn a_kill_9_mid_download_keeps_the_registration_and_the_chain() {
    require_libtorrent();
    let mut node = Node::new(
        &format!("sample-title-000001.mkv,{BIG}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &[]);
    let bind = Ipv4Addr::new(127, 0, 3, 30);
    let out = node.dir.path().join("dl");
    std::fs::create_dir_all(&out).unwrap();
    let torrent = torrents.join(format!("{}.torrent", index[0].0));
    // A slow download (16 MB/s: about 7 s for 100 MiB) to kill the node under.
    let script = repo_root().join("tests/clients/lt_download.py");
    let client = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .args([
            "--torrent",
            torrent.to_str().unwrap(),
            "--peer",
            &listen.to_string(),
        ])
        .args(["--bind", &bind.to_string(), "--out", out.to_str().unwrap()])
        .args([
            "--timeout",
            "180",
            "--rate-limit",
            "16000000",
            "--encryption",
            "disabled",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the session's open record", Duration::from_secs(30), || {
        node.open_records(&bind.to_string()) == 1
    });
    // No graceful stop: SIGKILL.
    let proc = node.proc.take().unwrap();
    proc.signal("-KILL");
    drop(proc);
    let verified = warnseed(&["ledger", "verify", "--data", node.data_arg()]);
    assert!(verified.starts_with("ledger ok: 1 records"), "{verified}");
    let summary = warnseed(&["report", "summary", "--data", node.data_arg(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        (v["sessions"].as_u64(), v["unterminated"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    // The node comes back on the same address; the client finishes there.
    node.start(listen, &[]);
    let result = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let path = Path::new(v["path"].as_str().unwrap());
    assert_eq!(
        file_sha256(path),
        expected_sha256(BUILTIN_WARNING.as_bytes(), BIG)
    );
    let sessions = node.wait_for_completed(&bind.to_string(), &index[0].0);
    assert!(sessions.iter().any(|s| s.completed));
    node.stop();
    let verified = warnseed(&["ledger", "verify", "--data", node.data_arg()]);
    assert!(verified.starts_with("ledger ok:"), "{verified}");
    let summary = warnseed(&["report", "summary", "--data", node.data_arg(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(
        v["unterminated"].as_u64(),
        Some(1),
        "the killed session stays unterminated: {v}"
    );
}
