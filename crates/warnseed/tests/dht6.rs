//! BEP 32: the IPv6 DHT node. libtorrent, joined only to libtorrent DHT
//! nodes on ::1, finds warnseed by the info hash alone over IPv6 and
//! downloads the decoy from warnseed's IPv6 listener.

mod common;

use common::*;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const BUILTIN_WARNING: &str = include_str!("../../payload/src/warning.txt");

fn free_port6() -> u16 {
    // Free for both TCP and UDP at the time of asking.
    loop {
        let tcp = std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

#[test]
fn libtorrent_finds_the_node_through_an_ipv6_dht_and_downloads_over_ipv6() {
    require_libtorrent();
    let size = 2 * 16 * 1024 + 9;
    let mut node = Node::new(
        &format!("sample-title-000006.mkv,{size}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let (info_hash, _, size, title) = Node::index(&torrents).remove(0);

    let (pa, pb) = (free_port6(), free_port6());
    let _lt_a = lt_dht_node(
        node.dir.path(),
        Ipv6Addr::LOCALHOST.into(),
        pa,
        &format!("[::1]:{pb}"),
    );
    let _lt_b = lt_dht_node(
        node.dir.path(),
        Ipv6Addr::LOCALHOST.into(),
        pb,
        &format!("[::1]:{pa}"),
    );
    let local_dht = format!("[::1]:{pa},[::1]:{pb}");

    // IPv4 DHT off (no address), IPv6 DHT on ::1, TCP on ::1.
    let listen = SocketAddr::from((Ipv6Addr::LOCALHOST, free_port6()));
    let dht_port = free_port6();
    set_config(
        &node.data,
        "node",
        &format!(
            "dht = true\ndht_listen = \"\"\ndht_listen6 = \"[::1]:{dht_port}\"\n\
             dht_bootstrap = [\"[::1]:{pa}\", \"[::1]:{pb}\"]\ndht_announce_interval_secs = 5"
        ),
    );
    node.start(listen, &[]);
    wait_until("the announce to the IPv6 DHT", Duration::from_secs(60), || {
        let log = node.log();
        log.contains("DHT announce round complete") && log.contains("stored=1")
    });

    let magnet = format!("magnet:?xt=urn:btih:{info_hash}");
    let out = node.dir.path().join("lt-dht6");
    let r = libtorrent_download_args(
        ("--magnet", &magnet),
        None,
        Ipv6Addr::LOCALHOST,
        &out,
        &["--dht-bootstrap", &local_dht],
    );
    let path = Path::new(r["path"].as_str().unwrap());
    assert_eq!(path.file_name().unwrap().to_str().unwrap(), title);
    assert_eq!(
        file_sha256(path),
        expected_sha256(BUILTIN_WARNING.as_bytes(), size)
    );
    let sessions = node.wait_for_completed("::1", &info_hash);
    assert!(
        sessions.iter().any(|s| s.completed && s.bytes_sent == size),
        "{sessions:?}"
    );
    node.stop();
    let saved = std::fs::read_to_string(node.data.join("dht-nodes6.txt")).unwrap();
    for n in [format!("[::1]:{pa}"), format!("[::1]:{pb}")] {
        assert!(saved.lines().any(|l| l == n), "{n} in {saved}");
    }
}
