//! Our external address as other nodes see it (BEP 42's `ip` key in
//! replies). A node behind NAT does not know its public address; the
//! nodes it talks to do. When enough of them agree on one, and our id is
//! not one BEP 42 allows for it, the node takes an id that is: libtorrent
//! and others prefer such ids, and some drop the rest from their routing
//! tables.
//!
//! One vote per voter address (a node cannot outvote others by replying
//! often); only the latest [`MAX_VOTERS`] voters count, so a changed
//! address wins once the new one is reported by most of them. Reports of
//! private, local or unspecified addresses are ignored: BEP 42 does not
//! bind ids to them.

use crate::node_id::is_exempt;
use std::collections::VecDeque;
use std::net::IpAddr;

/// Distinct voters that must agree before the id changes.
pub const MIN_AGREEING: usize = 3;
/// Voters remembered (the most recent ones).
pub const MAX_VOTERS: usize = 32;

#[derive(Default)]
pub struct ExternalAddressVotes {
    /// (voter, the address it reported), oldest first.
    votes: VecDeque<(IpAddr, IpAddr)>,
}

impl ExternalAddressVotes {
    /// Records that `voter` saw us as `reported`. Returns the address and
    /// its number of votes once at least [`MIN_AGREEING`] distinct voters
    /// and a strict majority of the remembered ones agree on it.
    pub fn vote(&mut self, voter: IpAddr, reported: IpAddr) -> Option<(IpAddr, usize)> {
        if is_exempt(reported) || voter.is_ipv4() != reported.is_ipv4() {
            return None;
        }
        self.votes.retain(|(v, _)| *v != voter);
        self.votes.push_back((voter, reported));
        while self.votes.len() > MAX_VOTERS {
            self.votes.pop_front();
        }
        let agree = self.votes.iter().filter(|(_, r)| *r == reported).count();
        (agree >= MIN_AGREEING && 2 * agree > self.votes.len()).then_some((reported, agree))
    }

    pub fn clear(&mut self) {
        self.votes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn three_distinct_voters_in_the_majority_decide() {
        let mut v = ExternalAddressVotes::default();
        let ours = ip("203.0.113.7");
        assert_eq!(v.vote(ip("198.51.100.1"), ours), None);
        assert_eq!(v.vote(ip("198.51.100.1"), ours), None, "the same voter again");
        assert_eq!(v.vote(ip("198.51.100.2"), ours), None);
        assert_eq!(v.vote(ip("198.51.100.3"), ours), Some((ours, 3)));
    }

    #[test]
    fn a_split_vote_or_a_private_address_decides_nothing() {
        let mut v = ExternalAddressVotes::default();
        let (a, b) = (ip("203.0.113.7"), ip("203.0.113.8"));
        for i in 1..=3 {
            assert_eq!(
                v.vote(ip(&format!("198.51.100.{i}")), b),
                if i == 3 { Some((b, 3)) } else { None }
            );
        }
        for i in 4..=6 {
            assert_eq!(
                v.vote(ip(&format!("198.51.100.{i}")), a),
                None,
                "3 of 6 is no majority"
            );
        }
        assert_eq!(v.vote(ip("198.51.100.7"), a), Some((a, 4)));
        // A voter that changes its mind moves its one vote.
        assert_eq!(v.vote(ip("198.51.100.1"), a), Some((a, 5)));
        v.clear();
        for i in 1..=5 {
            assert_eq!(v.vote(ip(&format!("198.51.100.{i}")), ip("192.168.1.9")), None);
            assert_eq!(v.vote(ip(&format!("198.51.100.{i}")), ip("127.0.0.1")), None);
        }
        assert_eq!(
            v.vote(ip("198.51.100.1"), ip("2001:db8::1")),
            None,
            "another family"
        );
    }
}
