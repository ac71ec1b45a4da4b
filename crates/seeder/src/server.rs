//! The tokio driver for peer sessions: accept, per-connection task, upload
//! slots, ledger records, graceful stop.

use crate::decoys::{Decoy, LiveTable};
use crate::framing::Framing;
use crate::limiter::ConnectionLimiter;
use std::net::SocketAddr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use warnseed_bittorrent::client::decode_peer_id;
use warnseed_bittorrent::metainfo::hex;
use warnseed_bittorrent::session::{CloseReason, LocalIdentity, PeerSession, SeedContent, SessionLimits};
use warnseed_ledger::{RecordKind, SessionRecord, Transport};

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub limits: SessionLimits,
    pub identity: LocalIdentity,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Peers we upload to at once; the rest wait choked.
    pub upload_slots: usize,
    /// How long a peer keeps its upload slot while others wait for one.
    /// A decoy downloads in seconds; a peer that trickles requests (one
    /// block a minute keeps a slot from going idle) would otherwise hold
    /// it for ever, and a few addresses could hold every slot.
    pub slot_tenure: std::time::Duration,
}

/// A session's place in [`Shared::slot_waiters`]: counted while it waits,
/// uncounted when it stops waiting or ends, however it ends.
struct SlotWaiter<'a> {
    count: &'a std::sync::atomic::AtomicUsize,
    counted: bool,
}

impl SlotWaiter<'_> {
    fn set(&mut self, waiting: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if waiting != self.counted {
            if waiting {
                self.count.fetch_add(1, Relaxed);
            } else {
                self.count.fetch_sub(1, Relaxed);
            }
            self.counted = waiting;
        }
    }
}

impl Drop for SlotWaiter<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// A peer whose slot went to a waiting one asks again only after this.
const SLOT_REST: std::time::Duration = std::time::Duration::from_secs(10);

impl ServerConfig {
    pub fn new(identity: LocalIdentity) -> Self {
        Self {
            limits: SessionLimits::default(),
            identity,
            max_connections: 20_000,
            max_connections_per_ip: 16,
            upload_slots: 1_000,
            slot_tenure: std::time::Duration::from_secs(120),
        }
    }
}

/// Every closed connection, registered or not; tests and metrics watch it.
#[derive(Clone, Debug)]
pub struct ConnectionClosed {
    pub remote: SocketAddr,
    pub info_hash: Option<[u8; 20]>,
    pub reason: CloseReason,
    pub registered: bool,
}

pub struct PeerServer {
    table: LiveTable,
    config: ServerConfig,
    ledger: SyncSender<SessionRecord>,
    observer: Option<mpsc::UnboundedSender<ConnectionClosed>>,
}

use warnseed_ledger::unix_ms as now_ms;

impl PeerServer {
    /// Serves the decoys of `table`: an `Arc<DecoyTable>`, or a
    /// [`LiveTable`] whose table may be replaced while serving.
    pub fn new(table: impl Into<LiveTable>, config: ServerConfig, ledger: SyncSender<SessionRecord>) -> Self {
        Self {
            table: table.into(),
            config,
            ledger,
            observer: None,
        }
    }

    pub fn with_observer(mut self, observer: mpsc::UnboundedSender<ConnectionClosed>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Serves on every listener until `shutdown` turns true, then closes
    /// every session (each is registered with reason `shutdown`) and returns
    /// once all are recorded.
    pub async fn serve(self, listeners: Vec<TcpListener>, mut shutdown: watch::Receiver<bool>) {
        let shared = Arc::new(Shared {
            table: self.table,
            config: self.config.clone(),
            ledger: self.ledger,
            observer: self.observer,
            limiter: ConnectionLimiter::new(self.config.max_connections, self.config.max_connections_per_ip),
            slots: Arc::new(Semaphore::new(self.config.upload_slots)),
            slot_waiters: std::sync::atomic::AtomicUsize::new(0),
            recent_rotations: Default::default(),
        });
        let mut accepts = JoinSet::new();
        for listener in listeners {
            let shared = Arc::clone(&shared);
            let shutdown = shutdown.clone();
            accepts.spawn(accept_loop(listener, shared, shutdown));
        }
        stopped(&mut shutdown).await;
        while accepts.join_next().await.is_some() {}
    }
}

struct Shared {
    table: LiveTable,
    config: ServerConfig,
    ledger: SyncSender<SessionRecord>,
    observer: Option<mpsc::UnboundedSender<ConnectionClosed>>,
    limiter: Arc<ConnectionLimiter>,
    slots: Arc<Semaphore>,
    /// Sessions waiting for a slot now: holders past their tenure give
    /// theirs up only when someone waits.
    slot_waiters: std::sync::atomic::AtomicUsize,
    /// Slots given up for waiters in the last [`ROTATION_HANDOVER`].
    recent_rotations: std::sync::Mutex<std::collections::VecDeque<Instant>>,
}

/// How long a slot given up for a waiter counts as on its way to one
/// (waiters try for a slot every second).
const ROTATION_HANDOVER: std::time::Duration = std::time::Duration::from_secs(2);

impl Shared {
    /// Whether a holder past its tenure should give its slot up now.
    fn claim_rotation(&self, now: Instant) -> bool {
        let waiters = self.slot_waiters.load(std::sync::atomic::Ordering::Relaxed);
        claim_rotation(&self.recent_rotations, waiters, now)
    }
}

/// Yes while fewer slots were given up in the last [`ROTATION_HANDOVER`]
/// than peers wait (and then it counts this one).
fn claim_rotation(
    recent: &std::sync::Mutex<std::collections::VecDeque<Instant>>,
    waiters: usize,
    now: Instant,
) -> bool {
    if waiters == 0 {
        return false;
    }
    let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
    while recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) > ROTATION_HANDOVER)
    {
        recent.pop_front();
    }
    if recent.len() >= waiters {
        return false;
    }
    recent.push_back(now);
    true
}

/// Sessions of one accept loop that have not ended yet. Counted rather
/// than kept in a `JoinSet`: a set wakes the accept loop for every session
/// that ends, and each wake-up re-polled the listener (a failed `accept`
/// per crawler fetch, besides the wake-up itself).
#[derive(Default)]
struct Sessions {
    active: std::sync::atomic::AtomicUsize,
    none_left: tokio::sync::Notify,
}

impl Sessions {
    fn start(self: &Arc<Self>) -> SessionGuard {
        self.active.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        SessionGuard {
            sessions: Arc::clone(self),
            finished: false,
        }
    }

    async fn all_ended(&self) {
        loop {
            let notified = self.none_left.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a session ending in
            // between still wakes this.
            notified.as_mut().enable();
            if self.active.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Held by a session's task; its drop counts the session as ended, also
/// when the task never finished (it panicked, or the runtime went away).
struct SessionGuard {
    sessions: Arc<Sessions>,
    finished: bool,
}

impl SessionGuard {
    /// The session ran to its end (and registered itself).
    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!("a connection task failed; its session is not registered");
        }
        if self
            .sessions
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
            == 1
        {
            self.sessions.none_left.notify_waiters();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let sessions = Arc::new(Sessions::default());
    let mut stop = shutdown.clone();
    // Registered once, not per accepted connection (see run_connection).
    let stop_signal = stopped(&mut stop);
    tokio::pin!(stop_signal);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let Some(permit) = shared.limiter.try_acquire(remote.ip()) else {
                        tracing::info!(%remote, reason = "connection_limit", active = shared.limiter.active(), "connection refused");
                        notify(&shared, remote, None, CloseReason::ConnectionLimit, false);
                        continue;
                    };
                    let shared = Arc::clone(&shared);
                    let shutdown = shutdown.clone();
                    let guard = sessions.start();
                    tokio::spawn(async move {
                        run_connection(stream, remote, &shared, shutdown).await;
                        drop(permit);
                        guard.finish();
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            _ = &mut stop_signal => break,
        }
    }
    // Sessions see the same shutdown signal and finish on their own.
    sessions.all_ended().await;
}

/// Resolves once the shutdown flag is true (returns no borrow, so the
/// future stays `Send`).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn notify(
    shared: &Shared,
    remote: SocketAddr,
    info_hash: Option<[u8; 20]>,
    reason: CloseReason,
    registered: bool,
) {
    if let Some(o) = &shared.observer {
        let _ = o.send(ConnectionClosed {
            remote,
            info_hash,
            reason,
            registered,
        });
    }
}

enum Step {
    Read(std::io::Result<usize>),
    Wrote(std::io::Result<usize>),
    Timer,
    SlotRetry,
    Shutdown,
}

async fn run_connection(
    mut stream: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let started_ms = now_ms();
    let mut session: PeerSession<Decoy> = PeerSession::new(
        shared.config.limits.clone(),
        shared.config.identity.clone(),
        remote.ip(),
        Instant::now(),
    );
    // Read into spare capacity: a zeroed 64 KiB buffer per connection cost
    // a memset each when crawlers open thousands a second, and most
    // connections never read more than a few hundred bytes.
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut slot = None;
    let mut slot_since = Instant::now();
    let mut slot_rest_until: Option<Instant> = None;
    let mut waiter = SlotWaiter {
        count: &shared.slot_waiters,
        counted: false,
    };
    let mut framing = Framing::new(Instant::now());
    let session_key = session_key();
    let idle = shared.config.limits.idle_timeout;
    let (mut rd, mut wr) = stream.split();
    // One timer per connection, moved only when the deadline changes,
    // rather than a new one registered on every pass of the loop.
    let mut armed = session.poll_timeout().unwrap_or_else(Instant::now);
    let timer = tokio::time::sleep_until(armed.into());
    tokio::pin!(timer);
    // One shutdown waiter per connection, registered on the first pass:
    // a new one on every pass locked the channel's waiter list, which all
    // connections share, several times per crawler fetch.
    let shutdown_signal = stopped(&mut shutdown);
    tokio::pin!(shutdown_signal);
    let mut shutdown_seen = false;
    loop {
        if let Some(info_hash) = session.pending_lookup() {
            let mse_named = framing.mse_info_hash();
            match shared.table.current().lookup(info_hash) {
                // Under MSE the torrent was already named by req2; the
                // handshake inside must name the same one.
                Some(_) if mse_named.is_some_and(|h| h != info_hash) => session.refuse(
                    CloseReason::Encryption("handshake names another torrent than req2".into()),
                ),
                Some(decoy) => {
                    session.attach(decoy, Instant::now());
                    if let Some(open) =
                        open_record(remote, started_ms, session_key, &session, framing.transport())
                    {
                        register(shared, open).await;
                    }
                }
                None => session.refuse(CloseReason::UnknownInfoHash),
            }
        }
        let now = Instant::now();
        if session.wants_unchoke() && slot.is_none() && slot_rest_until.is_none_or(|t| now >= t) {
            if let Ok(permit) = Arc::clone(&shared.slots).try_acquire_owned() {
                slot = Some(permit);
                slot_since = now;
                session.unchoke(now);
            }
        }
        let past_tenure = slot.is_some() && now.duration_since(slot_since) >= shared.config.slot_tenure;
        // Only when every slot is taken (a free one would serve the
        // waiter), and one slot per waiter: holders checking at the same
        // moment must not all give theirs up for one.
        if past_tenure && shared.slots.available_permits() == 0 && shared.claim_rotation(now) {
            // Rotation: the slot goes to a waiting peer; this one queues
            // again after a rest (fast peers get rejects for what they
            // had asked for, BEP 6).
            session.choke();
            slot = None;
            slot_rest_until = Some(now + SLOT_REST);
        }
        if session.holds_idle_slot() && slot.is_some() {
            session.choke();
            slot = None;
        }
        // The session may choke on its own (an idle slot taken back on a
        // timer): its permit goes back too.
        if slot.is_some() && !session.is_unchoked() {
            slot = None;
        }
        if session.is_closed() {
            break;
        }
        let waiting_for_slot = session.wants_unchoke() && slot.is_none();
        // A peer resting after its turn would not take a freed slot: it
        // must not make a holder give one up.
        let counts_as_waiter = waiting_for_slot && slot_rest_until.is_none_or(|t| now >= t);
        waiter.set(counts_as_waiter);
        // A holder past its tenure looks once a second for someone waiting.
        let holding_past_tenure =
            slot.is_some() && now.duration_since(slot_since) >= shared.config.slot_tenure;
        let mut deadline = session
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + std::time::Duration::from_secs(60));
        let stall = framing.stall_deadline(idle);
        if let Some(stall) = stall {
            deadline = deadline.min(stall);
        }
        if deadline != armed {
            timer.as_mut().reset(deadline.into());
            armed = deadline;
        }
        buf.clear();
        let step = {
            let out = framing.transmit(&mut session);
            tokio::select! {
                r = rd.read_buf(&mut buf) => Step::Read(r),
                w = wr.write(out), if !out.is_empty() => Step::Wrote(w),
                _ = &mut timer => Step::Timer,
                // In a block, so no timer is made while the branch is off.
                _ = async { tokio::time::sleep(std::time::Duration::from_secs(1)).await }, if waiting_for_slot || holding_past_tenure => Step::SlotRetry,
                _ = &mut shutdown_signal, if !shutdown_seen => Step::Shutdown,
            }
        };
        let now = Instant::now();
        match step {
            Step::Read(Ok(0)) => session.close(CloseReason::PeerClosed),
            Step::Read(Ok(n)) => framing.on_read(&buf[..n], &mut session, &shared.table, now),
            Step::Read(Err(e)) | Step::Wrote(Err(e)) => session.close(io_reason(e)),
            Step::Wrote(Ok(n)) => framing.wrote(n, &mut session, now),
            Step::Timer if stall.is_some_and(|s| now >= s) => session.close(CloseReason::SendStalled),
            Step::Timer => session.handle_timeout(now),
            Step::SlotRetry => {}
            Step::Shutdown => {
                shutdown_seen = true;
                session.close(CloseReason::Shutdown);
            }
        }
    }
    drop(slot);
    drop(waiter);
    // Best effort: let a peer we drop for a protocol error see the reject
    // that explains it, but never wait on it for long.
    if !matches!(
        session.close_reason(),
        Some(CloseReason::PeerClosed | CloseReason::Io(_))
    ) {
        let pending = framing.transmit(&mut session);
        let len = pending.len();
        if len > 0 && len <= 64 * 1024 {
            let flush = wr.write_all(pending);
            if let Ok(Ok(())) = tokio::time::timeout(std::time::Duration::from_secs(1), flush).await {
                // Piece messages in what was flushed reached the peer.
                framing.wrote(len, &mut session, Instant::now());
            }
        }
    }
    // After the peer's own FIN there is nothing left to read, so dropping
    // the socket sends ours without a separate `shutdown` call (a syscall
    // per crawler fetch); otherwise shut down first so what was written
    // is flushed before the close.
    if !matches!(session.close_reason(), Some(CloseReason::PeerClosed)) {
        let _ = wr.shutdown().await;
    }
    if let Some(record) = finish(
        shared,
        remote,
        started_ms,
        session_key,
        &session,
        framing.transport(),
    ) {
        register(shared, record).await;
    }
}

/// Hands a record to the ledger writer. Its queue is bounded: when full,
/// the send waits on a blocking-pool thread, so evidence is never dropped
/// and the async workers keep serving.
async fn register(shared: &Shared, record: SessionRecord) {
    match shared.ledger.try_send(record) {
        Ok(()) => {}
        Err(TrySendError::Full(record)) => {
            let tx = shared.ledger.clone();
            let sent = tokio::task::spawn_blocking(move || tx.send(record).is_ok()).await;
            if !matches!(sent, Ok(true)) {
                tracing::error!("ledger writer is gone; session not registered");
            }
        }
        Err(TrySendError::Disconnected(_)) => {
            tracing::error!("ledger writer is gone; session not registered");
        }
    }
}

/// A session's key in the ledger: the millisecond it began (42 bits, good
/// until 2109) over a 21-bit counter that starts at a random value in each
/// process. Unique without coordination (two sessions would need the same
/// millisecond and the same counter value), positive so it reads naturally
/// in SQL, and increasing: the ledger indexes it, and keys that grow go to
/// the end of the index instead of a random page each, which made the key
/// index a third of the ledger's disk writes under a crawler's load.
fn session_key() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static COUNTER: OnceLock<AtomicU64> = OnceLock::new();
    let counter = COUNTER.get_or_init(|| {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).expect("the operating system provides randomness");
        AtomicU64::new(u64::from_le_bytes(b))
    });
    let low = counter.fetch_add(1, Ordering::Relaxed) & ((1 << 21) - 1);
    let ms = (now_ms().max(0) as u64) & ((1 << 42) - 1);
    ((ms << 21) | low) as i64
}

fn io_reason(e: std::io::Error) -> CloseReason {
    match e.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted => CloseReason::PeerClosed,
        _ => CloseReason::Io(e.to_string()),
    }
}

/// The record that registers a session as soon as it names a decoy, so a
/// node that dies mid-download has still registered the downloader.
fn open_record(
    remote: SocketAddr,
    started_ms: i64,
    session_key: i64,
    session: &PeerSession<Decoy>,
    transport: Transport,
) -> Option<SessionRecord> {
    let decoy = session.torrent()?;
    let summary = session.summary();
    Some(SessionRecord {
        kind: RecordKind::Open,
        session_key,
        started_at_ms: started_ms,
        ended_at_ms: started_ms,
        network: "bittorrent",
        decoy_id: decoy.id(),
        info_hash: *decoy.info_hash(),
        remote_ip: remote.ip(),
        remote_port: remote.port(),
        peer_id: summary.peer_id,
        client_name: summary.peer_id.as_ref().map(|p| decode_peer_id(p).to_string()),
        client_version: None,
        transport,
        bytes_sent: 0,
        pieces_sent: 0,
        piece_count: summary.piece_count,
        peer_pieces_initial: None,
        peer_pieces_final: 0,
        completed: false,
        close_reason: String::new(),
    })
}

/// Logs the end of a connection and builds its ledger record, if it named
/// a decoy.
fn finish(
    shared: &Shared,
    remote: SocketAddr,
    started_ms: i64,
    session_key: i64,
    session: &PeerSession<Decoy>,
    transport: Transport,
) -> Option<SessionRecord> {
    let reason = session.close_reason().cloned().unwrap_or(CloseReason::PeerClosed);
    let summary = session.summary();
    let summary = &summary;
    let Some(decoy) = session.torrent() else {
        tracing::info!(%remote, reason = %reason, "connection closed before a decoy was named");
        notify(shared, remote, summary.info_hash, reason, false);
        return None;
    };
    let client = || {
        let client = summary.peer_id.as_ref().map(decode_peer_id);
        client.map(|c| c.to_string()).unwrap_or_default()
    };
    // Sessions that took no piece (DHT indexers fetching metadata, clients
    // that only looked) come by the thousand a second under a crawler and
    // are all in the ledger anyway: the log keeps them at debug so that at
    // `info` it reads as a list of downloads.
    if summary.pieces_sent > 0 {
        tracing::info!(
            %remote,
            info_hash = %hex(decoy.info_hash()),
            decoy_id = decoy.id(),
            client = client(),
            bytes_sent = summary.bytes_sent,
            completed = summary.completed(),
            reason = %reason,
            "session closed"
        );
    } else {
        tracing::debug!(
            %remote,
            info_hash = %hex(decoy.info_hash()),
            decoy_id = decoy.id(),
            client = client(),
            bytes_sent = summary.bytes_sent,
            reason = %reason,
            "session closed without a piece"
        );
    }
    let opened = open_record(remote, started_ms, session_key, session, transport)?;
    let record = SessionRecord {
        kind: RecordKind::Close,
        ended_at_ms: now_ms(),
        client_version: summary.client_version.clone(),
        bytes_sent: summary.bytes_sent,
        pieces_sent: summary.pieces_sent,
        peer_pieces_initial: summary.peer_pieces_initial,
        peer_pieces_final: summary.peer_pieces,
        completed: summary.completed(),
        close_reason: reason.to_string(),
        ..opened
    };
    notify(shared, remote, Some(*decoy.info_hash()), reason, true);
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slot_is_given_up_per_waiter_at_a_time() {
        let recent = std::sync::Mutex::new(std::collections::VecDeque::new());
        let t0 = Instant::now();
        assert!(!claim_rotation(&recent, 0, t0), "nobody waits");
        // Two holders past their tenure check at once for one waiter.
        assert!(claim_rotation(&recent, 1, t0));
        assert!(!claim_rotation(&recent, 1, t0), "the second keeps its slot");
        // Two waiters: a second slot may go.
        assert!(claim_rotation(&recent, 2, t0));
        assert!(!claim_rotation(&recent, 2, t0));
        // Once the handover time has passed, a waiter still counted is
        // a new one.
        let later = t0 + ROTATION_HANDOVER + std::time::Duration::from_millis(1);
        assert!(claim_rotation(&recent, 1, later));
    }

    #[test]
    fn session_keys_are_positive_distinct_and_grow_with_time() {
        let keys: Vec<i64> = (0..10_000).map(|_| session_key()).collect();
        assert!(keys.iter().all(|&k| k > 0));
        let distinct: std::collections::HashSet<i64> = keys.iter().copied().collect();
        assert_eq!(distinct.len(), keys.len());
        // The millisecond is the high part.
        let ms = |k: i64| k >> 21;
        let now = now_ms();
        assert!(keys.iter().all(|&k| (now - 10_000..=now).contains(&ms(k))));
        std::thread::sleep(std::time::Duration::from_millis(3));
        let later = session_key();
        assert!(keys.iter().all(|&k| later > k), "a later millisecond sorts after");
    }
}
