use crate::{LedgerError, LedgerStore, SessionRecord};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Longest a record waits before its batch commits.
    pub max_delay: Duration,
    pub max_batch: usize,
    /// Records queued beyond this make `record` block the caller briefly
    /// rather than grow memory without bound.
    pub queue: usize,
    /// Records are sealed this long after they commit, at the latest (and
    /// when the writer opens and closes).
    pub seal_every: Duration,
    /// Writes a session whose open and close records arrive in the same
    /// batch as one `session` record ([`crate::coalesce_short_sessions`]).
    /// On for a node; off for replays that feed records faster than real
    /// time, where one batch spans minutes of sessions.
    pub coalesce_short_sessions: bool,
    /// Under load (batches of at least `defer_rollups_from` records), the
    /// aggregates of several commits are added together, at the latest
    /// this long after the first of them committed or once
    /// `rollup_batch` records wait ([`LedgerStore::append_deferring`]).
    /// Records are committed and chained as before; only the report
    /// tables lag, and a report opened meanwhile catches them up itself.
    pub rollup_delay: Duration,
    pub rollup_batch: usize,
    pub defer_rollups_from: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_delay: Duration::from_millis(100),
            // At 500,000 records/s a 100 ms window holds 50,000 records; a
            // smaller cap would commit more often than the window asks, and
            // every commit rewrites the index and aggregate pages it touched.
            max_batch: 50_000,
            queue: 100_000,
            seal_every: Duration::from_secs(60),
            coalesce_short_sessions: true,
            // A second of commits: an aggregate page that several of them
            // touch is written once (+14-18 % in the ingest benchmark;
            // five seconds made the writer burst and raised the metadata
            // service's p99, BENCHMARKS.md section 5).
            rollup_delay: Duration::from_secs(1),
            rollup_batch: 200_000,
            // 100 records a 100 ms window: 1,000 sessions a second. Below
            // that a commit touches few pages and the aggregates go with it.
            defer_rollups_from: 100,
        }
    }
}

/// Longest the writer sleeps between two drains of its queue while a batch
/// gathers: at 500,000 records/s, 10 ms is 5,000 records, a twentieth of
/// the default queue.
const GATHER_NAP: Duration = Duration::from_millis(10);

/// Errors that pass: a busy or locked database, a full disk, an I/O error.
fn transient(e: &LedgerError) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e,
        LedgerError::Db(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | CannotOpen)
    )
}

/// Adds deferred aggregates, retrying as a batch does (they are derived
/// data, so giving up would only leave them to the next open).
fn roll_up(store: &mut LedgerStore, unrolled: &mut crate::UnrolledRecords) -> Result<(), LedgerError> {
    let mut attempt = 0u32;
    while !unrolled.is_empty() {
        match store.roll_up(unrolled) {
            Ok(()) => {}
            Err(e) if transient(&e) => {
                attempt += 1;
                tracing::error!(error = %e, records = unrolled.len(), attempt, "ledger aggregates failed; retrying");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Batches records into SQLite on a dedicated thread.
pub struct LedgerWriter {
    tx: Option<SyncSender<SessionRecord>>,
    thread: Option<JoinHandle<Result<u64, LedgerError>>>,
}

/// Seals what is unsealed; a failure is logged and retried at the next
/// seal (sealing is a summary: the records are already committed).
fn seal(store: &mut LedgerStore) {
    let clock = crate::clock::read();
    match store.seal(&clock, crate::unix_ms()) {
        Ok(Some(s)) => tracing::info!(
            seal = s.id,
            records = s.len(),
            last_record = s.last_seq,
            seal_hash = %s.seal_hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            clock = %clock.describe(),
            "ledger sealed"
        ),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "cannot seal the ledger"),
    }
}

impl LedgerWriter {
    pub fn open(path: &Path, config: WriterConfig) -> Result<Self, LedgerError> {
        Self::open_with(path, config, None)
    }

    /// As [`LedgerWriter::open`], looking up every record's address with
    /// `enricher` as it is written.
    pub fn open_with(
        path: &Path,
        config: WriterConfig,
        enricher: Option<Box<dyn crate::Enricher>>,
    ) -> Result<Self, LedgerError> {
        let mut store = LedgerStore::open(path)?;
        if let Some(e) = enricher {
            store.set_enricher(e);
        }
        // Records left unsealed by a node that died are sealed now.
        seal(&mut store);
        let (tx, rx) = mpsc::sync_channel::<SessionRecord>(config.queue);
        let thread = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || -> Result<u64, LedgerError> {
                let mut written = 0u64;
                let mut batch = Vec::with_capacity(1024);
                let mut unrolled = crate::UnrolledRecords::default();
                // When the oldest unsealed commit must be sealed.
                let mut seal_due: Option<Instant> = None;
                loop {
                    // Wait for the first record (or the seal or deferred
                    // aggregates that are due: those come however quiet it
                    // is), then gather until the window closes.
                    let rollup_due = unrolled.since().map(|t| t + config.rollup_delay);
                    let first = match seal_due.into_iter().chain(rollup_due).min() {
                        None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                        Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
                    };
                    match first {
                        Ok(r) => batch.push(r),
                        Err(RecvTimeoutError::Timeout) => {
                            let now = Instant::now();
                            if rollup_due.is_some_and(|due| now >= due) {
                                roll_up(&mut store, &mut unrolled)?;
                            }
                            if seal_due.is_some_and(|due| now >= due) {
                                seal(&mut store);
                                seal_due = None;
                            }
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            roll_up(&mut store, &mut unrolled)?;
                            seal(&mut store);
                            return Ok(written);
                        }
                    }
                    let deadline = Instant::now() + config.max_delay;
                    let mut disconnected = false;
                    // Gather by sleeping and draining rather than waiting
                    // on each record: a receiver blocked in `recv` makes
                    // every sender's `send` a futex wake-up, which under a
                    // crawler's thousands of short sessions a second cost
                    // the sessions more than the records themselves. Naps
                    // are short enough that the queue cannot fill between
                    // two drains at the rates the window is sized for.
                    'gather: while batch.len() < config.max_batch {
                        loop {
                            match rx.try_recv() {
                                Ok(r) => {
                                    batch.push(r);
                                    if batch.len() >= config.max_batch {
                                        break 'gather;
                                    }
                                }
                                Err(TryRecvError::Empty) => break,
                                Err(TryRecvError::Disconnected) => {
                                    disconnected = true;
                                    break 'gather;
                                }
                            }
                        }
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        std::thread::sleep((deadline - now).min(GATHER_NAP));
                    }
                    // A session that opened and closed within this window
                    // is one record (see `RecordKind::Session`).
                    if config.coalesce_short_sessions {
                        crate::coalesce_short_sessions(&mut batch);
                    }
                    // A failed commit (disk full, database locked) keeps the
                    // batch and retries: dropping it would lose evidence.
                    // Meanwhile the bounded queue fills and holds back the
                    // sessions that feed it.
                    let defer = !disconnected
                        && !config.rollup_delay.is_zero()
                        && batch.len() >= config.defer_rollups_from
                        && unrolled.len() + batch.len() < config.rollup_batch
                        && unrolled.since().is_none_or(|t| t.elapsed() < config.rollup_delay);
                    let records = batch.len();
                    let mut attempt = 0u32;
                    while let Err(e) = store.append_deferring(&mut batch, &mut unrolled, !defer) {
                        if !transient(&e) {
                            // Those in hand and those queued: the thread
                            // ends here, and the node stops when it sees
                            // that (`LedgerWriter::has_stopped`).
                            let lost = batch.len() + rx.try_iter().count();
                            tracing::error!(
                                error = %e,
                                records_not_written = lost,
                                "ledger write failed for good; the ledger writer stops"
                            );
                            return Err(e);
                        }
                        attempt += 1;
                        tracing::error!(error = %e, records = batch.len(), attempt, "ledger write failed; retrying");
                        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(25))));
                    }
                    written += records as u64;
                    tracing::debug!(records, rollups_deferred = unrolled.len(), "ledger batch committed");
                    batch.clear();
                    let due = *seal_due.get_or_insert_with(|| Instant::now() + config.seal_every);
                    if disconnected || Instant::now() >= due {
                        seal(&mut store);
                        seal_due = None;
                    }
                    if disconnected {
                        return Ok(written);
                    }
                }
            })
            .expect("spawn ledger writer thread");
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Whether the writer thread has ended before [`LedgerWriter::close`]:
    /// a database error it cannot retry (a file turned read-only, a
    /// corrupt database, a failed constraint). Records sent from then on
    /// are refused; `close` returns the error. A node must stop rather than
    /// go on serving decoys it cannot register.
    pub fn has_stopped(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| t.is_finished())
    }

    /// A handle adapters clone to submit records.
    pub fn sender(&self) -> SyncSender<SessionRecord> {
        self.tx.clone().expect("writer is open")
    }

    /// Drains every queued record into the database, then returns how many
    /// records this writer committed. Callers must drop their senders first.
    /// A database that keeps failing makes this wait: records are never
    /// dropped.
    pub fn close(mut self) -> Result<u64, LedgerError> {
        self.tx.take();
        self.thread
            .take()
            .expect("closed once")
            .join()
            .map_err(|_| LedgerError::WriterGone)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Transport;

    fn record(i: u16) -> SessionRecord {
        SessionRecord {
            kind: crate::RecordKind::Close,
            session_key: i64::from(i),
            started_at_ms: 1_700_000_000_000 + i64::from(i),
            ended_at_ms: 1_700_000_000_500,
            network: "bittorrent",
            decoy_id: 1,
            info_hash: [1; 20],
            remote_ip: format!("::ffff:127.0.0.{}", i % 3 + 1).parse().unwrap(),
            remote_port: 6000 + i,
            peer_id: Some(*b"-LT2080-aaaaaaaaaaaa"),
            client_name: Some("libtorrent 2.0.8.0".into()),
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: 100,
            pieces_sent: 1,
            piece_count: 1,
            peer_pieces_initial: Some(0),
            peer_pieces_final: 1,
            completed: i.is_multiple_of(2),
            close_reason: "peer_complete".into(),
        }
    }

    #[test]
    fn a_database_error_that_cannot_pass_stops_the_writer_and_close_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let writer = LedgerWriter::open(&path, WriterConfig::default()).unwrap();
        let tx = writer.sender();
        tx.send(record(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let count = || {
            rusqlite::Connection::open(&path)
                .unwrap()
                .query_row("SELECT coalesce(max(last_seq), 0) FROM record_blocks", [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap()
        };
        while count() < 1 {
            assert!(Instant::now() < deadline, "first record never committed");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!writer.has_stopped());
        // Every later insert fails with a constraint error: retrying
        // cannot help.
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON record_blocks BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        tx.send(record(2)).unwrap();
        while !writer.has_stopped() {
            assert!(Instant::now() < deadline, "the writer kept running");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Nothing more is accepted, and close says why.
        assert!(tx.send(record(3)).is_err());
        drop(tx);
        let err = writer.close().unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(count(), 1);
    }

    #[test]
    fn close_drains_every_queued_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let writer = LedgerWriter::open(&path, WriterConfig::default()).unwrap();
        let tx = writer.sender();
        for i in 0..2_500 {
            tx.send(record(i)).unwrap();
        }
        drop(tx);
        assert_eq!(writer.close().unwrap(), 2_500);
        let store = LedgerStore::open(&path).unwrap();
        let s = store.summary().unwrap();
        assert_eq!(
            (s.sessions, s.completed, s.unique_ips, s.bytes_sent),
            (2_500, 1_250, 3, 250_000)
        );
        let rows = store.sessions().unwrap();
        assert_eq!(rows[0].remote_ip, "127.0.0.1", "mapped IPv6 stored as IPv4");
    }

    /// Every row of the aggregate tables, in key order.
    fn aggregates(path: &Path) -> Vec<String> {
        let c = rusqlite::Connection::open(path).unwrap();
        let mut out = Vec::new();
        for (table, order) in [
            ("rollup_daily", "day, dim, key"),
            ("rollup_uniques", "period, dim, key, ip_key"),
            ("rollup_ip", "ip_key"),
            ("rollup_repeat", "day, ip_key"),
        ] {
            if table == "rollup_uniques" {
                // Runs, as the rows a row per member would be.
                for (period, dim, key, ip) in crate::uniques::rows(&c).unwrap() {
                    let ip = rusqlite::types::ValueRef::Blob(&ip);
                    out.push(format!("{table}: {period} | {dim} | {key} | {ip:?}"));
                }
                continue;
            }
            let mut stmt = c
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let cells: Vec<String> = (0..n)
                        .map(|i| match r.get_ref(i).unwrap() {
                            rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                            other => format!("{other:?}"),
                        })
                        .collect();
                    Ok(format!("{table}: {}", cells.join(" | ")))
                })
                .unwrap();
            out.extend(rows.map(Result::unwrap));
        }
        out
    }

    /// The aggregates of `records` appended `chunk` at a time, each batch
    /// with its aggregates, to a new ledger at `reference` that keys
    /// addresses with `ledger`'s secret (so the two can be compared).
    fn reference_aggregates(
        ledger: &Path,
        reference: &Path,
        records: &[SessionRecord],
        chunk: usize,
    ) -> Vec<String> {
        let secret: String = rusqlite::Connection::open(ledger)
            .unwrap()
            .query_row(
                "SELECT value FROM ledger_meta WHERE key = 'ip_key_secret'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut store = LedgerStore::open(reference).unwrap();
        store.set_ip_key_secret(secret.as_bytes());
        for batch in records.chunks(chunk) {
            store.append(batch).unwrap();
        }
        aggregates(reference)
    }

    /// Waits, at most a minute, until `n` records are committed at `path`.
    fn wait_for_records(path: &Path, n: i64) {
        let committed = || -> i64 {
            rusqlite::Connection::open(path)
                .and_then(|c| {
                    c.query_row("SELECT coalesce(max(last_seq), 0) FROM record_blocks", [], |r| {
                        r.get(0)
                    })
                })
                .unwrap_or(0)
        };
        let waited = Instant::now();
        while committed() < n {
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "{n} records never committed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn mark(path: &Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT coalesce((SELECT value FROM ledger_meta WHERE key = 'rollups_through'), '0')",
                [],
                |r| r.get::<_, String>(0),
            )
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Under load the aggregates of several commits are added together.
    /// Until then they lag; a writable open meanwhile (a report) catches
    /// them up, and the writer then adds only the rest: every aggregate
    /// row ends equal to a ledger's that added them with each record.
    #[test]
    fn deferred_aggregates_lag_then_equal_those_added_with_each_batch() {
        let dir = tempfile::tempdir().unwrap();
        let deferred = dir.path().join("deferred.sqlite");
        let reference = dir.path().join("reference.sqlite");
        // Ten addresses over four months, seven titles: daily rows, every
        // period's distinct rows, first completions and repeats.
        let records: Vec<SessionRecord> = (0..3_000u16)
            .map(|i| SessionRecord {
                decoy_id: i64::from(i % 7),
                started_at_ms: 1_700_000_000_000 + i64::from(i) * 3_600_000,
                ended_at_ms: 1_700_000_000_000 + i64::from(i) * 3_600_000 + 500,
                remote_ip: format!("192.0.2.{}", i % 10 + 1).parse().unwrap(),
                completed: i % 3 == 0,
                ..record(i)
            })
            .collect();
        let config = WriterConfig {
            max_delay: Duration::from_millis(20),
            coalesce_short_sessions: false,
            defer_rollups_from: 1,
            rollup_delay: Duration::from_secs(3_600),
            rollup_batch: usize::MAX,
            ..WriterConfig::default()
        };
        let writer = LedgerWriter::open(&deferred, config).unwrap();
        let tx = writer.sender();
        for r in &records[..1_000] {
            tx.send(r.clone()).unwrap();
        }
        wait_for_records(&deferred, 1_000);
        assert_eq!(mark(&deferred), 0, "aggregates lag the committed records");
        assert!(aggregates(&deferred).is_empty());
        // A report opens the ledger meanwhile and catches up.
        drop(LedgerStore::open(&deferred).unwrap());
        assert_eq!(mark(&deferred), 1_000);
        for r in &records[1_000..] {
            tx.send(r.clone()).unwrap();
        }
        drop(tx);
        assert_eq!(writer.close().unwrap(), 3_000);
        assert_eq!(mark(&deferred), 3_000);

        let expected = reference_aggregates(&deferred, &reference, &records, 100);
        assert!(expected.iter().any(|r| r.starts_with("rollup_repeat")));
        assert!(expected.iter().any(|r| r.starts_with("rollup_uniques: m2023-")));
        assert_eq!(aggregates(&deferred), expected);
    }

    /// Two stores deferring aggregates on one file (a second writer): each
    /// adds the other's records the mark has not reached before its own,
    /// and skips what the other added, so every record counts once.
    #[test]
    fn two_deferring_stores_on_one_ledger_count_every_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared.sqlite");
        let reference = dir.path().join("reference.sqlite");
        let records: Vec<SessionRecord> = (0..300u16)
            .map(|i| SessionRecord {
                decoy_id: i64::from(i % 5),
                started_at_ms: 1_700_000_000_000 + i64::from(i) * 7_200_000,
                remote_ip: format!("198.51.100.{}", i % 13 + 1).parse().unwrap(),
                completed: i % 4 == 0,
                ..record(i)
            })
            .collect();
        let mut a = LedgerStore::open(&shared).unwrap();
        let mut b = LedgerStore::open(&shared).unwrap();
        let (mut a_unrolled, mut b_unrolled) = (
            crate::UnrolledRecords::default(),
            crate::UnrolledRecords::default(),
        );
        a.append_deferring(&mut records[..100].to_vec(), &mut a_unrolled, false)
            .unwrap();
        assert_eq!(mark(&shared), 0);
        // b finds a's records unrolled and adds them before deferring its own.
        b.append_deferring(&mut records[100..200].to_vec(), &mut b_unrolled, false)
            .unwrap();
        assert_eq!(mark(&shared), 100);
        // a finds b's records after its own: it adds everything now.
        a.append_deferring(&mut records[200..].to_vec(), &mut a_unrolled, false)
            .unwrap();
        assert!(a_unrolled.is_empty());
        assert_eq!(mark(&shared), 300);
        // b's own were added by a: nothing is added twice.
        b.roll_up(&mut b_unrolled).unwrap();
        assert!(b_unrolled.is_empty());
        assert_eq!(mark(&shared), 300);

        let expected = reference_aggregates(&shared, &reference, &records, records.len());
        assert!(expected.iter().any(|r| r.starts_with("rollup_repeat")));
        assert_eq!(aggregates(&shared), expected);
        assert!(LedgerStore::open(&shared)
            .unwrap()
            .verify()
            .unwrap()
            .first_bad
            .is_none());
    }

    /// Sessions that open and close within one window are one record each;
    /// one whose open record committed in an earlier window keeps both.
    #[test]
    fn short_sessions_are_one_record_and_long_ones_two() {
        use crate::RecordKind::Open;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        let config = WriterConfig {
            max_delay: Duration::from_millis(50),
            ..WriterConfig::default()
        };
        let writer = LedgerWriter::open(&path, config).unwrap();
        let tx = writer.sender();
        let long = record(1_000);
        tx.send(SessionRecord {
            kind: Open,
            ..long.clone()
        })
        .unwrap();
        // Its open record commits on its own: wait until it is there.
        wait_for_records(&path, 1);
        for i in 0..200 {
            tx.send(SessionRecord {
                kind: Open,
                ..record(i)
            })
            .unwrap();
            tx.send(record(i)).unwrap();
        }
        for i in 200..250 {
            tx.send(SessionRecord {
                kind: Open,
                ..record(i)
            })
            .unwrap();
        }
        tx.send(long).unwrap();
        drop(tx);
        // 1 + 200 + 50 + 1 records for 251 sessions (50 left open).
        assert_eq!(writer.close().unwrap(), 252);
        let store = LedgerStore::open(&path).unwrap();
        let mut counts = std::collections::BTreeMap::<String, i64>::new();
        crate::blockstore::for_each_seq(&store.conn, 1, i64::MAX, |_, _, r| {
            *counts.entry(r.kind.as_str().to_string()).or_default() += 1;
            Ok(())
        })
        .unwrap();
        let kinds: Vec<(String, i64)> = counts.into_iter().collect();
        let want = [("close", 1), ("open", 51), ("session", 200)].map(|(k, n)| (k.to_string(), n));
        assert_eq!(kinds, want);
        let s = store.summary().unwrap();
        assert_eq!((s.sessions, s.unterminated), (251, 50));
        assert!(store.verify().unwrap().first_bad.is_none());

        // Off (replays): every record as sent.
        let path = dir.path().join("replay.sqlite");
        let config = WriterConfig {
            coalesce_short_sessions: false,
            ..WriterConfig::default()
        };
        let writer = LedgerWriter::open(&path, config).unwrap();
        let tx = writer.sender();
        for i in 0..10 {
            tx.send(SessionRecord {
                kind: Open,
                ..record(i)
            })
            .unwrap();
            tx.send(record(i)).unwrap();
        }
        drop(tx);
        assert_eq!(writer.close().unwrap(), 20);
    }
}
