//! The DHT node's keyspace sweep and BEP 42 id change under hostile
//! datagrams: a node with a small sweep cache (so eviction runs) announces
//! info hashes taken from the input through `sweep_announce` while
//! datagrams from a handful of public-looking addresses arrive (replies
//! that name nodes, report an external address, or are garbage). It must
//! never panic, send only valid KRPC, keep its cache within bounds and its
//! routing table around its current id, and every lookup must end once
//! nothing answers any more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use warnseed_dht::krpc;
use warnseed_dht::{Config, DecoyIndex, Node, NodeId, TokenIssuer};

struct NoDecoys;

impl DecoyIndex for NoDecoys {
    fn contains(&self, _: &[u8; 20]) -> bool {
        false
    }
    fn sample(&self, _: &NodeId, _: usize) -> Vec<[u8; 20]> {
        Vec::new()
    }
    fn count(&self) -> u64 {
        0
    }
}

const CACHE: usize = 64;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let peer: SocketAddr = "198.51.100.1:51413".parse().unwrap();
    let mut n = 0u8;
    let tokens = TokenIssuer::new(
        start,
        Box::new(move || {
            n = n.wrapping_add(1);
            [n; 16]
        }),
    );
    let mut config = Config::new(peer);
    config.cache_nodes = CACHE;
    let mut node = Node::new(NodeId([0x11; 20]), config, NoDecoys, tokens);
    let addrs: Vec<SocketAddr> = (2..8)
        .map(|i| format!("198.51.100.{i}:6881").parse().unwrap())
        .collect();
    node.bootstrap(&addrs);
    let mut now = start;
    for (i, datagram) in data.split(|&b| b == 0xFF).enumerate() {
        while let Some((_, bytes)) = node.poll_transmit(now) {
            assert!(krpc::parse(&bytes).is_ok(), "we send valid KRPC");
        }
        // Every third datagram also starts an announce of a hash it names.
        if i % 3 == 0 {
            let mut h = [0u8; 20];
            for (k, b) in datagram.iter().take(20).enumerate() {
                h[k] = *b;
            }
            node.sweep_announce(h, now);
        }
        node.handle_datagram(addrs[i % addrs.len()], datagram, now);
        now += Duration::from_millis(u64::from(datagram.first().copied().unwrap_or(0)) * 10);
        node.handle_timeout(now);
        while node.poll_event().is_some() {}
        assert!(node.cache_size().0 <= CACHE);
        assert_eq!(node.table().own_id(), node.id());
    }
    // Nothing answers from here on: every lookup times out to its end.
    for _ in 0..2000 {
        while let Some((_, bytes)) = node.poll_transmit(now) {
            assert!(krpc::parse(&bytes).is_ok(), "we send valid KRPC");
        }
        now += Duration::from_millis(250);
        node.handle_timeout(now);
        while node.poll_event().is_some() {}
        if node.active_lookups() == 0 && node.queued_queries() == 0 {
            break;
        }
    }
    assert_eq!(node.active_lookups(), 0, "lookups end");
    assert!(node.table().len() <= 160 * warnseed_dht::routing::K);
});
