//! Announcing a sorted set of info hashes with few packets: the keyspace
//! sweep.
//!
//! A fresh iterative lookup per info hash costs a few dozen packets, most
//! of them spent finding the closest nodes again. Our decoys are sorted by
//! info hash, so consecutive announces land in the same region of the
//! keyspace: [`NodeCache`] keeps the nodes earlier lookups met, sorted by
//! id, and the regions they mapped. An announce inside a mapped region asks
//! the cached closest nodes for a token at once (get_peers; libtorrent's
//! tokens depend on the info hash, so one is needed per hash) and stores
//! on them (announce_peer): 2 K packets. Replies that name a closer node we
//! did not know make the announce ask it too and enter the cache; an
//! announce outside every mapped region is an ordinary iterative lookup,
//! seeded from the cache, that maps its region for the next ones.
//!
//! Sweeping strictly in order sends every announce of a region to the same
//! K nodes, and a node may only get a few packets a second. Where the
//! network is small for the number of decoys (many decoys per region),
//! [`SweepSchedule`] runs several lanes through the keyspace at once, so
//! each region sees only its lane's pace; [`lanes_for`] picks how many.

use crate::krpc::NodeInfo;
use crate::node_id::NodeId;
use crate::routing::K;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A mapped region is trusted this long without being announced in again.
pub const REGION_TTL: Duration = Duration::from_secs(15 * 60);
/// Regions remembered at most.
const MAX_REGIONS: usize = 65_536;

struct Cached {
    addr: SocketAddr,
    /// Logical time of last use, for evicting the least recently used.
    used: u64,
}

struct Region {
    depth: u32,
    mapped_at: Instant,
}

/// Nodes met by lookups, sorted by id, and the keyspace regions whose
/// closest nodes are known. Bounded: least recently used nodes go first.
pub struct NodeCache {
    nodes: BTreeMap<NodeId, Cached>,
    /// Disjoint prefixes, keyed by their first id.
    regions: BTreeMap<NodeId, Region>,
    cap: usize,
    clock: u64,
}

impl NodeCache {
    pub fn new(cap: usize) -> Self {
        Self {
            nodes: BTreeMap::new(),
            regions: BTreeMap::new(),
            cap: cap.max(4 * K),
            clock: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
    pub fn regions(&self) -> usize {
        self.regions.len()
    }

    /// Records a node (a reply from it, or another node naming it). A
    /// cached id keeps its address: anyone may name an id at an address of
    /// their choosing, and moving it would send our announces there. A node
    /// that really moved stops answering at the old one, is removed, and
    /// comes back from the next mention.
    pub fn insert(&mut self, node: NodeInfo) {
        self.clock += 1;
        let used = self.clock;
        self.nodes
            .entry(node.id)
            .and_modify(|c| {
                c.used = used;
            })
            .or_insert(Cached {
                addr: node.addr,
                used,
            });
        if self.nodes.len() > self.cap {
            self.evict();
        }
    }

    /// A node that did not answer: gone from the cache until met again.
    pub fn remove(&mut self, id: &NodeId, addr: SocketAddr) {
        // Only where we hold it: a timeout at an address someone else
        // named for this id says nothing about the node.
        if self.nodes.get(id).is_some_and(|c| c.addr == addr) {
            self.nodes.remove(id);
        }
    }

    /// Drops the least recently used quarter (amortised O(1) per insert).
    fn evict(&mut self) {
        let mut used: Vec<u64> = self.nodes.values().map(|c| c.used).collect();
        let drop = self.nodes.len() - self.cap * 3 / 4;
        let (_, cutoff, _) = used.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        self.nodes.retain(|_, c| c.used > cutoff);
    }

    /// The `n` cached nodes closest to `target` (XOR), closest first.
    pub fn closest(&mut self, target: &NodeId, n: usize) -> Vec<NodeInfo> {
        let mut out = Vec::with_capacity(n);
        self.collect(target, *target, 0, n, &mut out);
        out.sort_by_key(|x| x.id.distance(target));
        self.clock += 1;
        for x in &out {
            if let Some(c) = self.nodes.get_mut(&x.id) {
                c.used = self.clock;
            }
        }
        out
    }

    /// Up to `need` nodes of the subtree named by `base`'s top `depth`
    /// bits, closest to `target` (which shares that prefix or is its
    /// mirror): every node of the half that agrees with `target` on the
    /// next bit is closer than any of the other half, so take from it
    /// first and fill up from the other.
    fn collect(&self, target: &NodeId, base: NodeId, depth: u32, need: usize, out: &mut Vec<NodeInfo>) {
        if need == 0 {
            return;
        }
        let (lo, hi) = base.prefix_range(depth);
        let range = self.nodes.range(lo..=hi);
        if depth >= 160 || range.clone().take(need + 1).count() <= need {
            out.extend(range.map(|(id, c)| NodeInfo {
                id: *id,
                addr: c.addr,
            }));
            return;
        }
        let near = base.with_bit(depth, target.bit(depth));
        let far = base.with_bit(depth, !target.bit(depth));
        let before = out.len();
        self.collect(target, near, depth + 1, need, out);
        let got = out.len() - before;
        self.collect(target, far, depth + 1, need - got, out);
    }

    /// Notes that a lookup for `target` found its K closest nodes, the
    /// farthest of them sharing `depth` bits with it: the subtree of that
    /// prefix holds at least K nodes and we know the ones that matter, so
    /// announces inside it can go straight to the cached closest nodes.
    pub fn record_region(&mut self, target: &NodeId, depth: u32, now: Instant) {
        let (start, end) = target.prefix_range(depth);
        if let Some((_, r)) = self
            .regions
            .range_mut(..=start)
            .next_back()
            .filter(|(s, r)| r.depth <= depth && s.prefix_range(r.depth).1 >= end)
        {
            // Already inside a mapped region: it is fresh again.
            r.mapped_at = now;
            return;
        }
        let nested: Vec<NodeId> = self.regions.range(start..=end).map(|(s, _)| *s).collect();
        for s in nested {
            self.regions.remove(&s);
        }
        self.regions.insert(
            start,
            Region {
                depth,
                mapped_at: now,
            },
        );
        if self.regions.len() > MAX_REGIONS {
            self.regions
                .retain(|_, r| now.saturating_duration_since(r.mapped_at) < REGION_TTL);
            if self.regions.len() > MAX_REGIONS {
                let mut ages: Vec<Instant> = self.regions.values().map(|r| r.mapped_at).collect();
                let (_, cutoff, _) = ages.select_nth_unstable(MAX_REGIONS / 4);
                let cutoff = *cutoff;
                self.regions.retain(|_, r| r.mapped_at > cutoff);
            }
        }
    }

    /// Whether `target` lies in a region mapped within [`REGION_TTL`].
    pub fn covers(&self, target: &NodeId, now: Instant) -> bool {
        self.regions
            .range(..=*target)
            .next_back()
            .is_some_and(|(start, r)| {
                start.prefix_range(r.depth).1 >= *target
                    && now.saturating_duration_since(r.mapped_at) < REGION_TTL
            })
    }
}

/// Packets a second one lane may cost each node of the region it is in
/// (a get_peers and an announce_peer per announce); a node may take 4 a
/// second from us, and lanes sometimes overlap.
pub const LANE_PACKETS_PER_NODE: f64 = 1.5;
/// With at most this many decoys per region (K-closest set), one in-order
/// lane costs each node only a short burst per round, which pacing absorbs.
pub const SPARSE_DECOYS_PER_REGION: f64 = 4.0;

/// How many lanes a sweep of `decoys` announces at `announces_per_sec`
/// needs, given the network's estimated size (`None`: not known yet,
/// assume it is small). A large network (the real DHT: millions of nodes)
/// has few decoys per region and gets one lane, which keeps consecutive
/// announces next to each other; a small one gets enough lanes that each
/// region sees at most [`LANE_PACKETS_PER_NODE`] per node.
pub fn lanes_for(announces_per_sec: f64, decoys: usize, network_nodes: Option<f64>) -> usize {
    if decoys == 0 {
        return 1;
    }
    let per_region = network_nodes.map_or(f64::INFINITY, |n| decoys as f64 * K as f64 / n.max(1.0));
    if per_region <= SPARSE_DECOYS_PER_REGION {
        return 1;
    }
    let lanes = (2.0 * announces_per_sec / LANE_PACKETS_PER_NODE).ceil();
    if lanes.is_finite() && lanes >= 1.0 {
        (lanes.min(decoys as f64) as usize).max(1)
    } else {
        1
    }
}

/// One round over slots `0..len` (decoys in info-hash order), in `lanes`
/// interleaved in-order lanes: lane j covers `[j·len/lanes, (j+1)·len/lanes)`
/// and the round takes the first slot of every lane, then the second, ...
pub struct SweepSchedule {
    len: u64,
    lanes: u64,
    steps: u64,
    k: u64,
}

impl SweepSchedule {
    pub fn new(len: usize, lanes: usize) -> Self {
        let len = len as u64;
        let lanes = (lanes as u64).clamp(1, len.max(1));
        Self {
            len,
            lanes,
            steps: len.div_ceil(lanes),
            k: 0,
        }
    }

    pub fn lanes(&self) -> usize {
        self.lanes as usize
    }
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next slot of this round; `None` once every slot was given.
    pub fn next_slot(&mut self) -> Option<usize> {
        while self.k < self.steps * self.lanes {
            let lane = self.k % self.lanes;
            let step = self.k / self.lanes;
            self.k += 1;
            let start = lane * self.len / self.lanes;
            let end = (lane + 1) * self.len / self.lanes;
            if start + step < end {
                return Some((start + step) as usize);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> NodeId {
        let mut out = [0u8; 20];
        let mut z = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(99);
        for chunk in out.chunks_mut(8) {
            z ^= z >> 29;
            z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^= z >> 32;
            chunk.copy_from_slice(&z.to_be_bytes()[..chunk.len()]);
        }
        NodeId(out)
    }

    fn info(i: u64) -> NodeInfo {
        NodeInfo {
            id: id(i),
            addr: SocketAddr::from(([10, 77, (i >> 8) as u8, i as u8], 6881)),
        }
    }

    #[test]
    fn a_cached_id_keeps_its_address_until_it_is_removed() {
        let mut cache = NodeCache::new(100);
        let real = info(1);
        cache.insert(real);
        let named_elsewhere = NodeInfo {
            addr: "10.77.9.9:6881".parse().unwrap(),
            ..real
        };
        cache.insert(named_elsewhere);
        assert_eq!(cache.closest(&real.id, 1)[0].addr, real.addr);
        // It stopped answering there: removed, then met at its new address.
        cache.remove(&real.id, named_elsewhere.addr);
        assert_eq!(
            cache.closest(&real.id, 1)[0].addr,
            real.addr,
            "a timeout elsewhere removes nothing"
        );
        cache.remove(&real.id, real.addr);
        cache.insert(named_elsewhere);
        assert_eq!(cache.closest(&real.id, 1)[0].addr, named_elsewhere.addr);
    }

    #[test]
    fn closest_matches_brute_force() {
        let mut cache = NodeCache::new(10_000);
        let all: Vec<NodeInfo> = (0..3000).map(info).collect();
        for n in &all {
            cache.insert(*n);
        }
        for t in 0..200 {
            let target = id(1_000_000 + t);
            let mut brute = all.clone();
            brute.sort_by_key(|n| n.id.distance(&target));
            for n in [1, K, 4 * K] {
                assert_eq!(cache.closest(&target, n), brute[..n], "target {t}, n {n}");
            }
        }
        // A target equal to a cached id finds it first.
        assert_eq!(cache.closest(&id(5), 1)[0].id, id(5));
        assert_eq!(NodeCache::new(64).closest(&id(1), 8), vec![]);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_what_was_used_lately() {
        let mut cache = NodeCache::new(400);
        for i in 0..400 {
            cache.insert(info(i));
        }
        let target = id(7);
        let kept = cache.closest(&target, 8);
        for i in 400..600 {
            cache.insert(info(i));
            assert!(cache.len() <= 400, "{}", cache.len());
        }
        // The least recently used went first; the nodes a lookup just
        // used stayed.
        assert!(!cache.nodes.contains_key(&id(0)));
        for n in kept {
            assert!(cache.nodes.contains_key(&n.id));
        }
        cache.remove(&id(599), info(599).addr);
        assert!(!cache.nodes.contains_key(&id(599)));
    }

    #[test]
    fn regions_cover_their_prefix_until_they_expire_and_stay_disjoint() {
        let t0 = Instant::now();
        let mut cache = NodeCache::new(64);
        let target = NodeId([0xA5; 20]);
        assert!(!cache.covers(&target, t0));
        cache.record_region(&target, 10, t0);
        let (lo, hi) = target.prefix_range(10);
        assert!(cache.covers(&lo, t0) && cache.covers(&hi, t0) && cache.covers(&target, t0));
        let outside = target.with_bit(9, !target.bit(9));
        assert!(!cache.covers(&outside, t0), "outside the prefix");
        assert!(!cache.covers(&target, t0 + REGION_TTL), "expired");
        // A nested region only refreshes the enclosing one.
        cache.record_region(&target, 14, t0 + REGION_TTL / 2);
        assert_eq!(cache.regions(), 1);
        assert!(cache.covers(&lo, t0 + REGION_TTL));
        // An enclosing region replaces the nested ones.
        cache.record_region(&outside, 12, t0);
        assert_eq!(cache.regions(), 2);
        cache.record_region(&target, 6, t0);
        assert_eq!(cache.regions(), 1);
        assert!(cache.covers(&outside, t0));
    }

    #[test]
    fn a_schedule_visits_every_slot_once_per_round_lane_by_lane() {
        for (len, lanes) in [(10, 1), (10, 3), (10, 10), (10, 50), (1, 4), (1000, 7), (0, 3)] {
            let mut s = SweepSchedule::new(len, lanes);
            let order: Vec<usize> = std::iter::from_fn(|| s.next_slot()).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..len).collect::<Vec<_>>(), "{len} in {lanes} lanes");
            assert!(s.next_slot().is_none());
        }
        let mut s = SweepSchedule::new(10, 3);
        let order: Vec<usize> = std::iter::from_fn(|| s.next_slot()).collect();
        assert_eq!(order, [0, 3, 6, 1, 4, 7, 2, 5, 8, 9]);
    }

    #[test]
    fn lanes_follow_the_decoys_per_region() {
        // The real DHT: millions of nodes, a decoy per region or less.
        assert_eq!(lanes_for(556.0, 1_000_000, Some(10_000_000.0)), 1);
        // A small network: many decoys per region, a lane per 0.75
        // announces a second.
        assert_eq!(lanes_for(556.0, 1_000_000, Some(10_000.0)), 742);
        assert_eq!(lanes_for(556.0, 1_000_000, None), 742);
        assert_eq!(lanes_for(0.2, 1, None), 1);
        assert_eq!(lanes_for(100.0, 10, Some(8.0)), 10, "no more lanes than decoys");
        assert_eq!(lanes_for(100.0, 0, None), 1);
    }
}
