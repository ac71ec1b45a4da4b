//! Packed record blocks: many chained records in one byte string.
//!
//! Why: a ledger that stores one SQLite row per record cannot go faster
//! than SQLite inserts rows, and on the machines measured a bare insert of
//! rows this wide, with no index at all, tops out at 194,000–305,000 a
//! second (BENCHMARKS §6). Several thousand records in one row cost one
//! insert. This module is the format of such a row; the ledger stores its
//! records this way ([`crate::blockstore`]).
//!
//! A block holds every field of a record and its geolocation (what a
//! `sessions` row and its `session_geo` row held in the first layout),
//! except what follows from the order: a record's sequence number is
//! the block's first plus its place, and its `prev_hash` is the record
//! before it's `record_hash` (the previous block's last, for the first).
//! Strings that repeat (network, transport, close reasons, client names,
//! places) are written once per block in a dictionary.
//!
//! Decoding treats the bytes as hostile: a tampered or truncated block is
//! an error that says where, never a panic, and no length read from the
//! block allocates more than the block's own size.
//!
//! Layout (integers are LEB128 varints unless a width is given; `zz` marks
//! zigzag-signed ones):
//!
//! ```text
//! block    = "WSB" 0x01, first_seq, count, dict_len, string*dict_len, record*count
//! string   = len, UTF-8 bytes
//! record   = flags u16 LE, session_key i64 LE, started zz (from the record
//!            before, the first from 0), ended zz (from started), network str,
//!            decoy_id zz, info_hash [20], address, ip_commitment [32], port u16 LE,
//!            [peer_id [20]], [client_name str], [client_version str],
//!            transport str, bytes_sent, pieces_sent, piece_count,
//!            [peer_pieces_initial], peer_pieces_final, close_reason str,
//!            record_hash [32], [geo]
//! address  = ipv4 [4] salt [16] | ipv6 [16] salt [16] | nothing (erased) | pseudonym [32]
//! geo      = present u16 LE, then each present field in order: country str,
//!            country_name str, region str, city str, latitude f64 LE,
//!            longitude f64 LE, accuracy_km, kommune str, kommune_name str,
//!            kommune_confidence str
//! str      = index into the dictionary
//! ```

use crate::record::RecordKind;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAGIC: &[u8; 4] = b"WSB\x01";
/// Records in one block at most: big enough that a block costs one insert
/// for thousands of records, small enough that reading one record decodes
/// at most this many.
pub const MAX_BLOCK_RECORDS: usize = 4096;

const KIND_MASK: u16 = 0b11;
const ADDRESS_SHIFT: u16 = 2;
const HAS_PEER_ID: u16 = 1 << 4;
const HAS_CLIENT_NAME: u16 = 1 << 5;
const HAS_CLIENT_VERSION: u16 = 1 << 6;
const HAS_PEER_PIECES_INITIAL: u16 = 1 << 7;
const COMPLETED: u16 = 1 << 8;
const HAS_GEO: u16 = 1 << 9;
const KNOWN_FLAGS: u16 = (1 << 10) - 1;

/// Where a record's address stands once stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackedAddress {
    /// The address and the salt of its commitment.
    Raw { ip: IpAddr, salt: [u8; 16] },
    /// Erased by retention, salt and all.
    Erased,
    /// Replaced by retention with a keyed pseudonym (HMAC-SHA256).
    Pseudonym([u8; 32]),
}

/// Geolocation stored with a record (not chained: it is what a database
/// said when the record was written).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PackedGeo<'a> {
    pub country: Option<&'a str>,
    pub country_name: Option<&'a str>,
    pub region: Option<&'a str>,
    pub city: Option<&'a str>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub accuracy_km: Option<u32>,
    pub kommune: Option<&'a str>,
    pub kommune_name: Option<&'a str>,
    pub kommune_confidence: Option<&'a str>,
}

impl<'a> PackedGeo<'a> {
    pub fn from_fields(g: &'a crate::GeoFields) -> Self {
        Self {
            country: g.country.as_deref(),
            country_name: g.country_name.as_deref(),
            region: g.region.as_deref(),
            city: g.city.as_deref(),
            latitude: g.latitude,
            longitude: g.longitude,
            accuracy_km: g.accuracy_km,
            kommune: g.kommune.as_deref(),
            kommune_name: g.kommune_name.as_deref(),
            kommune_confidence: g.kommune_confidence.as_deref(),
        }
    }

    /// No field is known.
    pub fn is_empty(&self) -> bool {
        self.present() == 0
    }

    fn strings(&self) -> [Option<&'a str>; 7] {
        [
            self.country,
            self.country_name,
            self.region,
            self.city,
            self.kommune,
            self.kommune_name,
            self.kommune_confidence,
        ]
    }

    fn present(&self) -> u16 {
        let s = self.strings();
        let mut bits = 0u16;
        for (i, f) in s[..4].iter().enumerate() {
            bits |= u16::from(f.is_some()) << i;
        }
        bits |= u16::from(self.latitude.is_some()) << 4;
        bits |= u16::from(self.longitude.is_some()) << 5;
        bits |= u16::from(self.accuracy_km.is_some()) << 6;
        for (i, f) in s[4..].iter().enumerate() {
            bits |= u16::from(f.is_some()) << (7 + i);
        }
        bits
    }
}

/// One stored record, borrowing its strings from the block (decoding) or
/// from the caller (encoding).
#[derive(Clone, Debug, PartialEq)]
pub struct PackedRecord<'a> {
    pub kind: RecordKind,
    pub session_key: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub network: &'a str,
    pub decoy_id: i64,
    pub info_hash: [u8; 20],
    pub address: PackedAddress,
    pub ip_commitment: [u8; 32],
    pub remote_port: u16,
    pub peer_id: Option<[u8; 20]>,
    pub client_name: Option<&'a str>,
    pub client_version: Option<&'a str>,
    pub transport: &'a str,
    pub bytes_sent: u64,
    pub pieces_sent: u32,
    pub piece_count: u32,
    pub peer_pieces_initial: Option<u32>,
    pub peer_pieces_final: u32,
    pub completed: bool,
    pub close_reason: &'a str,
    pub record_hash: [u8; 32],
    pub geo: PackedGeo<'a>,
}

/// Why a block could not be read: the block is damaged or was altered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("packed block unreadable at byte {offset}: {what}")]
pub struct BlockError {
    pub offset: usize,
    pub what: &'static str,
}

/// A decoded block: its first sequence number and its records in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Block<'a> {
    pub first_seq: i64,
    pub records: Vec<PackedRecord<'a>>,
}

/// Encodes `records` (at most [`MAX_BLOCK_RECORDS`]) as one block whose
/// first record has sequence number `first_seq`, appending to `out`.
pub fn encode(first_seq: i64, records: &[PackedRecord<'_>], out: &mut Vec<u8>) {
    assert!(
        records.len() <= MAX_BLOCK_RECORDS,
        "a block holds at most {MAX_BLOCK_RECORDS} records"
    );
    let mut dict: HashMap<&str, u32> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for r in records {
        let strings = [
            Some(r.network),
            r.client_name,
            r.client_version,
            Some(r.transport),
            Some(r.close_reason),
        ]
        .into_iter()
        .chain(r.geo.strings());
        for s in strings.flatten() {
            dict.entry(s).or_insert_with(|| {
                order.push(s);
                (order.len() - 1) as u32
            });
        }
    }
    out.extend_from_slice(MAGIC);
    put_varint(out, zigzag(first_seq));
    put_varint(out, records.len() as u64);
    put_varint(out, order.len() as u64);
    for s in &order {
        put_varint(out, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }
    let idx = |s: &str| u64::from(dict[s]);
    let mut prev_started = 0i64;
    for r in records {
        let address_code: u16 = match r.address {
            PackedAddress::Raw {
                ip: IpAddr::V4(_), ..
            } => 0,
            PackedAddress::Raw {
                ip: IpAddr::V6(_), ..
            } => 1,
            PackedAddress::Erased => 2,
            PackedAddress::Pseudonym(_) => 3,
        };
        let kind_code: u16 = match r.kind {
            RecordKind::Open => 0,
            RecordKind::Close => 1,
            RecordKind::Session => 2,
        };
        let geo_present = r.geo.present();
        let flags = kind_code
            | address_code << ADDRESS_SHIFT
            | if r.peer_id.is_some() { HAS_PEER_ID } else { 0 }
            | if r.client_name.is_some() {
                HAS_CLIENT_NAME
            } else {
                0
            }
            | if r.client_version.is_some() {
                HAS_CLIENT_VERSION
            } else {
                0
            }
            | if r.peer_pieces_initial.is_some() {
                HAS_PEER_PIECES_INITIAL
            } else {
                0
            }
            | if r.completed { COMPLETED } else { 0 }
            | if geo_present != 0 { HAS_GEO } else { 0 };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&r.session_key.to_le_bytes());
        put_varint(out, zigzag(r.started_at_ms.wrapping_sub(prev_started)));
        prev_started = r.started_at_ms;
        put_varint(out, zigzag(r.ended_at_ms.wrapping_sub(r.started_at_ms)));
        put_varint(out, idx(r.network));
        put_varint(out, zigzag(r.decoy_id));
        out.extend_from_slice(&r.info_hash);
        match r.address {
            PackedAddress::Raw { ip, salt } => {
                match ip {
                    IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                    IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
                }
                out.extend_from_slice(&salt);
            }
            PackedAddress::Erased => {}
            PackedAddress::Pseudonym(p) => out.extend_from_slice(&p),
        }
        out.extend_from_slice(&r.ip_commitment);
        out.extend_from_slice(&r.remote_port.to_le_bytes());
        if let Some(p) = &r.peer_id {
            out.extend_from_slice(p);
        }
        if let Some(s) = r.client_name {
            put_varint(out, idx(s));
        }
        if let Some(s) = r.client_version {
            put_varint(out, idx(s));
        }
        put_varint(out, idx(r.transport));
        put_varint(out, r.bytes_sent);
        put_varint(out, u64::from(r.pieces_sent));
        put_varint(out, u64::from(r.piece_count));
        if let Some(n) = r.peer_pieces_initial {
            put_varint(out, u64::from(n));
        }
        put_varint(out, u64::from(r.peer_pieces_final));
        put_varint(out, idx(r.close_reason));
        out.extend_from_slice(&r.record_hash);
        if geo_present != 0 {
            out.extend_from_slice(&geo_present.to_le_bytes());
            let g = &r.geo;
            for s in [g.country, g.country_name, g.region, g.city]
                .into_iter()
                .flatten()
            {
                put_varint(out, idx(s));
            }
            for f in [g.latitude, g.longitude].into_iter().flatten() {
                out.extend_from_slice(&f.to_le_bytes());
            }
            if let Some(a) = g.accuracy_km {
                put_varint(out, u64::from(a));
            }
            for s in [g.kommune, g.kommune_name, g.kommune_confidence]
                .into_iter()
                .flatten()
            {
                put_varint(out, idx(s));
            }
        }
    }
}

/// Decodes a whole block. Every byte must be accounted for: trailing bytes
/// are an error too.
pub fn decode(bytes: &[u8]) -> Result<Block<'_>, BlockError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(r.error("not a packed block (bad magic)"));
    }
    let first_seq = unzigzag(r.varint()?);
    let count = r.varint()?;
    if count as usize > MAX_BLOCK_RECORDS || count > u64::from(u32::MAX) {
        return Err(r.error("more records than a block holds"));
    }
    // Sequence numbers start at 1, and the block's last must be one too.
    if first_seq < 1 || first_seq.checked_add(count as i64).is_none() {
        return Err(r.error("sequence numbers out of range"));
    }
    let dict_len = r.varint()?;
    // A record has at most twelve strings (five of its own, seven of its
    // place), and each string takes at least one byte: a longer dictionary
    // cannot be real, so this bounds the allocation by the block's records,
    // not by however large a tampered blob is.
    if dict_len > r.remaining() as u64 || dict_len > 12 * count + 1 {
        return Err(r.error("dictionary longer than the block"));
    }
    let mut dict = Vec::with_capacity(dict_len as usize);
    for _ in 0..dict_len {
        let len = r.len()?;
        let s = std::str::from_utf8(r.take(len)?).map_err(|_| r.error("string is not UTF-8"))?;
        dict.push(s);
    }
    // The smallest record is well over 100 bytes.
    if count > r.remaining() as u64 / 100 + 1 {
        return Err(r.error("more records than the block has bytes for"));
    }
    let mut records = Vec::with_capacity(count as usize);
    let mut prev_started = 0i64;
    for _ in 0..count {
        let rec = r.record(&dict, &mut prev_started)?;
        records.push(rec);
    }
    if r.remaining() != 0 {
        return Err(r.error("bytes after the last record"));
    }
    Ok(Block { first_seq, records })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> BlockError {
        BlockError {
            offset: self.at,
            what,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BlockError> {
        if n > self.remaining() {
            return Err(self.error("truncated"));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlockError> {
        Ok(self.take(N)?.try_into().expect("took N bytes"))
    }

    fn varint(&mut self) -> Result<u64, BlockError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [b] = self.array::<1>()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(self.error("varint overflows 64 bits"));
            }
            value |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than ten bytes"))
    }

    fn u32(&mut self) -> Result<u32, BlockError> {
        u32::try_from(self.varint()?).map_err(|_| self.error("number too large"))
    }

    fn len(&mut self) -> Result<usize, BlockError> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(self.error("length beyond the block"));
        }
        Ok(n as usize)
    }

    fn string(&mut self, dict: &[&'a str]) -> Result<&'a str, BlockError> {
        let i = self.varint()?;
        dict.get(i as usize)
            .copied()
            .ok_or_else(|| self.error("string index beyond the dictionary"))
    }

    fn record(&mut self, dict: &[&'a str], prev_started: &mut i64) -> Result<PackedRecord<'a>, BlockError> {
        let flags = u16::from_le_bytes(self.array()?);
        if flags & !KNOWN_FLAGS != 0 {
            return Err(self.error("unknown record flags"));
        }
        let kind = match flags & KIND_MASK {
            0 => RecordKind::Open,
            1 => RecordKind::Close,
            2 => RecordKind::Session,
            _ => return Err(self.error("unknown record kind")),
        };
        let session_key = i64::from_le_bytes(self.array()?);
        let started_at_ms = prev_started.wrapping_add(unzigzag(self.varint()?));
        *prev_started = started_at_ms;
        let ended_at_ms = started_at_ms.wrapping_add(unzigzag(self.varint()?));
        let network = self.string(dict)?;
        let decoy_id = unzigzag(self.varint()?);
        let info_hash = self.array()?;
        let address = match (flags >> ADDRESS_SHIFT) & 0b11 {
            0 => PackedAddress::Raw {
                ip: IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
                salt: self.array()?,
            },
            1 => PackedAddress::Raw {
                ip: IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
                salt: self.array()?,
            },
            2 => PackedAddress::Erased,
            _ => PackedAddress::Pseudonym(self.array()?),
        };
        let ip_commitment = self.array()?;
        let remote_port = u16::from_le_bytes(self.array()?);
        let peer_id = if flags & HAS_PEER_ID != 0 {
            Some(self.array()?)
        } else {
            None
        };
        let client_name = if flags & HAS_CLIENT_NAME != 0 {
            Some(self.string(dict)?)
        } else {
            None
        };
        let client_version = if flags & HAS_CLIENT_VERSION != 0 {
            Some(self.string(dict)?)
        } else {
            None
        };
        let transport = self.string(dict)?;
        let bytes_sent = self.varint()?;
        let pieces_sent = self.u32()?;
        let piece_count = self.u32()?;
        let peer_pieces_initial = if flags & HAS_PEER_PIECES_INITIAL != 0 {
            Some(self.u32()?)
        } else {
            None
        };
        let peer_pieces_final = self.u32()?;
        let close_reason = self.string(dict)?;
        let record_hash = self.array()?;
        let geo = if flags & HAS_GEO != 0 {
            self.geo(dict)?
        } else {
            PackedGeo::default()
        };
        Ok(PackedRecord {
            kind,
            session_key,
            started_at_ms,
            ended_at_ms,
            network,
            decoy_id,
            info_hash,
            address,
            ip_commitment,
            remote_port,
            peer_id,
            client_name,
            client_version,
            transport,
            bytes_sent,
            pieces_sent,
            piece_count,
            peer_pieces_initial,
            peer_pieces_final,
            completed: flags & COMPLETED != 0,
            close_reason,
            record_hash,
            geo,
        })
    }

    fn geo(&mut self, dict: &[&'a str]) -> Result<PackedGeo<'a>, BlockError> {
        let present = u16::from_le_bytes(self.array()?);
        if present == 0 || present >> 10 != 0 {
            return Err(self.error("bad geolocation fields"));
        }
        let has = |bit: u16| present & (1 << bit) != 0;
        let mut g = PackedGeo::default();
        let s = |r: &mut Self, bit| -> Result<Option<&'a str>, BlockError> {
            Ok(if has(bit) { Some(r.string(dict)?) } else { None })
        };
        g.country = s(self, 0)?;
        g.country_name = s(self, 1)?;
        g.region = s(self, 2)?;
        g.city = s(self, 3)?;
        if has(4) {
            g.latitude = Some(f64::from_le_bytes(self.array()?));
        }
        if has(5) {
            g.longitude = Some(f64::from_le_bytes(self.array()?));
        }
        if has(6) {
            g.accuracy_km = Some(self.u32()?);
        }
        g.kommune = s(self, 7)?;
        g.kommune_name = s(self, 8)?;
        g.kommune_confidence = s(self, 9)?;
        Ok(g)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u32) -> PackedRecord<'static> {
        let ip = if i.is_multiple_of(3) {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8))
        };
        PackedRecord {
            kind: [RecordKind::Open, RecordKind::Close, RecordKind::Session][i as usize % 3],
            session_key: i64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15_u64 as i64),
            // Not in order: close records start before the records they follow.
            started_at_ms: 1_767_225_600_000 + i64::from(i) * 37 - if i % 2 == 1 { 7_200_000 } else { 0 },
            ended_at_ms: 1_767_225_600_000 + i64::from(i) * 37 + 5_000,
            network: "bittorrent",
            decoy_id: i64::from(i % 7) - 1,
            info_hash: [i as u8; 20],
            address: match i % 5 {
                3 => PackedAddress::Erased,
                4 => PackedAddress::Pseudonym([i as u8 ^ 0x5a; 32]),
                _ => PackedAddress::Raw {
                    ip,
                    salt: [i as u8 ^ 0x33; 16],
                },
            },
            ip_commitment: [i as u8 ^ 0x11; 32],
            remote_port: 6881 + i as u16,
            peer_id: (i.is_multiple_of(2)).then_some([b'-'; 20]),
            client_name: (i % 4 != 1)
                .then_some(["libtorrent 2.0.8.0", "Transmission 4.0.5", "aria2 1.37.0"][i as usize % 3]),
            client_version: (i % 4 == 2).then_some("\u{2603} v"),
            transport: ["tcp", "tcp+mse-rc4"][i as usize % 2],
            bytes_sent: u64::from(i) * 16_384 + if i == 5 { u64::MAX - 100_000 } else { 0 },
            pieces_sent: i % 9,
            piece_count: 9,
            peer_pieces_initial: (i % 3 == 1).then_some(0),
            peer_pieces_final: i % 10,
            completed: i % 10 == 9,
            close_reason: ["", "peer_closed", "idle"][i as usize % 3],
            record_hash: [i as u8 ^ 0x77; 32],
            geo: if i % 6 == 5 {
                PackedGeo::default()
            } else {
                PackedGeo {
                    country: Some(["NO", "SE", "DE"][i as usize % 3]),
                    country_name: Some(["Norway", "Sweden", "Germany"][i as usize % 3]),
                    region: (i.is_multiple_of(2)).then_some("Region"),
                    city: Some("City"),
                    latitude: Some(59.9 + f64::from(i)),
                    longitude: (!i.is_multiple_of(4)).then_some(-10.75),
                    accuracy_km: Some(i * 10),
                    kommune: (i.is_multiple_of(3)).then_some("0301"),
                    kommune_name: (i.is_multiple_of(3)).then_some("Oslo"),
                    kommune_confidence: (i.is_multiple_of(3)).then_some("city"),
                }
            },
        }
    }

    fn encoded(first_seq: i64, n: u32) -> (Vec<PackedRecord<'static>>, Vec<u8>) {
        let records: Vec<_> = (0..n).map(record).collect();
        let mut out = Vec::new();
        encode(first_seq, &records, &mut out);
        (records, out)
    }

    #[test]
    fn a_block_decodes_to_the_records_it_was_made_of() {
        for (first_seq, n) in [
            (1, 0),
            (1, 1),
            (4_097, 300),
            (i64::MAX - 10, 7),
            (1, MAX_BLOCK_RECORDS as u32),
        ] {
            let (records, bytes) = encoded(first_seq, n);
            let block = decode(&bytes).unwrap();
            assert_eq!(block.first_seq, first_seq);
            assert_eq!(block.records, records);
            // Seeds for the fuzz target `ledger_block` (fuzz/README.md).
            if let Some(dir) = std::env::var_os("WARNSEED_FUZZ_SEED_DIR") {
                if n <= 7 {
                    std::fs::write(
                        std::path::Path::new(&dir).join(format!("seed-{first_seq}-{n}")),
                        &bytes,
                    )
                    .unwrap();
                }
            }
        }
    }

    #[test]
    fn repeated_strings_are_stored_once() {
        let (_, one) = encoded(1, 1);
        let (_, many) = encoded(1, 1000);
        // Each record after the first adds its fixed fields but no strings
        // the dictionary already has.
        let per_record = (many.len() - one.len()) / 999;
        assert!(per_record < 190, "{per_record} bytes a record");
        assert_eq!(many.windows(10).filter(|w| w == b"bittorrent").count(), 1);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (_, bytes) = encoded(9, 12);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} decoded");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&longer).unwrap_err().what, "bytes after the last record");
    }

    #[test]
    fn a_changed_byte_never_panics_and_is_seen_or_changes_a_record() {
        let (records, bytes) = encoded(3, 40);
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                if let Ok(block) = decode(&b) {
                    // A decodable change must show in what was decoded.
                    assert!(
                        block.first_seq != 3 || block.records != records,
                        "byte {at} ^ {flip:#x} unseen"
                    );
                }
            }
        }
    }

    #[test]
    fn hostile_lengths_allocate_nothing_big() {
        let mut b = MAGIC.to_vec();
        put_varint(&mut b, 2);
        put_varint(&mut b, 4096);
        put_varint(&mut b, u64::MAX >> 1);
        assert_eq!(decode(&b).unwrap_err().what, "dictionary longer than the block");
        let mut b = MAGIC.to_vec();
        put_varint(&mut b, 2);
        put_varint(&mut b, 5000);
        assert_eq!(decode(&b).unwrap_err().what, "more records than a block holds");
        let mut b = MAGIC.to_vec();
        put_varint(&mut b, 2);
        put_varint(&mut b, 4000);
        put_varint(&mut b, 0);
        assert_eq!(
            decode(&b).unwrap_err().what,
            "more records than the block has bytes for"
        );
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&[0xff; 11]);
        assert!(decode(&b).is_err());
        // A dictionary far longer than its records could use, in a blob
        // long enough to hold it: refused before anything is allocated.
        let mut b = MAGIC.to_vec();
        put_varint(&mut b, 2);
        put_varint(&mut b, 1);
        put_varint(&mut b, 14);
        b.extend_from_slice(&[0; 1000]);
        assert_eq!(decode(&b).unwrap_err().what, "dictionary longer than the block");
        // Sequence numbers start at 1 and must not overflow.
        for first in [0i64, -5, i64::MAX] {
            let mut b = MAGIC.to_vec();
            put_varint(&mut b, zigzag(first));
            put_varint(&mut b, 1);
            assert_eq!(
                decode(&b).unwrap_err().what,
                "sequence numbers out of range",
                "{first}"
            );
        }
    }

    #[test]
    fn varints_and_zigzag_round_trip_at_the_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            let mut r = Reader { bytes: &b, at: 0 };
            assert_eq!(r.varint().unwrap(), v);
            assert_eq!(r.remaining(), 0);
        }
        for n in [0i64, 1, -1, i64::MIN, i64::MAX, 1_767_225_600_000] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
        // Eleven bytes, or a tenth byte above 1: not a 64-bit number.
        let mut r = Reader {
            bytes: &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            at: 0,
        };
        assert!(r.varint().is_err());
    }
}
