//! Fleet mode from the command line, against the machine's PostgreSQL (a
//! schema of the test's own, dropped at the end): a running node forwards
//! its ledger, `fleet status` shows it, a graceful stop hands over the
//! last records, `fleet push` forwards what a stopped node left.

mod common;

use common::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use warnseed_ledger::{LedgerStore, RecordKind, SessionRecord, Transport};

fn conninfo() -> String {
    std::env::var("WARNSEED_TEST_PG")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Drops the test's schema however the test ends.
struct Schema(warnseed_fleet::PgConfig);

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut s) = warnseed_fleet::PgStore::connect(&self.0) {
            let _ = s.drop_schema();
        }
    }
}

fn sessions(from: u16, n: u16) -> Vec<SessionRecord> {
    (from..from + n)
        .flat_map(|i| {
            let open = SessionRecord {
                kind: RecordKind::Open,
                session_key: i64::from(i),
                started_at_ms: 1_795_000_000_000 + i64::from(i) * 1_000,
                ended_at_ms: 1_795_000_000_000 + i64::from(i) * 1_000,
                network: "bittorrent",
                decoy_id: i64::from(i % 5) + 1,
                info_hash: [1; 20],
                remote_ip: format!("198.51.100.{}", i % 200 + 1).parse().unwrap(),
                remote_port: 6881,
                peer_id: None,
                client_name: Some("libtorrent 2.0.8.0".into()),
                client_version: None,
                transport: Transport::Tcp,
                bytes_sent: 0,
                pieces_sent: 0,
                piece_count: 1,
                peer_pieces_initial: Some(0),
                peer_pieces_final: 0,
                completed: false,
                close_reason: String::new(),
            };
            let close = SessionRecord {
                kind: RecordKind::Close,
                ended_at_ms: open.started_at_ms + 500,
                bytes_sent: 1_000,
                pieces_sent: 1,
                peer_pieces_final: 1,
                completed: true,
                close_reason: "peer_complete".into(),
                ..open.clone()
            };
            [open, close]
        })
        .collect()
}

fn status_json(node: &Node) -> serde_json::Value {
    serde_json::from_str(&warnseed(&[
        "fleet",
        "status",
        "--json",
        "--data",
        node.data_arg(),
    ]))
    .unwrap()
}

#[test]
fn a_node_in_fleet_mode_forwards_its_ledger_to_postgres() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema_name = format!("ws_test_cli_{}_{nanos}", std::process::id());
    let schema = Schema(warnseed_fleet::PgConfig::new(conninfo(), schema_name.clone()).unwrap());
    let mut node = Node::new("sample-title-000001.mp4,1000000\n", None);

    // Off by default.
    let off = warnseed(&["fleet", "status", "--data", node.data_arg()]);
    assert!(off.contains("fleet mode        off"), "{off}");

    // Records from before fleet mode was turned on, and a shared secret.
    {
        let mut ledger = LedgerStore::open(&node.data.join("ledger.sqlite")).unwrap();
        ledger.append(&sessions(0, 300)).unwrap();
    }
    std::fs::write(
        node.data.join("fleet.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    set_config(
        &node.data,
        "fleet",
        &format!(
            "postgres = \"{}\"\nschema = \"{schema_name}\"\nip_key_secret_file = \"fleet.secret\"",
            conninfo()
        ),
    );
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST)));
    node.start(listen, &[]);
    wait_until(
        "the running node to forward its ledger",
        Duration::from_secs(60),
        || status_json(&node)["postgres"]["forwarded_seq"] == 600,
    );
    let s = status_json(&node);
    assert_eq!(s["local_head"], 600, "{s}");
    assert_eq!(s["postgres"]["lag"], 0, "{s}");
    // 127.0.0.1 with no sslmode: plain text, and the status says so.
    assert_eq!(s["postgres"]["sslmode"], "disable", "{s}");
    assert_eq!(s["postgres"]["tls_version"], serde_json::Value::Null, "{s}");
    assert!(
        ["caught_up", "forwarding"].contains(&s["forwarder"]["state"].as_str().unwrap_or("")),
        "{s}"
    );
    let text = warnseed(&["fleet", "status", "--data", node.data_arg()]);
    assert!(text.contains("local ledger      600 records"), "{text}");
    assert!(
        text.contains(&format!(
            "in schema {schema_name} (lag 0); plain text (sslmode disable)"
        )),
        "{text}"
    );
    let out = node.stop();
    assert!(out.contains("stopped:"), "{out}");
    let s = status_json(&node);
    assert_eq!(s["forwarder"]["state"], "stopped", "{s}");
    // The node sealed its records at the stop, and the seal went along.
    assert!(s["postgres"]["forwarded_seal"].as_i64().unwrap() >= 1, "{s}");

    // Records a stopped node left are forwarded by `fleet push`.
    {
        let mut ledger = LedgerStore::open(&node.data.join("ledger.sqlite")).unwrap();
        ledger.append(&sessions(300, 100)).unwrap();
    }
    let pushed = warnseed(&["fleet", "push", "--data", node.data_arg()]);
    assert!(pushed.contains("forwarded 200 records"), "{pushed}");
    assert!(pushed.contains("through record 800 of 800"), "{pushed}");
    let again = warnseed(&["fleet", "push", "--data", node.data_arg()]);
    assert!(again.contains("forwarded 0 records"), "{again}");

    // Reports read PostgreSQL through the same interface as SQLite.
    let dir = warnseed::config::DataDir::open(&node.data).unwrap();
    let mut pg = warnseed::config::open_report_source(&dir, "postgres".parse().unwrap()).unwrap();
    let mut local = warnseed::config::open_report_source(&dir, "sqlite".parse().unwrap()).unwrap();
    let day = warnseed_ledger::report::day_of(1_795_000_000_000);
    let a = warnseed_ledger::report::campaign_summary(local.as_mut(), day, day + 1, 357).unwrap();
    let b = warnseed_ledger::report::campaign_summary(pg.as_mut(), day, day + 1, 357).unwrap();
    assert_eq!(a, b);
    assert_eq!(b.files_delivered, 400);
    assert_eq!(b.unique_ips, 200);
    // And so does the report command.
    let report = |store: &str| {
        warnseed(&[
            "report",
            "countries",
            "--by",
            "day",
            "--from",
            "2026-01-01",
            "--format",
            "json",
            "--store",
            store,
            "--data",
            node.data_arg(),
        ])
    };
    let from_pg = report("postgres");
    assert_eq!(from_pg, report("sqlite"));
    assert!(from_pg.contains("\"files_delivered\": 400"), "{from_pg}");

    // Retention reaches the fleet's copies: no raw address is left there.
    let raw = |fleet: &mut warnseed_fleet::PgStore| {
        fleet.run(async |c| {
            c.raw()
                // The aggregates' key of an address is an HMAC under the
                // fleet's secret: left in place, it could be tested against
                // every IPv4 address, so it goes with the address.
                .query_one(
                    "SELECT count(*) FROM sessions WHERE ip_salt IS NOT NULL OR length(ip_key) > 0",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        })
    };
    let mut fleet = warnseed_fleet::PgStore::connect(&schema.0).unwrap();
    assert_eq!(raw(&mut fleet), 800);
    let retained = warnseed(&[
        "ledger",
        "retain",
        "--older-than",
        "1d",
        "--mode",
        "pseudonym",
        "--data",
        node.data_arg(),
    ]);
    assert!(retained.contains("fleet store: 800 records"), "{retained}");
    assert_eq!(raw(&mut fleet), 0);
    let pseudonyms: i64 = fleet.run(async |c| {
        c.raw()
            .query_one(
                "SELECT count(DISTINCT remote_ip) FROM sessions WHERE remote_ip LIKE 'pseudonym:%'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(pseudonyms, 200, "one pseudonym per address, as on the node");
    drop(fleet);
    drop(schema);
}
