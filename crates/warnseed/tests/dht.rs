//! The DHT node against real libtorrent DHT nodes on loopback: no tracker,
//! no peer address, no public bootstrap node. libtorrent finds warnseed by
//! the info hash alone, through a local DHT, and downloads the decoy.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const BUILTIN_WARNING: &str = include_str!("../../payload/src/warning.txt");

#[test]
fn libtorrent_finds_the_node_through_a_local_dht_and_downloads_by_info_hash_alone() {
    require_libtorrent();
    let size = 3 * 16 * 1024 + 5;
    let mut node = Node::new(
        &format!("sample-title-000001.mkv,{size}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let (info_hash, _, size, title) = Node::index(&torrents).remove(0);

    // Two libtorrent DHT nodes, bootstrapped into each other.
    let (a, b) = (Ipv4Addr::new(127, 0, 4, 21), Ipv4Addr::new(127, 0, 4, 22));
    let (pa, pb) = (free_port(a), free_port(b));
    let _lt_a = lt_dht_node(node.dir.path(), a.into(), pa, &format!("{b}:{pb}"));
    let _lt_b = lt_dht_node(node.dir.path(), b.into(), pb, &format!("{a}:{pa}"));
    let local_dht = format!("{a}:{pa},{b}:{pb}");

    // Our node joins through them and announces its one decoy at once.
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    let dht_port = free_port(ip);
    set_config(
        &node.data,
        "node",
        &format!(
            "dht = true\ndht_listen = \"{ip}:{dht_port}\"\ndht_listen6 = \"\"\ndht_bootstrap = [\"{a}:{pa}\", \"{b}:{pb}\"]\n\
             dht_announce_interval_secs = 5"
        ),
    );
    node.start(listen, &[]);
    wait_until("the announce to the local DHT", Duration::from_secs(60), || {
        let log = node.log();
        log.contains("DHT announce round complete") && log.contains("stored=1")
    });

    // libtorrent: a magnet link with the info hash only, the DHT joined
    // through the libtorrent nodes (never told about warnseed).
    let magnet = format!("magnet:?xt=urn:btih:{info_hash}");
    let bind = Ipv4Addr::new(127, 0, 4, 31);
    let out = node.dir.path().join("lt-dht");
    let r = libtorrent_download_args(
        ("--magnet", &magnet),
        None,
        bind,
        &out,
        &["--dht-bootstrap", &local_dht],
    );
    let path = Path::new(r["path"].as_str().unwrap());
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), title);
    assert_eq!(
        file_sha256(path),
        expected_sha256(BUILTIN_WARNING.as_bytes(), size)
    );
    let sessions = node.wait_for_completed(&bind.to_string(), &info_hash);
    assert!(
        sessions.iter().any(|s| s.completed && s.bytes_sent == size),
        "{sessions:?}"
    );
    // The downloader's own DHT lookup reached our node too (three nodes in
    // all): its get_peers for the decoy is the interest signal.
    wait_until(
        "the downloader's get_peers at our node",
        Duration::from_secs(10),
        || {
            node.log().lines().any(|l| {
                l.contains("DHT interest")
                    && l.contains(&format!("from={bind}:"))
                    && l.contains("query=\"get_peers\"")
                    && l.contains(&format!("info_hash={info_hash}"))
            })
        },
    );
    node.stop();
    // The interest reached the ledger (written at stop), beside the chain.
    let summary: serde_json::Value = serde_json::from_str(&warnseed(&[
        "report",
        "summary",
        "--data",
        node.data_arg(),
        "--json",
    ]))
    .unwrap();
    assert!(
        summary["dht_interest"]["queries"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    assert_eq!(summary["dht_interest"]["decoys"], 1, "{summary}");
    let rows: i64 = rusqlite::Connection::open(node.data.join("ledger.sqlite"))
        .unwrap()
        .query_row(
            "SELECT count(*) FROM dht_interest WHERE remote_ip = ?1 AND query = 'get_peers' AND hex(info_hash) = upper(?2)",
            rusqlite::params![bind.to_string(), info_hash],
            |r| r.get(0),
        )
        .unwrap();
    assert!(rows >= 1, "the downloader's get_peers is in the ledger");
    assert!(warnseed(&["ledger", "verify", "--data", node.data_arg()]).starts_with("ledger ok"));
    // The routing table is kept for the next start: both libtorrent nodes.
    let saved = std::fs::read_to_string(node.data.join("dht-nodes.txt")).unwrap();
    for n in [format!("{a}:{pa}"), format!("{b}:{pb}")] {
        assert!(saved.lines().any(|l| l == n), "{n} in {saved}");
    }
    // With no bootstrap node configured, a restart rejoins through them.
    set_config(&node.data, "node", "dht_bootstrap = []");
    node.start(listen, &[]);
    wait_until("the announce after a restart", Duration::from_secs(60), || {
        let log = node.log();
        log.contains("DHT announce round complete") && log.contains("stored=1")
    });
    node.stop();
}
