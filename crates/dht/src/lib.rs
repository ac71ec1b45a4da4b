//! Mainline DHT (BEP 5, with BEP 32 for IPv6, BEP 42 node ids and BEP 51
//! infohash sampling) as sans-IO pieces: KRPC messages as bytes in and
//! bytes out, node ids, and announce tokens. No sockets and no clock of its
//! own: callers pass packets and instants in.
//!
//! [`Node`] is the query state machine (answering queries, lookups,
//! announces, pacing, a BEP 42 id for the external address other nodes
//! report); [`sweep`] is how it announces a million sorted info hashes at
//! about 2 K packets each. Not here: sockets and clocks, and deciding when
//! each decoy is announced, which the seeder's driver does with
//! [`SweepSchedule`] and [`lanes_for`].
#![forbid(unsafe_code)]

pub mod external;
pub mod krpc;
pub mod node;
pub mod node_id;
pub mod routing;
pub mod sweep;
pub mod token;

pub use krpc::{Message, NodeInfo, Query, Reply, ReplyOut};
pub use node::{Config, Counters, DecoyIndex, Event, Node};
pub use node_id::NodeId;
pub use routing::{Insert, RoutingTable};
pub use sweep::{lanes_for, NodeCache, SweepSchedule};
pub use token::TokenIssuer;
