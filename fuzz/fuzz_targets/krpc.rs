//! KRPC datagrams (BEP 5/32/43/51): any bytes parse without panicking, and
//! whatever parses survives our own encoding unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_dht::krpc::{encode_error, encode_query, encode_reply, parse, Message, ReplyOut};

fuzz_target!(|data: &[u8]| {
    let Ok(message) = parse(data) else {
        return;
    };
    let again = match &message {
        Message::Query {
            tid,
            id,
            query,
            read_only,
        } => {
            if matches!(query, warnseed_dht::Query::Other { .. }) {
                return; // unknown methods carry arguments we do not keep
            }
            encode_query(tid, id, query, *read_only)
        }
        Message::Reply { tid, reply } => {
            let nodes: Vec<_> = reply.nodes().chain(reply.nodes6()).collect();
            let samples: Vec<_> = reply.samples().collect();
            encode_reply(
                tid,
                &ReplyOut {
                    id: reply.id,
                    nodes: &nodes,
                    nodes6: &nodes,
                    values: &reply.values,
                    token: reply.token,
                    samples: &samples,
                    interval: reply.interval,
                    num: reply.num,
                },
                None,
            )
        }
        Message::Error { tid, code, message } => match std::str::from_utf8(message) {
            Ok(text) => encode_error(tid, *code, text),
            Err(_) => return,
        },
    };
    let reparsed = parse(&again).expect("our own encoding parses");
    assert_eq!(reparsed, message);
});
