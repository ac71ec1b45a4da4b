//! The tokio driver of the DHT node: one UDP socket, the sans-IO
//! `warnseed_dht::Node`, and a schedule that announces every active decoy
//! once per interval, spread evenly over it, through the keyspace sweep
//! (`warnseed_dht::sweep`: decoys in info-hash order, in as many lanes as
//! the network's size needs, each announce reusing the closest nodes of
//! its region). Each round is logged (decoys announced, packets per
//! announce, nodes stored on), and so is a BEP 42 id change. Interest
//! (queries that name one of our decoys) is logged and counted into the
//! ledger every minute.

use crate::decoys::{DecoyTable, LiveTable};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use warnseed_bittorrent::metainfo::hex;
use warnseed_dht::{
    lanes_for, Config, Counters, DecoyIndex, Event, Node, NodeId, SweepSchedule, TokenIssuer,
};
use warnseed_ledger::InterestAggregator;

#[derive(Clone, Debug)]
pub struct DhtSettings {
    /// `host:port` of nodes to join through.
    pub bootstrap: Vec<String>,
    /// Our BitTorrent peer address: its port is announced, and its IP (if
    /// not unspecified) is returned for our decoys.
    pub peer_addr: SocketAddr,
    /// Every active decoy is announced once per interval, evenly spread.
    pub announce_interval: Duration,
    /// Where the routing table's nodes are kept across restarts (one
    /// `ip:port` a line); they join the bootstrap list on the next start.
    pub nodes_file: Option<std::path::PathBuf>,
    /// The ledger interest goes to (counted per minute; see
    /// `warnseed_ledger::InterestAggregator`).
    pub ledger: Option<std::path::PathBuf>,
}

/// Interest is written to the ledger this often (and at stop).
const FLUSH_INTEREST_EVERY: Duration = Duration::from_secs(60);
/// Distinct (minute, info hash, address, query) keys held between writes.
const MAX_INTEREST_KEYS: usize = 100_000;

/// Writes gathered interest on a blocking thread, so the UDP loop never
/// waits on SQLite. A failed write is logged and its counts are lost: they
/// are statistics, not evidence.
async fn flush_interest(ledger: &Option<std::path::PathBuf>, agg: &mut InterestAggregator) {
    let (Some(path), false) = (ledger.clone(), agg.is_empty()) else {
        return;
    };
    let rows = agg.take();
    let result =
        tokio::task::spawn_blocking(move || warnseed_ledger::LedgerStore::add_interest_at(&path, &rows))
            .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write DHT interest to the ledger"),
        Err(e) => tracing::error!(error = %e, "DHT interest writer failed"),
    }
}

/// How often the routing table is written to `nodes_file`.
const SAVE_NODES_EVERY: Duration = Duration::from_secs(10 * 60);

fn load_nodes(path: &std::path::Path) -> Vec<SocketAddr> {
    std::fs::read_to_string(path)
        .map(|text| text.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

fn save_nodes(path: &std::path::Path, node: &Node<TableIndex>) {
    let text: String = node
        .table()
        .entries()
        .filter(|e| !e.is_bad())
        .map(|e| format!("{}\n", e.node.addr))
        .collect();
    let tmp = path.with_extension("tmp");
    let result = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot save DHT nodes");
    }
}

struct TableIndex(LiveTable);

impl DecoyIndex for TableIndex {
    fn contains(&self, info_hash: &[u8; 20]) -> bool {
        self.0.current().lookup(info_hash).is_some()
    }
    fn sample(&self, target: &NodeId, n: usize) -> Vec<[u8; 20]> {
        self.0.current().info_hashes_from(&target.0, n)
    }
    fn count(&self) -> u64 {
        self.0.current().active_len() as u64
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    b
}

/// Announces running at once at most: four seconds' worth at the
/// announce rate (each one waits at least a pacing interval between its
/// get_peers and its announce_peer to the same node, longer across
/// timeouts), and never fewer than 16.
fn max_in_flight(announces_per_sec: f64) -> usize {
    ((announces_per_sec * 4.0).ceil() as usize).clamp(16, 50_000)
}

/// Packets sent between two reads of the socket at most.
const SEND_BURST: usize = 32;
/// First announce this long after the start, so the routing table can fill.
const FIRST_ANNOUNCE_AFTER: Duration = Duration::from_secs(2);
/// A driver that fell behind catches up at most this much at once.
const MAX_CATCH_UP: Duration = Duration::from_secs(1);
/// Totals are logged this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// One pass over the decoy table.
struct Round {
    number: u64,
    lanes: usize,
    started_at: Instant,
    started: u64,
    finished: u64,
    /// Decoys stored on at least one node.
    stored: u64,
    /// Nodes stored on, summed over decoys.
    nodes: u64,
    packets: u64,
    /// Every slot of the round was handed out.
    scheduled: bool,
}

/// Which decoy is announced next, and what each round achieved.
struct Announcer {
    schedule: SweepSchedule,
    rounds: VecDeque<Round>,
    /// Round of each announce still running (an info hash can be in
    /// flight twice when lookups outlast the interval).
    in_flight: HashMap<[u8; 20], VecDeque<u64>>,
    next_round: u64,
}

impl Announcer {
    fn new() -> Self {
        Self {
            schedule: SweepSchedule::new(0, 1),
            rounds: VecDeque::new(),
            in_flight: HashMap::new(),
            next_round: 1,
        }
    }

    /// The next active decoy to announce, starting a round when the last
    /// one has handed out every slot; inactive decoys are skipped.
    fn next_info_hash(
        &mut self,
        table: &DecoyTable,
        lanes: impl Fn() -> usize,
        now: Instant,
    ) -> Option<[u8; 20]> {
        let mut scanned = 0usize;
        loop {
            let slot = match self.schedule.next_slot() {
                Some(slot) => slot,
                None => {
                    if let Some(r) = self.rounds.back_mut() {
                        r.scheduled = true;
                    }
                    if scanned > table.len() || table.is_empty() {
                        return None;
                    }
                    let lanes = lanes();
                    self.schedule = SweepSchedule::new(table.len(), lanes);
                    self.rounds.push_back(Round {
                        number: self.next_round,
                        lanes: self.schedule.lanes(),
                        started_at: now,
                        started: 0,
                        finished: 0,
                        stored: 0,
                        nodes: 0,
                        packets: 0,
                        scheduled: false,
                    });
                    self.next_round += 1;
                    continue;
                }
            };
            scanned += 1;
            if let Some(info_hash) = table.info_hash_at(slot) {
                let round = self.rounds.back_mut().expect("a round is running");
                round.started += 1;
                self.in_flight
                    .entry(info_hash)
                    .or_default()
                    .push_back(round.number);
                return Some(info_hash);
            }
        }
    }

    /// An announce finished; returns the rounds that are now complete.
    fn finished(&mut self, info_hash: &[u8; 20], nodes: usize, packets: usize) -> Vec<Round> {
        let number = match self.in_flight.get_mut(info_hash) {
            Some(q) => {
                let n = q.pop_front();
                if q.is_empty() {
                    self.in_flight.remove(info_hash);
                }
                n
            }
            None => None,
        };
        if let Some(r) = number.and_then(|n| self.rounds.iter_mut().find(|r| r.number == n)) {
            r.finished += 1;
            r.stored += u64::from(nodes > 0);
            r.nodes += nodes as u64;
            r.packets += packets as u64;
        }
        let mut done = Vec::new();
        while self
            .rounds
            .front()
            .is_some_and(|r| r.scheduled && r.finished >= r.started)
        {
            done.push(self.rounds.pop_front().expect("present"));
        }
        done
    }
}

fn per(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 100.0).round() / 100.0
    }
}

fn log_round(r: &Round, node: &Node<TableIndex>, now: Instant) {
    let (cache_nodes, regions) = node.cache_size();
    tracing::info!(
        round = r.number,
        decoys = r.finished,
        stored = r.stored,
        nodes_stored_on = r.nodes,
        nodes_per_announce = per(r.nodes, r.finished),
        packets_per_announce = per(r.packets, r.finished),
        lanes = r.lanes,
        seconds = now.saturating_duration_since(r.started_at).as_secs(),
        routing_table = node.table().len(),
        cache_nodes,
        regions,
        network_estimate = node.network_size_estimate().unwrap_or(0.0).round(),
        "DHT announce round complete"
    );
}

/// Node totals, logged every [`PROGRESS_EVERY`] and at stop (benchmarks
/// read the stop line).
fn log_totals(c: &Counters, node: &Node<TableIndex>, stopped: bool) {
    let (cache_nodes, regions) = node.cache_size();
    macro_rules! totals {
        ($msg:literal) => {
            tracing::info!(
                announces = c.announces,
                announce_packets = c.announce_packets,
                packets_per_announce = per(c.announce_packets, c.announces),
                nodes_stored_on = c.stored_on,
                stored_acked = c.stored_acked,
                region_lookups = c.region_lookups,
                closer_found = c.closer_found,
                queries_sent = c.queries_sent,
                replies_sent = c.replies_sent,
                timeouts = c.timeouts,
                id_changes = c.id_changes,
                in_flight = node.active_lookups(),
                queued = node.queued_queries(),
                routing_table = node.table().len(),
                cache_nodes,
                regions,
                network_estimate = node.network_size_estimate().unwrap_or(0.0).round(),
                $msg
            )
        };
    }
    if stopped {
        totals!("DHT node stopped");
    } else {
        totals!("DHT announce progress");
    }
}

/// Runs the node on `socket` until `stop` turns true.
pub async fn run_dht(
    table: impl Into<LiveTable>,
    socket: UdpSocket,
    settings: DhtSettings,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let id = if local.ip().is_unspecified() {
        NodeId(random())
    } else {
        NodeId::for_ip(local.ip(), random())
    };
    let tokens = TokenIssuer::new(Instant::now(), Box::new(random::<16>));
    let mut config = Config::new(settings.peer_addr);
    config.own_addr = Some(local);
    let live: LiveTable = table.into();
    let (mut table, mut generation) = live.current_with_generation();
    let mut node = Node::new(id, config, TableIndex(live.clone()), tokens);
    let mut bootstrap = Vec::new();
    for host in &settings.bootstrap {
        match tokio::net::lookup_host(host.as_str()).await {
            Ok(addrs) => bootstrap.extend(addrs.filter(|a| a.is_ipv4() == local.is_ipv4())),
            Err(e) => tracing::warn!(host = %host, error = %e, "cannot resolve DHT bootstrap node"),
        }
    }
    if let Some(path) = &settings.nodes_file {
        let saved = load_nodes(path);
        bootstrap.extend(saved.into_iter().filter(|a| a.is_ipv4() == local.is_ipv4()));
        bootstrap.sort();
        bootstrap.dedup();
    }
    node.bootstrap(&bootstrap);
    let started = Instant::now();
    let mut next_save = started + SAVE_NODES_EVERY;
    let mut interest = InterestAggregator::new(MAX_INTEREST_KEYS);
    let mut next_flush = started + FLUSH_INTEREST_EVERY;
    let mut next_progress = started + PROGRESS_EVERY;
    let mut next_forget = started + Duration::from_secs(1);
    tracing::info!(
        listen = %local,
        bootstrap = bootstrap.len(),
        decoys = table.len(),
        active = table.active_len(),
        "DHT node started"
    );

    // Every active decoy once per interval, evenly spaced: the spacing
    // follows the active count as the campaign releases and retires decoys.
    let interval = settings.announce_interval.max(Duration::from_millis(1));
    let mut announcer = Announcer::new();
    let mut next_announce = started + FIRST_ANNOUNCE_AFTER;
    let mut buf = vec![0u8; warnseed_dht::krpc::MAX_MESSAGE + 1];
    loop {
        node.handle_timeout(Instant::now());
        // Sends go out in bursts of at most SEND_BURST, with the socket
        // read in between: a burst of queries comes back as a burst of
        // replies at once, and the kernel's receive buffer holds only a
        // couple of hundred. Each packet is paced by the instant it
        // actually leaves.
        let mut sent = 0;
        while sent < SEND_BURST {
            let Some((to, bytes)) = node.poll_transmit(Instant::now()) else {
                break;
            };
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(to = %to, error = %e, "DHT send failed");
            }
            sent += 1;
        }
        let more_to_send = sent == SEND_BURST;
        let now = Instant::now();
        while let Some(event) = node.poll_event() {
            match event {
                Event::Interest {
                    from,
                    node_id,
                    query,
                    info_hash,
                } => {
                    interest.record(warnseed_ledger::unix_ms(), info_hash, from, node_id.0, query);
                    tracing::info!(
                        from = %from,
                        node_id = %hex(&node_id.0),
                        query,
                        info_hash = %hex(&info_hash),
                        "DHT interest"
                    )
                }
                Event::Announced {
                    info_hash,
                    nodes,
                    packets,
                } => {
                    tracing::debug!(info_hash = %hex(&info_hash), nodes, packets, "announced");
                    for round in announcer.finished(&info_hash, nodes, packets) {
                        if round.started > 0 {
                            log_round(&round, &node, now);
                        }
                    }
                }
                Event::IdChanged {
                    old,
                    new,
                    external_ip,
                    voters,
                } => tracing::info!(
                    old = %hex(&old.0),
                    new = %hex(&new.0),
                    external_ip = %external_ip,
                    voters,
                    "DHT node id changed to a BEP 42 id for our external address"
                ),
                Event::Peers { .. } => {}
            }
        }
        if now >= next_announce {
            // A reloaded catalogue: the round goes on over the new table
            // (a table only grows, so its positions are all there; the few
            // decoys they shift past wait for the next round) rather than
            // start again, which imports more frequent than the interval
            // would turn into a sweep that never reaches its end.
            if live.generation() != generation {
                (table, generation) = live.current_with_generation();
                tracing::info!(
                    decoys = table.len(),
                    active = table.active_len(),
                    "DHT: announcing the reloaded catalogue"
                );
            }
            let active = table.active_len();
            if active == 0 {
                next_announce = now + Duration::from_secs(1);
            } else {
                let rate = active as f64 / interval.as_secs_f64();
                let spacing = interval / active.min(u32::MAX as usize) as u32;
                let cap = max_in_flight(rate);
                let mut started = 0;
                while now >= next_announce && node.active_lookups() < cap && started < 256 {
                    let lanes = || lanes_for(rate, active, node.network_size_estimate());
                    let Some(info_hash) = announcer.next_info_hash(&table, lanes, now) else {
                        break;
                    };
                    node.sweep_announce(info_hash, now);
                    next_announce += spacing;
                    started += 1;
                }
                if now.saturating_duration_since(next_announce) > MAX_CATCH_UP {
                    next_announce = now - MAX_CATCH_UP;
                }
                // Their queries go out from the top of the loop, after the
                // socket was read (next_timeout() is now).
            }
        }
        if now >= next_forget {
            node.forget_paced(now);
            next_forget = now + Duration::from_secs(1);
        }
        if now >= next_progress {
            log_totals(&node.counters(), &node, false);
            next_progress = now + PROGRESS_EVERY;
        }
        if now >= next_flush {
            flush_interest(&settings.ledger, &mut interest).await;
            next_flush = now + FLUSH_INTEREST_EVERY;
        }
        if now >= next_save {
            if let Some(path) = &settings.nodes_file {
                save_nodes(path, &node);
            }
            next_save = now + SAVE_NODES_EVERY;
        }
        // With the in-flight cap reached, finishing lookups (a datagram or
        // a timeout) is what lets the next announce start.
        let announce_wake =
            if node.active_lookups() >= max_in_flight(table.active_len() as f64 / interval.as_secs_f64()) {
                None
            } else {
                Some(next_announce)
            };
        let wake = [
            more_to_send.then_some(now),
            node.next_timeout(),
            announce_wake,
            Some(next_forget),
            Some(next_progress),
            Some(next_flush),
            Some(next_save),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1));
        let wake = if more_to_send {
            wake
        } else {
            wake.max(now + Duration::from_millis(1))
        };
        tokio::select! {
            // Stop first: under load a datagram is always ready.
            biased;
            _ = stop.changed() => {
                if *stop.borrow() {
                    if let Some(path) = &settings.nodes_file {
                        save_nodes(path, &node);
                    }
                    flush_interest(&settings.ledger, &mut interest).await;
                    log_totals(&node.counters(), &node, true);
                    return Ok(());
                }
            }
            r = socket.recv_from(&mut buf) => {
                match r {
                    // A datagram longer than any KRPC message is dropped unread.
                    Ok((len, from)) if len <= warnseed_dht::krpc::MAX_MESSAGE => {
                        node.handle_datagram(from, &buf[..len], Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "DHT receive failed"),
                }
                // Take what else has arrived without waiting again.
                for _ in 0..256 {
                    match socket.try_recv_from(&mut buf) {
                        Ok((len, from)) if len <= warnseed_dht::krpc::MAX_MESSAGE => {
                            node.handle_datagram(from, &buf[..len], Instant::now());
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                node.handle_timeout(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use warnseed_payload::{FillMode, PayloadSet};

    fn table(n: usize) -> Arc<DecoyTable> {
        let payloads =
            Arc::new(PayloadSet::single(b"warning".to_vec(), "test", FillMode::Zeros, Vec::new()).unwrap());
        let titles: Vec<String> = (0..n).map(|i| format!("sample-title-{i:06}.mp4")).collect();
        Arc::new(DecoyTable::from_titles(
            payloads,
            titles
                .iter()
                .enumerate()
                .map(|(i, t)| (i as i64 + 1, t.as_str(), None)),
        ))
    }

    #[test]
    fn a_round_announces_every_active_decoy_once_and_completes_when_all_finished() {
        let table = table(10);
        for id in [2, 5, 9] {
            table.set_active(id, false);
        }
        let now = Instant::now();
        let mut announcer = Announcer::new();
        let mut round: Vec<[u8; 20]> = (0..7)
            .map(|_| announcer.next_info_hash(&table, || 3, now).unwrap())
            .collect();
        assert_eq!(announcer.rounds.len(), 1);
        assert_eq!(announcer.rounds[0].lanes, 3);
        // The next one starts round 2.
        let next = announcer.next_info_hash(&table, || 1, now).unwrap();
        assert_eq!(announcer.rounds.len(), 2);
        round.sort();
        let mut active: Vec<[u8; 20]> = (0..10).filter_map(|i| table.info_hash_at(i)).collect();
        active.sort();
        assert_eq!(round, active, "each active decoy once, the inactive ones skipped");
        // Round 1 is reported once its last announce finished.
        for (i, h) in round.iter().enumerate() {
            let done = announcer.finished(h, if i == 0 { 0 } else { 8 }, 16);
            if i < 6 {
                assert!(done.is_empty());
            } else {
                assert_eq!(done.len(), 1);
                let r = &done[0];
                assert_eq!(
                    (r.number, r.started, r.finished, r.stored, r.nodes, r.packets),
                    (1, 7, 7, 6, 48, 112)
                );
            }
        }
        // Nothing active: no announce, no busy loop.
        table.retain_active(|_| false);
        assert!(
            announcer.finished(&next, 8, 16).is_empty(),
            "round 2 is not fully handed out"
        );
        assert_eq!(announcer.next_info_hash(&table, || 1, now), None);
    }
    #[test]
    fn a_round_goes_on_over_a_grown_table_and_the_next_covers_it_all() {
        let now = Instant::now();
        let mut announcer = Announcer::new();
        let small = table(3);
        announcer.next_info_hash(&small, || 1, now).unwrap();
        // The catalogue grew mid-round: the round's other two positions are
        // taken from the new table, then round 2 covers all of it.
        let grown = table(6);
        for _ in 0..2 {
            announcer.next_info_hash(&grown, || 1, now).unwrap();
        }
        assert_eq!(announcer.rounds.len(), 1, "round 1 went on");
        let mut round: Vec<[u8; 20]> = (0..6)
            .map(|_| announcer.next_info_hash(&grown, || 1, now).unwrap())
            .collect();
        assert_eq!(announcer.rounds.len(), 2);
        assert_eq!((announcer.rounds[0].started, announcer.rounds[1].started), (3, 6));
        round.sort();
        let mut all: Vec<[u8; 20]> = (0..6).filter_map(|i| grown.info_hash_at(i)).collect();
        all.sort();
        assert_eq!(round, all, "every decoy of the new table once");
    }
}
