//! Node ids: 160-bit XOR-metric keys, and BEP 42's binding of an id to the
//! node's IP address (the first 21 bits come from CRC-32C of the masked
//! address), which makes taking over a region of the keyspace from a few
//! addresses hard. libtorrent and others prefer, or insist on, ids that
//! match their address.

use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 20]);

impl NodeId {
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        b.try_into().ok().map(NodeId)
    }

    /// XOR distance to `other`, comparable as big-endian bytes.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, out) in d.iter_mut().enumerate() {
            *out = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Bit `i` counted from the top (0 is the most significant).
    pub fn bit(&self, i: u32) -> bool {
        self.0[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// This id with bit `i` (from the top) set to `value`.
    pub fn with_bit(mut self, i: u32, value: bool) -> Self {
        let mask = 0x80 >> (i % 8);
        if value {
            self.0[(i / 8) as usize] |= mask;
        } else {
            self.0[(i / 8) as usize] &= !mask;
        }
        self
    }

    /// The first and last id that share this id's top `depth` bits: the
    /// subtree of the keyspace a `depth`-bit prefix names.
    pub fn prefix_range(&self, depth: u32) -> (NodeId, NodeId) {
        let mut lo = self.0;
        let mut hi = self.0;
        for i in 0..20u32 {
            let keep = depth.saturating_sub(i * 8).min(8);
            let mask = if keep == 0 { 0 } else { 0xFFu8 << (8 - keep) };
            lo[i as usize] &= mask;
            hi[i as usize] |= !mask;
        }
        (NodeId(lo), NodeId(hi))
    }

    /// The distance as a fraction of the keyspace (0 to just under 1), for
    /// estimating how many nodes the network has.
    pub fn distance_fraction(&self, other: &NodeId) -> f64 {
        self.distance(other)
            .iter()
            .rev()
            .fold(0.0, |acc, &b| (acc + f64::from(b)) / 256.0)
    }

    /// Bits in common with `other`, from the top (160 for equal ids).
    pub fn common_prefix_bits(&self, other: &NodeId) -> u32 {
        for (i, b) in self.distance(other).iter().enumerate() {
            if *b != 0 {
                return i as u32 * 8 + b.leading_zeros();
            }
        }
        160
    }

    /// A BEP 42 id for `ip`: `random` supplies the 17 bytes the
    /// specification leaves random (the low 3 bits of byte 2, bytes 3..19,
    /// and byte 19, whose low 3 bits also select the CRC input).
    pub fn for_ip(ip: IpAddr, random: [u8; 18]) -> Self {
        let r = random[17];
        let crc = bep42_crc(ip, r);
        let mut id = [0u8; 20];
        id[0] = (crc >> 24) as u8;
        id[1] = (crc >> 16) as u8;
        id[2] = ((crc >> 8) as u8 & 0xF8) | (random[0] & 0x07);
        id[3..19].copy_from_slice(&random[1..17]);
        id[19] = r;
        NodeId(id)
    }

    /// Whether this id is one BEP 42 allows for `ip`. Local and private
    /// addresses are exempt, as the specification says.
    pub fn is_valid_for(&self, ip: IpAddr) -> bool {
        if is_exempt(ip) {
            return true;
        }
        let crc = bep42_crc(ip, self.0[19]);
        self.0[0] == (crc >> 24) as u8
            && self.0[1] == (crc >> 16) as u8
            && self.0[2] & 0xF8 == (crc >> 8) as u8 & 0xF8
    }
}

/// Local, private and unspecified addresses: BEP 42 does not bind ids to
/// them, and no node can tell us our public address with one.
pub(crate) fn is_exempt(ip: IpAddr) -> bool {
    if ip.is_unspecified() {
        return true;
    }
    match ip {
        IpAddr::V4(v4) => v4.is_private() || v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    const V4_MASK: [u8; 4] = [0x03, 0x0f, 0x3f, 0xff];
    const V6_MASK: [u8; 8] = [0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff];
    let mut buf = [0u8; 8];
    let n = match ip {
        IpAddr::V4(v4) => {
            for (i, (b, m)) in v4.octets().iter().zip(V4_MASK).enumerate() {
                buf[i] = b & m;
            }
            4
        }
        IpAddr::V6(v6) => {
            for (i, (b, m)) in v6.octets().iter().zip(V6_MASK).enumerate() {
                buf[i] = b & m;
            }
            8
        }
    };
    buf[0] |= (r & 0x07) << 5;
    crc32c(&buf[..n])
}

/// CRC-32C (Castagnoli), bitwise: only a few bytes per id are hashed.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn bep42_examples_are_valid_and_regenerate() {
        // The table in BEP 42: IP, rand, an id it allows.
        for (ip, rand, id) in [
            ("124.31.75.21", 1u8, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
            ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
            ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
            ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
            ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let id = NodeId::from_slice(&hex(id)).unwrap();
            assert_eq!(id.0[19], rand);
            assert!(id.is_valid_for(ip), "{ip}");
            let mut random = [0u8; 18];
            random[0] = id.0[2] & 0x07;
            random[1..17].copy_from_slice(&id.0[3..19]);
            random[17] = rand;
            assert_eq!(NodeId::for_ip(ip, random), id, "{ip}");
            // The same id from another public address is not valid.
            assert!(!id.is_valid_for("8.8.4.4".parse().unwrap()));
        }
    }

    #[test]
    fn prefix_ranges_bits_and_distance_fractions() {
        let id = NodeId([0xA5; 20]);
        let (lo, hi) = id.prefix_range(12);
        assert_eq!(&lo.0[..3], &[0xA5, 0xA0, 0x00]);
        assert_eq!(&hi.0[..3], &[0xA5, 0xAF, 0xFF]);
        assert_eq!(id.prefix_range(160), (id, id));
        assert_eq!(id.prefix_range(0), (NodeId([0; 20]), NodeId([0xFF; 20])));
        assert!(id.bit(0) && !id.bit(1) && id.bit(2));
        assert_eq!(id.with_bit(1, true).0[0], 0xE5);
        assert_eq!(id.with_bit(0, false).0[0], 0x25);
        let mut half = [0u8; 20];
        half[0] = 0x80;
        assert_eq!(NodeId([0; 20]).distance_fraction(&NodeId(half)), 0.5);
        assert_eq!(id.distance_fraction(&id), 0.0);
    }

    #[test]
    fn private_addresses_are_exempt_and_distance_orders_ids() {
        assert!(NodeId([0xAB; 20]).is_valid_for("10.77.0.2".parse().unwrap()));
        assert!(NodeId([0xAB; 20]).is_valid_for("::1".parse().unwrap()));
        let a = NodeId([0; 20]);
        let mut b = [0u8; 20];
        b[0] = 0x10;
        assert_eq!(a.common_prefix_bits(&NodeId(b)), 3);
        assert_eq!(a.common_prefix_bits(&a), 160);
    }
}
