//! Synthetic campaign traffic for the ledger benchmarks (`ingest`,
//! `reports`): peer sessions with decoys, each an open and a close record,
//! in the order a node writes them (opens at their start, closes at their
//! end). Everything is a deterministic function of the model's seed, so two
//! runs, and the chained and the aggregate-only paths of `reports`, see the
//! same campaign.
//!
//! The shape, with the defaults:
//! - addresses: a fixed population; sessions per address follow a Zipf law
//!   (exponent 0.9), so a few addresses (crawlers, seedboxes) are busy
//!   every day and most come back a few times a year. 90 % IPv4 that look
//!   public, 10 % IPv6 in the documentation prefix 2001:db8::/32;
//! - place: a function of the address alone (as a geolocation database
//!   is): 1 % unplaced, 4 % Norway (nine in ten of those placed in one of
//!   357 kommuner, Zipf), the rest over 139 other countries (Zipf);
//! - titles: `decoys_per_day` new decoys every day; a session picks a
//!   release a geometric number of days old (mean 10), then a decoy of it;
//! - clients: one per address, from six families and "unknown";
//! - sessions last 5 s to 2 h; 40 % end with the whole file delivered.

use crate::{mix64, size_for};
use std::collections::BinaryHeap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use warnseed_ledger::rollup::RollupRow;
use warnseed_ledger::{Enricher, GeoFields, RecordKind, SessionRecord, Transport};

pub const MS_PER_DAY: i64 = 86_400_000;

/// ISO 3166-1 alpha-2 codes of the places, Norway first.
const COUNTRIES: &str =
    "NO US DE GB FR IT ES NL SE DK FI PL BR IN CN JP KR RU UA TR CA AU MX AR CL CO PE VE \
    ZA EG NG KE MA DZ TN SA AE IL IR IQ PK BD ID MY TH VN PH SG HK TW NZ IE PT BE AT CH CZ SK HU RO BG GR \
    RS HR SI BA MK AL LT LV EE BY MD GE AM AZ KZ UZ KG TJ TM MN NP LK MM KH LA EC BO PY UY CR PA GT HN SV NI \
    CU DO JM TT PR IS LU MT CY GH CI SN CM ET TZ UG ZM ZW AO MZ NA BW MG MU LY SD JO LB SY KW QA BH OM YE AF \
    BT MV BN FJ PG NC PF RE";

/// Client names as decoded from peer ids, and their weights.
const CLIENTS: [(Option<&str>, u64); 7] = [
    (Some("qBittorrent 4.6.2"), 38),
    (Some("libtorrent 2.0.8.0"), 14),
    (Some("Transmission 4.0.5"), 17),
    (Some("µTorrent 3.5.5"), 16),
    (Some("BitTorrent 7.11.0"), 6),
    (Some("Deluge 2.1.1"), 5),
    (None, 4),
];

const CLOSE_REASONS: [&str; 4] = ["peer_complete", "peer_closed", "idle_timeout", "shutdown"];

/// The campaign's population and habits.
#[derive(Clone, Debug)]
pub struct Model {
    pub seed: u64,
    /// Distinct downloader addresses (at most 2^24).
    pub addresses: u64,
    /// Zipf exponent of sessions per address (0 < s < 1).
    pub zipf_s: f64,
    pub decoys_per_day: u64,
    /// Share of sessions that deliver the whole file.
    pub completed_share: f64,
    countries: Vec<String>,
    country_names: Vec<String>,
    /// Cumulative weights of countries 1.. (Norway has a fixed share).
    country_cdf: Vec<f64>,
    kommuner: Vec<String>,
    kommune_names: Vec<String>,
    kommune_cdf: Vec<f64>,
}

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|i| (i as f64).powf(-s)).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

fn pick(cdf: &[f64], u: f64) -> usize {
    cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
}

/// A uniform number in [0, 1) from 53 bits of `h`.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl Model {
    pub fn new(seed: u64, addresses: u64, decoys_per_day: u64) -> Self {
        let countries: Vec<String> = COUNTRIES.split_whitespace().map(String::from).collect();
        assert_eq!(countries.len(), 140, "140 countries");
        let country_names = countries.iter().map(|c| format!("Country {c}")).collect();
        let kommuner: Vec<String> = (0..357).map(|k| format!("{:04}", 101 + k * 13)).collect();
        let kommune_names = kommuner.iter().map(|k| format!("Kommune {k}")).collect();
        Self {
            seed,
            addresses: addresses.clamp(1, 1 << 24),
            zipf_s: 0.9,
            decoys_per_day: decoys_per_day.max(1),
            completed_share: 0.4,
            country_cdf: zipf_cdf(countries.len() - 1, 1.1),
            countries,
            country_names,
            kommune_cdf: zipf_cdf(kommuner.len(), 1.0),
            kommuner,
            kommune_names,
        }
    }

    fn h(&self, tag: u64, x: u64) -> u64 {
        mix64(self.seed ^ tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ mix64(x))
    }

    /// The address of population member `a` (distinct for distinct `a`).
    pub fn address(&self, a: u64) -> IpAddr {
        let h = self.h(1, a);
        if h.is_multiple_of(10) {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0x0db8,
                (h >> 16) as u16,
                (h >> 32) as u16,
                (a >> 16) as u16,
                a as u16,
                (h >> 48) as u16,
                1,
            ))
        } else {
            // Low 24 bits: a bijection of a < 2^24; first octet from a
            // public-looking set.
            let low = (a.wrapping_mul(0x9E_3779) & 0xFF_FFFF) as u32;
            let first = [
                31u32, 37, 46, 62, 77, 78, 79, 80, 81, 84, 85, 88, 89, 91, 92, 94, 95, 109, 176, 178, 188,
                193, 195, 212, 213,
            ][(h >> 40) as usize % 25];
            IpAddr::V4(Ipv4Addr::from((first << 24) | low))
        }
    }

    /// Where an address is: (country index, kommune index), from the
    /// address alone. `None`: not placed.
    pub fn place(&self, ip: IpAddr) -> Option<(usize, Option<usize>)> {
        let bits = match ip {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => {
                let x = u128::from(v6);
                (x as u64) ^ ((x >> 64) as u64).rotate_left(17)
            }
        };
        let h = self.h(2, bits);
        let u = unit(h);
        if u < 0.01 {
            None
        } else if u < 0.05 {
            let k = self.h(3, bits);
            let placed = !k.is_multiple_of(10);
            Some((0, placed.then(|| pick(&self.kommune_cdf, unit(mix64(k))))))
        } else {
            Some((1 + pick(&self.country_cdf, (u - 0.05) / 0.95), None))
        }
    }

    pub fn country(&self, i: usize) -> &str {
        &self.countries[i]
    }

    pub fn kommune(&self, i: usize) -> &str {
        &self.kommuner[i]
    }

    /// The address rank of session `n` (Zipf: rank 0 is the busiest).
    fn address_of(&self, n: u64) -> u64 {
        let u = unit(self.h(4, n));
        let e = 1.0 - self.zipf_s;
        let top = (self.addresses as f64 + 1.0).powf(e) - 1.0;
        let x = (1.0 + u * top).powf(1.0 / e);
        (x as u64).saturating_sub(1).min(self.addresses - 1)
    }

    /// The client family index of an address.
    fn client_of(&self, a: u64) -> usize {
        let total: u64 = CLIENTS.iter().map(|c| c.1).sum();
        let mut r = self.h(5, a) % total;
        for (i, (_, w)) in CLIENTS.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        CLIENTS.len() - 1
    }

    pub fn client_name(&self, client: u8) -> Option<&'static str> {
        CLIENTS[client as usize].0
    }

    /// The session `n`, starting at `start_ms` on campaign day `day_index`
    /// (0-based; releases before day 0 are not drawn).
    pub fn session(&self, n: u64, start_ms: i64, day_index: u64) -> Session {
        let h = self.h(6, n);
        let address = self.address_of(n) as u32;
        // Age of the release: geometric with mean 10 days.
        let age = ((-(1.0 - unit(self.h(7, n))).ln()) * 10.0) as u64;
        let release = day_index - age.min(day_index);
        let decoy_id = (release * self.decoys_per_day + self.h(8, n) % self.decoys_per_day) as i64;
        let size = size_for(self.seed, decoy_id as u64);
        let piece_count = size.div_ceil(1 << 20) as u32;
        // 2 % are a seed reconnecting: it has every piece and receives none.
        let seed = self.h(12, n).is_multiple_of(50);
        let completed = seed || unit(self.h(9, n)) < self.completed_share;
        let (bytes_sent, pieces_sent) = if seed {
            (0, 0)
        } else if completed {
            (size, piece_count)
        } else {
            let f = unit(h) * 0.9;
            ((size as f64 * f) as u64, (piece_count as f64 * f) as u32)
        };
        let duration = 5_000 + (h % 7_195_000) as i64;
        Session {
            n,
            session_key: (self.h(10, n) >> 1) as i64,
            started_at_ms: start_ms,
            ended_at_ms: start_ms + duration,
            address,
            remote_port: 1024 + (self.h(11, u64::from(address)) % 64_000) as u16,
            decoy_id,
            client: self.client_of(u64::from(address)) as u8,
            completed,
            bytes_sent,
            pieces_sent,
            piece_count,
            close_reason: if completed && !seed {
                0
            } else {
                1 + (h >> 60) as u8 % 3
            },
            seed,
        }
    }

    /// The record a node writes for `s`: its open or its close.
    pub fn record(&self, s: &Session, kind: RecordKind) -> SessionRecord {
        let mut info_hash = [0u8; 20];
        let a = mix64(s.decoy_id as u64 ^ self.seed).to_be_bytes();
        let b = mix64(s.decoy_id as u64 ^ !self.seed).to_be_bytes();
        info_hash[..8].copy_from_slice(&a);
        info_hash[8..16].copy_from_slice(&b);
        info_hash[16..].copy_from_slice(&a[..4]);
        let mut peer_id = *b"-XX0000-000000000000";
        peer_id[8..16].copy_from_slice(&mix64(u64::from(s.address)).to_be_bytes());
        let open = kind == RecordKind::Open;
        SessionRecord {
            kind,
            session_key: s.session_key,
            started_at_ms: s.started_at_ms,
            ended_at_ms: if open { s.started_at_ms } else { s.ended_at_ms },
            network: "bittorrent",
            decoy_id: s.decoy_id,
            info_hash,
            remote_ip: self.address(u64::from(s.address)),
            remote_port: s.remote_port,
            peer_id: Some(peer_id),
            client_name: self.client_name(s.client).map(String::from),
            client_version: None,
            transport: Transport::Tcp,
            bytes_sent: if open { 0 } else { s.bytes_sent },
            pieces_sent: if open { 0 } else { s.pieces_sent },
            piece_count: s.piece_count,
            peer_pieces_initial: Some(if s.seed { s.piece_count } else { 0 }),
            peer_pieces_final: if s.seed || s.completed && !open {
                s.piece_count
            } else if open {
                0
            } else {
                s.pieces_sent
            },
            completed: !open && s.completed,
            close_reason: if open {
                String::new()
            } else {
                CLOSE_REASONS[s.close_reason as usize].into()
            },
        }
    }

    /// What `record(s, kind)` contributes to the aggregates, without
    /// building the record: `ip_key` and `place` are the address's.
    pub fn rollup_row(
        &self,
        s: &Session,
        kind: RecordKind,
        ip_key: [u8; 16],
        place: Option<(usize, Option<usize>)>,
    ) -> RollupRow<'_> {
        let open = kind == RecordKind::Open;
        RollupRow {
            is_open: open,
            is_close: !open,
            started_at_ms: s.started_at_ms,
            ended_at_ms: if open { s.started_at_ms } else { s.ended_at_ms },
            network: "bittorrent",
            decoy_id: s.decoy_id,
            ip_key,
            address_known: true,
            client: self.client_name(s.client),
            completed: !open && s.completed,
            downloading: !s.seed,
            bytes_sent: if open { 0 } else { s.bytes_sent },
            country: place.map(|p| self.country(p.0)),
            kommune: place.and_then(|p| p.1).map(|k| self.kommune(k)),
        }
    }
}

/// One synthetic session (both its records derive from it).
#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub n: u64,
    pub session_key: i64,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// Population member (see [`Model::address`]).
    pub address: u32,
    pub remote_port: u16,
    pub decoy_id: i64,
    pub client: u8,
    pub completed: bool,
    pub bytes_sent: u64,
    pub pieces_sent: u32,
    pub piece_count: u32,
    pub close_reason: u8,
    /// The peer had every piece from the start: not a download.
    pub seed: bool,
}

/// The campaign's records in write order: `sessions` sessions over `days`
/// UTC days from `first_day`, more at weekends, each day's starts spread
/// evenly with jitter; a close comes when its session ends.
pub struct Stream<'m> {
    model: &'m Model,
    first_day: i64,
    days: u64,
    sessions: u64,
    /// Next session to open, and the day it is on.
    next: u64,
    day: u64,
    /// Sessions before `day` and through it.
    day_first: u64,
    day_end: u64,
    /// Sessions open, by end time.
    open: BinaryHeap<std::cmp::Reverse<(i64, u64, SessionBox)>>,
}

/// A session in the heap (ordered by its end only, via the tuple).
#[derive(Clone, Copy, Debug)]
struct SessionBox(Session);

impl PartialEq for SessionBox {
    fn eq(&self, other: &Self) -> bool {
        self.0.n == other.0.n
    }
}
impl Eq for SessionBox {}
impl PartialOrd for SessionBox {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SessionBox {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.n.cmp(&other.0.n)
    }
}

/// A weekend day gets 1.3 times a weekday's sessions.
fn day_weight(day: i64) -> f64 {
    // 1970-01-01 was a Thursday: Saturday and Sunday are 2 and 3.
    if matches!(day.rem_euclid(7), 2 | 3) {
        1.3
    } else {
        1.0
    }
}

impl<'m> Stream<'m> {
    pub fn new(model: &'m Model, first_day: i64, days: u64, sessions: u64) -> Self {
        let mut s = Self {
            model,
            first_day,
            days: days.max(1),
            sessions,
            next: 0,
            day: 0,
            day_first: 0,
            day_end: 0,
            open: BinaryHeap::new(),
        };
        s.day_end = s.sessions_through(0);
        s
    }

    /// Sessions that start on days 0..=d.
    fn sessions_through(&self, d: u64) -> u64 {
        let total: f64 = (0..self.days)
            .map(|i| day_weight(self.first_day + i as i64))
            .sum();
        let upto: f64 = (0..=d.min(self.days - 1))
            .map(|i| day_weight(self.first_day + i as i64))
            .sum();
        ((self.sessions as f64) * upto / total).round() as u64
    }

    fn start_of(&self, n: u64) -> i64 {
        let per = (self.day_end - self.day_first).max(1);
        let spacing = MS_PER_DAY as u64 / per;
        let day_ms = (self.first_day + self.day as i64) * MS_PER_DAY;
        let jitter = mix64(n ^ 0xA5A5) % spacing.max(1);
        day_ms + ((n - self.day_first) * spacing + jitter) as i64
    }

    /// The next record: (session, open or close), or `None` at the end.
    pub fn next_event(&mut self) -> Option<(Session, RecordKind)> {
        while self.next < self.sessions && self.next >= self.day_end {
            self.day += 1;
            self.day_first = self.day_end;
            self.day_end = self.sessions_through(self.day);
        }
        if self.next < self.sessions {
            let start = self.start_of(self.next);
            if let Some(std::cmp::Reverse((end, _, _))) = self.open.peek() {
                if *end <= start {
                    let std::cmp::Reverse((_, _, s)) = self.open.pop().expect("peeked");
                    return Some((s.0, RecordKind::Close));
                }
            }
            let s = self.model.session(self.next, start, self.day);
            self.next += 1;
            self.open
                .push(std::cmp::Reverse((s.ended_at_ms, s.n, SessionBox(s))));
            return Some((s, RecordKind::Open));
        }
        let std::cmp::Reverse((_, _, s)) = self.open.pop()?;
        Some((s.0, RecordKind::Close))
    }

    /// The campaign day (0-based) of the next session to open.
    pub fn day(&self) -> u64 {
        self.day
    }
}

impl Iterator for Stream<'_> {
    type Item = (Session, RecordKind);
    fn next(&mut self) -> Option<Self::Item> {
        self.next_event()
    }
}

/// A geolocation stand-in for the ledger: the model's places, with the
/// fields a city database fills.
pub struct ModelGeo(pub std::sync::Arc<Model>);

impl Enricher for ModelGeo {
    fn enrich(&self, ip: IpAddr) -> GeoFields {
        let Some((c, k)) = self.0.place(ip) else {
            return GeoFields::default();
        };
        let m = &self.0;
        GeoFields {
            country: Some(m.countries[c].clone()),
            country_name: Some(m.country_names[c].clone()),
            region: None,
            city: Some(format!("City {}", mix64(u64::from(c as u32)) % 1000)),
            latitude: Some(10.0 + c as f64 * 0.25),
            longitude: Some(20.0 - c as f64 * 0.125),
            accuracy_km: Some(50),
            kommune: k.map(|k| m.kommuner[k].clone()),
            kommune_name: k.map(|k| m.kommune_names[k].clone()),
            kommune_confidence: k.map(|_| "city".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_in_write_order_and_complete() {
        let m = Model::new(7, 1000, 100);
        let mut opens = 0;
        let mut closes = 0;
        let mut last_write = i64::MIN;
        for (s, kind) in Stream::new(&m, 20_000, 3, 5000) {
            let at = if kind == RecordKind::Open {
                opens += 1;
                s.started_at_ms
            } else {
                closes += 1;
                s.ended_at_ms
            };
            assert!(at >= last_write, "records leave in time order");
            last_write = at;
        }
        assert_eq!((opens, closes), (5000, 5000));
    }

    #[test]
    fn places_follow_the_shares() {
        let m = Model::new(7, 100_000, 100);
        let mut norway = 0;
        let mut unplaced = 0;
        for a in 0..100_000 {
            match m.place(m.address(a)) {
                None => unplaced += 1,
                Some((0, _)) => norway += 1,
                Some(_) => {}
            }
        }
        assert!((3_000..5_000).contains(&norway), "{norway}");
        assert!((500..1_500).contains(&unplaced), "{unplaced}");
        let distinct: std::collections::HashSet<_> = (0..100_000).map(|a| m.address(a)).collect();
        assert_eq!(distinct.len(), 100_000);
    }
}
