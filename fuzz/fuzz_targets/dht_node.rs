//! The DHT node state machine under hostile datagrams: a node with a few
//! routing-table entries and one decoy gets a sequence of datagrams from a
//! handful of addresses (the input, split on a separator byte), with time
//! moving on between them. It must never panic, everything it sends must
//! parse as KRPC, and its pending and stored state stays bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use warnseed_dht::krpc;
use warnseed_dht::{Config, DecoyIndex, Node, NodeId, TokenIssuer};

struct OneDecoy;

impl DecoyIndex for OneDecoy {
    fn contains(&self, h: &[u8; 20]) -> bool {
        *h == [0xAA; 20]
    }
    fn sample(&self, _: &NodeId, _: usize) -> Vec<[u8; 20]> {
        vec![[0xAA; 20]]
    }
    fn count(&self) -> u64 {
        1
    }
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let peer: SocketAddr = "10.77.0.1:51413".parse().unwrap();
    let mut n = 0u8;
    let tokens = TokenIssuer::new(start, Box::new(move || {
        n = n.wrapping_add(1);
        [n; 16]
    }));
    let mut node = Node::new(NodeId([0x11; 20]), Config::new(peer), OneDecoy, tokens);
    let addrs: Vec<SocketAddr> = (2..6).map(|i| format!("10.77.0.{i}:6881").parse().unwrap()).collect();
    node.bootstrap(&addrs);
    node.announce([0xAA; 20]);
    node.get_peers([0xBB; 20]);
    let mut now = start;
    for (i, datagram) in data.split(|&b| b == 0xFF).enumerate() {
        // Before each datagram: drain what the node wants to send, so
        // transaction ids of real queries exist for replies to hit.
        while let Some((_, bytes)) = node.poll_transmit(now) {
            assert!(krpc::parse(&bytes).is_ok(), "we send valid KRPC");
        }
        let from = addrs[i % addrs.len()];
        node.handle_datagram(from, datagram, now);
        now += Duration::from_millis(u64::from(datagram.first().copied().unwrap_or(0)) * 10);
        node.handle_timeout(now);
        node.forget_paced(now);
        while node.poll_event().is_some() {}
    }
    while let Some((_, bytes)) = node.poll_transmit(now) {
        assert!(krpc::parse(&bytes).is_ok(), "we send valid KRPC");
    }
    assert!(node.table().len() <= 160 * warnseed_dht::routing::K);
});
