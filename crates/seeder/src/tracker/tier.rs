//! One BEP 12 tier's announcer: full rounds at the tracker's interval,
//! reconcile ticks in between that follow the campaign schedule (started
//! for released decoys, stopped for retired ones), a scrape of every active
//! decoy after each round, failover within the tier and backoff.
//!
//! A round runs many requests at once: lanes (tokio tasks) take the next
//! announce from a shared [`Sweep`] under a lock held only to pick or to
//! record, so the table is walked once per round and nothing proportional
//! to it is built.
//!
//! A graceful stop sends no `stopped`: with a million decoys that would be
//! a million requests while the node is shutting down. Trackers drop us on
//! their own after their peer timeout (opentracker: 45 minutes), and peers
//! they sent our way meanwhile find the port closed.

use super::http_client::{HttpLane, HttpTracker};
use super::sweep::{
    AnnounceState, Backoff, DecoyView, Job, ScrapeCursor, ScrapeTally, Sweep, SweepKind, Tally, TierOrder,
};
use super::{Announced, Failure, Scheme, ScrapeCounts, TrackerUrl, HTTP_SCRAPE_BATCH};
use crate::decoys::{DecoyTable, LiveTable};
use crate::status::{at_ms_from_now, unix_now_ms, ScrapeStatus, StatusBoard, TrackerStatus};
use crate::udp_tracker::{UdpTrackerClient, SCRAPE_BATCH as UDP_SCRAPE_BATCH};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use warnseed_bittorrent::metainfo::hex;

/// How a node announces: who it is, and how hard it may push a tracker.
#[derive(Clone, Debug)]
pub struct AnnounceSettings {
    /// Our listen address: announces leave from it, since trackers list
    /// the address a request comes from. Unspecified: the system's choice.
    pub bind: Option<IpAddr>,
    pub peer_id: [u8; 20],
    /// The port peers reach us on.
    pub port: u16,
    /// How often released and retired decoys are sent between full rounds.
    pub reconcile_every: Duration,
    /// HTTP requests in flight per tracker.
    pub http_in_flight: usize,
    /// UDP transactions in flight per tracker (one socket).
    pub udp_in_flight: usize,
    /// Shuffle each tier once at start (BEP 12); off keeps the configured
    /// order.
    pub shuffle: bool,
}

impl AnnounceSettings {
    pub fn new(bind: Option<IpAddr>, peer_id: [u8; 20], port: u16) -> Self {
        Self {
            bind,
            peer_id,
            port,
            reconcile_every: Duration::from_secs(5),
            http_in_flight: 32,
            udp_in_flight: 64,
            shuffle: true,
        }
    }
}

/// A tracker opened for a round: HTTP resolved, or a UDP socket.
enum Client {
    Http(HttpTracker),
    Udp(UdpTrackerClient),
}

/// What one lane keeps between its requests.
enum Lane {
    Http(HttpLane),
    Udp,
}

impl Client {
    async fn open(url: &TrackerUrl, bind: Option<IpAddr>) -> Result<Self, Failure> {
        match url.scheme {
            Scheme::Http => Ok(Client::Http(HttpTracker::resolve(url, bind).await?)),
            Scheme::Udp => {
                let addr = tokio::net::lookup_host((url.host.as_str(), url.port))
                    .await
                    .map_err(|e| Failure::Unreachable(format!("resolving {}: {e}", url.host)))?
                    .next()
                    .ok_or_else(|| Failure::Unreachable(format!("{} resolves to no address", url.host)))?;
                let client = UdpTrackerClient::new(addr, bind)
                    .await
                    .map_err(|e| Failure::Unreachable(format!("UDP socket: {e}")))?;
                Ok(Client::Udp(client))
            }
        }
    }

    fn lanes(&self, settings: &AnnounceSettings) -> usize {
        match self {
            Client::Http(_) => settings.http_in_flight,
            Client::Udp(_) => settings.udp_in_flight,
        }
        .max(1)
    }

    fn lane(&self) -> Lane {
        match self {
            Client::Http(_) => Lane::Http(HttpLane::default()),
            Client::Udp(_) => Lane::Udp,
        }
    }

    /// Info hashes per scrape request; `None`: the tracker cannot scrape.
    fn scrape_batch(&self) -> Option<usize> {
        match self {
            Client::Http(h) => h.can_scrape().then_some(HTTP_SCRAPE_BATCH),
            Client::Udp(_) => Some(UDP_SCRAPE_BATCH),
        }
    }

    async fn announce(&self, lane: &mut Lane, job: &Job, s: &AnnounceSettings) -> Result<Announced, Failure> {
        match (self, lane) {
            (Client::Http(h), Lane::Http(lane)) => {
                h.announce(lane, &job.info_hash, &s.peer_id, s.port, job.event)
                    .await
            }
            (Client::Udp(u), _) => u.announce(&job.info_hash, &s.peer_id, s.port, job.event).await,
            (Client::Http(_), Lane::Udp) => unreachable!("lanes are made by their client"),
        }
    }

    async fn scrape(&self, lane: &mut Lane, info_hashes: &[[u8; 20]]) -> Result<Vec<ScrapeCounts>, Failure> {
        match (self, lane) {
            (Client::Http(h), Lane::Http(lane)) => h.scrape(lane, info_hashes).await,
            (Client::Udp(u), _) => u.scrape(info_hashes).await,
            (Client::Http(_), Lane::Udp) => unreachable!("lanes are made by their client"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct AnnounceOp {
    sweep: Option<Sweep>,
    state: AnnounceState,
    tally: Tally,
}

/// Runs one sweep over `client` with all its lanes. `None`: the node is
/// stopping.
async fn run_announces(
    client: &Arc<Client>,
    table: &Arc<DecoyTable>,
    settings: &Arc<AnnounceSettings>,
    url: &Arc<str>,
    kind: SweepKind,
    mut state: AnnounceState,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(AnnounceState, Tally)> {
    let changes = state.changes(table);
    let stops = table.info_hashes(&changes.stops);
    let op = Arc::new(Mutex::new(AnnounceOp {
        sweep: Some(Sweep::new(kind, stops)),
        state,
        tally: Tally::default(),
    }));
    let mut lanes = JoinSet::new();
    for _ in 0..client.lanes(settings) {
        lanes.spawn(announce_lane(
            Arc::clone(client),
            Arc::clone(table),
            Arc::clone(settings),
            Arc::clone(&op),
            Arc::clone(url),
        ));
    }
    tokio::select! {
        _ = async { while lanes.join_next().await.is_some() {} } => {}
        // Dropping the set aborts the lanes: a stop does not wait for a
        // slow tracker.
        _ = crate::server::stopped(shutdown) => return None,
    }
    let mut op = lock(&op);
    Some((std::mem::take(&mut op.state), std::mem::take(&mut op.tally)))
}

async fn announce_lane(
    client: Arc<Client>,
    table: Arc<DecoyTable>,
    settings: Arc<AnnounceSettings>,
    op: Arc<Mutex<AnnounceOp>>,
    url: Arc<str>,
) {
    let mut lane = client.lane();
    loop {
        let job = {
            let mut guard = lock(&op);
            let AnnounceOp { sweep, state, tally } = &mut *guard;
            if tally.aborted() {
                return;
            }
            match sweep.as_mut().and_then(|s| s.next_job(state, &table)) {
                Some(job) => job,
                None => return,
            }
        };
        let result = client.announce(&mut lane, &job, &settings).await;
        let log_it = {
            let mut guard = lock(&op);
            guard.state.record(&job, &result);
            guard.tally.record(job.event, &result)
        };
        if let Err(e) = &result {
            let info_hash = hex(&job.info_hash);
            if log_it {
                tracing::warn!(tracker = %url, %info_hash, event = ?job.event, error = %e, "announce failed");
            } else {
                tracing::debug!(tracker = %url, %info_hash, event = ?job.event, error = %e, "announce failed");
            }
        }
    }
}

struct ScrapeOp {
    cursor: ScrapeCursor,
    tally: ScrapeTally,
}

/// Scrapes every active decoy. `None`: the node is stopping.
async fn run_scrape(
    client: &Arc<Client>,
    table: &Arc<DecoyTable>,
    settings: &AnnounceSettings,
    batch: usize,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<ScrapeTally> {
    let op = Arc::new(Mutex::new(ScrapeOp {
        cursor: ScrapeCursor::new(batch),
        tally: ScrapeTally::default(),
    }));
    let mut lanes = JoinSet::new();
    for _ in 0..client.lanes(settings) {
        let (client, table, op) = (Arc::clone(client), Arc::clone(table), Arc::clone(&op));
        lanes.spawn(async move {
            let mut lane = client.lane();
            loop {
                let batch = {
                    let mut guard = lock(&op);
                    if guard.tally.aborted() {
                        return;
                    }
                    match guard.cursor.next_batch(&table) {
                        Some(b) => b,
                        None => return,
                    }
                };
                let result = client.scrape(&mut lane, &batch).await;
                lock(&op).tally.record(&result);
            }
        });
    }
    tokio::select! {
        _ = async { while lanes.join_next().await.is_some() {} } => {}
        _ = crate::server::stopped(shutdown) => return None,
    }
    let tally = std::mem::take(&mut lock(&op).tally);
    Some(tally)
}

/// After a catalogue reload: the new table, with each decoy's mark moved to
/// its place in it.
fn follow_reload(
    live: &LiveTable,
    table: &mut Arc<DecoyTable>,
    generation: &mut u64,
    state: AnnounceState,
) -> AnnounceState {
    if live.generation() == *generation {
        return state;
    }
    let (new, g) = live.current_with_generation();
    let moved = state.moved_to(&*table, new.len(), |h| new.index_of(h));
    (*table, *generation) = (new, g);
    moved
}

fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    u64::from_le_bytes(b)
}

/// Announces every active decoy to one tier of trackers (`tier`: 1 = the
/// first), in rounds at the tracker's interval, with reconcile ticks in
/// between, until `shutdown`. Updates each of the tier's trackers in
/// `status`.
pub async fn announce_loop(
    tier: usize,
    urls: Vec<TrackerUrl>,
    table: impl Into<LiveTable>,
    settings: AnnounceSettings,
    status: Arc<StatusBoard>,
    mut shutdown: watch::Receiver<bool>,
) {
    if urls.is_empty() {
        return;
    }
    let settings = Arc::new(settings);
    let names: Vec<Arc<str>> = urls.iter().map(|u| Arc::from(u.raw.as_str())).collect();
    let mut order = TierOrder::new(urls.len(), settings.shuffle.then(random_seed));
    for (i, name) in names.iter().enumerate() {
        status.update(name, |t| {
            t.tier = tier;
            t.scrape.supported = urls[i].scheme == Scheme::Udp || urls[i].scrape_path().is_some();
            t.state = if i == order.current() {
                "pending"
            } else {
                "standby"
            }
            .into();
        });
    }
    let live: LiveTable = table.into();
    let (mut table, mut generation) = live.current_with_generation();
    let mut state = AnnounceState::new(table.len());
    let mut backoff = Backoff::default();
    let mut client: Option<Arc<Client>> = None;
    // The tracker in use answered its last round or tick: ticks may run.
    let mut healthy = false;
    let mut next_round = Instant::now();
    loop {
        state = follow_reload(&live, &mut table, &mut generation, state);
        let current = order.current();
        let name = &names[current];
        if Instant::now() < next_round {
            let wake = if healthy {
                next_round.min(Instant::now() + settings.reconcile_every)
            } else {
                next_round
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = crate::server::stopped(&mut shutdown) => return,
            }
            let Some(c) = client.as_ref().filter(|_| healthy && Instant::now() < next_round) else {
                continue;
            };
            state = follow_reload(&live, &mut table, &mut generation, state);
            if state.changes(&table).is_empty() {
                continue;
            }
            let Some((s, tally)) = run_announces(
                c,
                &table,
                &settings,
                name,
                SweepKind::Changes,
                state,
                &mut shutdown,
            )
            .await
            else {
                return;
            };
            state = s;
            tracing::info!(
                tracker = %name,
                started = tally.started,
                stopped = tally.stopped,
                failed = tally.failed(),
                "tracker synced with the schedule"
            );
            status.update(name, |t| {
                t.started += tally.started;
                t.stopped += tally.stopped;
                t.tracked = state.listed() as u64;
                if let Some(e) = &tally.last_error {
                    t.last_error = Some(e.clone());
                }
            });
            if tally.tick_failed() {
                // The tracker stopped answering: as after a failed round.
                healthy = false;
                status.update(name, |t| t.state = "failing".into());
                let wait = give_way(&mut order, &mut backoff, &mut state, &mut client, &names, &status);
                next_round = Instant::now() + wait;
                status.update(&names[order.current()], |t| {
                    t.next_round_at_ms = Some(at_ms_from_now(wait.as_millis()));
                });
            }
            continue;
        }

        // A full round.
        let round_started = Instant::now();
        let opened = tokio::select! {
            c = Client::open(&urls[current], settings.bind) => c,
            _ = crate::server::stopped(&mut shutdown) => return,
        };
        let tally = match opened {
            Ok(c) => {
                let c = Arc::new(c);
                client = Some(Arc::clone(&c));
                let Some((s, tally)) =
                    run_announces(&c, &table, &settings, name, SweepKind::Full, state, &mut shutdown).await
                else {
                    return;
                };
                state = s;
                tally
            }
            Err(e) => {
                client = None;
                tracing::warn!(tracker = %name, error = %e, "tracker unreachable");
                let mut tally = Tally::default();
                tally.record(super::AnnounceEvent::None, &Err(e));
                tally
            }
        };
        let took = round_started.elapsed();
        let failed = tally.round_failed();
        let wait = if failed {
            give_way(&mut order, &mut backoff, &mut state, &mut client, &names, &status)
        } else {
            order.succeeded();
            backoff.reset();
            tally.next_round_in()
        };
        healthy = !failed;
        next_round = Instant::now() + wait;
        tracing::info!(
            tracker = %name,
            announced = tally.ok,
            failed = tally.failed(),
            next_in_s = wait.as_secs(),
            took_ms = took.as_millis() as u64,
            "tracker round done"
        );
        let listed = state.listed() as u64;
        status.update(name, |t: &mut TrackerStatus| {
            t.state = if failed { "failing" } else { "ok" }.into();
            t.rounds += 1;
            t.last_round_at_ms = Some(unix_now_ms());
            t.last_round_took_ms = Some(took.as_millis() as u64);
            t.announced = tally.ok;
            t.failed = tally.failed();
            t.started += tally.started;
            t.stopped += tally.stopped;
            t.tracked = if order.current() == current { listed } else { 0 };
            if tally.last_error.is_some() {
                t.last_error = tally.last_error.clone();
            }
            t.next_round_at_ms = (order.current() == current).then(|| at_ms_from_now(wait.as_millis()));
        });
        if order.current() != current {
            // The next tracker of the tier takes over at `next_round`.
            status.update(&names[order.current()], |t| {
                t.next_round_at_ms = Some(at_ms_from_now(wait.as_millis()));
            });
        }
        if failed {
            continue;
        }
        let Some(c) = client.clone() else { continue };
        let Some(batch) = c.scrape_batch() else {
            status.update(name, |t| t.scrape.supported = false);
            continue;
        };
        let scrape_started = Instant::now();
        let Some(scrape) = run_scrape(&c, &table, &settings, batch, &mut shutdown).await else {
            return;
        };
        let scrape_took = scrape_started.elapsed().as_millis() as u64;
        tracing::info!(
            tracker = %name,
            decoys = scrape.decoys,
            listed = scrape.listed,
            seeders = scrape.seeders,
            leechers = scrape.leechers,
            downloaded = scrape.downloaded,
            failed = scrape.failed,
            took_ms = scrape_took,
            "tracker scrape done"
        );
        status.update(name, |t| {
            t.scrape = ScrapeStatus {
                supported: true,
                at_ms: Some(unix_now_ms()),
                took_ms: Some(scrape_took),
                decoys: scrape.decoys,
                listed: scrape.listed,
                seeders: scrape.seeders,
                leechers: scrape.leechers,
                downloaded: scrape.downloaded,
                failed: scrape.failed,
                last_error: scrape.last_error.clone(),
            };
        });
    }
}

/// The tracker in use failed: the next of its tier takes over (fresh: it
/// has nothing from us), at once, or after a backoff once every tracker of
/// the tier has failed. Returns the wait.
fn give_way(
    order: &mut TierOrder,
    backoff: &mut Backoff,
    state: &mut AnnounceState,
    client: &mut Option<Arc<Client>>,
    names: &[Arc<str>],
    status: &StatusBoard,
) -> Duration {
    let before = order.current();
    let exhausted = order.failed();
    let now = order.current();
    if now != before {
        state.reset();
        *client = None;
        status.update(&names[before], |t| {
            t.tracked = 0;
            t.next_round_at_ms = None;
        });
        status.update(&names[now], |t| {
            if t.state == "standby" {
                t.state = "pending".into();
            }
        });
        tracing::warn!(from = %names[before], to = %names[now], "tracker failed; the next of its tier takes over");
    }
    if exhausted {
        backoff.next_wait()
    } else {
        Duration::ZERO
    }
}
