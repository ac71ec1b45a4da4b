//! Mainline DHT (BEP 5, with BEP 32 for IPv6, BEP 42 node ids and BEP 51
//! infohash sampling) as sans-IO pieces: KRPC messages as bytes in and
//! bytes out, node ids, and announce tokens. No sockets and no clock of its
//! own: callers pass packets and instants in.
//!
//! This is the foundation of the publishing work: the query state machine
//! (lookups, answering queries), routing-table persistence and the paced
//! announcer build on it.
#![forbid(unsafe_code)]

pub mod krpc;
pub mod node;
pub mod node_id;
pub mod routing;
pub mod token;

pub use krpc::{Message, NodeInfo, Query, Reply, ReplyOut};
pub use node::{Config, DecoyIndex, Event, Node};
pub use node_id::NodeId;
pub use routing::{Insert, RoutingTable};
pub use token::TokenIssuer;
