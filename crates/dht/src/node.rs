//! A DHT node as a state machine: datagrams and instants in, datagrams and
//! events out (the quinn-proto shape). It answers ping, find_node,
//! get_peers, announce_peer and sample_infohashes; it runs iterative
//! lookups (Kademlia, alpha parallel queries) to bootstrap, to search and
//! to announce our decoys, and the keyspace sweep ([`crate::sweep`]) that
//! announces sorted decoys with about 2 K packets each; it paces what it
//! sends to any one address, because libtorrent and others ban sources
//! that send a node more than a few packets a second; and it takes a BEP 42
//! id for the external address the nodes it talks to report.

use crate::external::ExternalAddressVotes;
use crate::krpc::{self, Message, NodeInfo, Query, ReplyOut, Want};
use crate::node_id::NodeId;
use crate::routing::{RoutingTable, K};
use crate::sweep::NodeCache;
use crate::token::TokenIssuer;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
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
    /// Parallel queries per lookup (Kademlia's alpha). Sweep announces in
    /// a mapped region ask all K closest nodes at once.
    pub alpha: usize,
    pub query_timeout: Duration,
    /// Least time between two packets to one IP address. libtorrent counts
    /// every packet from a source and bans it for five minutes when 50
    /// arrive within 10 s, so 200 ms (exactly 5 a second) is already too
    /// fast when sustained; 250 ms keeps a margin for jitter.
    pub per_destination_interval: Duration,
    /// Seconds BEP 51 indexers are told to wait before sampling again.
    pub sample_interval: i64,
    /// Our own UDP address: other nodes may list it (under an id we had
    /// before a restart); it is never queried or kept.
    pub own_addr: Option<SocketAddr>,
    /// Nodes the sweep's cache keeps (about 70 bytes each).
    pub cache_nodes: usize,
}

impl Config {
    pub fn new(peer_addr: SocketAddr) -> Self {
        Self {
            peer_addr,
            alpha: 3,
            query_timeout: Duration::from_secs(3),
            per_destination_interval: Duration::from_millis(250),
            sample_interval: 300,
            own_addr: None,
            cache_nodes: 131_072,
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
    /// An announce of ours finished: announce_peer went to `nodes` nodes,
    /// and the announce cost `packets` queries in all.
    Announced {
        info_hash: [u8; 20],
        nodes: usize,
        packets: usize,
    },
    /// A search finished with these peers.
    Peers {
        info_hash: [u8; 20],
        peers: Vec<SocketAddr>,
    },
    /// Enough nodes reported `external_ip` as our address, and our id was
    /// not a BEP 42 id for it: the node now uses `new` (routing table
    /// rebuilt around it, entries kept).
    IdChanged {
        old: NodeId,
        new: NodeId,
        external_ip: IpAddr,
        voters: usize,
    },
}

/// Running totals, for logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Queries sent, of every kind.
    pub queries_sent: u64,
    /// Replies and errors sent (answers to other nodes' queries).
    pub replies_sent: u64,
    /// Announces finished.
    pub announces: u64,
    /// Queries sent for announces: their lookups' get_peers and the
    /// announce_peer queries.
    pub announce_packets: u64,
    /// announce_peer queries queued: nodes our announces were stored on.
    pub stored_on: u64,
    /// announce_peer queries the remote node acknowledged.
    pub stored_acked: u64,
    /// Announces that started outside every mapped region (an iterative
    /// lookup that maps one) or through [`Node::announce`].
    pub region_lookups: u64,
    /// Queries sweep announces sent beyond the K cached closest nodes,
    /// because replies named closer ones or a cached node failed.
    pub closer_found: u64,
    /// Queries that went unanswered.
    pub timeouts: u64,
    /// BEP 42 id changes.
    pub id_changes: u64,
    /// Queries left unanswered because their source sent too many
    /// ([`QUERY_BURST`] within [`QUERY_WINDOW`]).
    pub queries_refused: u64,
}

/// libtorrent's rule for a source that queries too fast, applied to those
/// that query us: more than this many queries within [`QUERY_WINDOW`] and
/// the source gets no answer for [`QUERY_BAN`]. Without it anyone could
/// spoof queries and have us send each victim replies many times the
/// size of what they sent.
pub const QUERY_BURST: u32 = 50;
pub const QUERY_WINDOW: Duration = Duration::from_secs(10);
pub const QUERY_BAN: Duration = Duration::from_secs(5 * 60);
/// Sources whose rate is tracked at most; beyond it idle ones are dropped.
const MAX_TRACKED_SOURCES: usize = 65_536;

#[derive(Clone, Copy, Debug)]
struct SourceRate {
    window_start: Instant,
    queries: u32,
    banned_until: Option<Instant>,
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
    /// Queries in flight at most.
    alpha: usize,
    /// Queries this lookup sent.
    queries: usize,
    /// Started inside a mapped region, from the sweep's cache.
    warm: bool,
}

const MAX_CANDIDATES: usize = 4 * K;

enum Purpose {
    Bootstrap,
    Lookup { lookup: u64 },
    AnnouncePeer,
}

struct QueuedQuery {
    to: SocketAddr,
    tid: u32,
    bytes: Vec<u8>,
    node: Option<NodeId>,
    purpose: Purpose,
    /// Sent on behalf of an announce (counted per announce).
    announce: bool,
}

struct Pending {
    to: SocketAddr,
    node: Option<NodeId>,
    sent: Instant,
    purpose: Purpose,
}

/// Queries waiting for one IP address's pace.
#[derive(Default)]
struct Destination {
    queue: VecDeque<QueuedQuery>,
    last_sent: Option<Instant>,
    /// Since when replies to this address have kept a due query waiting.
    held_since: Option<Instant>,
}

/// Longest our replies to an address may hold back a query to it. Replies
/// count against the pace (libtorrent bans an address that sends it 50
/// packets in 10 s, replies included), but a node that queries us four
/// times a second must not stall our lookups for ever.
const MAX_REPLY_HOLD: Duration = Duration::from_secs(1);

pub struct Node<D> {
    config: Config,
    table: RoutingTable,
    tokens: TokenIssuer,
    decoys: D,
    next_tid: u32,
    pending: HashMap<u32, Pending>,
    /// (sent, transaction id) in send order, for expiring `pending`.
    expiries: VecDeque<(Instant, u32)>,
    lookups: HashMap<u64, Lookup>,
    next_lookup: u64,
    /// Replies go out at once; queries wait for their destination's pace.
    replies: VecDeque<(SocketAddr, Vec<u8>)>,
    destinations: HashMap<IpAddr, Destination>,
    /// One entry per destination with queued queries: when its next query
    /// may go (`None`: at once), FIFO among equals. Entries made stale by
    /// a reply to that address are put back with the right time.
    ready: BinaryHeap<Reverse<(Option<Instant>, u64, IpAddr)>>,
    ready_seq: u64,
    queued: usize,
    events: VecDeque<Event>,
    bootstrapped: bool,
    /// Peers other nodes announced to us (a DHT node stores them for
    /// everyone's torrents): bounded in hashes and peers per hash, and
    /// forgotten after [`PEER_TTL`].
    stored: HashMap<[u8; 20], Vec<(SocketAddr, Instant)>>,
    cache: NodeCache,
    votes: ExternalAddressVotes,
    counters: Counters,
    /// log2 of the estimated number of nodes in the network (a moving
    /// average over lookups that found K nodes).
    size_log2: Option<f64>,
    /// The latest instant the driver passed in.
    clock: Option<Instant>,
    /// Queries per source address, for [`QUERY_BURST`].
    sources: HashMap<IpAddr, SourceRate>,
}

const MAX_PEERS_PER_HASH: usize = 64;
const MAX_STORED_HASHES: usize = 10_000;
const PEER_TTL: Duration = Duration::from_secs(30 * 60);

impl<D: DecoyIndex> Node<D> {
    pub fn new(id: NodeId, config: Config, decoys: D, mut tokens: TokenIssuer) -> Self {
        let cache = NodeCache::new(config.cache_nodes);
        // Transaction ids count up from a random start: a node that could
        // spoof the address we queried must still guess one to forge a
        // reply (counting from 0 made that trivial).
        let first_tid = tokens.random_u32();
        Self {
            config,
            table: RoutingTable::new(id),
            tokens,
            decoys,
            next_tid: first_tid,
            pending: HashMap::new(),
            expiries: VecDeque::new(),
            lookups: HashMap::new(),
            next_lookup: 0,
            replies: VecDeque::new(),
            destinations: HashMap::new(),
            ready: BinaryHeap::new(),
            ready_seq: 0,
            queued: 0,
            events: VecDeque::new(),
            bootstrapped: false,
            stored: HashMap::new(),
            cache,
            votes: ExternalAddressVotes::default(),
            counters: Counters::default(),
            size_log2: None,
            clock: None,
            sources: HashMap::new(),
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
    /// Queries waiting for their destination's pace.
    pub fn queued_queries(&self) -> usize {
        self.queued
    }
    pub fn counters(&self) -> Counters {
        self.counters
    }
    /// Nodes in the sweep's cache, and the keyspace regions it has mapped.
    pub fn cache_size(&self) -> (usize, usize) {
        (self.cache.len(), self.cache.regions())
    }
    /// How many nodes the network has, estimated from how far the K-th
    /// closest node of each finished lookup was; `None` before a lookup
    /// found K nodes.
    pub fn network_size_estimate(&self) -> Option<f64> {
        self.size_log2.map(f64::exp2)
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
                false,
            );
        }
    }

    /// Announces one of our decoys with a full iterative lookup from the
    /// routing table: a get_peers lookup for its info hash, then
    /// announce_peer with each closest node's token.
    pub fn announce(&mut self, info_hash: [u8; 20]) {
        self.start_lookup(info_hash, LookupKind::Announce);
    }

    /// Announces one of our decoys through the sweep ([`crate::sweep`]):
    /// inside a mapped region, get_peers to the cached K closest nodes at
    /// once (and to any closer node their replies name), then
    /// announce_peer; elsewhere an iterative lookup seeded from the cache
    /// and the routing table, which maps the region for the next ones.
    pub fn sweep_announce(&mut self, info_hash: [u8; 20], now: Instant) {
        self.clock = Some(now);
        let target = NodeId(info_hash);
        let warm = self.cache.covers(&target, now);
        let mut seeds = self.cache.closest(&target, MAX_CANDIDATES);
        if !warm {
            for n in self.table.closest(&target, MAX_CANDIDATES) {
                if !seeds.iter().any(|s| s.id == n.id) {
                    seeds.push(n);
                }
            }
            seeds.sort_by_key(|n| n.id.distance(&target));
            seeds.truncate(MAX_CANDIDATES);
        }
        let alpha = if warm { K } else { self.config.alpha };
        self.start_lookup_from(info_hash, LookupKind::Announce, seeds, alpha, warm);
    }

    /// Searches the DHT for peers of `info_hash` ([`Event::Peers`]).
    pub fn get_peers(&mut self, info_hash: [u8; 20]) {
        self.start_lookup(info_hash, LookupKind::GetPeers);
    }

    fn start_lookup(&mut self, target: [u8; 20], kind: LookupKind) {
        let seeds = self.table.closest(&NodeId(target), MAX_CANDIDATES);
        let alpha = self.config.alpha;
        self.start_lookup_from(target, kind, seeds, alpha, false);
    }

    fn start_lookup_from(
        &mut self,
        target: [u8; 20],
        kind: LookupKind,
        seeds: Vec<NodeInfo>,
        alpha: usize,
        warm: bool,
    ) {
        let id = self.next_lookup;
        self.next_lookup += 1;
        let own = self.id();
        let candidates = seeds
            .into_iter()
            .filter(|n| n.id != own && Some(n.addr) != self.config.own_addr)
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
                alpha: alpha.max(1),
                queries: 0,
                warm,
            },
        );
        self.step_lookup(id);
    }

    fn query(
        &mut self,
        to: SocketAddr,
        node: Option<NodeId>,
        query: Query<'_>,
        purpose: Purpose,
        announce: bool,
    ) {
        let tid = self.next_tid;
        self.next_tid = self.next_tid.wrapping_add(1);
        let bytes = krpc::encode_query(&tid.to_be_bytes(), &self.id(), &query, false);
        let ip = to.ip();
        let dest = self.destinations.entry(ip).or_default();
        dest.queue.push_back(QueuedQuery {
            to,
            tid,
            bytes,
            node,
            purpose,
            announce,
        });
        self.queued += 1;
        if dest.queue.len() == 1 {
            let at = dest.last_sent.map(|t| t + self.config.per_destination_interval);
            self.ready_seq += 1;
            self.ready.push(Reverse((at, self.ready_seq, ip)));
        }
    }

    /// Sends the next queries of a lookup, or finishes it. The lookup's
    /// window is its K closest candidates that have not failed; it is done
    /// when all of them answered.
    fn step_lookup(&mut self, id: u64) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        let live = |c: &&mut Candidate| c.state != CandidateState::Failed;
        let mut in_flight = 0;
        let mut busy = false;
        for c in lookup.candidates.iter_mut().filter(live).take(K) {
            match c.state {
                CandidateState::Asked => {
                    in_flight += 1;
                    busy = true;
                }
                CandidateState::Fresh => busy = true,
                _ => {}
            }
        }
        if !busy {
            let lookup = self.lookups.remove(&id).expect("present");
            self.finish_lookup(lookup);
            return;
        }
        let mut slots = lookup.alpha.saturating_sub(in_flight);
        let mut to_ask = Vec::new();
        for c in lookup.candidates.iter_mut().filter(live).take(K) {
            if slots == 0 {
                break;
            }
            if c.state == CandidateState::Fresh {
                c.state = CandidateState::Asked;
                to_ask.push(c.node);
                slots -= 1;
            }
        }
        lookup.queries += to_ask.len();
        let (target, kind) = (lookup.target, lookup.kind);
        for node in to_ask {
            let query = if kind == LookupKind::FindNode {
                Query::FindNode {
                    target: NodeId(target),
                    want: Want::default(),
                }
            } else {
                Query::GetPeers {
                    info_hash: target,
                    want: Want::default(),
                }
            };
            let announce = kind == LookupKind::Announce;
            self.query(
                node.addr,
                Some(node.id),
                query,
                Purpose::Lookup { lookup: id },
                announce,
            );
        }
    }

    fn finish_lookup(&mut self, lookup: Lookup) {
        let target = NodeId(lookup.target);
        let closest: Vec<&Candidate> = lookup
            .candidates
            .iter()
            .filter(|c| matches!(c.state, CandidateState::Answered { .. }))
            .take(K)
            .collect();
        if closest.len() == K {
            // The K closest answered: their region is mapped, and how far
            // the K-th is tells how big the network is.
            let farthest = closest[K - 1].node.id;
            if let Some(now) = self.clock {
                self.cache
                    .record_region(&target, target.common_prefix_bits(&farthest), now);
            }
            let fraction = target.distance_fraction(&farthest);
            if fraction > 0.0 {
                let sample = (K as f64 / fraction).log2();
                self.size_log2 = Some(match self.size_log2 {
                    Some(avg) => avg + (sample - avg) / 16.0,
                    None => sample,
                });
            }
        }
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
        for c in closest {
            if let CandidateState::Answered { token: Some(token) } = &c.state {
                let query = Query::AnnouncePeer {
                    info_hash: lookup.target,
                    port: self.config.peer_addr.port(),
                    implied_port: false,
                    token,
                };
                self.query(c.node.addr, Some(c.node.id), query, Purpose::AnnouncePeer, true);
                stored += 1;
            }
        }
        self.counters.announces += 1;
        self.counters.stored_on += stored as u64;
        if lookup.warm {
            self.counters.closer_found += lookup.queries.saturating_sub(K) as u64;
        } else {
            self.counters.region_lookups += 1;
        }
        self.events.push_back(Event::Announced {
            info_hash: lookup.target,
            nodes: stored,
            packets: lookup.queries + stored,
        });
    }

    /// Counts a query from `ip`; false while the source is refused.
    fn source_may_query(&mut self, ip: IpAddr, now: Instant) -> bool {
        // Loopback cannot be spoofed from the network (the kernel drops
        // such packets) and is no one to reflect at: this machine's own
        // clients, several of which may share one address, are exempt.
        if ip.is_loopback() {
            return true;
        }
        if self.sources.len() >= MAX_TRACKED_SOURCES && !self.sources.contains_key(&ip) {
            self.sources.retain(|_, r| {
                r.banned_until.is_some_and(|t| t > now) || now.duration_since(r.window_start) < QUERY_WINDOW
            });
            if self.sources.len() >= MAX_TRACKED_SOURCES {
                // Every tracked source is active: forget the lot rather
                // than grow (a flood from that many addresses is not one
                // source's burst).
                self.sources.clear();
            }
        }
        let r = self.sources.entry(ip).or_insert(SourceRate {
            window_start: now,
            queries: 0,
            banned_until: None,
        });
        if let Some(until) = r.banned_until {
            if now < until {
                return false;
            }
            r.banned_until = None;
            r.window_start = now;
            r.queries = 0;
        }
        if now.duration_since(r.window_start) >= QUERY_WINDOW {
            r.window_start = now;
            r.queries = 0;
        }
        r.queries += 1;
        if r.queries > QUERY_BURST {
            r.banned_until = Some(now + QUERY_BAN);
            return false;
        }
        true
    }

    /// One datagram from the network.
    pub fn handle_datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        self.clock = Some(now);
        match krpc::parse_with_requester(data) {
            Ok((
                Message::Query {
                    tid,
                    id,
                    query,
                    read_only,
                },
                _,
            )) => {
                if !self.source_may_query(from.ip(), now) {
                    self.counters.queries_refused += 1;
                    return;
                }
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
            Ok((Message::Reply { tid, reply }, requester)) => {
                let Some(p) = take_pending(&mut self.pending, tid, from) else {
                    return;
                };
                if p.node.is_some_and(|n| n != reply.id) {
                    // Another node answers from that address now (a node
                    // that restarted with a new id): the one we asked is gone.
                    self.fail(p);
                    return;
                }
                let replier = NodeInfo {
                    id: reply.id,
                    addr: from,
                };
                self.table.insert(replier, now);
                self.cache.insert(replier);
                let own_addr = self.config.own_addr;
                let own_id = self.id();
                let learned: Vec<NodeInfo> = reply
                    .nodes()
                    .chain(reply.nodes6())
                    .filter(|n| Some(n.addr) != own_addr && n.id != own_id)
                    .collect();
                match p.purpose {
                    Purpose::Bootstrap => {
                        for n in &learned {
                            self.table.insert(*n, now);
                            self.cache.insert(*n);
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
                            for n in learned {
                                add_candidate(l, n, own_id);
                                self.cache.insert(n);
                            }
                            for v in &reply.values {
                                if l.peers.len() < MAX_PEERS_PER_HASH && !l.peers.contains(v) {
                                    l.peers.push(*v);
                                }
                            }
                        }
                        self.step_lookup(lookup);
                    }
                    Purpose::AnnouncePeer => self.counters.stored_acked += 1,
                }
                if let Some(addr) = requester {
                    self.vote_external(from.ip(), addr.ip());
                }
            }
            Ok((Message::Error { tid, .. }, _)) => {
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

    /// Counts `voter`'s report of our address; once enough voters agree on
    /// an address our id is not valid for, takes a BEP 42 id for it. The
    /// new id keeps the old one's random bits, so it is as unpredictable.
    fn vote_external(&mut self, voter: IpAddr, reported: IpAddr) {
        let Some((external_ip, voters)) = self.votes.vote(voter, reported) else {
            return;
        };
        let old = self.id();
        if old.is_valid_for(external_ip) {
            return;
        }
        let mut random = [0u8; 18];
        random.copy_from_slice(&old.0[2..]);
        let new = NodeId::for_ip(external_ip, random);
        self.table.rehome(new);
        self.votes.clear();
        self.counters.id_changes += 1;
        self.events.push_back(Event::IdChanged {
            old,
            new,
            external_ip,
            voters,
        });
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
            self.table.failed(&node, p.to);
            self.cache.remove(&node, p.to);
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
        self.clock = Some(now);
        let timeout = self.config.query_timeout;
        while let Some(&(sent, tid)) = self.expiries.front() {
            if now.saturating_duration_since(sent) < timeout {
                break;
            }
            self.expiries.pop_front();
            if self.pending.get(&tid).is_some_and(|p| p.sent == sent) {
                let p = self.pending.remove(&tid).expect("present");
                self.counters.timeouts += 1;
                self.fail(p);
            }
        }
    }

    /// The next datagram to send now, if any: replies first, then the
    /// query that has waited longest among destinations that may be sent
    /// to again.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.clock = Some(now);
        let interval = self.config.per_destination_interval;
        if let Some((to, bytes)) = self.replies.pop_front() {
            // The remote counts our replies against our pace too.
            self.destinations.entry(to.ip()).or_default().last_sent = Some(now);
            self.counters.replies_sent += 1;
            return Some((to, bytes));
        }
        loop {
            let Reverse((at, _, ip)) = *self.ready.peek()?;
            if at.is_some_and(|t| t > now) {
                return None;
            }
            self.ready.pop();
            let Some(dest) = self.destinations.get_mut(&ip) else {
                continue;
            };
            let held_too_long = dest
                .held_since
                .is_some_and(|h| now.duration_since(h) >= MAX_REPLY_HOLD);
            if let Some(allowed) = dest.last_sent.map(|t| t + interval).filter(|t| *t > now) {
                if !held_too_long {
                    // A reply went there since this entry was made.
                    dest.held_since.get_or_insert(now);
                    self.ready_seq += 1;
                    self.ready.push(Reverse((Some(allowed), self.ready_seq, ip)));
                    continue;
                }
            }
            dest.held_since = None;
            let Some(q) = dest.queue.pop_front() else {
                continue;
            };
            dest.last_sent = Some(now);
            if !dest.queue.is_empty() {
                self.ready_seq += 1;
                self.ready
                    .push(Reverse((Some(now + interval), self.ready_seq, ip)));
            }
            self.queued -= 1;
            self.counters.queries_sent += 1;
            if q.announce {
                self.counters.announce_packets += 1;
            }
            self.pending.insert(
                q.tid,
                Pending {
                    to: q.to,
                    node: q.node,
                    sent: now,
                    purpose: q.purpose,
                },
            );
            self.expiries.push_back((now, q.tid));
            return Some((q.to, q.bytes));
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Node::handle_timeout`] or [`Node::poll_transmit`] next has
    /// something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let expiry = self
            .expiries
            .front()
            .map(|(sent, _)| *sent + self.config.query_timeout);
        let send = self
            .ready
            .peek()
            .and_then(|Reverse((at, _, _))| at.or(self.clock));
        match (expiry, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops per-destination pacing state older than needed (call now and
    /// then so a crawl of many addresses does not grow it without bound).
    pub fn forget_paced(&mut self, now: Instant) {
        let interval = self.config.per_destination_interval;
        self.destinations.retain(|_, d| {
            !d.queue.is_empty()
                || d.last_sent
                    .is_some_and(|t| now.saturating_duration_since(t) < interval)
        });
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

fn take_pending(pending: &mut HashMap<u32, Pending>, tid: &[u8], from: SocketAddr) -> Option<Pending> {
    let tid = u32::from_be_bytes(tid.try_into().ok()?);
    match pending.get(&tid) {
        Some(p) if p.to == from => pending.remove(&tid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{lanes_for, SweepSchedule};

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
        index: HashMap<SocketAddr, usize>,
        now: Instant,
        sent: Vec<(usize, SocketAddr, Instant, bool)>,
    }

    /// Node `i`'s address: 10.77.0.1, 10.77.0.2, ... 250 to a /24.
    fn net_ip(i: usize) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250 + 1) as u8)
    }

    impl Net {
        fn new(n: usize, holder_hashes: Vec<[u8; 20]>) -> Self {
            let addrs: Vec<SocketAddr> = (0..n).map(|i| SocketAddr::from((net_ip(i), 6881))).collect();
            let index = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
            let mut holder = Some(holder_hashes);
            let nodes = (0..n)
                .map(|i| {
                    let peer = SocketAddr::from((net_ip(i), 51413));
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
                index,
                now: Instant::now(),
                sent: Vec::new(),
            }
        }

        /// Every node joins through node 1 (node 1 through node 2).
        fn bootstrap_all(&mut self) {
            let seed = self.addrs[1];
            for i in 0..self.nodes.len() {
                let to = if i == 1 { self.addrs[2] } else { seed };
                self.nodes[i].bootstrap(&[to]);
            }
        }

        /// Delivers every datagram, in 50 ms steps of simulated time.
        fn run(&mut self, steps: usize) {
            for _ in 0..steps {
                for i in 0..self.nodes.len() {
                    while let Some((to, bytes)) = self.nodes[i].poll_transmit(self.now) {
                        let is_query = matches!(krpc::parse(&bytes), Ok(Message::Query { .. }));
                        self.sent.push((i, to, self.now, is_query));
                        if let Some(&j) = self.index.get(&to) {
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

        /// No node sent two queries to one address within `interval`.
        fn assert_paced(&self, interval: Duration) {
            let mut last: HashMap<(usize, IpAddr), Instant> = HashMap::new();
            for (from, to, at, is_query) in &self.sent {
                if !is_query {
                    continue;
                }
                if let Some(prev) = last.insert((*from, to.ip()), *at) {
                    assert!(*at - prev >= interval, "node {from} paced to {to}");
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
        net.bootstrap_all();
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
            Event::Announced { info_hash, nodes, .. } if info_hash == decoy => Some(nodes),
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

        // Pacing: no node sent two queries to one address within 250 ms.
        net.assert_paced(Duration::from_millis(250));
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
                nodes: 0,
                packets: 1
            })
        );
    }

    /// The K ids of `ids` closest to `target`, by sorting them all.
    fn true_closest(ids: &[NodeId], target: &NodeId) -> Vec<NodeId> {
        let mut all = ids.to_vec();
        all.sort_by_key(|n| n.distance(target));
        all.truncate(K);
        all
    }

    #[test]
    fn a_sweep_stores_each_decoy_on_its_true_k_closest_nodes_with_few_packets() {
        // 240 nodes and 600 decoys: 20 decoys per K-closest region, so the
        // sweep runs in lanes, and most announces reuse a mapped region.
        let mut decoys: Vec<[u8; 20]> = (0..600).map(|i| id(1_000_000 + i).0).collect();
        decoys.sort();
        let mut net = Net::new(240, decoys.clone());
        net.bootstrap_all();
        net.run(200);
        let estimate = net.nodes[0]
            .network_size_estimate()
            .expect("lookups found K nodes");
        assert!(
            (60.0..1000.0).contains(&estimate),
            "network of 240 estimated at {estimate}"
        );

        // 20 announces a second, one per 50 ms step, lane by lane.
        let lanes = lanes_for(20.0, decoys.len(), Some(estimate));
        assert!(lanes > 1, "{lanes}");
        let mut schedule = SweepSchedule::new(decoys.len(), lanes);
        let before = net.nodes[0].counters();
        while let Some(slot) = schedule.next_slot() {
            let now = net.now;
            net.nodes[0].sweep_announce(decoys[slot], now);
            net.run(1);
        }
        net.run(100);
        let c = net.nodes[0].counters();
        let announces = c.announces - before.announces;
        assert_eq!(announces, 600);
        let packets = (c.announce_packets - before.announce_packets) as f64 / announces as f64;
        assert!(packets <= 20.0, "{packets} packets per announce");
        assert!(c.region_lookups - before.region_lookups < 120, "{c:?}");
        assert_eq!(
            c.stored_acked - before.stored_acked,
            c.stored_on - before.stored_on
        );
        let events = net.events(0);
        let per_announce_max = events
            .iter()
            .filter_map(|e| match e {
                Event::Announced { packets, .. } => Some(*packets),
                _ => None,
            })
            .max()
            .unwrap();
        assert!(per_announce_max <= 40, "{per_announce_max}");

        // Every decoy sits on the K nodes closest to it (all but us).
        let ids: Vec<NodeId> = (1..240).map(|i| id(i as u64)).collect();
        let ours = SocketAddr::from((net_ip(0), 51413));
        let mut on_all = 0;
        let mut on_true = 0;
        for d in &decoys {
            let stored_on = |j: usize| {
                net.nodes[j]
                    .stored
                    .get(d)
                    .is_some_and(|peers| peers.iter().any(|(a, _)| *a == ours))
            };
            let hits = true_closest(&ids, &NodeId(*d))
                .iter()
                .filter(|n| stored_on(ids.iter().position(|x| x == *n).unwrap() + 1))
                .count();
            on_true += hits;
            on_all += usize::from(hits == K);
        }
        assert!(
            on_all >= 594,
            "{on_all} of 600 decoys on all K true closest nodes"
        );
        assert!(on_true >= 600 * K - 20, "{on_true}");
        net.assert_paced(Duration::from_millis(250));
    }

    #[test]
    fn the_full_lookup_announce_still_reaches_the_closest_nodes() {
        let decoy = id(777).0;
        let mut net = Net::new(120, vec![decoy]);
        net.bootstrap_all();
        net.run(200);
        net.nodes[0].announce(decoy);
        net.run(100);
        let ids: Vec<NodeId> = (1..120).map(|i| id(i as u64)).collect();
        let ours = SocketAddr::from((net_ip(0), 51413));
        let hits = true_closest(&ids, &NodeId(decoy))
            .iter()
            .filter(|n| {
                let j = ids.iter().position(|x| x == *n).unwrap() + 1;
                net.nodes[j]
                    .stored
                    .get(&decoy)
                    .is_some_and(|p| p.iter().any(|(a, _)| *a == ours))
            })
            .count();
        assert!(hits >= K - 1, "{hits}");
        let c = net.nodes[0].counters();
        assert_eq!((c.announces, c.region_lookups), (1, 1));
    }

    #[test]
    fn enough_nodes_reporting_one_public_address_give_the_node_a_bep42_id_for_it() {
        let now = Instant::now();
        let peer: SocketAddr = "10.77.0.1:51413".parse().unwrap();
        let mut node = Node::new(NodeId([0x11; 20]), Config::new(peer), Hashes(vec![]), tokens(1));
        let public: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(!node.id().is_valid_for(public));
        let known: Vec<NodeInfo> = (0..5)
            .map(|i| NodeInfo {
                id: id(300 + i),
                addr: format!("10.77.1.{}:6881", i + 1).parse().unwrap(),
            })
            .collect();
        for n in &known {
            node.table.insert(*n, now);
        }
        let voters: Vec<SocketAddr> = (1..=4)
            .map(|i| format!("198.51.100.{i}:6881").parse().unwrap())
            .collect();
        node.bootstrap(&voters);
        let queries: Vec<(SocketAddr, Vec<u8>)> = std::iter::from_fn(|| node.poll_transmit(now)).collect();
        assert_eq!(queries.len(), 4);
        let seen_as: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        for (k, (to, bytes)) in queries.iter().enumerate() {
            let Ok(Message::Query { tid, .. }) = krpc::parse(bytes) else {
                panic!()
            };
            let reply = krpc::encode_reply(
                tid,
                &ReplyOut {
                    id: id(400 + k as u64),
                    ..Default::default()
                },
                Some(&seen_as),
            );
            node.handle_datagram(*to, &reply, now);
            let changed: Vec<Event> = std::iter::from_fn(|| node.poll_event())
                .filter(|e| matches!(e, Event::IdChanged { .. }))
                .collect();
            match k {
                0 | 1 => assert!(changed.is_empty(), "two voters are not enough"),
                2 => {
                    let new = node.id();
                    assert_eq!(
                        changed,
                        vec![Event::IdChanged {
                            old: NodeId([0x11; 20]),
                            new,
                            external_ip: public,
                            voters: 3
                        }]
                    );
                    assert!(new.is_valid_for(public));
                    assert_eq!(node.table().own_id(), new);
                    assert_eq!(&new.0[3..], &[0x11; 17], "the old id's random bits stay");
                    for n in &known {
                        assert!(node.table().entries().any(|e| e.node == *n), "entries kept");
                    }
                    assert_eq!(node.counters().id_changes, 1);
                }
                _ => assert!(changed.is_empty(), "already valid for that address"),
            }
        }
        // Queries now go out under the new id.
        node.bootstrap(&["198.51.100.9:6881".parse().unwrap()]);
        let sent: Vec<Vec<u8>> = std::iter::from_fn(|| node.poll_transmit(now))
            .map(|(_, b)| b)
            .collect();
        assert!(sent
            .iter()
            .any(|b| matches!(krpc::parse(b), Ok(Message::Query { id, .. }) if id == node.id())));
    }

    #[test]
    fn a_source_that_queries_too_fast_gets_no_answers_for_a_while() {
        let t0 = Instant::now();
        let peer: SocketAddr = "10.77.0.1:51413".parse().unwrap();
        let mut node = Node::new(NodeId([0x22; 20]), Config::new(peer), Hashes(vec![]), tokens(3));
        let flooder: SocketAddr = "10.77.0.66:6881".parse().unwrap();
        let other: SocketAddr = "10.77.0.67:6881".parse().unwrap();
        let ping = krpc::encode_query(b"pp", &id(9), &Query::Ping, false);
        let mut answered = 0;
        for i in 0..80u64 {
            let t = t0 + Duration::from_millis(50 * i);
            node.handle_datagram(flooder, &ping, t);
            while let Some((to, _)) = node.poll_transmit(t) {
                answered += u32::from(to == flooder);
            }
        }
        assert_eq!(answered, QUERY_BURST, "the burst is answered, the rest is not");
        assert_eq!(node.counters().queries_refused, 80 - u64::from(QUERY_BURST));
        // Others are still answered.
        let t = t0 + Duration::from_secs(5);
        node.handle_datagram(other, &ping, t);
        assert!(std::iter::from_fn(|| node.poll_transmit(t)).any(|(to, _)| to == other));
        // Still refused within the ban; answered again after it.
        let t = t0 + Duration::from_secs(60);
        node.handle_datagram(flooder, &ping, t);
        assert!(!std::iter::from_fn(|| node.poll_transmit(t)).any(|(to, _)| to == flooder));
        let t = t0 + QUERY_BAN + Duration::from_secs(10);
        node.handle_datagram(flooder, &ping, t);
        assert!(std::iter::from_fn(|| node.poll_transmit(t)).any(|(to, _)| to == flooder));
        // This machine's own clients (loopback) are not limited.
        let local: SocketAddr = "[::1]:6881".parse().unwrap();
        let mut answered = 0;
        for i in 0..80u64 {
            let t = t + Duration::from_millis(50 * i);
            node.handle_datagram(local, &ping, t);
            while let Some((to, _)) = node.poll_transmit(t) {
                answered += u32::from(to == local);
            }
        }
        assert_eq!(answered, 80);
    }

    #[test]
    fn queries_to_one_address_wait_for_its_pace_and_replies_hold_them_back_a_while() {
        let t0 = Instant::now();
        let peer: SocketAddr = "10.77.0.1:51413".parse().unwrap();
        let mut node = Node::new(NodeId([0x22; 20]), Config::new(peer), Hashes(vec![]), tokens(3));
        let other: SocketAddr = "10.77.0.9:6881".parse().unwrap();
        node.bootstrap(&[other, other, other]);
        assert!(node.poll_transmit(t0).is_some());
        assert!(node.poll_transmit(t0).is_none(), "paced");
        assert_eq!(node.queued_queries(), 2);
        assert_eq!(node.next_timeout(), Some(t0 + Duration::from_millis(250)));
        // A query from that address: the reply goes at once and pushes our
        // next query back a full interval (libtorrent counts every packet).
        let t1 = t0 + Duration::from_millis(200);
        let ping = krpc::encode_query(b"pp", &id(9), &Query::Ping, false);
        node.handle_datagram(other, &ping, t1);
        let (to, reply) = node.poll_transmit(t1).unwrap();
        assert_eq!(to, other);
        assert!(matches!(krpc::parse(&reply), Ok(Message::Reply { .. })));
        assert!(node.poll_transmit(t0 + Duration::from_millis(300)).is_none());
        assert!(node.poll_transmit(t1 + Duration::from_millis(250)).is_some());
        // That address now queries us every 200 ms (a crawler, or someone
        // stalling our lookups): each reply still goes at once, and our
        // last query to it leaves within MAX_REPLY_HOLD of being due.
        let mut sent_at = Vec::new();
        for step in 1..=15u64 {
            let t = t1 + Duration::from_millis(250 + 200 * step);
            node.handle_datagram(other, &ping, t);
            while let Some((to, packet)) = node.poll_transmit(t) {
                assert_eq!(to, other);
                if matches!(krpc::parse(&packet), Ok(Message::Query { .. })) {
                    sent_at.push(t);
                }
            }
        }
        assert_eq!(node.queued_queries(), 0, "the stalled query left: {sent_at:?}");
        // Due at t1 + 500 ms; held at most MAX_REPLY_HOLD, seen at the
        // next packet after that (every 200 ms here) and its pace.
        let due = t1 + Duration::from_millis(500);
        assert!(
            sent_at[0] - due <= MAX_REPLY_HOLD + Duration::from_millis(500),
            "{:?}",
            sent_at[0] - due
        );
        // Unanswered queries expire.
        node.handle_timeout(t0 + Duration::from_secs(20));
        let sent = 2 + sent_at.len() as u64;
        assert_eq!(node.counters().queries_sent, sent);
        assert_eq!(node.counters().timeouts, sent);
        assert_eq!(node.counters().replies_sent, 16);
    }
}
