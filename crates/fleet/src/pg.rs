//! The fleet's PostgreSQL store: [`PgClient`] (async, what the forwarder
//! drives) and [`PgStore`] (the same behind a small runtime of its own,
//! for reports and commands that are not async).

use crate::batch::Batch;
use crate::{FleetError, PgConfig, TlsMode};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement, Transaction};
use warnseed_ledger::report::{PeriodSelection, RollupSource};
use warnseed_ledger::rollup::{KnownUniques, Plan, RollupRow, Value};

type Param<'a> = &'a (dyn ToSql + Sync);

const INSERT_SESSIONS: &str = "
INSERT INTO sessions (node_id, seq, started_at_ms, ended_at_ms, network, decoy_id, info_hash, remote_ip,
    remote_port, peer_id, client_name, client_version, transport, bytes_sent, pieces_sent, piece_count,
    peer_pieces_initial, peer_pieces_final, completed, close_reason, ip_salt, ip_commitment, prev_hash,
    record_hash, kind, session_key, ip_key)
SELECT $1, * FROM unnest($2::int8[], $3::int8[], $4::int8[], $5::text[], $6::int8[], $7::bytea[], $8::text[],
    $9::int4[], $10::bytea[], $11::text[], $12::text[], $13::text[], $14::int8[], $15::int8[], $16::int8[],
    $17::int8[], $18::int8[], $19::bool[], $20::text[], $21::bytea[], $22::bytea[], $23::bytea[],
    $24::bytea[], $25::text[], $26::int8[], $27::bytea[])
ON CONFLICT DO NOTHING
RETURNING seq";

const INSERT_GEO: &str = "
INSERT INTO session_geo (node_id, seq, country, country_name, region, city, latitude, longitude, accuracy_km,
    kommune, kommune_name, kommune_confidence)
SELECT $1, * FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[],
    $9::int8[], $10::text[], $11::text[], $12::text[])
ON CONFLICT DO NOTHING";

const INSERT_SEAL: &str = "
INSERT INTO seals (node_id, id, sealed_at_ms, first_seq, last_seq, head_hash, merkle_root, clock_source,
    clock_synced, clock_max_error_us, clock_est_error_us, prev_seal_hash, seal_hash)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING";

const UPSERT_NODE: &str = "
INSERT INTO fleet_nodes (node_id, forwarded_seq, forwarded_at_ms) VALUES ($1, $2, $3)
ON CONFLICT (node_id) DO UPDATE SET forwarded_seq = greatest(fleet_nodes.forwarded_seq, excluded.forwarded_seq),
    forwarded_at_ms = excluded.forwarded_at_ms";

// The aggregates' statements of `Plan::statements`, one row each, applied
// as one statement per table over arrays: the same updates, thousands of
// rows per round trip. Rows of one table never touch the same key twice
// (the plan aggregates them), so the effect is that of running them in turn.
const BULK_DAILY: &str = "
INSERT INTO rollup_daily (day, dim, key, started, closed, completed, bytes)
SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])
ON CONFLICT (day, dim, key) DO UPDATE SET started = rollup_daily.started + excluded.started,
    closed = rollup_daily.closed + excluded.closed,
    completed = rollup_daily.completed + excluded.completed, bytes = rollup_daily.bytes + excluded.bytes";

const BULK_UNIQUES: &str = "
INSERT INTO rollup_uniques (period, dim, key, ip_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
ON CONFLICT DO NOTHING";

const BULK_IP: &str = "
INSERT INTO rollup_ip (ip_key, first_completed_ms)
SELECT * FROM unnest($1::bytea[], $2::int8[])
ON CONFLICT (ip_key) DO UPDATE
SET first_completed_ms = CASE WHEN rollup_ip.first_completed_ms IS NULL
    OR excluded.first_completed_ms < rollup_ip.first_completed_ms
    THEN excluded.first_completed_ms ELSE rollup_ip.first_completed_ms END";

const BULK_REPEAT: &str = "
INSERT INTO rollup_repeat (day, ip_key)
SELECT u.day, u.ip_key FROM unnest($1::int8[], $2::bytea[], $3::int8[]) AS u(day, ip_key, started)
WHERE EXISTS (SELECT 1 FROM rollup_ip r WHERE r.ip_key = u.ip_key AND r.first_completed_ms < u.started)
ON CONFLICT DO NOTHING";

// Repeat downloaders per period (`rollup::REPEAT_PERIOD_SQL` over arrays).
// Several days of one week name the same row: DO NOTHING takes that.
const BULK_REPEAT_PERIODS: &str = "
INSERT INTO rollup_uniques (period, dim, key, ip_key)
SELECT u.period, 'repeat', '', u.ip_key FROM unnest($1::text[], $2::bytea[], $3::int8[]) AS u(period, ip_key, started)
WHERE EXISTS (SELECT 1 FROM rollup_ip r WHERE r.ip_key = u.ip_key AND r.first_completed_ms < u.started)
ON CONFLICT DO NOTHING";

// Once per store: repeat downloaders of a store written before they were
// kept per period, from the per-day rows, with the labels of
// `rollup::periods` (ISO week-numbering year and week for `w`).
const BACKFILL_REPEAT_PERIODS: &str = "
INSERT INTO rollup_uniques (period, dim, key, ip_key)
SELECT p.period, 'repeat', '', r.ip_key
FROM rollup_repeat r CROSS JOIN LATERAL (VALUES
    ('d' || to_char(date '1970-01-01' + r.day::int, 'YYYY-MM-DD')),
    ('w' || to_char(date '1970-01-01' + r.day::int, 'IYYY-IW')),
    ('m' || to_char(date '1970-01-01' + r.day::int, 'YYYY-MM')),
    ('y' || to_char(date '1970-01-01' + r.day::int, 'YYYY'))) AS p(period)
WHERE NOT EXISTS (SELECT 1 FROM fleet_migrations WHERE name = 'repeat_periods')
ON CONFLICT DO NOTHING;
INSERT INTO fleet_migrations (name) VALUES ('repeat_periods') ON CONFLICT DO NOTHING;
";

/// How far one node has forwarded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeHead {
    /// The node's newest record in PostgreSQL (0: none yet).
    pub seq: i64,
    /// The node's newest seal in PostgreSQL (0: none yet).
    pub seal_id: i64,
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForwardOutcome {
    /// Records inserted (and counted in the aggregates).
    pub inserted: u64,
    /// Records already there (a retry): neither inserted nor counted.
    pub skipped: u64,
    pub seals: u64,
}

struct Statements {
    sessions: Statement,
    geo: Statement,
    seal: Statement,
    node: Statement,
    daily: Statement,
    uniques: Statement,
    ip: Statement,
    repeat: Statement,
    repeat_periods: Statement,
}

/// An async connection to the fleet's schema.
pub struct PgClient {
    client: Client,
    schema: String,
    statements: Option<Statements>,
    connection: tokio::task::JoinHandle<()>,
    /// `rollup_uniques` rows this client has committed: rows are never
    /// deleted, so they need not be sent again (an address's every session
    /// would otherwise send its day, week, month and year rows).
    known_uniques: KnownUniques,
}

impl PgClient {
    /// Connects (10 s connect timeout unless the string sets one) and
    /// selects the schema. Must run inside a tokio runtime.
    pub async fn connect(config: &PgConfig) -> Result<Self, FleetError> {
        config.check()?;
        let (mut pg, tls) = config.parse()?;
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(Duration::from_secs(10));
        }
        if pg.get_application_name().is_none() {
            pg.application_name("warnseed");
        }
        // A dead peer (pulled cable, stopped VM) is noticed without traffic.
        pg.keepalives(true).keepalives_idle(Duration::from_secs(30));
        let mode = tls.mode_for(&pg);
        let (client, connection) = if mode == TlsMode::Disable {
            pg.ssl_mode(SslMode::Disable);
            let (client, connection) = pg.connect(NoTls).await?;
            (client, tokio::spawn(watch_connection(connection)))
        } else {
            // Never fall back to plain text: the server must take TLS.
            pg.ssl_mode(SslMode::Require);
            let (client, connection) = pg.connect(tls.connector(mode)?).await?;
            (client, tokio::spawn(watch_connection(connection)))
        };
        tracing::debug!(tls = mode.as_str(), "connected to PostgreSQL");
        client
            .batch_execute(&format!("SET search_path TO \"{}\"", config.schema))
            .await?;
        Ok(Self {
            client,
            schema: config.schema.clone(),
            statements: None,
            known_uniques: KnownUniques::default(),
            connection,
        })
    }

    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// Says goodbye to the server (rather than just dropping the socket).
    pub async fn close(self) {
        let Self {
            client, connection, ..
        } = self;
        drop(client);
        let _ = tokio::time::timeout(Duration::from_secs(2), connection).await;
    }

    /// Creates the schema and its tables if missing. Nodes starting at once
    /// take turns (an advisory lock), since `IF NOT EXISTS` is not safe
    /// against a concurrent creation.
    pub async fn ensure_schema(&mut self) -> Result<(), FleetError> {
        let tx = self.client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('warnseed fleet schema ' || $1::text))",
            &[&self.schema],
        )
        .await?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\";{}",
            self.schema,
            crate::schema::TABLES
        ))
        .await?;
        tx.batch_execute(BACKFILL_REPEAT_PERIODS).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops the schema and everything in it (tests and benchmarks).
    pub async fn drop_schema(&mut self) -> Result<(), FleetError> {
        self.statements = None;
        self.known_uniques.clear();
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.schema))
            .await?;
        Ok(())
    }

    async fn statements(&mut self) -> Result<&Statements, FleetError> {
        if self.statements.is_none() {
            let c = &self.client;
            self.statements = Some(Statements {
                sessions: c.prepare(INSERT_SESSIONS).await?,
                geo: c.prepare(INSERT_GEO).await?,
                seal: c.prepare(INSERT_SEAL).await?,
                node: c.prepare(UPSERT_NODE).await?,
                daily: c.prepare(BULK_DAILY).await?,
                uniques: c.prepare(BULK_UNIQUES).await?,
                ip: c.prepare(BULK_IP).await?,
                repeat: c.prepare(BULK_REPEAT).await?,
                repeat_periods: c.prepare(BULK_REPEAT_PERIODS).await?,
            });
        }
        Ok(self.statements.as_ref().expect("prepared"))
    }

    /// The TLS version of this connection as the server sees it
    /// (`TLSv1.3`), or `None` in plain text.
    pub async fn tls_version(&self) -> Result<Option<String>, FleetError> {
        let row = self
            .client
            .query_opt(
                "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
                &[],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// The resume point of a node: its newest record and seal here.
    pub async fn head(&self, node_id: &str) -> Result<NodeHead, FleetError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT coalesce(max(seq), 0) FROM sessions WHERE node_id = $1),
                        (SELECT coalesce(max(id), 0) FROM seals WHERE node_id = $1)",
                &[&node_id],
            )
            .await?;
        Ok(NodeHead {
            seq: row.get(0),
            seal_id: row.get(1),
        })
    }

    /// The stored hash of one record, if it is here.
    pub async fn record_hash(&self, node_id: &str, seq: i64) -> Result<Option<Vec<u8>>, FleetError> {
        Ok(self
            .client
            .query_opt(
                "SELECT record_hash FROM sessions WHERE node_id = $1 AND seq = $2",
                &[&node_id, &seq],
            )
            .await?
            .map(|r| r.get(0)))
    }

    /// Every node that has forwarded: (node id, newest record, when).
    pub async fn nodes(&self) -> Result<Vec<(String, i64, i64)>, FleetError> {
        Ok(self
            .client
            .query(
                "SELECT node_id, forwarded_seq, forwarded_at_ms FROM fleet_nodes ORDER BY node_id",
                &[],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Forwards one batch of `node_id`'s records in one transaction:
    /// records new here are inserted, with their geolocation, and counted
    /// in the aggregates; records already here are skipped (after checking
    /// they are the same records); then the seals.
    pub async fn forward(&mut self, node_id: &str, b: &Batch) -> Result<ForwardOutcome, FleetError> {
        self.forward_inner(node_id, b, true).await
    }

    /// As [`PgClient::forward`] but leaving the aggregates alone: only for
    /// the benchmark, which measures what the aggregates cost.
    #[doc(hidden)]
    pub async fn forward_without_aggregates(
        &mut self,
        node_id: &str,
        b: &Batch,
    ) -> Result<ForwardOutcome, FleetError> {
        self.forward_inner(node_id, b, false).await
    }

    async fn forward_inner(
        &mut self,
        node_id: &str,
        b: &Batch,
        aggregates: bool,
    ) -> Result<ForwardOutcome, FleetError> {
        self.statements().await?;
        let st = self.statements.as_ref().expect("prepared");
        let tx = self.client.transaction().await?;
        let mut outcome = ForwardOutcome::default();
        let mut stored_tags = Vec::new();
        if let Some(first) = b.first_seq() {
            let params: [Param<'_>; 27] = [
                &node_id,
                &b.seq,
                &b.started_at_ms,
                &b.ended_at_ms,
                &b.network,
                &b.decoy_id,
                &b.info_hash,
                &b.remote_ip,
                &b.remote_port,
                &b.peer_id,
                &b.client_name,
                &b.client_version,
                &b.transport,
                &b.bytes_sent,
                &b.pieces_sent,
                &b.piece_count,
                &b.peer_pieces_initial,
                &b.peer_pieces_final,
                &b.completed,
                &b.close_reason,
                &b.ip_salt,
                &b.ip_commitment,
                &b.prev_hash,
                &b.record_hash,
                &b.kind,
                &b.session_key,
                &b.ip_key,
            ];
            let mut inserted = vec![false; b.len()];
            for row in tx.query(&st.sessions, &params).await? {
                let seq: i64 = row.get(0);
                inserted[(seq - first) as usize] = true;
            }
            let count = inserted.iter().filter(|i| **i).count();
            outcome.inserted = count as u64;
            outcome.skipped = (b.len() - count) as u64;
            if count < b.len() {
                check_same(&tx, node_id, b, &inserted).await?;
            }
            insert_geo(&tx, &st.geo, node_id, b, &inserted).await?;
            // Usually every record is new and the batch's updates were
            // worked out beforehand (`Batch::prepare`, off this task).
            let columns = match &b.prepared {
                _ if !aggregates => &Arc::new(PlanColumns::default()),
                Some(c) if count == b.len() => c,
                _ => {
                    let rows: Vec<RollupRow<'_>> = (0..b.len())
                        .filter(|&i| inserted[i])
                        .map(|i| b.rollup_row(i))
                        .collect();
                    match PlanColumns::from_plan(&Plan::new(&rows)) {
                        Ok(c) => &Arc::new(c),
                        Err(statements) => &{
                            apply_one_by_one(&tx, &statements).await?;
                            Arc::new(PlanColumns::default())
                        },
                    }
                }
            };
            let (unsent, tags) = unknown_uniques(&columns.uniques, &self.known_uniques);
            apply_columns(&tx, st, columns, unsent.as_ref()).await?;
            stored_tags = tags;
            let last = b.last_seq().expect("non-empty");
            tx.execute(&st.node, &[&node_id, &last, &warnseed_ledger::unix_ms()])
                .await?;
        }
        for s in &b.seals {
            outcome.seals += tx
                .execute(
                    &st.seal,
                    &[
                        &node_id,
                        &s.id,
                        &s.sealed_at_ms,
                        &s.first_seq,
                        &s.last_seq,
                        &s.head_hash,
                        &s.merkle_root,
                        &s.clock_source,
                        &s.clock_synced,
                        &s.clock_max_error_us,
                        &s.clock_est_error_us,
                        &s.prev_seal_hash,
                        &s.seal_hash,
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        self.known_uniques.add(stored_tags);
        Ok(outcome)
    }

    /// Applies the aggregates of every record of `b` with the plan's
    /// portable statements, one at a time, exactly as written: for tests
    /// that the array statements agree with them.
    #[doc(hidden)]
    pub async fn apply_portable_statements(&mut self, b: &Batch) -> Result<(), FleetError> {
        let rows: Vec<RollupRow<'_>> = (0..b.len()).map(|i| b.rollup_row(i)).collect();
        let statements = Plan::new(&rows).statements();
        let tx = self.client.transaction().await?;
        apply_one_by_one(&tx, &statements).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `RollupSource::daily`, async.
    pub async fn daily(
        &self,
        dim: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, String, [i64; 4])>, FleetError> {
        Ok(self
            .client
            .query(
                "SELECT day, key, started, closed, completed, bytes FROM rollup_daily
                 WHERE day >= $1 AND day <= $2 AND dim = $3",
                &[&from_day, &to_day, &dim],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), [r.get(2), r.get(3), r.get(4), r.get(5)]))
            .collect())
    }

    /// `RollupSource::uniques`, async.
    pub async fn uniques(
        &self,
        dim: &str,
        periods: &PeriodSelection,
    ) -> Result<Vec<(String, i64)>, FleetError> {
        let rows = match periods {
            PeriodSelection::Exact(p) => self
                .client
                .query(
                    "SELECT key, count(*) FROM rollup_uniques WHERE period = $1 AND dim = $2 GROUP BY key",
                    &[p, &dim],
                )
                .await?,
            PeriodSelection::Days { from, to } => {
                self.client
                    .query(
                        "SELECT key, count(DISTINCT ip_key) FROM rollup_uniques
                         WHERE period >= $1 AND period <= $2 AND dim = $3 GROUP BY key",
                        &[from, to, &dim],
                    )
                    .await?
            }
        };
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// `RollupSource::repeats`, async.
    pub async fn repeats(&self, from_day: i64, to_day: i64) -> Result<i64, FleetError> {
        // The fewest stored periods that make up the window (a year is
        // one), as for distinct addresses.
        let periods = warnseed_ledger::rollup::cover(from_day, to_day);
        Ok(self
            .client
            .query_one(
                "SELECT count(DISTINCT ip_key) FROM rollup_uniques WHERE period = ANY($1) AND dim = 'repeat'",
                &[&periods],
            )
            .await?
            .get(0))
    }

    /// A query of the caller's own (tests, `fleet status`).
    pub fn raw(&self) -> &Client {
        &self.client
    }
}

/// Records that were already here must be the very records of this batch:
/// otherwise two ledgers share a node id and one's records would be
/// silently dropped.
/// Drives a connection until it ends; its error, if any, reaches the
/// client's next call, so it is only worth a debug line here.
async fn watch_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) = connection.await {
        tracing::debug!(error = %e, "PostgreSQL connection closed");
    }
}

async fn check_same(
    tx: &Transaction<'_>,
    node_id: &str,
    b: &Batch,
    inserted: &[bool],
) -> Result<(), FleetError> {
    let skipped: Vec<i64> = (0..b.len()).filter(|&i| !inserted[i]).map(|i| b.seq[i]).collect();
    let first = b.seq[0];
    for row in tx
        .query(
            "SELECT seq, record_hash FROM sessions WHERE node_id = $1 AND seq = ANY($2) ORDER BY seq",
            &[&node_id, &skipped],
        )
        .await?
    {
        let seq: i64 = row.get(0);
        let hash: Vec<u8> = row.get(1);
        if hash != b.record_hash[(seq - first) as usize] {
            return Err(FleetError::Diverged {
                node_id: node_id.to_string(),
                seq,
            });
        }
    }
    Ok(())
}

async fn insert_geo(
    tx: &Transaction<'_>,
    stmt: &Statement,
    node_id: &str,
    b: &Batch,
    inserted: &[bool],
) -> Result<(), FleetError> {
    let mut seq = Vec::new();
    let mut country = Vec::new();
    let mut country_name = Vec::new();
    let mut region = Vec::new();
    let mut city = Vec::new();
    let mut latitude = Vec::new();
    let mut longitude = Vec::new();
    let mut accuracy_km = Vec::new();
    let mut kommune = Vec::new();
    let mut kommune_name = Vec::new();
    let mut kommune_confidence = Vec::new();
    for (i, g) in b.geo.iter().enumerate() {
        let Some(g) = g.as_ref().filter(|_| inserted[i]) else {
            continue;
        };
        seq.push(b.seq[i]);
        country.push(g.country.as_deref());
        country_name.push(g.country_name.as_deref());
        region.push(g.region.as_deref());
        city.push(g.city.as_deref());
        latitude.push(g.latitude);
        longitude.push(g.longitude);
        accuracy_km.push(g.accuracy_km);
        kommune.push(g.kommune.as_deref());
        kommune_name.push(g.kommune_name.as_deref());
        kommune_confidence.push(g.kommune_confidence.as_deref());
    }
    if seq.is_empty() {
        return Ok(());
    }
    tx.execute(
        stmt,
        &[
            &node_id,
            &seq,
            &country,
            &country_name,
            &region,
            &city,
            &latitude,
            &longitude,
            &accuracy_km,
            &kommune,
            &kommune_name,
            &kommune_confidence,
        ],
    )
    .await?;
    Ok(())
}

/// The plan's statements as columns, one set per table.
#[derive(Clone, Debug, Default)]
pub struct PlanColumns {
    /// day, dim, key, started, closed, completed, bytes.
    daily: (Ints, Texts, Texts, [Ints; 4]),
    /// period, dim, key, ip_key.
    uniques: UniqueColumns,
    /// ip_key, first_completed_ms.
    ip: (Blobs, Ints),
    /// day, ip_key, started_at_ms.
    repeat: (Ints, Blobs, Ints),
    /// period, ip_key, started_at_ms.
    repeat_periods: (Texts, Blobs, Ints),
}

type Ints = Vec<i64>;
type Texts = Vec<String>;
type Blobs = Vec<Vec<u8>>;

impl PlanColumns {
    /// The plan as columns, or its statements if one is not of a known
    /// shape (they then run one by one, as written).
    pub(crate) fn from_plan(plan: &Plan) -> Result<Self, Vec<(&'static str, Vec<Value>)>> {
        let statements = plan.statements();
        Self::from_statements(&statements).ok_or(statements)
    }

    /// Sorts statements into columns; `None` if one is not of the four
    /// known shapes (then they run one by one, as written).
    ///
    /// Rows are sorted by key, so that transactions of several nodes
    /// touching the same aggregate rows lock them in one order (no
    /// deadlocks), whatever order the plan lists them in.
    fn from_statements(statements: &[(&'static str, Vec<Value>)]) -> Option<Self> {
        use Value::{Blob, Int, Text};
        let mut daily = Vec::new();
        let mut uniques = Vec::new();
        let mut ips = Vec::new();
        let mut repeats = Vec::new();
        let mut repeat_periods = Vec::new();
        for (sql, params) in statements {
            let table = sql
                .trim_start()
                .strip_prefix("INSERT INTO ")?
                .split_whitespace()
                .next()?;
            match (table, params.as_slice()) {
                ("rollup_daily", [Int(day), Text(dim), Text(key), Int(s), Int(cl), Int(co), Int(by)]) => {
                    daily.push((*day, dim, key, [*s, *cl, *co, *by]));
                }
                ("rollup_uniques", [Text(period), Text(dim), Text(key), Blob(ip)]) => {
                    uniques.push((period, dim, key, ip));
                }
                ("rollup_ip", [Blob(ip), Int(at)]) => ips.push((ip, *at)),
                ("rollup_repeat", [Int(day), Blob(ip), Int(started)]) => repeats.push((*day, ip, *started)),
                ("rollup_uniques", [Text(period), Blob(ip), Int(started)]) => {
                    repeat_periods.push((period, ip, *started));
                }
                _ => return None,
            }
        }
        daily.sort_unstable();
        uniques.sort_unstable();
        ips.sort_unstable();
        repeats.sort_unstable();
        repeat_periods.sort_unstable();
        let mut c = PlanColumns::default();
        for (day, dim, key, values) in daily {
            let d = &mut c.daily;
            d.0.push(day);
            d.1.push(dim.clone());
            d.2.push(key.clone());
            for (column, v) in d.3.iter_mut().zip(values) {
                column.push(v);
            }
        }
        for (period, dim, key, ip) in uniques {
            let u = &mut c.uniques;
            u.0.push(period.clone());
            u.1.push(dim.clone());
            u.2.push(key.clone());
            u.3.push(ip.clone());
        }
        for (ip, at) in ips {
            c.ip.0.push(ip.clone());
            c.ip.1.push(at);
        }
        for (day, ip, started) in repeats {
            c.repeat.0.push(day);
            c.repeat.1.push(ip.clone());
            c.repeat.2.push(started);
        }
        for (period, ip, started) in repeat_periods {
            let r = &mut c.repeat_periods;
            r.0.push(period.clone());
            r.1.push(ip.clone());
            r.2.push(started);
        }
        Some(c)
    }
}

type UniqueColumns = (Texts, Texts, Texts, Blobs);

/// The rows of `u` not in `known` (None when that is all of them), and the
/// tags of all of them, to be known once the transaction commits.
fn unknown_uniques(u: &UniqueColumns, known: &KnownUniques) -> (Option<UniqueColumns>, Vec<u128>) {
    let tags: Vec<u128> = (0..u.0.len())
        .map(|i| KnownUniques::tag(&u.0[i], &u.1[i], &u.2[i], &u.3[i]))
        .collect();
    if !tags.iter().any(|t| known.contains(*t)) {
        return (None, tags);
    }
    let mut rest = UniqueColumns::default();
    for (i, tag) in tags.iter().enumerate() {
        if !known.contains(*tag) {
            rest.0.push(u.0[i].clone());
            rest.1.push(u.1[i].clone());
            rest.2.push(u.2[i].clone());
            rest.3.push(u.3[i].clone());
        }
    }
    (Some(rest), tags)
}

/// Applies a plan's columns inside `tx`: one array statement per table;
/// `uniques`, when given, in place of the plan's own rows of
/// `rollup_uniques`.
async fn apply_columns(
    tx: &Transaction<'_>,
    st: &Statements,
    c: &PlanColumns,
    uniques: Option<&UniqueColumns>,
) -> Result<(), FleetError> {
    if !c.daily.0.is_empty() {
        let d = &c.daily;
        let [s, cl, co, by] = &d.3;
        tx.execute(&st.daily, &[&d.0, &d.1, &d.2, s, cl, co, by]).await?;
    }
    let u = uniques.unwrap_or(&c.uniques);
    if !u.0.is_empty() {
        tx.execute(&st.uniques, &[&u.0, &u.1, &u.2, &u.3]).await?;
    }
    if !c.ip.0.is_empty() {
        tx.execute(&st.ip, &[&c.ip.0, &c.ip.1]).await?;
    }
    if !c.repeat.0.is_empty() {
        let r = &c.repeat;
        tx.execute(&st.repeat, &[&r.0, &r.1, &r.2]).await?;
    }
    if !c.repeat_periods.0.is_empty() {
        let r = &c.repeat_periods;
        tx.execute(&st.repeat_periods, &[&r.0, &r.1, &r.2]).await?;
    }
    Ok(())
}

/// The plan's portable statements exactly as written, one at a time.
pub(crate) async fn apply_one_by_one(
    tx: &Transaction<'_>,
    statements: &[(&'static str, Vec<Value>)],
) -> Result<(), FleetError> {
    for (sql, params) in statements {
        let values: Vec<Box<dyn ToSql + Sync + Send>> = params
            .iter()
            .map(|v| -> Box<dyn ToSql + Sync + Send> {
                match v {
                    Value::Int(n) => Box::new(*n),
                    Value::Text(s) => Box::new(s.clone()),
                    Value::Blob(b) => Box::new(b.clone()),
                }
            })
            .collect();
        let refs: Vec<Param<'_>> = values.iter().map(|v| &**v as Param<'_>).collect();
        tx.execute(*sql, &refs).await?;
    }
    Ok(())
}

/// [`PgClient`] with a runtime of its own, for callers that are not async:
/// reports ([`RollupSource`]), `warnseed fleet status`, tests. Do not use
/// it from inside an async task (it blocks on its own runtime).
pub struct PgStore {
    client: Option<PgClient>,
    // Dropped last: the client's connection task lives on it.
    runtime: tokio::runtime::Runtime,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.runtime.block_on(client.close());
        }
    }
}

impl PgStore {
    /// Connects and creates the schema if missing.
    pub fn connect(config: &PgConfig) -> Result<Self, FleetError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(FleetError::Runtime)?;
        let mut client = runtime.block_on(PgClient::connect(config))?;
        runtime.block_on(client.ensure_schema())?;
        Ok(Self {
            client: Some(client),
            runtime,
        })
    }

    /// Runs `f` with the async client on this store's runtime.
    pub fn run<T>(&mut self, f: impl AsyncFnOnce(&mut PgClient) -> T) -> T {
        let client = self.client.as_mut().expect("open until dropped");
        self.runtime.block_on(f(client))
    }

    pub fn head(&mut self, node_id: &str) -> Result<NodeHead, FleetError> {
        self.run(async |c| c.head(node_id).await)
    }

    pub fn tls_version(&mut self) -> Result<Option<String>, FleetError> {
        self.run(async |c| c.tls_version().await)
    }

    /// Every node that has forwarded: (node id, newest record, when).
    pub fn nodes(&mut self) -> Result<Vec<(String, i64, i64)>, FleetError> {
        self.run(async |c| c.nodes().await)
    }

    pub fn forward(&mut self, node_id: &str, batch: &Batch) -> Result<ForwardOutcome, FleetError> {
        self.run(async |c| c.forward(node_id, batch).await)
    }

    pub fn drop_schema(&mut self) -> Result<(), FleetError> {
        self.run(async |c| c.drop_schema().await)
    }

    /// Records of `node_id` that started before `before_ms` and still hold
    /// a raw address here.
    pub fn unretained(&mut self, node_id: &str, before_ms: i64) -> Result<Vec<i64>, FleetError> {
        self.run(async |c| {
            let rows = c
                .raw()
                .query(
                    "SELECT seq FROM sessions WHERE node_id = $1 AND started_at_ms < $2 AND ip_salt IS NOT NULL
                     ORDER BY seq",
                    &[&node_id, &before_ms],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get::<_, i64>(0)).collect())
        })
    }

    /// Mirrors a node's retention: each `(seq, replacement)` replaces the
    /// record's address (its salt goes too), and its city and coordinates
    /// go, as on the node. The record's aggregate key goes as well: it is
    /// an HMAC of the address under a secret every node holds, so whoever
    /// has the secret could find the address again by trying every IPv4
    /// address (the aggregates keep their keys, but no longer tied to a
    /// record). One transaction.
    pub fn mirror_retention(&mut self, node_id: &str, rows: &[(i64, String)]) -> Result<u64, FleetError> {
        self.run(async |c| {
            let client = c.raw();
            client.batch_execute("BEGIN").await?;
            let result = async {
                let update = client
                    .prepare(
                        "UPDATE sessions SET remote_ip = $3, ip_salt = NULL, ip_key = ''::bytea
                         WHERE node_id = $1 AND seq = $2 AND ip_salt IS NOT NULL",
                    )
                    .await?;
                let geo = client
                    .prepare(
                        "UPDATE session_geo SET city = NULL, latitude = NULL, longitude = NULL, accuracy_km = NULL
                         WHERE node_id = $1 AND seq = $2",
                    )
                    .await?;
                let mut n = 0u64;
                for (seq, replacement) in rows {
                    n += client.execute(&update, &[&node_id, seq, replacement]).await?;
                    client.execute(&geo, &[&node_id, seq]).await?;
                }
                Ok::<_, FleetError>(n)
            }
            .await;
            match result {
                Ok(n) => {
                    client.batch_execute("COMMIT").await?;
                    Ok(n)
                }
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            }
        })
    }
}

impl RollupSource for PgStore {
    fn daily(
        &mut self,
        dim: &str,
        from_day: i64,
        to_day: i64,
    ) -> Result<Vec<(i64, String, [i64; 4])>, String> {
        self.run(async |c| c.daily(dim, from_day, to_day).await)
            .map_err(|e| e.to_string())
    }

    fn uniques(&mut self, dim: &str, periods: &PeriodSelection) -> Result<Vec<(String, i64)>, String> {
        self.run(async |c| c.uniques(dim, periods).await)
            .map_err(|e| e.to_string())
    }

    fn repeats(&mut self, from_day: i64, to_day: i64) -> Result<i64, String> {
        self.run(async |c| c.repeats(from_day, to_day).await)
            .map_err(|e| e.to_string())
    }

    fn first_day(&mut self) -> Result<Option<i64>, String> {
        self.run(async |c| {
            Ok::<_, FleetError>(
                c.raw()
                    .query_one("SELECT min(day) FROM rollup_daily WHERE dim = 'all'", &[])
                    .await?
                    .get::<_, Option<i64>>(0),
            )
        })
        .map_err(|e| e.to_string())
    }
}
