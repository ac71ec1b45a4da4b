//! Forwarding ledgers into the machine's PostgreSQL (each test in a schema
//! of its own): reports equal SQLite's, two nodes share one schema,
//! retries neither duplicate nor double-count.

mod common;

use common::*;
use warnseed_fleet::{Forwarder, ForwarderConfig, ForwarderStatus, PgConfig, Spool};
use warnseed_ledger::report::day_of;
use warnseed_ledger::LedgerStore;

fn forward_all(
    pg: &PgConfig,
    ledger: &std::path::Path,
    secret: Option<&[u8]>,
    batch: usize,
) -> ForwarderStatus {
    let mut config = ForwarderConfig::new(pg.clone(), ledger.to_path_buf());
    config.ip_key_secret = secret.map(<[u8]>::to_vec);
    config.batch_size = batch;
    let mut fwd = Forwarder::new(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fwd.forward_available()).unwrap()
}

const DAY: i64 = 86_400_000;

#[test]
fn reports_from_postgres_equal_reports_from_sqlite() {
    let schema = TestSchema::new("reports");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut local = ledger(&path);
    // 12 days, 300 addresses: repeats, several countries and kommuner.
    let records = Sessions::new(1, START_MS, 12 * DAY / 2_000, 300).records(2_000);
    append(&mut local, &records, 700);
    let status = forward_all(&schema.config, &path, None, 1_000);
    assert_eq!((status.forwarded_seq, status.lag), (4_000, 0));
    assert_eq!(status.records_forwarded, 4_000);
    assert_eq!(status.forwarded_seal, local.seals().unwrap().len() as i64);

    let mut pg = schema.store();
    let node = local.node_id().unwrap();
    assert_eq!(pg_counts(&mut pg, &node), (4_000, 4_000, 4_000));
    let repeats =
        warnseed_ledger::report::campaign_summary(&mut local, day_of(START_MS), day_of(START_MS) + 12, 357)
            .unwrap()
            .repeat_ips;
    assert!(repeats > 0, "the data has repeat downloaders");
    assert_same_reports(&mut local, &mut pg, day_of(START_MS), day_of(START_MS) + 11);

    // A store written before repeat downloaders were kept per period gets
    // them from the per-day rows, once, when a node next connects.
    let kept = |pg: &mut warnseed_fleet::PgStore| -> i64 {
        pg.run(async |c| {
            c.raw()
                .query_one("SELECT count(*) FROM rollup_uniques WHERE dim = 'repeat'", &[])
                .await
                .unwrap()
                .get(0)
        })
    };
    let before = kept(&mut pg);
    assert!(before > 0);
    pg.run(async |c| {
        c.raw()
            .batch_execute(
                "DELETE FROM rollup_uniques WHERE dim = 'repeat'; DELETE FROM fleet_migrations WHERE name = 'repeat_periods';",
            )
            .await
            .unwrap()
    });
    drop(pg);
    let mut pg = schema.store();
    assert_eq!(kept(&mut pg), before, "backfilled the rows the forwarding wrote");
    assert_same_reports(&mut local, &mut pg, day_of(START_MS), day_of(START_MS) + 11);

    // Geolocation and seals arrived with the records.
    let (geo, seals): (i64, i64) = pg.run(async |c| {
        let r = c
            .raw()
            .query_one(
                "SELECT (SELECT count(*) FROM session_geo WHERE node_id = $1),
                        (SELECT count(*) FROM seals WHERE node_id = $1)",
                &[&node],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    });
    assert!(geo > 2_000 && geo < 4_000, "records with a place: {geo}");
    assert_eq!(seals, local.seals().unwrap().len() as i64);
}

#[test]
fn two_nodes_forward_into_one_schema_and_count_an_address_once() {
    let schema = TestSchema::new("two");
    let dir = tempfile::tempdir().unwrap();
    let secret = b"fleet-shared-secret-for-tests-0123456789";
    let (pa, pb, pc) = (
        dir.path().join("a.sqlite"),
        dir.path().join("b.sqlite"),
        dir.path().join("both.sqlite"),
    );
    let (mut a, mut b, mut both) = (ledger(&pa), ledger(&pb), ledger(&pc));
    assert_ne!(a.node_id().unwrap(), b.node_id().unwrap());
    // The same address pool, on different days: the fleet's distinct count
    // is smaller than the sum of the nodes'.
    let ra = Sessions::new(2, START_MS, 5 * DAY / 1_500, 200).records(1_500);
    let rb = Sessions::new(3, START_MS + 5 * DAY, 5 * DAY / 1_500, 200).records(1_500);
    append(&mut a, &ra, 1_000);
    append(&mut b, &rb, 1_000);
    // One ledger with both nodes' records, in the order they are forwarded.
    both.set_ip_key_secret(secret);
    append(&mut both, &ra, 1_000);
    append(&mut both, &rb, 1_000);

    forward_all(&schema.config, &pa, Some(secret), 800);
    forward_all(&schema.config, &pb, Some(secret), 800);

    let mut pg = schema.store();
    assert_eq!(pg_counts(&mut pg, &a.node_id().unwrap()), (3_000, 3_000, 3_000));
    assert_eq!(pg_counts(&mut pg, &b.node_id().unwrap()), (3_000, 3_000, 3_000));
    let nodes = pg.nodes().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|(_, seq, _)| *seq == 3_000));

    let (from, to) = (day_of(START_MS), day_of(START_MS) + 10);
    let fleet = warnseed_ledger::report::campaign_summary(&mut pg, from, to, 357).unwrap();
    let one = warnseed_ledger::report::campaign_summary(&mut a, from, to, 357).unwrap();
    let other = warnseed_ledger::report::campaign_summary(&mut b, from, to, 357).unwrap();
    assert_eq!(fleet.files_delivered, one.files_delivered + other.files_delivered);
    assert!(
        fleet.unique_ips < one.unique_ips + other.unique_ips,
        "{} distinct addresses in the fleet, {} + {} per node",
        fleet.unique_ips,
        one.unique_ips,
        other.unique_ips
    );
    assert_same_reports(&mut both, &mut pg, from, to);
}

#[test]
fn a_retried_batch_is_neither_duplicated_nor_double_counted() {
    let schema = TestSchema::new("retry");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut local = ledger(&path);
    let records = Sessions::new(4, START_MS, 3 * DAY / 1_500, 150).records(1_500);
    append(&mut local, &records, 500);
    let node = local.node_id().unwrap();
    let mut spool = Spool::open(&path, None).unwrap();
    let mut pg = schema.store();

    let first = spool.read(0, 1_000, 0).unwrap();
    let once = pg.forward(&node, &first).unwrap();
    assert_eq!((once.inserted, once.skipped), (1_000, 0));
    // The commit went through but its acknowledgement was lost: the same
    // batch comes again.
    let again = pg.forward(&node, &first).unwrap();
    assert_eq!((again.inserted, again.skipped, again.seals), (0, 1_000, 0));
    // A batch overlapping what is there inserts only what is new.
    let overlap = spool.read(500, 1_000, 0).unwrap();
    let o = pg.forward(&node, &overlap).unwrap();
    assert_eq!((o.inserted, o.skipped), (500, 500));
    assert_eq!(pg_counts(&mut pg, &node), (1_500, 1_500, 1_500));

    // A forwarder that died after a commit, before it noted it, resumes
    // from PostgreSQL's newest record of this node.
    assert_eq!(pg.head(&node).unwrap().seq, 1_500);
    let status = forward_all(&schema.config, &path, None, 700);
    assert_eq!(status.records_forwarded, 1_500, "only the rest");
    assert_eq!(pg_counts(&mut pg, &node), (3_000, 3_000, 3_000));
    // Forwarding again finds nothing to do.
    let status = forward_all(&schema.config, &path, None, 700);
    assert_eq!((status.records_forwarded, status.forwarded_seq), (0, 3_000));
    let (from, to) = (day_of(START_MS), day_of(START_MS) + 3);
    assert_same_reports(&mut local, &mut pg, from, to);
}

#[test]
fn a_second_ledger_under_the_same_node_id_is_refused() {
    let schema = TestSchema::new("diverged");
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.sqlite"), dir.path().join("b.sqlite"));
    {
        let mut a = ledger(&pa);
        append(&mut a, &Sessions::new(5, START_MS, 60_000, 50).records(100), 100);
    }
    // A copy of the ledger (same node id) that then records other sessions.
    std::fs::copy(&pa, &pb).unwrap();
    let mut a = ledger(&pa);
    let mut b = ledger(&pb);
    append(
        &mut a,
        &Sessions::new(6, START_MS + DAY, 60_000, 50).records(100),
        100,
    );
    append(
        &mut b,
        &Sessions::new(7, START_MS + DAY, 60_000, 50).records(100),
        100,
    );
    assert_eq!(a.node_id().unwrap(), b.node_id().unwrap());
    forward_all(&schema.config, &pa, None, 1_000);

    let mut config = ForwarderConfig::new(schema.config.clone(), pb.clone());
    config.batch_size = 1_000;
    let mut fwd = Forwarder::new(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let e = rt.block_on(fwd.forward_available()).unwrap_err();
    assert!(e.is_permanent(), "{e}");
    assert!(e.to_string().contains("differs from the local ledger"), "{e}");
    // Batch by batch, the overlap is caught too.
    let mut spool = Spool::open(&pb, None).unwrap();
    let batch = spool.read(150, 100, 0).unwrap();
    let mut pg = schema.store();
    let e = pg.forward(&a.node_id().unwrap(), &batch).unwrap_err();
    assert!(e.to_string().contains("record 201"), "{e}");
    assert_eq!(pg_counts(&mut pg, &a.node_id().unwrap()), (400, 400, 400));
}

#[test]
fn address_keys_are_the_ledgers_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut local = LedgerStore::open(&path).unwrap();
    append(&mut local, &Sessions::new(8, START_MS, 1_000, 10).records(5), 10);
    let mut spool = Spool::open(&path, None).unwrap();
    let batch = spool.read(0, 100, 0).unwrap();
    for (ip, key) in batch.remote_ip.iter().zip(&batch.ip_key) {
        assert_eq!(key.as_slice(), local.ip_key(ip).as_slice());
    }
    let secret = b"another-secret-of-the-fleet-0000";
    local.set_ip_key_secret(secret);
    let mut spool = Spool::open(&path, Some(secret)).unwrap();
    let batch = spool.read(0, 100, 0).unwrap();
    assert_eq!(
        batch.ip_key[0].as_slice(),
        local.ip_key(&batch.remote_ip[0]).as_slice()
    );
}

#[test]
fn array_statements_agree_with_the_portable_ones() {
    let bulk = TestSchema::new("bulk");
    let portable = TestSchema::new("portable");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let mut local = ledger(&path);
    append(
        &mut local,
        &Sessions::new(10, START_MS, 4 * DAY / 600, 80).records(600),
        400,
    );
    let node = local.node_id().unwrap();
    let mut spool = Spool::open(&path, None).unwrap();
    let (mut a, mut b) = (bulk.store(), portable.store());
    let mut after = 0;
    loop {
        let batch = spool.read(after, 250, 0).unwrap();
        let Some(last) = batch.last_seq() else { break };
        after = last;
        a.forward(&node, &batch).unwrap();
        b.run(async |c| {
            c.forward_without_aggregates(&node, &batch).await?;
            c.apply_portable_statements(&batch).await
        })
        .unwrap();
    }
    let (from, to) = (day_of(START_MS), day_of(START_MS) + 4);
    assert_same_reports(&mut a, &mut b, from, to);
    assert_same_reports(&mut local, &mut b, from, to);
}

#[test]
fn two_nodes_forwarding_at_once_agree_with_one_ledger_of_both() {
    let schema = TestSchema::new("concurrent");
    let dir = tempfile::tempdir().unwrap();
    let secret: &[u8] = b"fleet-shared-secret-for-tests-abcdef";
    let (pa, pb, pc) = (
        dir.path().join("a.sqlite"),
        dir.path().join("b.sqlite"),
        dir.path().join("both.sqlite"),
    );
    let (mut a, mut b, mut both) = (ledger(&pa), ledger(&pb), ledger(&pc));
    // The same days and decoys (the same aggregate rows), other addresses.
    let ra = Sessions::new(11, START_MS, 3 * DAY / 1_200, 150).records(1_200);
    let mut other = Sessions::new(12, START_MS, 3 * DAY / 1_200, 150);
    other.ip_base = 100;
    let rb = other.records(1_200);
    append(&mut a, &ra, 600);
    append(&mut b, &rb, 600);
    both.set_ip_key_secret(secret);
    append(&mut both, &ra, 600);
    append(&mut both, &rb, 600);

    // Small batches, so the two nodes' transactions interleave.
    std::thread::scope(|s| {
        for path in [&pa, &pb] {
            let config = schema.config.clone();
            s.spawn(move || forward_all(&config, path, Some(secret), 100));
        }
    });
    let mut pg = schema.store();
    assert_eq!(pg_counts(&mut pg, &a.node_id().unwrap()), (2_400, 2_400, 2_400));
    assert_eq!(pg_counts(&mut pg, &b.node_id().unwrap()), (2_400, 2_400, 2_400));
    assert_same_reports(&mut both, &mut pg, day_of(START_MS), day_of(START_MS) + 3);
}
