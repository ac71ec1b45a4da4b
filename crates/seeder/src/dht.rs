//! The tokio driver of the DHT node: one UDP socket, the sans-IO
//! `warnseed_dht::Node`, and a schedule that announces every decoy once per
//! interval, spread evenly over it. Interest (queries that name one of our
//! decoys) is logged and counted into the ledger every minute.

use crate::decoys::DecoyTable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use warnseed_dht::{Config, DecoyIndex, Event, Node, NodeId, TokenIssuer};
use warnseed_ledger::InterestAggregator;

/// Lookups the announcer keeps running at once.
const MAX_ANNOUNCES_IN_FLIGHT: usize = 16;

#[derive(Clone, Debug)]
pub struct DhtSettings {
    /// `host:port` of nodes to join through.
    pub bootstrap: Vec<String>,
    /// Our BitTorrent peer address: its port is announced, and its IP (if
    /// not unspecified) is returned for our decoys.
    pub peer_addr: SocketAddr,
    /// Every decoy is announced once per interval.
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
    let result = tokio::task::spawn_blocking(move || {
        warnseed_ledger::LedgerStore::open(&path).and_then(|mut store| store.add_interest(&rows))
    })
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

struct TableIndex(Arc<DecoyTable>);

impl DecoyIndex for TableIndex {
    fn contains(&self, info_hash: &[u8; 20]) -> bool {
        self.0.lookup(info_hash).is_some()
    }
    fn sample(&self, target: &NodeId, n: usize) -> Vec<[u8; 20]> {
        self.0.info_hashes_from(&target.0, n)
    }
    fn count(&self) -> u64 {
        self.0.active_len() as u64
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system provides randomness");
    b
}

/// Runs the node on `socket` until `stop` turns true.
pub async fn run_dht(
    table: Arc<DecoyTable>,
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
    let mut node = Node::new(id, config, TableIndex(Arc::clone(&table)), tokens);
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
    let mut next_save = Instant::now() + SAVE_NODES_EVERY;
    let mut interest = InterestAggregator::new(MAX_INTEREST_KEYS);
    let mut next_flush = Instant::now() + FLUSH_INTEREST_EVERY;
    tracing::info!(listen = %local, bootstrap = bootstrap.len(), decoys = table.len(), "DHT node started");

    // Announces: decoy i of n at start + i/n of the interval, after a short
    // wait for the routing table to fill.
    let n = table.len().max(1) as u32;
    let spacing = settings.announce_interval / n;
    let mut next_announce = Instant::now() + Duration::from_secs(2);
    let mut cursor = 0usize;
    let mut buf = vec![0u8; warnseed_dht::krpc::MAX_MESSAGE + 1];
    let mut announced = 0u64;
    // Decoys of the current round stored on at least one node.
    let mut stored_round = 0u64;
    loop {
        let now = Instant::now();
        while let Some((to, bytes)) = node.poll_transmit(now) {
            if let Err(e) = socket.send_to(&bytes, to).await {
                tracing::debug!(to = %to, error = %e, "DHT send failed");
            }
        }
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
                    node_id = %warnseed_bittorrent::metainfo::hex(&node_id.0),
                    query,
                    info_hash = %warnseed_bittorrent::metainfo::hex(&info_hash),
                    "DHT interest"
                    )
                }
                Event::Announced { info_hash, nodes } => {
                    announced += 1;
                    stored_round += u64::from(nodes > 0);
                    tracing::debug!(info_hash = %warnseed_bittorrent::metainfo::hex(&info_hash), nodes, "announced");
                    if announced.is_multiple_of(u64::from(n)) {
                        tracing::info!(
                            decoys = n,
                            stored = stored_round,
                            routing_table = node.table().len(),
                            "DHT announce round complete"
                        );
                        stored_round = 0;
                    }
                }
                Event::Peers { .. } => {}
            }
        }
        if now >= next_announce && !table.is_empty() && node.active_lookups() < MAX_ANNOUNCES_IN_FLIGHT {
            // Retired and unreleased decoys keep their slot but are skipped.
            if let Some(info_hash) = table.info_hash_at(cursor) {
                node.announce(info_hash);
            }
            cursor = (cursor + 1) % table.len();
            next_announce = now + spacing;
            continue;
        }
        node.forget_paced(now);
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
        let wake = [
            node.next_timeout(),
            Some(next_announce),
            Some(next_flush),
            Some(next_save),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_secs(1))
        .max(now + Duration::from_millis(1));
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                match r {
                    // A datagram longer than any KRPC message is dropped unread.
                    Ok((len, from)) if len <= warnseed_dht::krpc::MAX_MESSAGE => {
                        node.handle_datagram(from, &buf[..len], Instant::now());
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e, "DHT receive failed"),
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                node.handle_timeout(Instant::now());
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    if let Some(path) = &settings.nodes_file {
                        save_nodes(path, &node);
                    }
                    flush_interest(&settings.ledger, &mut interest).await;
                    return Ok(());
                }
            }
        }
    }
}
