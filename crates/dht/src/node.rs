//! A DHT node as a state machine: datagrams and instants in, datagrams and
//! events out (the quinn-proto shape). It answers ping, find_node,
//! get_peers, announce_peer and sample_infohashes; it runs iterative
//! lookups (Kademlia, alpha parallel queries) to bootstrap and to announce
//! our decoys; and it paces what it sends to any one address, because
//! libtorrent and others ban sources that send a node more than a few
//! packets a second.

use crate::krpc::{self, Message, NodeInfo, Query, ReplyOut, Want};
use crate::node_id::NodeId;
use crate::routing::{RoutingTable, K};
use crate::token::TokenIssuer;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// What the node knows of our decoys.
pub trait DecoyIndex {
    fn contains(&self, info_hash: &[u8; 20]) -> bool;
    /// Up to `n` of our info hashes for a BEP 51 sample near `target`.
    fn sample(&self, target: &NodeId, n: usize) -> Vec<[u8; 20]>;
    fn count(&self) -> u64;
}

#[derive(Clone, Debug)]
pub struct Config {
    /// Our BitTorrent peer address, returned for our decoys in get_peers
    /// replies and announced (port) to other nodes.
    pub peer_addr: SocketAddr,
    /// Parallel queries per lookup (Kademlia's alpha).
    pub alpha: usize,
    pub query_timeout: Duration,
    /// Least time between two queries to one IP address.
    pub per_destination_interval: Duration,
    /// Seconds BEP 51 indexers are told to wait before sampling again.
    pub sample_interval: i64,
    /// Our own UDP address: other nodes may list it (under an id we had
    /// before a restart); it is never queried or kept.
    pub own_addr: Option<SocketAddr>,
}

impl Config {
    pub fn new(peer_addr: SocketAddr) -> Self {
        Self {
            peer_addr,
            alpha: 3,
            query_timeout: Duration::from_secs(3),
            per_destination_interval: Duration::from_millis(200),
            sample_interval: 300,
            own_addr: None,
        }
    }
}

/// What the node reports to its driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A query that names one of our decoys: the interest signal.
    Interest {
        from: SocketAddr,
        node_id: NodeId,
        query: &'static str,
        info_hash: [u8; 20],
    },
    /// An announce of ours finished: stored on `nodes` nodes.
    Announced { info_hash: [u8; 20], nodes: usize },
    /// A search finished with these peers.
    Peers {
        info_hash: [u8; 20],
        peers: Vec<SocketAddr>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum CandidateState {
    Fresh,
    Asked,
    Answered { token: Option<Vec<u8>> },
    Failed,
}

struct Candidate {
    node: NodeInfo,
    state: CandidateState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LookupKind {
    FindNode,
    /// A search: report the peers found.
    GetPeers,
    /// get_peers, then announce_peer to the closest nodes.
    Announce,
}

struct Lookup {
    target: [u8; 20],
    kind: LookupKind,
    peers: Vec<SocketAddr>,
    /// Sorted by distance to the target; never longer than `MAX_CANDIDATES`.
    candidates: Vec<Candidate>,
}

const MAX_CANDIDATES: usize = 4 * K;

enum Purpose {
    Bootstrap,
    Lookup { lookup: u64 },
    AnnouncePeer,
}

struct QueuedQuery {
    to: SocketAddr,
    tid: u16,
    bytes: Vec<u8>,
    node: Option<NodeId>,
    purpose: Purpose,
}

struct Pending {
    to: SocketAddr,
    node: Option<NodeId>,
    sent: Instant,
    purpose: Purpose,
}

pub struct Node<D> {
    config: Config,
    table: RoutingTable,
    tokens: TokenIssuer,
    decoys: D,
    next_tid: u16,
    pending: HashMap<u16, Pending>,
    lookups: HashMap<u64, Lookup>,
    next_lookup: u64,
    /// Replies go out at once; queries wait for their destination's pace.
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    queries: VecDeque<QueuedQuery>,
    last_query_to: HashMap<IpAddr, Instant>,
    events: VecDeque<Event>,
    bootstrapped: bool,
    /// Peers other nodes announced to us (a DHT node stores them for
    /// everyone's torrents): bounded in hashes and peers per hash, and
    /// forgotten after [`PEER_TTL`].
    stored: HashMap<[u8; 20], Vec<(SocketAddr, Instant)>>,
}

const MAX_PEERS_PER_HASH: usize = 64;
const MAX_STORED_HASHES: usize = 10_000;
const PEER_TTL: Duration = Duration::from_secs(30 * 60);

impl<D: DecoyIndex> Node<D> {
    pub fn new(id: NodeId, config: Config, decoys: D, tokens: TokenIssuer) -> Self {
        Self {
            config,
            table: RoutingTable::new(id),
            tokens,
            decoys,
            next_tid: 0,
            pending: HashMap::new(),
            lookups: HashMap::new(),
            next_lookup: 0,
            replies: VecDeque::new(),
            queries: VecDeque::new(),
            last_query_to: HashMap::new(),
            events: VecDeque::new(),
            bootstrapped: false,
            stored: HashMap::new(),
        }
    }

    pub fn id(&self) -> NodeId {
        self.table.own_id()
    }
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }
    pub fn decoys(&self) -> &D {
        &self.decoys
    }
    /// Lookups (bootstrap, searches, announces) still running.
    pub fn active_lookups(&self) -> usize {
        self.lookups.len()
    }

    /// Asks each address for the nodes closest to us; replies fill the
    /// routing table, then a lookup of our own id fills it further.
    pub fn bootstrap(&mut self, addrs: &[SocketAddr]) {
        let own = self.config.own_addr;
        for &to in addrs.iter().filter(|a| Some(**a) != own) {
            self.query(
                to,
                None,
                Query::FindNode {
                    target: self.id(),
                    want: Want::default(),
                },
                Purpose::Bootstrap,
            );
        }
    }

    /// Announces one of our decoys: a get_peers lookup for its info hash,
    /// then announce_peer with each closest node's token.
    pub fn announce(&mut self, info_hash: [u8; 20]) {
        self.start_lookup(info_hash, LookupKind::Announce);
    }

    /// Searches the DHT for peers of `info_hash` ([`Event::Peers`]).
    pub fn get_peers(&mut self, info_hash: [u8; 20]) {
        self.start_lookup(info_hash, LookupKind::GetPeers);
    }

    fn start_lookup(&mut self, target: [u8; 20], kind: LookupKind) {
        let id = self.next_lookup;
        self.next_lookup += 1;
        let candidates = self
            .table
            .closest(&NodeId(target), MAX_CANDIDATES)
            .into_iter()
            .map(|node| Candidate {
                node,
                state: CandidateState::Fresh,
            })
            .collect();
        self.lookups.insert(
            id,
            Lookup {
                target,
                kind,
                peers: Vec::new(),
                candidates,
            },
        );
        self.step_lookup(id);
    }

    fn query(&mut self, to: SocketAddr, node: Option<NodeId>, query: Query<'_>, purpose: Purpose) {
        let tid = self.next_tid;
        self.next_tid = self.next_tid.wrapping_add(1);
        let bytes = krpc::encode_query(&tid.to_be_bytes(), &self.id(), &query, false);
        self.queries.push_back(QueuedQuery {
            to,
            tid,
            bytes,
            node,
            purpose,
        });
    }

    /// Sends the next queries of a lookup, or finishes it.
    fn step_lookup(&mut self, id: u64) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let in_flight = lookup
            .candidates
            .iter()
            .take(K)
            .filter(|c| c.state == CandidateState::Asked)
            .count();
        let mut to_ask = Vec::new();
        let mut slots = self.config.alpha.saturating_sub(in_flight);
        for c in lookup.candidates.iter_mut().take(K) {
            if slots == 0 {
                break;
            }
            if c.state == CandidateState::Fresh {
                c.state = CandidateState::Asked;
                to_ask.push(c.node);
                slots -= 1;
            }
        }
        let busy = lookup
            .candidates
            .iter()
            .take(K)
            .any(|c| matches!(c.state, CandidateState::Asked | CandidateState::Fresh));
        let target = lookup.target;
        if to_ask.is_empty() && !busy {
            let lookup = self.lookups.remove(&id).expect("present");
            self.finish_lookup(lookup);
            return;
        }
        for node in to_ask {
            let query = if lookup_kind(&self.lookups, id) != Some(LookupKind::FindNode) {
                Query::GetPeers {
                    info_hash: target,
                    want: Want::default(),
                }
            } else {
                Query::FindNode {
                    target: NodeId(target),
                    want: Want::default(),
                }
            };
            self.query(node.addr, Some(node.id), query, Purpose::Lookup { lookup: id });
        }
    }

    fn finish_lookup(&mut self, lookup: Lookup) {
        match lookup.kind {
            LookupKind::FindNode => return,
            LookupKind::GetPeers => {
                self.events.push_back(Event::Peers {
                    info_hash: lookup.target,
                    peers: lookup.peers,
                });
                return;
            }
            LookupKind::Announce => {}
        }
        let mut stored = 0;
        for c in lookup.candidates.iter().take(K) {
            if let CandidateState::Answered { token: Some(token) } = &c.state {
                let query = Query::AnnouncePeer {
                    info_hash: lookup.target,
                    port: self.config.peer_addr.port(),
                    implied_port: false,
                    token,
                };
                self.query(c.node.addr, Some(c.node.id), query, Purpose::AnnouncePeer);
                stored += 1;
            }
        }
        self.events.push_back(Event::Announced {
            info_hash: lookup.target,
            nodes: stored,
        });
    }

    /// One datagram from the network.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        match krpc::parse(data) {
            Ok(Message::Query {
                tid,
                id,
                query,
                read_only,
            }) => {
                if !read_only {
                    self.table.insert(NodeInfo { id, addr: from }, now);
                }
                let reply = self.answer(from, id, &query, now);
                let bytes = match reply {
                    Ok(out) => out(tid),
                    Err((code, text)) => krpc::encode_error(tid, code, text),
                };
                self.replies.push_back((from, bytes));
            }
            Ok(Message::Reply { tid, reply }) => {
                let Some(p) = take_pending(&mut self.pending, tid, from) else {
                    return;
                };
                if p.node.is_some_and(|n| n != reply.id) {
                    // Another node answers from that address now (a node
                    // that restarted with a new id): the one we asked is gone.
                    self.fail(p);
                    return;
                }
                self.table.insert(
                    NodeInfo {
                        id: reply.id,
                        addr: from,
                    },
                    now,
                );
                let learned: Vec<NodeInfo> = reply.nodes().chain(reply.nodes6()).collect();
                match p.purpose {
                    Purpose::Bootstrap => {
                        for n in &learned {
                            if Some(n.addr) != self.config.own_addr {
                                self.table.insert(*n, now);
                            }
                        }
                        if !self.bootstrapped {
                            self.bootstrapped = true;
                            self.start_lookup(self.id().0, LookupKind::FindNode);
                        }
                    }
                    Purpose::Lookup { lookup } => {
                        if let Some(l) = self.lookups.get_mut(&lookup) {
                            for c in l.candidates.iter_mut() {
                                if c.node.id == reply.id {
                                    c.state = CandidateState::Answered {
                                        token: reply.token.map(<[u8]>::to_vec),
                                    };
                                }
                            }
                            for n in learned
                                .into_iter()
                                .filter(|n| Some(n.addr) != self.config.own_addr)
                            {
                                add_candidate(l, n, self.table.own_id());
                            }
                            for v in &reply.values {
                                if l.peers.len() < MAX_PEERS_PER_HASH && !l.peers.contains(v) {
                                    l.peers.push(*v);
                                }
                            }
                        }
                        self.step_lookup(lookup);
                    }
                    Purpose::AnnouncePeer => {}
                }
            }
            Ok(Message::Error { tid, .. }) => {
                if let Some(p) = take_pending(&mut self.pending, tid, from) {
                    self.fail(p);
                }
            }
            Err(e) => {
                if let Some(tid) = e.tid {
                    let bytes = krpc::encode_error(tid, krpc::ERROR_PROTOCOL, e.reason);
                    self.replies.push_back((from, bytes));
                }
            }
        }
    }

    /// Builds the reply to one query (a closure over the transaction id,
    /// so the reply borrows nothing from the datagram).
    fn answer(
        &mut self,
        from: SocketAddr,
        querier: NodeId,
        query: &Query<'_>,
        now: Instant,
    ) -> Result<ReplyBuilder, (i64, &'static str)> {
        let id = self.id();
        let closest = |table: &RoutingTable, target: &NodeId| table.closest(target, K);
        let interest = |events: &mut VecDeque<Event>, query: &'static str, info_hash: [u8; 20]| {
            events.push_back(Event::Interest {
                from,
                node_id: querier,
                query,
                info_hash,
            })
        };
        match query {
            Query::Ping => Ok(id_only(id, from)),
            Query::FindNode { target, .. } => {
                let nodes = closest(&self.table, target);
                Ok(Box::new(move |tid| {
                    let out = ReplyOut {
                        id,
                        nodes: &nodes,
                        nodes6: &nodes,
                        ..Default::default()
                    };
                    krpc::encode_reply(tid, &out, Some(&from))
                }))
            }
            Query::GetPeers { info_hash, .. } => {
                let token = self.tokens.issue(now, from.ip()).to_vec();
                let nodes = closest(&self.table, &NodeId(*info_hash));
                let ours = self.decoys.contains(info_hash);
                if ours {
                    interest(&mut self.events, "get_peers", *info_hash);
                }
                let mut values: Vec<SocketAddr> = self
                    .stored
                    .get(info_hash)
                    .map(|peers| {
                        peers
                            .iter()
                            .filter(|(_, at)| now.saturating_duration_since(*at) < PEER_TTL)
                            .map(|(a, _)| *a)
                            .collect()
                    })
                    .unwrap_or_default();
                // Our own address, when we know it (an unspecified listen
                // address leaves it to the nodes we announced to, which
                // store the address our packets came from).
                if ours
                    && !self.config.peer_addr.ip().is_unspecified()
                    && !values.contains(&self.config.peer_addr)
                {
                    values.insert(0, self.config.peer_addr);
                }
                Ok(Box::new(move |tid| {
                    let out = ReplyOut {
                        id,
                        nodes: &nodes,
                        nodes6: &nodes,
                        values: &values,
                        token: Some(&token),
                        ..Default::default()
                    };
                    krpc::encode_reply(tid, &out, Some(&from))
                }))
            }
            Query::AnnouncePeer {
                info_hash,
                token,
                port,
                implied_port,
            } => {
                if !self.tokens.check(now, from.ip(), token) {
                    return Err((krpc::ERROR_PROTOCOL, "bad token"));
                }
                let peer = SocketAddr::new(from.ip(), if *implied_port { from.port() } else { *port });
                self.store_peer(*info_hash, peer, now);
                if self.decoys.contains(info_hash) {
                    interest(&mut self.events, "announce_peer", *info_hash);
                }
                Ok(id_only(id, from))
            }
            Query::SampleInfohashes { target } => {
                let samples = self.decoys.sample(target, 20);
                for s in &samples {
                    interest(&mut self.events, "sample_infohashes", *s);
                }
                let nodes = closest(&self.table, target);
                let num = self.decoys.count().min(i64::MAX as u64) as i64;
                let interval = self.config.sample_interval;
                Ok(Box::new(move |tid| {
                    let out = ReplyOut {
                        id,
                        nodes: &nodes,
                        nodes6: &nodes,
                        samples: &samples,
                        interval: Some(interval),
                        num: Some(num),
                        ..Default::default()
                    };
                    krpc::encode_reply(tid, &out, Some(&from))
                }))
            }
            Query::Other { .. } => Err((krpc::ERROR_METHOD_UNKNOWN, "method unknown")),
        }
    }

    fn store_peer(&mut self, info_hash: [u8; 20], peer: SocketAddr, now: Instant) {
        if !self.stored.contains_key(&info_hash) && self.stored.len() >= MAX_STORED_HASHES {
            // Full: make room by dropping expired entries; if none, skip.
            self.stored.retain(|_, peers| {
                peers
                    .iter()
                    .any(|(_, at)| now.saturating_duration_since(*at) < PEER_TTL)
            });
            if self.stored.len() >= MAX_STORED_HASHES {
                return;
            }
        }
        let peers = self.stored.entry(info_hash).or_default();
        peers.retain(|(a, at)| *a != peer && now.saturating_duration_since(*at) < PEER_TTL);
        if peers.len() >= MAX_PEERS_PER_HASH {
            peers.remove(0);
        }
        peers.push((peer, now));
    }

    fn fail(&mut self, p: Pending) {
        if let Some(node) = p.node {
            self.table.failed(&node);
        }
        if let Purpose::Lookup { lookup } = p.purpose {
            if let Some(l) = self.lookups.get_mut(&lookup) {
                for c in l.candidates.iter_mut() {
                    if Some(c.node.id) == p.node {
                        c.state = CandidateState::Failed;
                    }
                }
            }
            self.step_lookup(lookup);
        }
    }

    /// Expires queries that went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.config.query_timeout;
        let expired: Vec<u16> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= timeout)
            .map(|(t, _)| *t)
            .collect();
        for tid in expired {
            if let Some(p) = self.pending.remove(&tid) {
                self.fail(p);
            }
        }
    }

    /// The next datagram to send now, if any: replies first, then the
    /// first query whose destination may be sent to again.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if let Some(r) = self.replies.pop_front() {
            return Some(r);
        }
        let interval = self.config.per_destination_interval;
        let ready = self.queries.iter().position(|q| {
            self.last_query_to
                .get(&q.to.ip())
                .is_none_or(|t| now.saturating_duration_since(*t) >= interval)
        })?;
        let q = self.queries.remove(ready).expect("found");
        self.last_query_to.insert(q.to.ip(), now);
        self.pending.insert(
            q.tid,
            Pending {
                to: q.to,
                node: q.node,
                sent: now,
                purpose: q.purpose,
            },
        );
        Some((q.to, q.bytes))
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] or [`Node::poll_transmit`] next has
    /// something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let expiry = self
            .pending
            .values()
            .map(|p| p.sent + self.config.query_timeout)
            .min();
        let send = self
            .queries
            .iter()
            .map(|q| {
                self.last_query_to
                    .get(&q.to.ip())
                    .map(|t| *t + self.config.per_destination_interval)
            })
            .min()
            .flatten();
        match (expiry, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops per-destination pacing state older than needed (call now and
    /// then so a crawl of many addresses does not grow it without bound).
    pub fn forget_paced(&mut self, now: Instant) {
        let interval = self.config.per_destination_interval;
        self.last_query_to
            .retain(|_, t| now.saturating_duration_since(*t) < interval);
    }
}

/// Builds a reply once the transaction id is known (so a reply borrows
/// nothing from the datagram it answers).
type ReplyBuilder = Box<dyn FnOnce(&[u8]) -> Vec<u8>>;

/// A reply that carries only our id (ping, announce_peer).
fn id_only(id: NodeId, from: SocketAddr) -> ReplyBuilder {
    Box::new(move |tid| {
        krpc::encode_reply(
            tid,
            &ReplyOut {
                id,
                ..Default::default()
            },
            Some(&from),
        )
    })
}

fn lookup_kind(lookups: &HashMap<u64, Lookup>, id: u64) -> Option<LookupKind> {
    lookups.get(&id).map(|l| l.kind)
}

fn add_candidate(l: &mut Lookup, n: NodeInfo, own: NodeId) {
    if n.id == own || l.candidates.iter().any(|c| c.node.id == n.id) {
        return;
    }
    let target = NodeId(l.target);
    let at = l
        .candidates
        .partition_point(|c| c.node.id.distance(&target) < n.id.distance(&target));
    if at >= MAX_CANDIDATES {
        return;
    }
    l.candidates.insert(
        at,
        Candidate {
            node: n,
            state: CandidateState::Fresh,
        },
    );
    l.candidates.truncate(MAX_CANDIDATES);
}

fn take_pending(pending: &mut HashMap<u16, Pending>, tid: &[u8], from: SocketAddr) -> Option<Pending> {
    let tid = u16::from_be_bytes(tid.try_into().ok()?);
    match pending.get(&tid) {
        Some(p) if p.to == from => pending.remove(&tid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Hashes(Vec<[u8; 20]>);

    impl DecoyIndex for Hashes {
        fn contains(&self, h: &[u8; 20]) -> bool {
            self.0.contains(h)
        }
        fn sample(&self, _target: &NodeId, n: usize) -> Vec<[u8; 20]> {
            self.0.iter().take(n).copied().collect()
        }
        fn count(&self) -> u64 {
            self.0.len() as u64
        }
    }

    fn tokens(seed: u8) -> TokenIssuer {
        let mut n = seed;
        TokenIssuer::new(
            Instant::now(),
            Box::new(move || {
                n = n.wrapping_add(1);
                [n; 16]
            }),
        )
    }

    /// Deterministic, well-spread ids.
    fn id(i: u64) -> NodeId {
        let mut out = [0u8; 20];
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(12345);
        for chunk in out.chunks_mut(8) {
            z ^= z >> 31;
            z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let b = z.to_be_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        NodeId(out)
    }

    struct Net {
        nodes: Vec<Node<Hashes>>,
        addrs: Vec<SocketAddr>,
        now: Instant,
        sent: Vec<(usize, SocketAddr, Instant, bool)>,
    }

    impl Net {
        fn new(n: usize, holder_hashes: Vec<[u8; 20]>) -> Self {
            let addrs: Vec<SocketAddr> = (1..=n)
                .map(|i| format!("10.77.0.{i}:6881").parse().unwrap())
                .collect();
            let mut holder = Some(holder_hashes);
            let nodes = (0..n)
                .map(|i| {
                    let peer = format!("10.77.0.{}:51413", i + 1).parse().unwrap();
                    let hashes = if i == 0 {
                        holder.take().unwrap()
                    } else {
                        Vec::new()
                    };
                    Node::new(id(i as u64), Config::new(peer), Hashes(hashes), tokens(i as u8))
                })
                .collect();
            Self {
                nodes,
                addrs,
                now: Instant::now(),
                sent: Vec::new(),
            }
        }

        /// Delivers every datagram, in 50 ms steps of simulated time.
        fn run(&mut self, steps: usize) {
            for _ in 0..steps {
                for i in 0..self.nodes.len() {
                    while let Some((to, bytes)) = self.nodes[i].poll_transmit(self.now) {
                        let is_query = matches!(krpc::parse(&bytes), Ok(Message::Query { .. }));
                        self.sent.push((i, to, self.now, is_query));
                        if let Some(j) = self.addrs.iter().position(|a| *a == to) {
                            let from = self.addrs[i];
                            self.nodes[j].handle_datagram(from, &bytes, self.now);
                        }
                    }
                }
                self.now += Duration::from_millis(50);
                for n in &mut self.nodes {
                    n.handle_timeout(self.now);
                }
            }
        }

        fn events(&mut self, i: usize) -> Vec<Event> {
            std::iter::from_fn(|| self.nodes[i].poll_event()).collect()
        }
    }

    #[test]
    fn nodes_bootstrap_announce_and_find_a_decoy_through_each_other() {
        let decoy = [0xD5; 20];
        let mut net = Net::new(40, vec![decoy]);
        let seed = net.addrs[1];
        for i in 0..net.nodes.len() {
            let to = if i == 1 { net.addrs[2] } else { seed };
            net.nodes[i].bootstrap(&[to]);
        }
        net.run(200);
        for n in &net.nodes {
            assert!(
                n.table().len() >= 5,
                "every node knows others: {}",
                n.table().len()
            );
        }

        net.nodes[0].announce(decoy);
        net.run(200);
        let stored = net.events(0).into_iter().find_map(|e| match e {
            Event::Announced { info_hash, nodes } if info_hash == decoy => Some(nodes),
            _ => None,
        });
        assert!(
            stored.unwrap_or(0) >= 3,
            "announced to the closest nodes: {stored:?}"
        );

        let searcher = net.nodes.len() - 1;
        net.nodes[searcher].get_peers(decoy);
        net.run(200);
        let found = net.events(searcher).into_iter().find_map(|e| match e {
            Event::Peers { info_hash, peers } if info_hash == decoy => Some(peers),
            _ => None,
        });
        let holder_peer: SocketAddr = "10.77.0.1:51413".parse().unwrap();
        assert!(
            found.unwrap_or_default().contains(&holder_peer),
            "the search finds the holder"
        );

        // Pacing: no node sent two queries to one address within 200 ms.
        let mut last: HashMap<(usize, IpAddr), Instant> = HashMap::new();
        for (from, to, at, is_query) in &net.sent {
            if !is_query {
                continue;
            }
            if let Some(prev) = last.insert((*from, to.ip()), *at) {
                assert!(
                    *at - prev >= Duration::from_millis(200),
                    "node {from} paced to {to}"
                );
            }
        }
    }

    #[test]
    fn queries_about_our_decoys_are_reported_and_bad_ones_answered_with_errors() {
        let decoy = [0xAB; 20];
        let mut net = Net::new(2, vec![decoy]);
        let asker = net.addrs[1];
        let now = net.now;
        let holder = &mut net.nodes[0];
        let q = krpc::encode_query(
            b"t1",
            &id(1),
            &Query::GetPeers {
                info_hash: decoy,
                want: Want::default(),
            },
            false,
        );
        holder.handle_datagram(asker, &q, now);
        let (to, reply) = holder.poll_transmit(now).unwrap();
        assert_eq!(to, asker);
        let Ok(Message::Reply { tid, reply }) = krpc::parse(&reply) else {
            panic!("a reply");
        };
        assert_eq!(tid, b"t1");
        assert_eq!(
            reply.values,
            vec!["10.77.0.1:51413".parse::<SocketAddr>().unwrap()]
        );
        let token = reply.token.unwrap().to_vec();
        assert_eq!(
            holder.poll_event(),
            Some(Event::Interest {
                from: asker,
                node_id: id(1),
                query: "get_peers",
                info_hash: decoy
            })
        );
        // announce_peer with the token is accepted, with another it is not.
        for (t, good) in [(token.as_slice(), true), (b"forged!!".as_slice(), false)] {
            let q = krpc::encode_query(
                b"t2",
                &id(1),
                &Query::AnnouncePeer {
                    info_hash: decoy,
                    port: 7000,
                    implied_port: false,
                    token: t,
                },
                false,
            );
            holder.handle_datagram(asker, &q, now);
            let (_, bytes) = holder.poll_transmit(now).unwrap();
            let parsed = krpc::parse(&bytes).unwrap();
            assert_eq!(matches!(parsed, Message::Reply { .. }), good, "{parsed:?}");
        }
        // The accepted announce is served to the next asker.
        holder.handle_datagram(asker, &q, now);
        let (_, bytes) = holder.poll_transmit(now).unwrap();
        let Ok(Message::Reply { reply, .. }) = krpc::parse(&bytes) else {
            panic!()
        };
        assert!(reply.values.contains(&"10.77.0.2:7000".parse().unwrap()));
        // Unknown method: 204; malformed: 203 under its transaction id.
        holder.handle_datagram(
            asker,
            b"d1:ad2:id20:abcdefghij0123456789e1:q3:foo1:t2:u11:y1:qe",
            now,
        );
        let (_, bytes) = holder.poll_transmit(now).unwrap();
        assert!(matches!(
            krpc::parse(&bytes),
            Ok(Message::Error {
                code: 204,
                tid: b"u1",
                ..
            })
        ));
        holder.handle_datagram(asker, b"d1:ad2:id2:xxe1:q4:ping1:t2:u21:y1:qe", now);
        let (_, bytes) = holder.poll_transmit(now).unwrap();
        assert!(matches!(
            krpc::parse(&bytes),
            Ok(Message::Error {
                code: 203,
                tid: b"u2",
                ..
            })
        ));
        // BEP 51: our decoys are offered to indexers.
        let q = krpc::encode_query(b"t3", &id(1), &Query::SampleInfohashes { target: id(7) }, false);
        holder.handle_datagram(asker, &q, now);
        let (_, bytes) = holder.poll_transmit(now).unwrap();
        let Ok(Message::Reply { reply, .. }) = krpc::parse(&bytes) else {
            panic!()
        };
        assert_eq!(reply.samples().collect::<Vec<_>>(), vec![decoy]);
        assert_eq!(reply.num, Some(1));
    }

    #[test]
    fn a_node_that_answers_under_another_id_counts_as_gone_and_the_lookup_ends() {
        let decoy = [0xEE; 20];
        let mut net = Net::new(1, vec![decoy]);
        let now = net.now;
        let node = &mut net.nodes[0];
        let old_peer: SocketAddr = "10.77.0.50:6881".parse().unwrap();
        node.table.insert(
            NodeInfo {
                id: id(50),
                addr: old_peer,
            },
            now,
        );
        node.announce(decoy);
        let (to, query) = node.poll_transmit(now).unwrap();
        assert_eq!(to, old_peer);
        let Ok(Message::Query { tid, .. }) = krpc::parse(&query) else {
            panic!()
        };
        // The address now belongs to a node with a new id.
        let reply = krpc::encode_reply(
            tid,
            &ReplyOut {
                id: id(51),
                ..Default::default()
            },
            None,
        );
        node.handle_datagram(old_peer, &reply, now);
        assert_eq!(node.active_lookups(), 0, "the lookup did not wait for a timeout");
        assert_eq!(
            node.poll_event(),
            Some(Event::Announced {
                info_hash: decoy,
                nodes: 0
            })
        );
    }
}
