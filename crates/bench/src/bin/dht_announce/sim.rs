//! The simulated DHT: many nodes on loopback, each a UDP socket on its own
//! 127.20.x.y address (pacing is per IP address, as libtorrent's is), in a
//! process of its own so the node under test shares nothing with it.
//!
//! Each node has a Kademlia routing table over the whole simulated network
//! (up to K nodes of every bucket, all of the close ones) and answers ping,
//! find_node, get_peers and announce_peer as libtorrent does: get_peers
//! gives a token bound to the querier's IP *and the info hash*, so an
//! announce_peer needs a get_peers for the same hash first. Replies carry
//! the querier's address (`ip`, BEP 42).
//!
//! Per source address and node it counts packets by method, the most
//! packets in any 1 s window, packets that came when 5 had already come in
//! the last second, and how often libtorrent's rate limiter (its
//! `dos_blocker`: 50 packets within 10 s bans a source for 5 minutes) would
//! have banned the source; and every accepted announce_peer. `report IP`
//! on stdin prints one JSON line with those totals, and checks every
//! announced info hash against the K nodes truly closest to it (by
//! sorting the whole network).

use anyhow::{bail, Context, Result};
use serde_json::json;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warnseed_bench::mix64;
use warnseed_dht::krpc::{self, Message, NodeInfo, Query, ReplyOut};
use warnseed_dht::NodeId;

pub const K: usize = 8;
/// libtorrent's dos_blocker: this many packets from one address within
/// [`DOS_WINDOW`] ban it for five minutes.
const DOS_PACKETS: u32 = 50;
const DOS_WINDOW: Duration = Duration::from_secs(10);
const DOS_BAN: Duration = Duration::from_secs(300);
/// The per-destination pace the benchmark checks: at most this many
/// packets in any one second.
pub const MAX_PER_SECOND: usize = 5;

/// Address of simulated node `i`: 127.20.0.1 up, 250 to a /24.
pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        20 + (i / 62_500) as u8,
        ((i / 250) % 250) as u8,
        (i % 250 + 1) as u8,
    )
}

fn node_id(seed: u64, i: usize) -> NodeId {
    let mut id = [0u8; 20];
    let mut z = mix64(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    for chunk in id.chunks_mut(8) {
        z = mix64(z.wrapping_add(0x9E37_79B9_7F4A_7C15));
        chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
    }
    NodeId(id)
}

#[derive(Default)]
struct SourceStats {
    packets: u64,
    /// ping, find_node, get_peers, announce_peer, other queries, non-queries.
    methods: [u64; 6],
    recent: VecDeque<Instant>,
    max_per_second: usize,
    over_pace: u64,
    dos_count: u32,
    dos_limit: Option<Instant>,
    dos_bans: u64,
    /// Accepted announce_peer: info hash and arrival.
    announced: Vec<([u8; 20], Instant)>,
    bad_tokens: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl SourceStats {
    fn record(&mut self, method: usize, now: Instant) {
        self.packets += 1;
        self.methods[method] += 1;
        self.first.get_or_insert(now);
        self.last = Some(now);
        self.recent.push_back(now);
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(1))
        {
            self.recent.pop_front();
        }
        self.max_per_second = self.max_per_second.max(self.recent.len());
        if self.recent.len() > MAX_PER_SECOND {
            self.over_pace += 1;
        }
        // libtorrent's dos_blocker::incoming, per source.
        match self.dos_limit {
            None => {
                self.dos_count = 1;
                self.dos_limit = Some(now + DOS_WINDOW);
            }
            Some(limit) => {
                self.dos_count += 1;
                if self.dos_count >= DOS_PACKETS {
                    if now < limit {
                        if self.dos_count == DOS_PACKETS {
                            self.dos_bans += 1;
                            self.dos_limit = Some(now + DOS_BAN);
                        }
                    } else {
                        self.dos_count = 0;
                        self.dos_limit = Some(now + DOS_WINDOW);
                    }
                }
            }
        }
    }
}

struct SimNode {
    id: NodeId,
    table: Vec<NodeInfo>,
    secret: [u8; 16],
    stats: Mutex<HashMap<IpAddr, SourceStats>>,
}

impl SimNode {
    fn closest(&self, target: &NodeId) -> Vec<NodeInfo> {
        let mut v = self.table.clone();
        if v.len() > K {
            v.select_nth_unstable_by_key(K - 1, |n| n.id.distance(target));
            v.truncate(K);
        }
        v.sort_by_key(|n| n.id.distance(target));
        v
    }

    /// libtorrent's token: a hash of a secret, the querier's IP and the
    /// info hash, so it is good for that info hash only.
    fn token(&self, ip: IpAddr, info_hash: &[u8; 20]) -> [u8; 4] {
        let mut h = Sha1::new();
        h.update(self.secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.update(info_hash);
        h.finalize()[..4].try_into().expect("4 bytes")
    }

    fn handle(&self, data: &[u8], from: SocketAddr, now: Instant) -> Option<Vec<u8>> {
        let message = krpc::parse(data);
        let (method, reply) = match &message {
            Ok(Message::Query { tid, query, .. }) => {
                let out = |r: ReplyOut<'_>| krpc::encode_reply(tid, &r, Some(&from));
                match query {
                    Query::Ping => (
                        0,
                        out(ReplyOut {
                            id: self.id,
                            ..Default::default()
                        }),
                    ),
                    Query::FindNode { target, .. } => {
                        let nodes = self.closest(target);
                        (
                            1,
                            out(ReplyOut {
                                id: self.id,
                                nodes: &nodes,
                                ..Default::default()
                            }),
                        )
                    }
                    Query::GetPeers { info_hash, .. } => {
                        let nodes = self.closest(&NodeId(*info_hash));
                        let token = self.token(from.ip(), info_hash);
                        (
                            2,
                            out(ReplyOut {
                                id: self.id,
                                nodes: &nodes,
                                token: Some(&token),
                                ..Default::default()
                            }),
                        )
                    }
                    Query::AnnouncePeer { info_hash, token, .. } => {
                        let good = *token == self.token(from.ip(), info_hash);
                        let mut stats = self.stats.lock().expect("stats");
                        let s = stats.entry(from.ip()).or_default();
                        s.record(3, now);
                        if good {
                            s.announced.push((*info_hash, now));
                            return Some(out(ReplyOut {
                                id: self.id,
                                ..Default::default()
                            }));
                        }
                        s.bad_tokens += 1;
                        return Some(krpc::encode_error(tid, krpc::ERROR_PROTOCOL, "invalid token"));
                    }
                    _ => (
                        4,
                        krpc::encode_error(tid, krpc::ERROR_METHOD_UNKNOWN, "method unknown"),
                    ),
                }
            }
            _ => {
                let mut stats = self.stats.lock().expect("stats");
                stats.entry(from.ip()).or_default().record(5, now);
                return None;
            }
        };
        self.stats
            .lock()
            .expect("stats")
            .entry(from.ip())
            .or_default()
            .record(method, now);
        Some(reply)
    }
}

/// A Kademlia routing table for `me` over the whole network: for every
/// bucket (ids sharing exactly d bits with `me`), all its nodes if K or
/// fewer, else K spread over it; and its K closest nodes.
fn routing_table(me: usize, ids: &[NodeId], addrs: &[SocketAddr], sorted: &[(NodeId, u32)]) -> Vec<NodeInfo> {
    let x = ids[me];
    let range = |lo: &NodeId, hi: &NodeId| {
        (
            sorted.partition_point(|(id, _)| id < lo),
            sorted.partition_point(|(id, _)| id <= hi),
        )
    };
    let mut table = Vec::new();
    for d in 0..160u32 {
        let (lo, hi) = x.with_bit(d, !x.bit(d)).prefix_range(d + 1);
        let (a, b) = range(&lo, &hi);
        let n = b - a;
        let picks: Vec<usize> = if n <= K {
            (a..b).collect()
        } else {
            (0..K).map(|j| a + j * n / K).collect()
        };
        for p in picks {
            let i = sorted[p].1 as usize;
            table.push(NodeInfo {
                id: ids[i],
                addr: addrs[i],
            });
        }
        let (lo, hi) = x.prefix_range(d + 1);
        let (a, b) = range(&lo, &hi);
        if b - a <= 1 {
            break;
        }
    }
    // A healthy node knows its own neighbourhood (refreshes find it), so
    // the K closest to any target are reachable.
    for i in closest_sorted(sorted, &x, K + 1) {
        let i = i as usize;
        if i != me && !table.iter().any(|n| n.id == ids[i]) {
            table.push(NodeInfo {
                id: ids[i],
                addr: addrs[i],
            });
        }
    }
    table
}

/// Indices (into `sorted`) of the `need` ids closest to `target`, by the
/// same subtree descent as the node's cache, on a sorted slice.
fn closest_sorted(sorted: &[(NodeId, u32)], target: &NodeId, need: usize) -> Vec<u32> {
    fn collect(
        sorted: &[(NodeId, u32)],
        target: &NodeId,
        base: NodeId,
        depth: u32,
        need: usize,
        out: &mut Vec<u32>,
    ) {
        if need == 0 {
            return;
        }
        let (lo, hi) = base.prefix_range(depth);
        let a = sorted.partition_point(|(id, _)| *id < lo);
        let b = sorted.partition_point(|(id, _)| *id <= hi);
        if b - a <= need || depth >= 160 {
            out.extend(sorted[a..b].iter().take(need).map(|(_, i)| *i));
            return;
        }
        let before = out.len();
        collect(
            sorted,
            target,
            base.with_bit(depth, target.bit(depth)),
            depth + 1,
            need,
            out,
        );
        let got = out.len() - before;
        collect(
            sorted,
            target,
            base.with_bit(depth, !target.bit(depth)),
            depth + 1,
            need - got,
            out,
        );
    }
    let mut out = Vec::with_capacity(need);
    collect(sorted, target, *target, 0, need, &mut out);
    out
}

struct Network {
    nodes: Vec<Arc<SimNode>>,
    sorted: Vec<(NodeId, u32)>,
    started: Instant,
    /// How late a 10 ms timer in the simulator fired: when the machine is
    /// overloaded the simulator reads its sockets late, packets queued
    /// there get the same arrival time, and the 1 s window can show more
    /// than the sender sent.
    stalls: Arc<Mutex<Stalls>>,
}

#[derive(Default)]
struct Stalls {
    worst: Duration,
    over_100ms: u64,
}

impl Network {
    fn report(&self, source: IpAddr) -> serde_json::Value {
        let mut packets = 0u64;
        let mut methods = [0u64; 6];
        let mut destinations = 0u64;
        let mut max_per_second = 0usize;
        let mut over_pace = 0u64;
        let mut dos_bans = 0u64;
        let mut bad_tokens = 0u64;
        let mut announce_ok = 0u64;
        let mut first: Option<Instant> = None;
        let mut last: Option<Instant> = None;
        // Info hash: the nodes it was stored on, and the first store.
        let mut stored: HashMap<[u8; 20], (Vec<u32>, Instant)> = HashMap::new();
        let mut busiest = 0u64;
        for (i, node) in self.nodes.iter().enumerate() {
            let stats = node.stats.lock().expect("stats");
            let Some(s) = stats.get(&source) else {
                continue;
            };
            destinations += 1;
            packets += s.packets;
            busiest = busiest.max(s.packets);
            for (m, n) in methods.iter_mut().zip(s.methods) {
                *m += n;
            }
            max_per_second = max_per_second.max(s.max_per_second);
            over_pace += s.over_pace;
            dos_bans += s.dos_bans;
            bad_tokens += s.bad_tokens;
            announce_ok += s.announced.len() as u64;
            first = match (first, s.first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            last = last.max(s.last);
            for (h, at) in &s.announced {
                let (on, first) = stored.entry(*h).or_insert((Vec::new(), *at));
                *first = (*first).min(*at);
                if !on.contains(&(i as u32)) {
                    on.push(i as u32);
                }
            }
        }
        // Announces still under way when the source stopped have stored on
        // some of their nodes only: the settled ones are those whose first
        // store came 10 s or more before the source's last packet.
        let settled_before = last.map(|t| t - Duration::from_secs(10).min(t - self.started));
        let first_store = stored.values().map(|(_, t)| *t).min();
        let last_store = self
            .nodes
            .iter()
            .filter_map(|n| {
                let stats = n.stats.lock().expect("stats");
                stats
                    .get(&source)
                    .and_then(|s| s.announced.iter().map(|(_, t)| *t).max())
            })
            .max();
        let mut on_all_k = 0u64;
        let mut true_hits = 0u64;
        let (mut settled, mut settled_on_all_k, mut settled_hits) = (0u64, 0u64, 0u64);
        for (h, (on, first_store)) in &stored {
            let on: HashSet<u32> = on.iter().copied().collect();
            let hits = closest_sorted(&self.sorted, &NodeId(*h), K)
                .iter()
                .filter(|i| on.contains(i))
                .count();
            true_hits += hits as u64;
            on_all_k += u64::from(hits == K);
            if settled_before.is_some_and(|t| *first_store <= t) {
                settled += 1;
                settled_hits += hits as u64;
                settled_on_all_k += u64::from(hits == K);
            }
        }
        let secs = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(self.started).as_secs_f64());
        let stalls = std::mem::take(&mut *self.stalls.lock().expect("stalls"));
        json!({
            "ok": true,
            "source": source.to_string(),
            "packets": packets,
            "ping": methods[0],
            "find_node": methods[1],
            "get_peers": methods[2],
            "announce_peer": methods[3],
            "other_queries": methods[4],
            "non_queries": methods[5],
            "destinations": destinations,
            "busiest_destination_packets": busiest,
            "max_per_node_per_second": max_per_second,
            "over_pace_packets": over_pace,
            "dos_bans": dos_bans,
            "announce_peer_ok": announce_ok,
            "bad_tokens": bad_tokens,
            "info_hashes": stored.len(),
            "on_all_true_k": on_all_k,
            "true_k_hits": true_hits,
            "settled_info_hashes": settled,
            "settled_on_all_true_k": settled_on_all_k,
            "settled_true_k_hits": settled_hits,
            "simulator_worst_stall_ms": stalls.worst.as_secs_f64() * 1000.0,
            "simulator_stalls_over_100ms": stalls.over_100ms,
            "first_store_s": secs(first_store),
            "last_store_s": secs(last_store),
            "first_packet_s": secs(first),
            "last_packet_s": secs(last),
        })
    }
}

/// `--simulate`: binds the network, prints `ready N BOOTSTRAP` (a few
/// node addresses, comma-separated) and serves until stdin says `quit` or
/// closes; `report IP` prints that source's totals as one JSON line, and
/// `mark` starts counting scheduling stalls afresh.
pub fn run(nodes: usize, port: u16, seed: u64) -> Result<()> {
    if !(K + 1..=250 * 250 * 4).contains(&nodes) {
        bail!("--nodes must be between {} and 250000", K + 1);
    }
    let ids: Vec<NodeId> = (0..nodes).map(|i| node_id(seed, i)).collect();
    let addrs: Vec<SocketAddr> = (0..nodes).map(|i| SocketAddr::from((node_ip(i), port))).collect();
    let mut sorted: Vec<(NodeId, u32)> = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
    sorted.sort();
    let table_nodes: Vec<Arc<SimNode>> = (0..nodes)
        .map(|i| {
            let mut secret = [0u8; 16];
            secret[..8].copy_from_slice(&mix64(seed ^ 0x5EC2E7 ^ i as u64).to_be_bytes());
            Arc::new(SimNode {
                id: ids[i],
                table: routing_table(i, &ids, &addrs, &sorted),
                secret,
                stats: Mutex::new(HashMap::new()),
            })
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let started = Instant::now();
    {
        let _guard = rt.enter();
        for (i, node) in table_nodes.iter().enumerate() {
            let std_socket = std::net::UdpSocket::bind(addrs[i])
                .with_context(|| format!("binding simulated node {i} to {}", addrs[i]))?;
            std_socket.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(std_socket)?;
            let node = Arc::clone(node);
            rt.spawn(async move {
                let mut buf = vec![0u8; krpc::MAX_MESSAGE + 1];
                loop {
                    let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                        continue;
                    };
                    if len > krpc::MAX_MESSAGE {
                        continue;
                    }
                    if let Some(reply) = node.handle(&buf[..len], from, Instant::now()) {
                        let _ = socket.send_to(&reply, from).await;
                    }
                }
            });
        }
    }
    let stalls = Arc::new(Mutex::new(Stalls::default()));
    {
        let stalls = Arc::clone(&stalls);
        rt.spawn(async move {
            let tick = Duration::from_millis(10);
            let mut due = tokio::time::Instant::now() + tick;
            loop {
                tokio::time::sleep_until(due).await;
                let late = tokio::time::Instant::now().saturating_duration_since(due);
                let mut s = stalls.lock().expect("stalls");
                s.worst = s.worst.max(late);
                s.over_100ms += u64::from(late > Duration::from_millis(100));
                drop(s);
                due = tokio::time::Instant::now() + tick;
            }
        });
    }
    let table_sizes: Vec<usize> = table_nodes.iter().map(|n| n.table.len()).collect();
    let bootstrap: Vec<String> = (0..8).map(|j| addrs[j * nodes / 8].to_string()).collect();
    println!(
        "ready {nodes} {} mean_table={:.1}",
        bootstrap.join(","),
        table_sizes.iter().sum::<usize>() as f64 / nodes as f64
    );
    let network = Network {
        nodes: table_nodes,
        sorted,
        started,
        stalls,
    };
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("report"), Some(ip)) => {
                let ip: IpAddr = ip.parse().context("report IP")?;
                println!("{}", network.report(ip));
            }
            (Some("mark"), _) => {
                // A run starts: stalls count from here.
                *network.stalls.lock().expect("stalls") = Stalls::default();
                println!("{}", json!({"ok": true}));
            }
            (Some("quit"), _) => break,
            _ => println!(
                "{}",
                json!({"ok": false, "error": format!("unknown command {line:?}")})
            ),
        }
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_sorted_matches_brute_force() {
        let ids: Vec<NodeId> = (0..2000).map(|i| node_id(7, i)).collect();
        let mut sorted: Vec<(NodeId, u32)> = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        sorted.sort();
        for t in 0..100 {
            let target = node_id(8, t);
            let mut brute: Vec<u32> = (0..2000).collect();
            brute.sort_by_key(|i| ids[*i as usize].distance(&target));
            let mut got = closest_sorted(&sorted, &target, K);
            got.sort_by_key(|i| ids[*i as usize].distance(&target));
            assert_eq!(got, brute[..K]);
        }
    }

    #[test]
    fn routing_tables_know_their_neighbourhood() {
        let n = 3000;
        let ids: Vec<NodeId> = (0..n).map(|i| node_id(7, i)).collect();
        let addrs: Vec<SocketAddr> = (0..n).map(|i| SocketAddr::from((node_ip(i), 6881))).collect();
        let mut sorted: Vec<(NodeId, u32)> = ids.iter().enumerate().map(|(i, id)| (*id, i as u32)).collect();
        sorted.sort();
        for me in [0, 17, 2999] {
            let table = routing_table(me, &ids, &addrs, &sorted);
            assert!(table.len() >= 8 * 8 && table.len() <= 8 * 20, "{}", table.len());
            // Its K closest (other than itself) are all in its table.
            let closest = closest_sorted(&sorted, &ids[me], K + 1);
            for i in closest.into_iter().filter(|&i| i as usize != me) {
                assert!(table.iter().any(|n| n.id == ids[i as usize]), "{me} knows {i}");
            }
        }
    }

    #[test]
    fn the_pace_counters_follow_libtorrents_limiter() {
        let t0 = Instant::now();
        let mut s = SourceStats::default();
        // 4 a second for 20 s: within both limits.
        for k in 0..80u64 {
            s.record(2, t0 + Duration::from_millis(250 * k));
        }
        assert_eq!((s.max_per_second, s.over_pace, s.dos_bans), (4, 0, 0));
        // 5 a second (200 ms apart) is what libtorrent bans: 50 in 9.8 s.
        let mut s = SourceStats::default();
        for k in 0..60u64 {
            s.record(2, t0 + Duration::from_millis(200 * k));
        }
        assert_eq!((s.max_per_second, s.over_pace, s.dos_bans), (5, 0, 1));
        let mut s = SourceStats::default();
        for k in 0..7u64 {
            s.record(2, t0 + Duration::from_millis(100 * k));
        }
        assert_eq!((s.max_per_second, s.over_pace), (7, 2));
    }
}
