//! Norwegian kommuner (municipalities) from IP locations.
//!
//! The table (`data/kommuner.csv`, see `data/README.md`) holds the 357
//! kommuner of 2024 with each one's Norwegian and official name, its
//! administrative centre, the centroid and land area of its territory, and its
//! extent (the farthest boundary point from the centroid).
//!
//! [`match_kommune`] tries two rules and says "unknown", with the reason,
//! rather than guess:
//!
//! 1. **city**: the database's city name (district qualifier such as
//!    `Oslo (Ullevål)` dropped; case, æ/ø/å and Sami diacritics folded) equals
//!    the name, a part of the official name, or the administrative centre of
//!    exactly one kommune that could contain the database's coordinates
//!    (centroid distance ≤ extent + [`CITY_SLACK_KM`]). The coordinate check
//!    settles names shared by several kommuner (`Herøy`, `Sand`, `Vik`) and
//!    rejects villages that share a kommune's name elsewhere (`Bø` in Telemark
//!    is not Bø kommune in Nordland).
//! 2. **coordinates**: with `r` the radius of the disc of a kommune's area,
//!    `d` the distance from its centroid and `a` the accuracy radius (0 when
//!    the database gives none), exactly one kommune has `d + a ≤ r`, and every
//!    other kommune has `d − a > EXCLUSION_FACTOR · r`. The exclusion is what
//!    keeps Fornebu (in Bærum, but inside Oslo's disc and just outside
//!    Bærum's) unknown instead of wrongly Oslo.
//!
//! Measured on the 660 distinct Norwegian places in DB-IP City Lite 2023-04,
//! against point-in-polygon on Kartverket's boundaries: 514 found by city,
//! 29 by coordinates, 115 unknown, 2 disagreeing (DB-IP's point for "Sola" and
//! "Vestby" lies a few hundred metres across the border; the name was kept).
//! The coordinates rule alone without the exclusion got 36 places wrong.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use crate::mmdb::{Coordinates, Location};

/// The year of the kommune division the table describes.
pub const KOMMUNE_YEAR: u16 = 2024;

/// How far (km) beyond a kommune's extent a named place's coordinates may lie
/// and still count as that kommune's: room for the database's rounding and
/// for islands the simplified boundaries lost.
pub const CITY_SLACK_KM: f64 = 5.0;

/// How clear of every other kommune's disc a point must be for the
/// coordinates rule (see the module docs). 1.6 is the smallest factor that
/// placed none of DB-IP's Norwegian places in the wrong kommune.
pub const EXCLUSION_FACTOR: f64 = 1.6;

const KOMMUNER_CSV: &str = include_str!("../data/kommuner.csv");
const CSV_HEADER: &str = "number,name,official_name,admin_centre,lat,lon,area_km2,extent_km";

/// A four-digit kommune number; the first two digits are the fylke (county).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KommuneNumber(u16);

impl KommuneNumber {
    /// `None` unless `1..=9999`.
    pub fn new(number: u16) -> Option<KommuneNumber> {
        (1..=9999).contains(&number).then_some(KommuneNumber(number))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// The fylke number: 3 for 0301 Oslo, 46 for 4601 Bergen.
    pub fn fylke(self) -> u8 {
        (self.0 / 100) as u8
    }
}

impl fmt::Display for KommuneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl FromStr for KommuneNumber {
    type Err = InvalidKommuneNumber;

    /// Exactly four ASCII digits, as SSB and Kartverket write them (`0301`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidKommuneNumber);
        }
        s.parse::<u16>()
            .ok()
            .and_then(KommuneNumber::new)
            .ok_or(InvalidKommuneNumber)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a kommune number is four digits, 0001-9999")]
pub struct InvalidKommuneNumber;

/// One kommune from the embedded table.
#[derive(Debug, Clone, PartialEq)]
pub struct Kommune {
    pub number: KommuneNumber,
    /// The Norwegian name, e.g. `Hattfjelldal`.
    pub name: String,
    /// Kartverket's official form, with Sami or Kven names where the kommune
    /// has them, e.g. `Aarborte - Hattfjelldal`.
    pub official_name: String,
    /// The administrative centre, e.g. `Sandvika` for Bærum.
    pub admin_centre: String,
    /// The centroid of the kommune's land territory.
    pub centroid: Coordinates,
    /// Land area (boundaries clipped to the coastline), km².
    pub area_km2: f64,
    /// The largest distance from the centroid to the kommune's boundary, km.
    pub extent_km: f64,
}

impl Kommune {
    /// The radius of a disc of the kommune's area, km.
    pub fn effective_radius_km(&self) -> f64 {
        (self.area_km2 / PI).sqrt()
    }
}

struct Table {
    kommuner: Vec<Kommune>,
    /// Folded place name → indices into `kommuner`.
    by_place: HashMap<String, Vec<usize>>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        // The CSV is part of the crate and checked by its tests.
        let kommuner = parse_table(KOMMUNER_CSV).expect("embedded data/kommuner.csv is valid");
        let mut by_place: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, k) in kommuner.iter().enumerate() {
            let names = [k.name.as_str(), k.admin_centre.as_str()]
                .into_iter()
                .chain(k.official_name.split(" - "));
            for name in names {
                let entry = by_place.entry(place_key(name)).or_default();
                if !entry.contains(&i) {
                    entry.push(i);
                }
            }
        }
        Table { kommuner, by_place }
    })
}

fn parse_table(csv: &str) -> Result<Vec<Kommune>, String> {
    let mut lines = csv.lines();
    if lines.next() != Some(CSV_HEADER) {
        return Err(format!("header is not {CSV_HEADER}"));
    }
    let mut kommuner = Vec::new();
    for (n, line) in lines.enumerate() {
        let row = n + 2;
        let f: Vec<&str> = line.split(',').collect();
        let [number, name, official_name, admin_centre, lat, lon, area, extent] = f[..] else {
            return Err(format!("row {row}: {} fields, want 8", f.len()));
        };
        let float = |s: &str| {
            s.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or(format!("row {row}: {s:?} is not a number"))
        };
        let number = number
            .parse::<KommuneNumber>()
            .map_err(|e| format!("row {row}: {e}"))?;
        let centroid =
            Coordinates::new(float(lat)?, float(lon)?).ok_or(format!("row {row}: centroid out of range"))?;
        let (area_km2, extent_km) = (float(area)?, float(extent)?);
        if area_km2 <= 0.0 || extent_km <= 0.0 {
            return Err(format!("row {row}: area and extent must be positive"));
        }
        if [name, official_name, admin_centre].iter().any(|s| s.is_empty()) {
            return Err(format!("row {row}: empty name"));
        }
        kommuner.push(Kommune {
            number,
            name: name.to_owned(),
            official_name: official_name.to_owned(),
            admin_centre: admin_centre.to_owned(),
            centroid,
            area_km2,
            extent_km,
        });
    }
    if !kommuner.windows(2).all(|w| w[0].number < w[1].number) {
        return Err("rows are not in strictly ascending number order".into());
    }
    Ok(kommuner)
}

/// All kommuner of [`KOMMUNE_YEAR`], by number.
pub fn kommuner() -> &'static [Kommune] {
    &table().kommuner
}

/// The kommune with this number, if it exists in [`KOMMUNE_YEAR`].
pub fn kommune(number: KommuneNumber) -> Option<&'static Kommune> {
    let all = kommuner();
    all.binary_search_by_key(&number, |k| k.number)
        .ok()
        .map(|i| &all[i])
}

/// How a kommune was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KommuneConfidence {
    /// The database's city name names the kommune or its administrative
    /// centre, and its coordinates agree.
    City,
    /// The database's coordinates (and accuracy radius) lie clearly within
    /// one kommune's area and clear of every other.
    Coordinates,
}

impl KommuneConfidence {
    pub fn as_str(self) -> &'static str {
        match self {
            KommuneConfidence::City => "city",
            KommuneConfidence::Coordinates => "coordinates",
        }
    }
}

impl fmt::Display for KommuneConfidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why no kommune was named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownReason {
    /// No geolocation database is configured or it could not be opened.
    NoDatabase,
    /// The database has nothing for the address (private, loopback, unrouted).
    NoLocation,
    /// The address is placed outside Norway, or in no country.
    NotNorway,
    /// The city name fits several kommuner and there are no coordinates to choose.
    AmbiguousCity { candidates: Vec<KommuneNumber> },
    /// The city name fits no kommune, and there are no coordinates.
    NoCoordinates,
    /// The point alone would fit, but the accuracy radius spans more than one kommune.
    AccuracyTooCoarse { radius_km: u16 },
    /// The point lies where several kommuner could contain it (nearest first).
    AmbiguousCoordinates { candidates: Vec<KommuneNumber> },
    /// The point is near no kommune's area (at sea, or abroad with country NO).
    NoKommuneNearby,
}

impl UnknownReason {
    /// A short stable tag for reports: `no_database`, `ambiguous_city`, …
    pub fn as_str(&self) -> &'static str {
        match self {
            UnknownReason::NoDatabase => "no_database",
            UnknownReason::NoLocation => "no_location",
            UnknownReason::NotNorway => "not_norway",
            UnknownReason::AmbiguousCity { .. } => "ambiguous_city",
            UnknownReason::NoCoordinates => "no_coordinates",
            UnknownReason::AccuracyTooCoarse { .. } => "accuracy_too_coarse",
            UnknownReason::AmbiguousCoordinates { .. } => "ambiguous_coordinates",
            UnknownReason::NoKommuneNearby => "no_kommune_nearby",
        }
    }
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |c: &[KommuneNumber]| c.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" ");
        match self {
            UnknownReason::NoDatabase => f.write_str("no geolocation database"),
            UnknownReason::NoLocation => f.write_str("address not in the geolocation database"),
            UnknownReason::NotNorway => f.write_str("not located in Norway"),
            UnknownReason::AmbiguousCity { candidates } => {
                write!(f, "city name fits several kommuner: {}", list(candidates))
            }
            UnknownReason::NoCoordinates => {
                f.write_str("city name fits no kommune and there are no coordinates")
            }
            UnknownReason::AccuracyTooCoarse { radius_km } => {
                write!(f, "accuracy radius {radius_km} km spans several kommuner")
            }
            UnknownReason::AmbiguousCoordinates { candidates } => {
                write!(f, "coordinates fit several kommuner: {}", list(candidates))
            }
            UnknownReason::NoKommuneNearby => f.write_str("coordinates near no kommune"),
        }
    }
}

/// A kommune with the rule that found it, or the reason there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum KommuneMatch {
    Found {
        kommune: &'static Kommune,
        confidence: KommuneConfidence,
    },
    Unknown(UnknownReason),
}

impl KommuneMatch {
    pub fn kommune(&self) -> Option<&'static Kommune> {
        match self {
            KommuneMatch::Found { kommune, .. } => Some(kommune),
            KommuneMatch::Unknown(_) => None,
        }
    }

    pub fn confidence(&self) -> Option<KommuneConfidence> {
        match self {
            KommuneMatch::Found { confidence, .. } => Some(*confidence),
            KommuneMatch::Unknown(_) => None,
        }
    }

    pub fn unknown_reason(&self) -> Option<&UnknownReason> {
        match self {
            KommuneMatch::Found { .. } => None,
            KommuneMatch::Unknown(reason) => Some(reason),
        }
    }
}

/// The kommune a location lies in, by the city rule and then the coordinates
/// rule (see the module docs); only for country `NO`.
pub fn match_kommune(location: &Location) -> KommuneMatch {
    if location.country_iso_code.as_deref() != Some("NO") {
        return KommuneMatch::Unknown(UnknownReason::NotNorway);
    }
    let table = table();
    let coordinates = location.coordinates;

    let mut ambiguous_city = None;
    if let Some(city) = location.city.as_deref() {
        let named = table
            .by_place
            .get(&place_key(city))
            .map_or(&[][..], Vec::as_slice);
        let plausible: Vec<usize> = named
            .iter()
            .copied()
            .filter(|&i| {
                let k = &table.kommuner[i];
                coordinates.is_none_or(|p| p.distance_km(k.centroid) <= k.extent_km + CITY_SLACK_KM)
            })
            .collect();
        match plausible[..] {
            [i] => {
                return KommuneMatch::Found {
                    kommune: &table.kommuner[i],
                    confidence: KommuneConfidence::City,
                }
            }
            [] => {}
            _ => {
                let mut candidates: Vec<_> = plausible.iter().map(|&i| table.kommuner[i].number).collect();
                candidates.sort();
                ambiguous_city = Some(candidates);
            }
        }
    }

    let Some(point) = coordinates else {
        return KommuneMatch::Unknown(match ambiguous_city {
            Some(candidates) => UnknownReason::AmbiguousCity { candidates },
            None => UnknownReason::NoCoordinates,
        });
    };
    match_coordinates(&table.kommuner, point, location.accuracy_radius_km)
}

/// The coordinates rule.
fn match_coordinates(
    kommuner: &'static [Kommune],
    point: Coordinates,
    accuracy_radius_km: Option<u16>,
) -> KommuneMatch {
    let a = f64::from(accuracy_radius_km.unwrap_or(0));
    // (index, distance / effective radius) of every kommune that could hold the point.
    let mut near: Vec<(usize, f64, f64)> = Vec::new();
    for (i, k) in kommuner.iter().enumerate() {
        let d = point.distance_km(k.centroid);
        let r = k.effective_radius_km();
        if d - a <= EXCLUSION_FACTOR * r {
            near.push((i, d, r));
        }
    }
    near.sort_by(|x, y| (x.1 / x.2).total_cmp(&(y.1 / y.2)));

    let inside: Vec<usize> = near
        .iter()
        .filter(|&&(_, d, r)| d + a <= r)
        .map(|&(i, _, _)| i)
        .collect();
    if let ([i], 1) = (&inside[..], near.len()) {
        return KommuneMatch::Found {
            kommune: &kommuner[*i],
            confidence: KommuneConfidence::Coordinates,
        };
    }
    if near.is_empty() {
        return KommuneMatch::Unknown(UnknownReason::NoKommuneNearby);
    }
    let point_alone_inside = near.iter().filter(|&&(_, d, r)| d <= r).count();
    if inside.is_empty() && point_alone_inside > 0 && a > 0.0 {
        if let Some(radius_km) = accuracy_radius_km {
            return KommuneMatch::Unknown(UnknownReason::AccuracyTooCoarse { radius_km });
        }
    }
    KommuneMatch::Unknown(UnknownReason::AmbiguousCoordinates {
        candidates: near.iter().map(|&(i, _, _)| kommuner[i].number).collect(),
    })
}

/// A place name folded for comparison: a trailing district in parentheses
/// dropped, lower case, æ→ae, ø→o, å→a and other diacritics (Sami included)
/// removed, runs of anything but letters and digits made one space.
pub fn place_key(name: &str) -> String {
    let base = name.split('(').next().unwrap_or(name);
    let mut out = String::with_capacity(base.len());
    let mut gap = false;
    for c in base.chars().flat_map(char::to_lowercase) {
        let folded: &str = match c {
            'æ' | 'ä' => "ae",
            'ø' | 'ö' | 'ó' | 'ò' | 'ô' | 'õ' => "o",
            'å' | 'á' | 'à' | 'â' | 'ã' => "a",
            'é' | 'è' | 'ê' | 'ë' => "e",
            'í' | 'ì' | 'î' | 'ï' => "i",
            'ú' | 'ù' | 'û' | 'ü' => "u",
            'č' | 'ç' => "c",
            'đ' => "d",
            'ŋ' | 'ñ' => "n",
            'š' => "s",
            'ŧ' => "t",
            'ž' => "z",
            c if c.is_ascii_alphanumeric() => {
                if gap && !out.is_empty() {
                    out.push(' ');
                }
                gap = false;
                out.push(c);
                continue;
            }
            _ => {
                gap = true;
                continue;
            }
        };
        if gap && !out.is_empty() {
            out.push(' ');
        }
        gap = false;
        out.push_str(folded);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> KommuneNumber {
        s.parse().unwrap()
    }

    fn at(lat: f64, lon: f64) -> Option<Coordinates> {
        Coordinates::new(lat, lon)
    }

    fn norway(city: Option<&str>, coordinates: Option<Coordinates>) -> Location {
        Location {
            country_iso_code: Some("NO".into()),
            country_name: Some("Norway".into()),
            region: None,
            city: city.map(str::to_owned),
            coordinates,
            accuracy_radius_km: None,
        }
    }

    fn found(m: &KommuneMatch) -> (String, &'static str) {
        match m {
            KommuneMatch::Found { kommune, confidence } => (kommune.number.to_string(), confidence.as_str()),
            KommuneMatch::Unknown(reason) => panic!("unknown: {reason}"),
        }
    }

    #[test]
    fn table_has_the_357_kommuner_of_2024() {
        let all = kommuners_checked();
        assert_eq!(all.len(), 357);
        let mut numbers: Vec<_> = all.iter().map(|k| k.number).collect();
        numbers.dedup();
        assert_eq!(numbers.len(), 357, "numbers are unique");
        for (n, name) in [
            ("0301", "Oslo"),
            ("1103", "Stavanger"),
            ("3201", "Bærum"),
            ("4601", "Bergen"),
            ("5001", "Trondheim"),
            ("5501", "Tromsø"),
            ("5612", "Kautokeino"),
        ] {
            assert_eq!(kommune(num(n)).unwrap().name, name);
        }
        assert_eq!(kommune(num("3201")).unwrap().admin_centre, "Sandvika");
        assert!(kommune(num("1201")).is_none(), "Bergen's number before 2020");
        // 15 fylker in 2024.
        let mut fylker: Vec<u8> = all.iter().map(|k| k.number.fylke()).collect();
        fylker.dedup();
        assert_eq!(fylker.len(), 15, "{fylker:?}");
    }

    fn kommuners_checked() -> &'static [Kommune] {
        let all = kommuner();
        for k in all {
            let c = k.centroid;
            assert!(
                (57.9..71.2).contains(&c.latitude) && (4.4..31.2).contains(&c.longitude),
                "{} centroid outside mainland Norway",
                k.number
            );
            assert!(k.extent_km >= k.effective_radius_km() * 0.9, "{}", k.number);
        }
        // Mainland land area, boundaries clipped to the coast: about 320,000 km².
        let total: f64 = all.iter().map(|k| k.area_km2).sum();
        assert!((300_000.0..330_000.0).contains(&total), "{total}");
        all
    }

    #[test]
    fn parse_rejects_broken_tables() {
        assert!(parse_table("").is_err());
        assert!(parse_table("number,name\n").is_err());
        let good = format!("{CSV_HEADER}\n0301,Oslo,Oslo,Oslo,59.98,10.74,450.5,20.5\n");
        assert_eq!(parse_table(&good).unwrap().len(), 1);
        for bad in [
            "301,Oslo,Oslo,Oslo,59.98,10.74,450.5,20.5",
            "0301,Oslo,Oslo,Oslo,59.98,10.74,450.5",
            "0301,Oslo,Oslo,Oslo,99.0,10.74,450.5,20.5",
            "0301,Oslo,Oslo,Oslo,59.98,10.74,-1,20.5",
            "0301,Oslo,Oslo,Oslo,59.98,10.74,NaN,20.5",
            "0301,,Oslo,Oslo,59.98,10.74,450.5,20.5",
        ] {
            assert!(parse_table(&format!("{CSV_HEADER}\n{bad}\n")).is_err(), "{bad}");
        }
        let unsorted = format!(
            "{CSV_HEADER}\n4601,Bergen,Bergen,Bergen,60.36,5.39,462.2,19.1\n\
             0301,Oslo,Oslo,Oslo,59.98,10.74,450.5,20.5\n"
        );
        assert!(parse_table(&unsorted).is_err());
    }

    #[test]
    fn kommune_numbers() {
        assert_eq!(num("0301").to_string(), "0301");
        assert_eq!(num("0301").fylke(), 3);
        assert_eq!(num("4601").fylke(), 46);
        for bad in ["301", "03011", "03a1", "0000", "+301", ""] {
            assert!(bad.parse::<KommuneNumber>().is_err(), "{bad}");
        }
    }

    #[test]
    fn place_keys_fold_case_letters_and_districts() {
        assert_eq!(place_key("Oslo (Ullevål)"), "oslo");
        assert_eq!(place_key("Tromsø"), "tromso");
        assert_eq!(place_key("TROMSØ"), "tromso");
        assert_eq!(place_key("Bærum"), "baerum");
        assert_eq!(place_key("Mo i Rana"), "mo i rana");
        assert_eq!(place_key("  Aurskog-Høland "), "aurskog holand");
        assert_eq!(place_key("Guovdageaidnu"), "guovdageaidnu");
        assert_eq!(place_key("Kárášjohka"), "karasjohka");
        assert_eq!(place_key("Unjárga"), "unjarga");
    }

    #[test]
    fn city_rule_names_and_admin_centres() {
        let cases = [
            ("Oslo", 59.9139, 10.7522, "0301"),
            ("Oslo (Ullevål)", 59.9436, 10.717, "0301"),
            ("Bergen", 60.3913, 5.3221, "4601"),
            ("Trondheim", 63.4305, 10.3951, "5001"),
            ("Tromso", 69.6492, 18.9553, "5501"),
            // Administrative centres.
            ("Sandvika", 59.8908, 10.5266, "3201"),
            ("Mo i Rana", 66.3128, 14.1428, "1833"),
            ("Jessheim", 60.1408, 11.1747, "3209"),
            // Sami and Norwegian forms of one kommune.
            ("Guovdageaidnu", 69.0, 23.04, "5612"),
            ("Kautokeino", 69.0, 23.04, "5612"),
        ];
        for (city, lat, lon, want) in cases {
            let m = match_kommune(&norway(Some(city), at(lat, lon)));
            assert_eq!(found(&m), (want.to_string(), "city"), "{city}");
        }
        // Without coordinates a unique name is enough.
        let m = match_kommune(&norway(Some("Trondheim"), None));
        assert_eq!(found(&m), ("5001".to_string(), "city"));
    }

    #[test]
    fn city_rule_settles_shared_names_by_coordinates() {
        // Herøy: one in Møre og Romsdal (1515), one in Nordland (1818).
        let m = match_kommune(&norway(Some("Herøy"), None));
        assert_eq!(
            m,
            KommuneMatch::Unknown(UnknownReason::AmbiguousCity {
                candidates: vec![num("1515"), num("1818")]
            })
        );
        let m = match_kommune(&norway(Some("Herøy"), at(66.0, 12.6)));
        assert_eq!(found(&m), ("1818".to_string(), "city"));
        let m = match_kommune(&norway(Some("Herøy"), at(62.33, 5.64)));
        assert_eq!(found(&m), ("1515".to_string(), "city"));
        // Sand: the centre of Suldal (1134) and of Nord-Odal (3414).
        let m = match_kommune(&norway(Some("Sand"), at(59.48, 6.25)));
        assert_eq!(found(&m), ("1134".to_string(), "city"));
    }

    #[test]
    fn city_rule_rejects_a_namesake_far_from_its_kommune() {
        // Bø in Telemark (Midt-Telemark, 4020) is not Bø kommune in Nordland (1867).
        let m = match_kommune(&norway(Some("Bø"), at(59.41, 9.06)));
        assert_ne!(m.kommune().map(|k| k.number), Some(num("1867")), "{m:?}");
        // With coordinates near Vesterålen it is.
        let m = match_kommune(&norway(Some("Bø"), at(68.68, 14.47)));
        assert_eq!(found(&m), ("1867".to_string(), "city"));
    }

    #[test]
    fn city_rule_only_in_norway() {
        // There is a Bergen in Germany too.
        let mut loc = norway(Some("Bergen"), at(52.81, 9.96));
        loc.country_iso_code = Some("DE".into());
        assert_eq!(
            match_kommune(&loc),
            KommuneMatch::Unknown(UnknownReason::NotNorway)
        );
        loc.country_iso_code = None;
        assert_eq!(
            match_kommune(&loc),
            KommuneMatch::Unknown(UnknownReason::NotNorway)
        );
    }

    #[test]
    fn every_admin_centre_at_its_centroid_finds_its_kommune() {
        let mut misses = Vec::new();
        for k in kommuner() {
            let m = match_kommune(&norway(Some(&k.admin_centre), Some(k.centroid)));
            if m.kommune().map(|f| f.number) != Some(k.number) {
                misses.push(format!("{} {}: {m:?}", k.number, k.admin_centre));
            }
        }
        assert!(misses.is_empty(), "{misses:#?}");
    }

    #[test]
    fn coordinates_rule_inside_one_kommune() {
        // A large kommune's centroid, with a name that is no kommune's.
        let k = kommune(num("5612")).unwrap();
        let m = match_kommune(&norway(Some("Nowhere in particular"), Some(k.centroid)));
        assert_eq!(found(&m), ("5612".to_string(), "coordinates"));
        // Without a city at all.
        let m = match_kommune(&norway(None, Some(k.centroid)));
        assert_eq!(found(&m), ("5612".to_string(), "coordinates"));
    }

    #[test]
    fn coordinates_rule_refuses_fornebu() {
        // Fornebu lies in Bærum, but inside Oslo's disc and just outside
        // Bærum's: the naive rule said Oslo; the exclusion makes it unknown.
        let m = match_kommune(&norway(Some("Fornebu"), at(59.9004, 10.6301)));
        let Some(UnknownReason::AmbiguousCoordinates { candidates }) = m.unknown_reason() else {
            panic!("{m:?}");
        };
        assert!(candidates.contains(&num("0301")), "{candidates:?}");
        assert!(candidates.contains(&num("3201")), "{candidates:?}");
    }

    #[test]
    fn coordinates_rule_respects_accuracy_radius() {
        let k = kommune(num("5612")).unwrap();
        let mut loc = norway(None, Some(k.centroid));
        // Karasjok's exclusion disc is 3 km from Kautokeino's centroid.
        loc.accuracy_radius_km = Some(2);
        assert_eq!(found(&match_kommune(&loc)).1, "coordinates");
        loc.accuracy_radius_km = Some(5);
        assert_eq!(
            match_kommune(&loc).unknown_reason().map(UnknownReason::as_str),
            Some("ambiguous_coordinates")
        );
        loc.accuracy_radius_km = Some(200);
        assert_eq!(
            match_kommune(&loc),
            KommuneMatch::Unknown(UnknownReason::AccuracyTooCoarse { radius_km: 200 })
        );
    }

    #[test]
    fn unknown_without_anything_to_go_on() {
        assert_eq!(
            match_kommune(&norway(None, None)),
            KommuneMatch::Unknown(UnknownReason::NoCoordinates)
        );
        assert_eq!(
            match_kommune(&norway(Some("Fornebu"), None)),
            KommuneMatch::Unknown(UnknownReason::NoCoordinates)
        );
        // In the Norwegian Sea.
        assert_eq!(
            match_kommune(&norway(None, at(66.0, 2.0))),
            KommuneMatch::Unknown(UnknownReason::NoKommuneNearby)
        );
    }

    #[test]
    fn reasons_and_confidences_have_stable_tags() {
        assert_eq!(KommuneConfidence::City.to_string(), "city");
        assert_eq!(KommuneConfidence::Coordinates.as_str(), "coordinates");
        assert_eq!(UnknownReason::NotNorway.as_str(), "not_norway");
        let r = UnknownReason::AmbiguousCity {
            candidates: vec![num("1515"), num("1818")],
        };
        assert_eq!(r.to_string(), "city name fits several kommuner: 1515 1818");
    }
}
