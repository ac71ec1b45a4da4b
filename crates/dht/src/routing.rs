//! The routing table (BEP 5): up to K nodes per bucket, buckets by how many
//! leading bits a node's id shares with ours. Far buckets (short common
//! prefix) cover huge ranges and stay full of long-lived nodes; the close
//! ones are sparse, which is what makes lookups converge.
//!
//! A node is good while it has answered within [`GOOD_FOR`]; a full
//! bucket admits a newcomer only in place of a bad node (failed
//! [`MAX_FAILURES`] queries in a row), otherwise the caller is told which
//! questionable node to ping first. Sans-IO: instants come in as arguments.

use crate::krpc::NodeInfo;
use crate::node_id::NodeId;
use std::time::{Duration, Instant};

/// Nodes per bucket (BEP 5's K).
pub const K: usize = 8;
/// A node that answered this recently is good.
pub const GOOD_FOR: Duration = Duration::from_secs(15 * 60);
/// Failed queries in a row after which a node is bad.
pub const MAX_FAILURES: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub node: NodeInfo,
    pub last_seen: Instant,
    pub failures: u8,
}

impl Entry {
    pub fn is_good(&self, now: Instant) -> bool {
        self.failures == 0 && now.saturating_duration_since(self.last_seen) < GOOD_FOR
    }
    pub fn is_bad(&self) -> bool {
        self.failures >= MAX_FAILURES
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    Added,
    /// Already there: seen again (and its address updated).
    Refreshed,
    /// The bucket is full of nodes that are not bad: ping this one, and
    /// insert again if it fails.
    BucketFull {
        ping: NodeInfo,
    },
    /// Our own id.
    Ignored,
}

pub struct RoutingTable {
    own: NodeId,
    buckets: Vec<Vec<Entry>>,
}

impl RoutingTable {
    pub fn new(own: NodeId) -> Self {
        Self {
            own,
            buckets: vec![Vec::new(); 160],
        }
    }

    pub fn own_id(&self) -> NodeId {
        self.own
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        (self.own.common_prefix_bits(id) as usize).min(159)
    }

    /// Records that `node` was heard from (a reply, or a query from it).
    pub fn insert(&mut self, node: NodeInfo, now: Instant) -> Insert {
        if node.id == self.own {
            return Insert::Ignored;
        }
        let b = self.bucket_of(&node.id);
        let bucket = &mut self.buckets[b];
        if let Some(e) = bucket.iter_mut().find(|e| e.node.id == node.id) {
            if e.node.addr != node.addr {
                // Anyone can send a packet carrying a known id; moving the
                // id to the sender's address would let them take its
                // place in our lookups and in the nodes we hand out (as
                // libtorrent, the id keeps its address while it answers).
                // A node that stopped answering may have moved.
                if !e.is_bad() {
                    return Insert::Ignored;
                }
                e.node.addr = node.addr;
            }
            e.last_seen = now;
            e.failures = 0;
            return Insert::Refreshed;
        }
        let entry = Entry {
            node,
            last_seen: now,
            failures: 0,
        };
        if bucket.len() < K {
            bucket.push(entry);
            return Insert::Added;
        }
        if let Some(bad) = bucket.iter_mut().find(|e| e.is_bad()) {
            *bad = entry;
            return Insert::Added;
        }
        let stalest = bucket
            .iter()
            .filter(|e| !e.is_good(now))
            .min_by_key(|e| e.last_seen)
            .or_else(|| bucket.iter().min_by_key(|e| e.last_seen))
            .expect("a full bucket is not empty");
        Insert::BucketFull { ping: stalest.node }
    }

    /// A query to `id` at `addr` timed out. Only a failure at the address
    /// we hold counts: anyone can name a known id at a dead address, and
    /// the timeouts there must not make the real node "bad" (which would
    /// let its id be moved).
    pub fn failed(&mut self, id: &NodeId, addr: std::net::SocketAddr) {
        let b = self.bucket_of(id);
        if let Some(e) = self.buckets[b]
            .iter_mut()
            .find(|e| e.node.id == *id && e.node.addr == addr)
        {
            e.failures = e.failures.saturating_add(1);
        }
    }

    /// Up to `n` nodes that are not bad, closest to `target` first.
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<NodeInfo> {
        let mut all: Vec<&Entry> = self.buckets.iter().flatten().filter(|e| !e.is_bad()).collect();
        all.sort_by_key(|e| e.node.id.distance(target));
        all.into_iter().take(n).map(|e| e.node).collect()
    }

    /// Takes a new own id (BEP 42: one that matches our external address)
    /// and rebuilds the buckets around it from the entries we have, good
    /// and recently seen nodes first where a bucket has no room for all.
    /// Returns how many entries were kept.
    pub fn rehome(&mut self, own: NodeId) -> usize {
        let mut entries: Vec<Entry> = self.buckets.drain(..).flatten().collect();
        entries.sort_by_key(|e| (e.failures, std::cmp::Reverse(e.last_seen)));
        self.own = own;
        self.buckets = vec![Vec::new(); 160];
        let mut kept = 0;
        for e in entries {
            if e.node.id == own {
                continue;
            }
            let b = self.bucket_of(&e.node.id);
            if self.buckets[b].len() < K {
                self.buckets[b].push(e);
                kept += 1;
            }
        }
        kept
    }

    pub fn len(&self) -> usize {
        self.buckets.iter().map(Vec::len).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, for persisting the table across restarts.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(first: u8, last: u8) -> NodeInfo {
        let mut id = [0u8; 20];
        id[0] = first;
        id[19] = last;
        NodeInfo {
            id: NodeId(id),
            addr: format!("10.77.{first}.{last}:6881").parse().unwrap(),
        }
    }

    #[test]
    fn closest_is_sorted_by_xor_distance_and_skips_bad_nodes() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        for (f, l) in [(0x80, 1), (0x40, 2), (0x20, 3), (0x10, 4), (0x01, 5)] {
            assert_eq!(t.insert(node(f, l), now), Insert::Added);
        }
        let target = node(0x11, 0).id;
        let ids: Vec<u8> = t.closest(&target, 3).iter().map(|n| n.id.0[0]).collect();
        assert_eq!(ids, [0x10, 0x01, 0x20]);
        t.failed(&node(0x10, 4).id, node(0x10, 4).addr);
        t.failed(&node(0x10, 4).id, node(0x10, 4).addr);
        let ids: Vec<u8> = t.closest(&target, 3).iter().map(|n| n.id.0[0]).collect();
        assert_eq!(ids, [0x01, 0x20, 0x40], "a bad node is no longer offered");
        assert_eq!(t.insert(node(0x80, 1), now), Insert::Refreshed);
        assert_eq!(
            t.insert(
                NodeInfo {
                    id: t.own_id(),
                    ..node(0, 0)
                },
                now
            ),
            Insert::Ignored
        );
    }

    #[test]
    fn a_known_id_keeps_its_address_while_it_answers() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        let real = node(0x40, 2);
        t.insert(real, now);
        let impostor = NodeInfo {
            addr: "10.77.99.99:6881".parse().unwrap(),
            ..real
        };
        assert_eq!(t.insert(impostor, now), Insert::Ignored);
        assert_eq!(t.closest(&real.id, 1)[0].addr, real.addr);
        // Timeouts at the impostor's address (it named the id there in a
        // reply, and we asked) do not count against the real node.
        for _ in 0..MAX_FAILURES {
            t.failed(&real.id, impostor.addr);
        }
        assert_eq!(t.insert(impostor, now), Insert::Ignored);
        // Once it has stopped answering where we know it, the id may move.
        for _ in 0..MAX_FAILURES {
            t.failed(&real.id, real.addr);
        }
        assert_eq!(t.insert(impostor, now), Insert::Refreshed);
        assert_eq!(t.closest(&real.id, 1)[0].addr, impostor.addr);
    }

    #[test]
    fn rehoming_keeps_the_entries_under_the_new_id() {
        let now = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        for (f, l) in [(0x80, 1), (0x40, 2), (0x20, 3), (0x10, 4), (0x01, 5)] {
            t.insert(node(f, l), now);
        }
        let new_id = node(0x81, 9).id;
        assert_eq!(t.rehome(new_id), 5);
        assert_eq!(t.own_id(), new_id);
        assert_eq!(t.len(), 5);
        // Buckets follow the new id: 0x80 now shares 7 bits with it.
        let ids: Vec<u8> = t.closest(&new_id, 2).iter().map(|n| n.id.0[0]).collect();
        assert_eq!(ids, [0x80, 0x01]);
        assert_eq!(t.insert(node(0x80, 1), now), Insert::Refreshed);
    }

    #[test]
    fn a_full_bucket_asks_for_a_ping_and_admits_only_in_place_of_a_bad_node() {
        let t0 = Instant::now();
        let mut t = RoutingTable::new(NodeId([0; 20]));
        // Ids 0x80.. all share no prefix bit with ours: one bucket.
        for i in 0..K as u8 {
            assert_eq!(
                t.insert(node(0x80, i), t0 + Duration::from_secs(u64::from(i))),
                Insert::Added
            );
        }
        let later = t0 + GOOD_FOR + Duration::from_secs(60);
        match t.insert(node(0x80, 100), later) {
            Insert::BucketFull { ping } => assert_eq!(ping, node(0x80, 0), "the stalest node"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.len(), K);
        t.failed(&node(0x80, 0).id, node(0x80, 0).addr);
        t.failed(&node(0x80, 0).id, node(0x80, 0).addr);
        assert_eq!(t.insert(node(0x80, 100), later), Insert::Added);
        assert_eq!(t.len(), K);
        assert!(t.entries().all(|e| e.node != node(0x80, 0)));
    }
}
