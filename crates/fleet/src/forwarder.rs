//! The forwarder: copies a node's spool to PostgreSQL, in order, batch by
//! batch, for as long as the node runs, and rides out outages.

use crate::batch::Batch;
use crate::pg::PgClient;
use crate::spool::Spool;
use crate::{FleetError, PgConfig};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    pub pg: PgConfig,
    /// The node's SQLite ledger.
    pub ledger: PathBuf,
    /// The fleet's shared address-key secret; `None`: the ledger's own
    /// (distinct addresses are then counted per node, not fleet-wide).
    pub ip_key_secret: Option<Vec<u8>>,
    /// Records per PostgreSQL transaction.
    pub batch_size: usize,
    /// How often a forwarder that has caught up looks for new records.
    pub poll: Duration,
    /// First wait after a failure; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// A connection or batch taking longer than this counts as failed.
    pub timeout: Duration,
    /// Where to publish [`ForwarderStatus`] as JSON (`fleet-status.json`).
    pub status_file: Option<PathBuf>,
}

impl ForwarderConfig {
    pub fn new(pg: PgConfig, ledger: PathBuf) -> Self {
        Self {
            pg,
            ledger,
            ip_key_secret: None,
            batch_size: 5_000,
            poll: Duration::from_millis(500),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
            status_file: None,
        }
    }
}

/// What the forwarder is doing, for `warnseed status` and `fleet status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForwarderStatus {
    pub node_id: String,
    /// `connecting`, `forwarding`, `caught_up`, `backing_off`, `stopped`
    /// or `failed` (a permanent error: see `last_error`).
    pub state: String,
    /// The newest record known to be in PostgreSQL.
    pub forwarded_seq: i64,
    /// The newest record in the local ledger, when last looked at.
    pub local_head: i64,
    /// Records waiting to be forwarded.
    pub lag: i64,
    pub forwarded_seal: i64,
    /// Records this forwarder inserted since it started.
    pub records_forwarded: u64,
    pub last_forward_at_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at_ms: Option<i64>,
    /// When the next connection attempt is due, while backing off.
    pub retry_at_ms: Option<i64>,
    pub updated_at_ms: i64,
}

/// A shared view of a running forwarder's status.
#[derive(Clone, Default)]
pub struct StatusHandle(Arc<Mutex<ForwarderStatus>>);

impl StatusHandle {
    pub fn get(&self) -> ForwarderStatus {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut ForwarderStatus)) -> ForwarderStatus {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s);
        s.lag = (s.local_head - s.forwarded_seq).max(0);
        s.updated_at_ms = warnseed_ledger::unix_ms();
        s.clone()
    }
}

pub struct Forwarder {
    config: ForwarderConfig,
    spool: Arc<Mutex<Spool>>,
    node_id: String,
    status: StatusHandle,
    status_written: Option<Instant>,
}

/// Why a session with PostgreSQL ended.
enum SessionEnd {
    Stopped,
    CaughtUp,
}

impl Forwarder {
    /// Opens the spool; connects to nothing yet.
    pub fn new(config: ForwarderConfig) -> Result<Self, FleetError> {
        config.pg.check()?;
        if config.batch_size == 0 {
            return Err(FleetError::Config("batch size 0".into()));
        }
        let spool = Spool::open(&config.ledger, config.ip_key_secret.as_deref())?;
        let node_id = spool.node_id().to_string();
        let status = StatusHandle::default();
        let head = spool.head()?;
        status.update(|s| {
            s.node_id = node_id.clone();
            s.state = "connecting".into();
            s.local_head = head;
        });
        Ok(Self {
            config,
            spool: Arc::new(Mutex::new(spool)),
            node_id,
            status,
            status_written: None,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn status(&self) -> StatusHandle {
        self.status.clone()
    }

    /// Forwards until `stop` turns true, reconnecting with back-off after
    /// every failure. Returns an error only for a failure no retry can
    /// cure (a diverged or broken ledger); the spool keeps everything.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<(), FleetError> {
        let mut backoff = self.config.first_backoff;
        loop {
            if *stop.borrow() {
                break;
            }
            let mut connected = false;
            match self.session(&mut stop, false, &mut connected).await {
                Ok(_) => break,
                Err(e) if e.is_permanent() => {
                    tracing::error!(error = %e, node = %self.node_id, "fleet forwarding stopped");
                    self.publish(|s| {
                        s.state = "failed".into();
                        s.last_error = Some(e.to_string());
                        s.last_error_at_ms = Some(warnseed_ledger::unix_ms());
                        s.retry_at_ms = None;
                    });
                    return Err(e);
                }
                Err(e) => {
                    if connected {
                        backoff = self.config.first_backoff;
                    }
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = backoff.as_millis() as u64,
                        "fleet PostgreSQL unavailable; records stay in the local ledger"
                    );
                    // The lag keeps growing while PostgreSQL is away: show it.
                    let head = self.local_head().await;
                    let now = warnseed_ledger::unix_ms();
                    self.publish(|s| {
                        s.local_head = head.unwrap_or(s.local_head);
                        s.state = "backing_off".into();
                        s.last_error = Some(e.to_string());
                        s.last_error_at_ms = Some(now);
                        s.retry_at_ms = Some(now + backoff.as_millis() as i64);
                    });
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    backoff = (backoff * 2).min(self.config.max_backoff);
                }
            }
        }
        self.publish(|s| {
            s.state = "stopped".into();
            s.retry_at_ms = None;
        });
        Ok(())
    }

    /// Forwards everything in the spool now, once, and returns the status
    /// (for `warnseed fleet push`, tests and the benchmark).
    pub async fn forward_available(&mut self) -> Result<ForwarderStatus, FleetError> {
        let (_tx, mut stop) = watch::channel(false);
        let mut connected = false;
        self.session(&mut stop, true, &mut connected).await?;
        Ok(self.status.get())
    }

    async fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        until_caught_up: bool,
        connected: &mut bool,
    ) -> Result<SessionEnd, FleetError> {
        let limit = self.config.timeout;
        self.publish(|s| s.state = "connecting".into());
        let mut pg = timed(limit, Box::pin(PgClient::connect(&self.config.pg))).await?;
        timed(limit, Box::pin(pg.ensure_schema())).await?;
        let head = timed(limit, Box::pin(pg.head(&self.node_id))).await?;
        self.check_resume_point(&pg, head.seq).await?;
        *connected = true;
        tracing::info!(node = %self.node_id, resume_after = head.seq, "fleet PostgreSQL connected");
        self.publish(|s| {
            s.forwarded_seq = head.seq;
            s.forwarded_seal = head.seal_id;
            s.state = "forwarding".into();
            s.retry_at_ms = None;
        });
        let (mut pos, mut seal_pos) = (head.seq, head.seal_id);
        let mut prefetch: Option<tokio::task::JoinHandle<Result<(Batch, i64), FleetError>>> = None;
        loop {
            let read = match prefetch.take() {
                Some(h) => h,
                None => self.read(pos, seal_pos),
            };
            let (batch, local_head) = read
                .await
                .map_err(|e| FleetError::Chain(format!("reader: {e}")))??;
            if batch.is_empty() {
                self.publish(|s| {
                    s.local_head = local_head;
                    s.state = "caught_up".into();
                });
                if until_caught_up {
                    return Ok(SessionEnd::CaughtUp);
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll) => continue,
                    _ = stop.wait_for(|s| *s) => return Ok(SessionEnd::Stopped),
                }
            }
            let last = batch.last_seq().unwrap_or(pos);
            let last_seal = batch.seals.last().map_or(seal_pos, |s| s.id);
            // Read the next batch while PostgreSQL writes this one.
            if batch.len() == self.config.batch_size {
                prefetch = Some(self.read(last, last_seal));
            }
            let outcome = tokio::select! {
                r = timed(limit, Box::pin(pg.forward(&self.node_id, &batch))) => r?,
                // Dropping the transaction rolls it back; what committed
                // or not is sorted out by the resume point next time.
                _ = stop.wait_for(|s| *s) => return Ok(SessionEnd::Stopped),
            };
            pos = last;
            seal_pos = last_seal;
            tracing::debug!(
                node = %self.node_id,
                through = pos,
                inserted = outcome.inserted,
                skipped = outcome.skipped,
                "fleet batch forwarded"
            );
            self.publish(|s| {
                s.forwarded_seq = pos;
                s.forwarded_seal = seal_pos;
                s.local_head = s.local_head.max(local_head).max(pos);
                s.records_forwarded += outcome.inserted;
                s.last_forward_at_ms = Some(warnseed_ledger::unix_ms());
                s.state = "forwarding".into();
            });
            if *stop.borrow() {
                return Ok(SessionEnd::Stopped);
            }
        }
    }

    /// PostgreSQL's newest record of this node must be the local one:
    /// otherwise the ledger was replaced, or another ledger uses its id.
    async fn check_resume_point(&self, pg: &PgClient, seq: i64) -> Result<(), FleetError> {
        if seq == 0 {
            return Ok(());
        }
        let spool = Arc::clone(&self.spool);
        let local = tokio::task::spawn_blocking(move || {
            let spool = spool.lock().unwrap_or_else(|e| e.into_inner());
            spool.record_hash(seq)
        })
        .await
        .map_err(|e| FleetError::Chain(format!("reader: {e}")))??;
        let remote = timed(self.config.timeout, Box::pin(pg.record_hash(&self.node_id, seq))).await?;
        if local.is_none() || local != remote {
            return Err(FleetError::Diverged {
                node_id: self.node_id.clone(),
                seq,
            });
        }
        Ok(())
    }

    async fn local_head(&self) -> Option<i64> {
        let spool = Arc::clone(&self.spool);
        tokio::task::spawn_blocking(move || spool.lock().unwrap_or_else(|e| e.into_inner()).head())
            .await
            .ok()?
            .ok()
    }

    fn read(&self, after: i64, after_seal: i64) -> tokio::task::JoinHandle<Result<(Batch, i64), FleetError>> {
        let spool = Arc::clone(&self.spool);
        let limit = self.config.batch_size;
        tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().unwrap_or_else(|e| e.into_inner());
            let batch = spool.read(after, limit, after_seal)?;
            let head = spool.head()?;
            Ok((batch, head))
        })
    }

    /// Updates the status and writes the status file (at most every
    /// 2 s, unless the state changed).
    fn publish(&mut self, f: impl FnOnce(&mut ForwarderStatus)) {
        let before = self.status.get().state;
        let s = self.status.update(f);
        let Some(path) = &self.config.status_file else {
            return;
        };
        let due = self
            .status_written
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
        if !due && s.state == before {
            return;
        }
        self.status_written = Some(Instant::now());
        let tmp = path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&s)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot write the fleet status");
        }
    }
}

type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, FleetError>> + Send + 'a>>;

async fn timed<T>(limit: Duration, f: BoxFuture<'_, T>) -> Result<T, FleetError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| FleetError::Timeout(limit.as_secs()))?
}
