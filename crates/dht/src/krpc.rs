//! KRPC (BEP 5): the DHT's bencoded query, reply and error messages.
//!
//! Every datagram is hostile: its length is bounded before decoding, every
//! field is checked for type and size, compact lists are read in whole
//! records only, and a malformed query still yields its transaction id so
//! the caller can answer with a protocol error (203) as BEP 5 asks.

use crate::node_id::NodeId;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use warnseed_bittorrent::bencode::{self, Encoder, Value};

/// Longest datagram read; real KRPC messages fit one Ethernet frame.
pub const MAX_MESSAGE: usize = 2048;
/// Longest transaction id echoed back.
pub const MAX_TID: usize = 32;

/// BEP 5 error codes.
pub const ERROR_GENERIC: i64 = 201;
pub const ERROR_SERVER: i64 = 202;
pub const ERROR_PROTOCOL: i64 = 203;
pub const ERROR_METHOD_UNKNOWN: i64 = 204;

/// Address families a querier asks nodes for (BEP 32 `want`); neither set
/// means "the family the query came over".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Want {
    pub v4: bool,
    pub v6: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query<'a> {
    Ping,
    FindNode {
        target: NodeId,
        want: Want,
    },
    GetPeers {
        info_hash: [u8; 20],
        want: Want,
    },
    AnnouncePeer {
        info_hash: [u8; 20],
        port: u16,
        implied_port: bool,
        token: &'a [u8],
    },
    /// BEP 51.
    SampleInfohashes {
        target: NodeId,
    },
    /// A method we do not serve (answered with error 204).
    Other {
        method: &'a [u8],
    },
}

impl Query<'_> {
    pub fn method(&self) -> &[u8] {
        match self {
            Query::Ping => b"ping",
            Query::FindNode { .. } => b"find_node",
            Query::GetPeers { .. } => b"get_peers",
            Query::AnnouncePeer { .. } => b"announce_peer",
            Query::SampleInfohashes { .. } => b"sample_infohashes",
            Query::Other { method } => method,
        }
    }
}

/// A node as compact node info carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub addr: SocketAddr,
}

/// A reply's fields; which are present depends on the query it answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply<'a> {
    pub id: NodeId,
    /// Compact IPv4 node info, whole 26-byte records only.
    pub nodes: &'a [u8],
    /// Compact IPv6 node info (BEP 32), whole 38-byte records only.
    pub nodes6: &'a [u8],
    pub values: Vec<SocketAddr>,
    pub token: Option<&'a [u8]>,
    /// BEP 51: info hashes, whole 20-byte records only.
    pub samples: &'a [u8],
    pub interval: Option<i64>,
    pub num: Option<i64>,
}

impl Reply<'_> {
    pub fn nodes(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.nodes.chunks_exact(26).map(|c| NodeInfo {
            id: NodeId::from_slice(&c[..20]).expect("20 bytes"),
            addr: compact_v4(&c[20..]),
        })
    }
    pub fn nodes6(&self) -> impl Iterator<Item = NodeInfo> + '_ {
        self.nodes6.chunks_exact(38).map(|c| NodeInfo {
            id: NodeId::from_slice(&c[..20]).expect("20 bytes"),
            addr: compact_v6(&c[20..]),
        })
    }
    pub fn samples(&self) -> impl Iterator<Item = [u8; 20]> + '_ {
        self.samples
            .chunks_exact(20)
            .map(|c| c.try_into().expect("20 bytes"))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Query {
        tid: &'a [u8],
        id: NodeId,
        query: Query<'a>,
        /// BEP 43: the querier does not answer queries; keep it out of
        /// routing tables.
        read_only: bool,
    },
    Reply {
        tid: &'a [u8],
        reply: Reply<'a>,
    },
    Error {
        tid: &'a [u8],
        code: i64,
        message: &'a [u8],
    },
}

/// Why a datagram was not a usable message, and its transaction id when it
/// had one (a malformed query is answered with error 203 under that id).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("KRPC: {reason}")]
pub struct KrpcError<'a> {
    pub tid: Option<&'a [u8]>,
    pub reason: &'static str,
}

fn compact_v4(b: &[u8]) -> SocketAddr {
    let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be_bytes([b[4], b[5]])))
}

fn compact_v6(b: &[u8]) -> SocketAddr {
    let ip: [u8; 16] = b[..16].try_into().expect("16 bytes");
    SocketAddr::V6(SocketAddrV6::new(
        Ipv6Addr::from(ip),
        u16::from_be_bytes([b[16], b[17]]),
        0,
        0,
    ))
}

/// Compact peer or node address: 6 bytes (IPv4) or 18 (IPv6).
pub fn compact_addr(addr: &SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(18);
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

fn whole_records(b: &[u8], size: usize) -> &[u8] {
    &b[..b.len() - b.len() % size]
}

fn id_field<'a>(
    dict: &Value<'a>,
    key: &[u8],
    tid: Option<&'a [u8]>,
    reason: &'static str,
) -> Result<[u8; 20], KrpcError<'a>> {
    dict.get(key)
        .and_then(Value::as_bytes)
        .and_then(|b| b.try_into().ok())
        .ok_or(KrpcError { tid, reason })
}

fn want(args: &Value<'_>) -> Want {
    let mut w = Want::default();
    for item in args.get(b"want").and_then(Value::as_list).unwrap_or_default() {
        match item.as_bytes() {
            Some(b"n4") => w.v4 = true,
            Some(b"n6") => w.v6 = true,
            _ => {}
        }
    }
    w
}

/// Parses one datagram.
pub fn parse(packet: &[u8]) -> Result<Message<'_>, KrpcError<'_>> {
    parse_with_requester(packet).map(|(message, _)| message)
}

/// Parses one datagram, and also returns the top-level `ip` key of a
/// reply: our own address as the replying node saw it (BEP 42), which is
/// how a node behind NAT learns its public address. Only whole compact
/// addresses (6 or 18 bytes) count.
pub fn parse_with_requester(packet: &[u8]) -> Result<(Message<'_>, Option<SocketAddr>), KrpcError<'_>> {
    let fail = |tid, reason| Err(KrpcError { tid, reason });
    if packet.len() > MAX_MESSAGE {
        return fail(None, "datagram too long");
    }
    let Ok(root) = bencode::decode(packet) else {
        return fail(None, "not bencode");
    };
    let requester = match root.get(b"ip").and_then(Value::as_bytes) {
        Some(b) if b.len() == 6 => Some(compact_v4(b)),
        Some(b) if b.len() == 18 => Some(compact_v6(b)),
        _ => None,
    };
    let message = parse_root(&root)?;
    let requester = if matches!(message, Message::Reply { .. }) {
        requester
    } else {
        None
    };
    Ok((message, requester))
}

fn parse_root<'a>(root: &Value<'a>) -> Result<Message<'a>, KrpcError<'a>> {
    let fail = |tid, reason| Err(KrpcError { tid, reason });
    let tid = match root.get(b"t").and_then(Value::as_bytes) {
        Some(t) if t.len() <= MAX_TID => t,
        _ => return fail(None, "no transaction id"),
    };
    let t = Some(tid);
    match root.get(b"y").and_then(Value::as_bytes) {
        Some(b"q") => {
            let Some(method) = root.get(b"q").and_then(Value::as_bytes) else {
                return fail(t, "query without a method");
            };
            let Some(args) = root.get(b"a").filter(|a| a.as_dict().is_some()) else {
                return fail(t, "query without arguments");
            };
            let id = NodeId(id_field(args, b"id", t, "query without a 20-byte id")?);
            let query = match method {
                b"ping" => Query::Ping,
                b"find_node" => Query::FindNode {
                    target: NodeId(id_field(
                        args,
                        b"target",
                        t,
                        "find_node without a 20-byte target",
                    )?),
                    want: want(args),
                },
                b"get_peers" => Query::GetPeers {
                    info_hash: id_field(args, b"info_hash", t, "get_peers without a 20-byte info_hash")?,
                    want: want(args),
                },
                b"announce_peer" => {
                    let info_hash =
                        id_field(args, b"info_hash", t, "announce_peer without a 20-byte info_hash")?;
                    let implied_port = args.get(b"implied_port").and_then(Value::as_int).unwrap_or(0) != 0;
                    let port = match args.get(b"port").and_then(Value::as_int) {
                        Some(p) if (1..=65535).contains(&p) => p as u16,
                        _ if implied_port => 0,
                        _ => return fail(t, "announce_peer without a valid port"),
                    };
                    let Some(token) = args.get(b"token").and_then(Value::as_bytes) else {
                        return fail(t, "announce_peer without a token");
                    };
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    }
                }
                b"sample_infohashes" => Query::SampleInfohashes {
                    target: NodeId(id_field(
                        args,
                        b"target",
                        t,
                        "sample_infohashes without a 20-byte target",
                    )?),
                },
                other => Query::Other { method: other },
            };
            let read_only = root.get(b"ro").and_then(Value::as_int) == Some(1);
            Ok(Message::Query {
                tid,
                id,
                query,
                read_only,
            })
        }
        Some(b"r") => {
            let Some(r) = root.get(b"r").filter(|r| r.as_dict().is_some()) else {
                return fail(t, "reply without a body");
            };
            let id = NodeId(id_field(r, b"id", t, "reply without a 20-byte id")?);
            let bytes = |key: &[u8]| r.get(key).and_then(Value::as_bytes).unwrap_or_default();
            let values = r
                .get(b"values")
                .and_then(Value::as_list)
                .unwrap_or_default()
                .iter()
                .filter_map(|v| match v.as_bytes() {
                    Some(b) if b.len() == 6 => Some(compact_v4(b)),
                    Some(b) if b.len() == 18 => Some(compact_v6(b)),
                    _ => None,
                })
                .collect();
            Ok(Message::Reply {
                tid,
                reply: Reply {
                    id,
                    nodes: whole_records(bytes(b"nodes"), 26),
                    nodes6: whole_records(bytes(b"nodes6"), 38),
                    values,
                    token: r.get(b"token").and_then(Value::as_bytes),
                    samples: whole_records(bytes(b"samples"), 20),
                    interval: r.get(b"interval").and_then(Value::as_int),
                    num: r.get(b"num").and_then(Value::as_int),
                },
            })
        }
        Some(b"e") => {
            let list = root.get(b"e").and_then(Value::as_list).unwrap_or_default();
            match (
                list.first().and_then(Value::as_int),
                list.get(1).and_then(Value::as_bytes),
            ) {
                (Some(code), message) => Ok(Message::Error {
                    tid,
                    code,
                    message: message.unwrap_or_default(),
                }),
                _ => fail(t, "error without a code"),
            }
        }
        _ => fail(t, "unknown message type"),
    }
}

fn want_list(e: &mut Encoder, want: Want) {
    if want.v4 || want.v6 {
        e.bytes(b"want").begin_list();
        if want.v4 {
            e.bytes(b"n4");
        }
        if want.v6 {
            e.bytes(b"n6");
        }
        e.end();
    }
}

/// A query datagram. Keys are written in sorted order, as bencode requires.
pub fn encode_query(tid: &[u8], id: &NodeId, query: &Query<'_>, read_only: bool) -> Vec<u8> {
    let mut e = Encoder::with_capacity(128);
    e.begin_dict().bytes(b"a").begin_dict().bytes(b"id").bytes(&id.0);
    match query {
        Query::Ping | Query::Other { .. } => {}
        Query::FindNode { target, want } => {
            e.bytes(b"target").bytes(&target.0);
            want_list(&mut e, *want);
        }
        Query::GetPeers { info_hash, want } => {
            e.bytes(b"info_hash").bytes(info_hash);
            want_list(&mut e, *want);
        }
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => {
            e.bytes(b"implied_port").int(i64::from(*implied_port));
            e.bytes(b"info_hash").bytes(info_hash);
            e.bytes(b"port").int(i64::from(*port));
            e.bytes(b"token").bytes(token);
        }
        Query::SampleInfohashes { target } => {
            e.bytes(b"target").bytes(&target.0);
        }
    }
    e.end().bytes(b"q").bytes(query.method());
    if read_only {
        e.bytes(b"ro").int(1);
    }
    e.bytes(b"t").bytes(tid).bytes(b"y").bytes(b"q").end();
    e.finish()
}

/// The fields of a reply we send.
#[derive(Clone, Debug, Default)]
pub struct ReplyOut<'a> {
    pub id: NodeId,
    pub nodes: &'a [NodeInfo],
    pub nodes6: &'a [NodeInfo],
    pub values: &'a [SocketAddr],
    pub token: Option<&'a [u8]>,
    pub samples: &'a [[u8; 20]],
    pub interval: Option<i64>,
    pub num: Option<i64>,
}

fn compact_nodes(e: &mut Encoder, key: &[u8], nodes: &[NodeInfo], v6: bool) {
    let nodes: Vec<&NodeInfo> = nodes.iter().filter(|n| n.addr.is_ipv6() == v6).collect();
    if nodes.is_empty() {
        return;
    }
    let mut buf = Vec::with_capacity(nodes.len() * 38);
    for n in nodes {
        buf.extend_from_slice(&n.id.0);
        buf.extend_from_slice(&compact_addr(&n.addr));
    }
    e.bytes(key).bytes(&buf);
}

/// A reply datagram; `requester` is echoed as `ip` (BEP 42), so a node
/// behind NAT learns its public address.
pub fn encode_reply(tid: &[u8], reply: &ReplyOut<'_>, requester: Option<&SocketAddr>) -> Vec<u8> {
    let mut e = Encoder::with_capacity(256);
    e.begin_dict();
    if let Some(addr) = requester {
        e.bytes(b"ip").bytes(&compact_addr(addr));
    }
    e.bytes(b"r").begin_dict().bytes(b"id").bytes(&reply.id.0);
    if let Some(i) = reply.interval {
        e.bytes(b"interval").int(i);
    }
    compact_nodes(&mut e, b"nodes", reply.nodes, false);
    compact_nodes(&mut e, b"nodes6", reply.nodes6, true);
    if let Some(n) = reply.num {
        e.bytes(b"num").int(n);
    }
    if !reply.samples.is_empty() {
        e.bytes(b"samples").bytes_header(reply.samples.len() * 20);
        for s in reply.samples {
            e.buf.extend_from_slice(s);
        }
    }
    if let Some(token) = reply.token {
        e.bytes(b"token").bytes(token);
    }
    if !reply.values.is_empty() {
        e.bytes(b"values").begin_list();
        for v in reply.values {
            e.bytes(&compact_addr(v));
        }
        e.end();
    }
    e.end().bytes(b"t").bytes(tid).bytes(b"y").bytes(b"r").end();
    e.finish()
}

pub fn encode_error(tid: &[u8], code: i64, message: &str) -> Vec<u8> {
    let mut e = Encoder::with_capacity(64);
    e.begin_dict()
        .bytes(b"e")
        .begin_list()
        .int(code)
        .bytes(message.as_bytes())
        .end()
        .bytes(b"t")
        .bytes(tid)
        .bytes(b"y")
        .bytes(b"e")
        .end();
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bep5_examples_parse() {
        // The examples in BEP 5 (ids shortened there; full 20 bytes here).
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        assert_eq!(
            parse(ping).unwrap(),
            Message::Query {
                tid: b"aa",
                id: NodeId(*b"abcdefghij0123456789"),
                query: Query::Ping,
                read_only: false
            }
        );
        let announce = b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe";
        match parse(announce).unwrap() {
            Message::Query {
                query:
                    Query::AnnouncePeer {
                        info_hash,
                        port,
                        implied_port,
                        token,
                    },
                ..
            } => {
                assert_eq!(&info_hash, b"mnopqrstuvwxyz123456");
                assert_eq!((port, implied_port, token), (6881, true, &b"aoeusnth"[..]));
            }
            other => panic!("{other:?}"),
        }
        let error = b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee";
        assert_eq!(
            parse(error).unwrap(),
            Message::Error {
                tid: b"aa",
                code: 201,
                message: b"A Generic Error Ocurred"
            }
        );
    }

    #[test]
    fn every_query_survives_encoding_and_parsing() {
        let id = NodeId([7; 20]);
        let queries = [
            Query::Ping,
            Query::FindNode {
                target: NodeId([1; 20]),
                want: Want { v4: true, v6: true },
            },
            Query::GetPeers {
                info_hash: [2; 20],
                want: Want::default(),
            },
            Query::AnnouncePeer {
                info_hash: [3; 20],
                port: 6881,
                implied_port: false,
                token: b"12345678",
            },
            Query::SampleInfohashes {
                target: NodeId([4; 20]),
            },
        ];
        for (i, q) in queries.iter().enumerate() {
            let bytes = encode_query(&[i as u8, 9], &id, q, i == 0);
            assert!(bencode::decode(&bytes).is_ok());
            assert_eq!(
                parse(&bytes).unwrap(),
                Message::Query {
                    tid: &[i as u8, 9],
                    id,
                    query: q.clone(),
                    read_only: i == 0
                }
            );
        }
    }

    #[test]
    fn replies_survive_encoding_and_parsing() {
        let nodes = [
            NodeInfo {
                id: NodeId([5; 20]),
                addr: "10.77.0.2:6881".parse().unwrap(),
            },
            NodeInfo {
                id: NodeId([6; 20]),
                addr: "[fd00::2]:6882".parse().unwrap(),
            },
        ];
        let values: [SocketAddr; 2] = [
            "10.77.0.3:51413".parse().unwrap(),
            "[fd00::3]:6881".parse().unwrap(),
        ];
        let samples = [[8u8; 20], [9u8; 20]];
        let out = ReplyOut {
            id: NodeId([1; 20]),
            nodes: &nodes,
            nodes6: &nodes,
            values: &values,
            token: Some(b"tok"),
            samples: &samples,
            interval: Some(21_600),
            num: Some(1_000_000),
        };
        let requester: SocketAddr = "10.77.0.9:4000".parse().unwrap();
        let bytes = encode_reply(b"xy", &out, Some(&requester));
        let Message::Reply { tid, reply } = parse(&bytes).unwrap() else {
            panic!("not a reply");
        };
        assert_eq!(tid, b"xy");
        assert_eq!(reply.nodes().collect::<Vec<_>>(), vec![nodes[0]]);
        assert_eq!(reply.nodes6().collect::<Vec<_>>(), vec![nodes[1]]);
        assert_eq!(reply.values, values);
        assert_eq!(reply.token, Some(&b"tok"[..]));
        assert_eq!(reply.samples().collect::<Vec<_>>(), samples);
        assert_eq!((reply.interval, reply.num), (Some(21_600), Some(1_000_000)));
        let root = bencode::decode(&bytes).unwrap();
        assert_eq!(
            root.get(b"ip").unwrap().as_bytes().unwrap(),
            &compact_addr(&requester)[..]
        );
        // BEP 42: the replier saw us at `requester`.
        assert_eq!(parse_with_requester(&bytes).unwrap().1, Some(requester));
        let v6: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        let bytes = encode_reply(b"xy", &out, Some(&v6));
        assert_eq!(parse_with_requester(&bytes).unwrap().1, Some(v6));
        assert_eq!(
            parse_with_requester(&encode_reply(b"xy", &out, None)).unwrap().1,
            None
        );
        // Only replies carry it.
        let error = b"d2:ip6:abcdef1:eli201e1:xe1:t2:aa1:y1:ee";
        assert_eq!(parse_with_requester(error).unwrap().1, None);
    }

    #[test]
    fn malformed_queries_keep_their_transaction_id_and_the_rest_is_refused() {
        let no_target = b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:zz1:y1:qe";
        assert_eq!(parse(no_target).unwrap_err().tid, Some(&b"zz"[..]));
        let short_id = b"d1:ad2:id3:abce1:q4:ping1:t2:zz1:y1:qe";
        assert_eq!(parse(short_id).unwrap_err().tid, Some(&b"zz"[..]));
        let bad_port = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti70000e5:token1:xe1:q13:announce_peer1:t1:a1:y1:qe";
        assert!(parse(bad_port).is_err());
        assert!(parse(b"garbage").is_err());
        assert!(parse(&vec![b'l'; MAX_MESSAGE + 1]).is_err());
        let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q6:vote!!1:t1:a1:y1:qe";
        assert!(matches!(
            parse(unknown).unwrap(),
            Message::Query {
                query: Query::Other { method: b"vote!!" },
                ..
            }
        ));
        // Partial compact records are dropped, not misread.
        let reply = b"d1:rd2:id20:abcdefghij01234567895:nodes27:abcdefghij0123456789123456Xe1:t1:a1:y1:re";
        let Message::Reply { reply, .. } = parse(reply).unwrap() else {
            panic!()
        };
        assert_eq!(reply.nodes().count(), 1);
    }
}
