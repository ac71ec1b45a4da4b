//! The campaign schedule end to end: the daily quota, releases that survive
//! restarts, and decoys that are refused before release and after
//! retirement while a real client downloads a released one.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const BUILTIN_WARNING: &str = include_str!("../../payload/src/warning.txt");

fn schedule_json(node: &Node) -> serde_json::Value {
    let out = warnseed(&["schedule", "status", "--json", "--data", node.data_arg()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn released_ids(node: &Node) -> Vec<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        node.data.join("catalog.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT title_id FROM releases ORDER BY title_id")
        .unwrap();
    let ids = stmt.query_map([], |r| r.get(0)).unwrap();
    ids.map(|r| r.unwrap()).collect()
}

/// Whether the node answers a BitTorrent handshake for `info_hash` (hex):
/// a served decoy gets our handshake back, any other is closed unanswered.
fn answers_handshake(addr: SocketAddr, info_hash: &str) -> bool {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut hs = vec![19u8];
    hs.extend_from_slice(b"BitTorrent protocol");
    hs.extend_from_slice(&[0; 8]);
    let ih: Vec<u8> = (0..20)
        .map(|i| u8::from_str_radix(&info_hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    hs.extend_from_slice(&ih);
    hs.extend_from_slice(b"-TS0001-schedtest000");
    s.write_all(&hs).unwrap();
    let mut reply = [0u8; 68];
    match s.read_exact(&mut reply) {
        Ok(()) => {
            assert_eq!(&reply[28..48], &ih[..], "handshake for another torrent");
            true
        }
        Err(e) => {
            // A refusal is a close (EOF or reset), never a timeout.
            assert_ne!(e.kind(), std::io::ErrorKind::WouldBlock, "no answer at all");
            false
        }
    }
}

/// libtorrent, bound to `client`, downloads the decoy `(info hash, title,
/// size)` from the node at `listen` with its exported `.torrent`; the
/// file arrives whole and the ledger has the completed session.
fn download_with_libtorrent(
    node: &Node,
    listen: SocketAddr,
    torrents: &std::path::Path,
    (info_hash, title, size): (&str, &str, u64),
    client: Ipv4Addr,
) {
    let out = node.dir.path().join(format!("lt-{client}"));
    let torrent = torrents.join(format!("{info_hash}.torrent"));
    libtorrent_download(
        ("--torrent", torrent.to_str().unwrap()),
        Some(listen),
        client,
        &out,
    );
    let sessions = node.wait_for_completed(&client.to_string(), info_hash);
    assert!(sessions.iter().any(|s| s.bytes_sent >= size));
    assert_eq!(std::fs::metadata(out.join(title)).unwrap().len(), size);
}

#[test]
fn the_daily_quota_is_released_once_and_survives_restarts() {
    let rows: String = (1..=5)
        .map(|i| format!("sample-title-{i:06}.mp4,{}\n", 100_000 + i))
        .collect();
    let mut node = Node::new(&rows, Some(BUILTIN_WARNING.as_bytes()));
    set_config(&node.data, "schedule", "daily_quota = 2");

    // Before the first run nothing is released; two are due now, the
    // rest on the following days.
    let before = schedule_json(&node);
    assert_eq!(
        (
            before["state"].as_str(),
            before["released_total"].as_u64(),
            before["unreleased"].as_u64()
        ),
        (Some("running"), Some(0), Some(5)),
        "{before}"
    );
    let next = before["next"].as_array().unwrap();
    let ids: Vec<i64> = next.iter().map(|n| n["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    let day = |n: &serde_json::Value| n["at"].as_str().unwrap()[..10].to_string();
    assert_eq!(day(&next[0]), day(&next[1]));
    assert_ne!(
        day(&next[1]),
        day(&next[2]),
        "the third waits for tomorrow's quota"
    );
    assert_eq!(day(&next[2]), day(&next[3]));

    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    node.start(listen, &["--no-dht"]);
    let out = node.stop();
    assert!(out.contains("decoys=5 active=2"), "{out}");
    assert_eq!(released_ids(&node), vec![1, 2]);

    // A restart the same day releases nothing more and skips nothing.
    node.start(listen, &["--no-dht"]);
    let out = node.stop();
    assert!(out.contains("decoys=5 active=2"), "{out}");
    assert_eq!(released_ids(&node), vec![1, 2]);
    let after = schedule_json(&node);
    assert_eq!(
        (
            after["released_today"].as_u64(),
            after["active"].as_u64(),
            after["unreleased"].as_u64()
        ),
        (Some(2), Some(2), Some(3)),
        "{after}"
    );
    assert_eq!(after["next"][0]["id"], 3);
    let text = warnseed(&["schedule", "status", "--data", node.data_arg()]);
    assert!(text.contains("released today  2"), "{text}");
    let summary = warnseed(&["report", "summary", "--data", node.data_arg()]);
    assert!(summary.contains("decoys released     2"), "{summary}");
}

#[test]
fn unreleased_and_retired_decoys_are_refused_while_released_ones_download() {
    let size = 2 * 16 * 1024 + 3;
    let rows: String = (1..=3)
        .map(|i| format!("sample-title-{i:06}.mkv,{size}\n"))
        .collect();
    let mut node = Node::new(&rows, Some(BUILTIN_WARNING.as_bytes()));
    set_config(&node.data, "schedule", "daily_quota = 2\nlifetime = \"1h\"");
    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let by_id = |id: i64| index.iter().find(|r| r.1 == id).unwrap().clone();
    let (released, _, _, title) = by_id(1);
    let (unreleased, ..) = by_id(3);

    let ip = Ipv4Addr::new(127, 0, 7, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    let first_start = Instant::now();
    node.start(listen, &["--no-dht"]);
    assert!(answers_handshake(listen, &released));
    assert!(
        !answers_handshake(listen, &unreleased),
        "an unreleased decoy is served"
    );

    // A real client downloads the released decoy and the ledger has it.
    download_with_libtorrent(
        &node,
        listen,
        &torrents,
        (&released, &title, size),
        Ipv4Addr::new(127, 0, 7, 2),
    );
    node.stop();

    // Shorten the lifetime so decoy 1 retires a few seconds into the next
    // run (or at its start, on a slow machine): either way it is refused
    // from then on, and the unreleased one still waits for tomorrow.
    let lifetime = first_start.elapsed().as_secs() + 5;
    set_config(
        &node.data,
        "schedule",
        &format!("daily_quota = 2\nlifetime = \"{lifetime}s\""),
    );
    node.start(listen, &["--no-dht"]);
    wait_until("decoy 1 and 2 to retire", Duration::from_secs(60), || {
        schedule_json(&node)["retired"] == 2
    });
    assert!(!answers_handshake(listen, &released), "a retired decoy is served");
    assert!(!answers_handshake(listen, &unreleased));
    let status = warnseed(&["status", "--json", "--data", node.data_arg()]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    wait_until(
        "status.json to show no active decoy",
        Duration::from_secs(30),
        || {
            let status = warnseed(&["status", "--json", "--data", node.data_arg()]);
            serde_json::from_str::<serde_json::Value>(&status).unwrap()["decoys_active"] == 0
        },
    );
    assert_eq!(v["decoys_loaded"], 3, "{v}");
    node.stop();
    assert_eq!(released_ids(&node), vec![1, 2]);
}

#[test]
fn titles_imported_while_the_node_runs_are_released_and_served_without_a_restart() {
    let size = 2 * 16 * 1024 + 3;
    let row = |i: u32| format!("sample-title-{i:06}.mkv,{size}\n");
    let mut node = Node::new(
        &(1..=2).map(row).collect::<String>(),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    set_config(&node.data, "schedule", "daily_quota = 3");
    let ip = Ipv4Addr::new(127, 0, 7, 11);
    let listen = SocketAddr::from((ip, free_port(ip)));
    node.start(listen, &["--no-dht"]);
    assert_eq!(schedule_json(&node)["active"], 2);

    // Two more titles while it runs: today's quota has room for one.
    let csv = node.dir.path().join("more.csv");
    std::fs::write(
        &csv,
        format!("title,size_bytes\n{}", (3..=4).map(row).collect::<String>()),
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args([
            "catalog",
            "import",
            csv.to_str().unwrap(),
            "--data",
            node.data_arg(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("loads the new titles within a few seconds"),
        "{said}"
    );
    let node_status = || {
        let out = warnseed(&["status", "--json", "--data", node.data_arg()]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    wait_until(
        "the running node to load the imported titles and release one",
        Duration::from_secs(60),
        || {
            let s = node_status();
            s["decoys_loaded"] == 4 && s["decoys_active"] == 3
        },
    );
    assert_eq!(released_ids(&node), vec![1, 2, 3]);
    assert!(node.log().contains("imported titles loaded"), "{}", node.log());

    let torrents = node.export_torrents(&[]);
    let index = Node::index(&torrents);
    let by_id = |id: i64| index.iter().find(|r| r.1 == id).unwrap().clone();
    let (imported, _, _, title) = by_id(3);
    let (waiting, ..) = by_id(4);
    let (earlier, ..) = by_id(1);
    assert!(
        answers_handshake(listen, &imported),
        "the imported, released decoy is not served"
    );
    assert!(
        !answers_handshake(listen, &waiting),
        "an imported, unreleased decoy is served"
    );
    assert!(
        answers_handshake(listen, &earlier),
        "a decoy of the first table is no longer served"
    );

    // A real client downloads the imported decoy from the running node.
    download_with_libtorrent(
        &node,
        listen,
        &torrents,
        (&imported, &title, size),
        Ipv4Addr::new(127, 0, 7, 12),
    );
    node.stop();
    assert_eq!(released_ids(&node), vec![1, 2, 3]);
}
