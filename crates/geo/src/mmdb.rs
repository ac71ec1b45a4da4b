//! Reading MaxMind-format (`.mmdb`) city databases: GeoLite2/GeoIP2 City and
//! DB-IP IP-to-City (Lite), which share the GeoIP2 City record layout.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::{geoip2, Reader};
use serde::Serialize;

use crate::GeoError;

/// The largest database file `GeoDb::open` reads into memory. City databases
/// are 60–150 MB today; anything far bigger is not one.
pub const MAX_DATABASE_BYTES: u64 = 2 << 30;

/// The attribution DB-IP's Lite licence (CC BY 4.0) requires wherever
/// results from its database are displayed or used.
pub const DBIP_ATTRIBUTION: &str = "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0";

/// The attribution MaxMind's GeoLite2 licence requires.
pub const GEOLITE2_ATTRIBUTION: &str =
    "This product includes GeoLite2 data created by MaxMind, available from https://www.maxmind.com";

/// A point on the earth (WGS 84 degrees).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Coordinates {
    pub latitude: f64,
    pub longitude: f64,
}

impl Coordinates {
    /// Mean earth radius (IUGG), km.
    const EARTH_RADIUS_KM: f64 = 6371.0088;

    /// `None` unless both values are finite and in range.
    pub fn new(latitude: f64, longitude: f64) -> Option<Coordinates> {
        let valid = latitude.is_finite()
            && longitude.is_finite()
            && (-90.0..=90.0).contains(&latitude)
            && (-180.0..=180.0).contains(&longitude);
        valid.then_some(Coordinates { latitude, longitude })
    }

    /// Great-circle (haversine) distance in km.
    pub fn distance_km(self, other: Coordinates) -> f64 {
        let (p1, p2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dp = p2 - p1;
        let dl = (other.longitude - self.longitude).to_radians();
        let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * Self::EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// What a database says about one address. Every field is optional: Lite
/// databases leave some out (DB-IP Lite has no accuracy radius), and some
/// networks are known only to country level.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Location {
    /// ISO 3166-1 alpha-2, e.g. `NO`.
    pub country_iso_code: Option<String>,
    /// English country name, e.g. `Norway`.
    pub country_name: Option<String>,
    /// English name of the largest subdivision (Norway: the fylke), e.g. `Vestland`.
    pub region: Option<String>,
    /// English city name as the database spells it. DB-IP adds a district in
    /// parentheses for some cities: `Oslo (Ullevål)`.
    pub city: Option<String>,
    /// The place the database puts the address at: for city-level records the
    /// city's coordinates, not the subscriber's.
    pub coordinates: Option<Coordinates>,
    /// Radius around `coordinates` (km) in which the database expects the
    /// address with about 67 % confidence (MaxMind); absent in DB-IP Lite.
    pub accuracy_radius_km: Option<u16>,
}

impl Location {
    fn is_empty(&self) -> bool {
        self.country_iso_code.is_none()
            && self.country_name.is_none()
            && self.region.is_none()
            && self.city.is_none()
            && self.coordinates.is_none()
    }
}

/// An open city database, held in memory.
pub struct GeoDb {
    reader: Reader<Vec<u8>>,
    path: Option<PathBuf>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .field("database_type", &self.database_type())
            .field("build_date", &self.build_date())
            .finish()
    }
}

impl GeoDb {
    /// Reads and checks the database's metadata and layout. A file that is
    /// missing, too large, not an mmdb, or not a city/country database is an
    /// error; nothing in a corrupt file makes this panic.
    pub fn open(path: impl AsRef<Path>) -> Result<GeoDb, GeoError> {
        let path = path.as_ref();
        let io = |source| GeoError::Io {
            path: path.to_path_buf(),
            source,
        };
        let len = fs::metadata(path).map_err(io)?.len();
        if len > MAX_DATABASE_BYTES {
            return Err(GeoError::TooLarge {
                path: path.to_path_buf(),
                bytes: len,
            });
        }
        let bytes = fs::read(path).map_err(io)?;
        let mut db = GeoDb::from_bytes(bytes).map_err(|e| e.at(path))?;
        db.path = Some(path.to_path_buf());
        Ok(db)
    }

    /// As [`GeoDb::open`], from bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GeoDb, GeoError> {
        let reader = Reader::from_source(bytes).map_err(|e| GeoError::Invalid {
            path: None,
            message: e.to_string(),
        })?;
        let database_type = reader.metadata().database_type.clone();
        if !is_location_database(&database_type) {
            return Err(GeoError::Unsupported {
                path: None,
                database_type,
            });
        }
        Ok(GeoDb { reader, path: None })
    }

    /// The file it was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The database's own name for its kind, e.g. `DBIP-City-Lite`, `GeoLite2-City`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// When the database was built, seconds since the Unix epoch.
    pub fn build_epoch(&self) -> u64 {
        self.reader.metadata().build_epoch
    }

    /// When the database was built, `YYYY-MM-DD` (UTC).
    pub fn build_date(&self) -> String {
        let days = (self.build_epoch() / 86_400) as i64;
        let (y, m, d) = civil_from_days(days);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// The credit its licence asks for wherever its results are shown:
    /// DB-IP's or MaxMind's, by database type; `None` for other vendors.
    pub fn attribution(&self) -> Option<&'static str> {
        let kind = self.database_type().to_ascii_lowercase();
        if kind.starts_with("dbip") {
            Some(DBIP_ATTRIBUTION)
        } else if kind.starts_with("geolite2") {
            Some(GEOLITE2_ATTRIBUTION)
        } else {
            None
        }
    }

    /// Walks the whole search tree and data section. Slow (seconds for a
    /// city database) and never needed for safety: lookups check every
    /// record they read. Useful to reject a damaged file up front.
    pub fn verify(&self) -> Result<(), GeoError> {
        self.reader.verify().map_err(|e| GeoError::Invalid {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// The location of `ip`, or `None` when the database has nothing for it
    /// (private, loopback and unrouted addresses never do) or its record is
    /// damaged (logged as a warning).
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        match self.try_lookup(ip) {
            Ok(location) => location,
            Err(error) => {
                tracing::warn!(%ip, %error, "geolocation record unreadable");
                None
            }
        }
    }

    /// As [`GeoDb::lookup`], telling a damaged record apart from a missing one.
    pub fn try_lookup(&self, ip: IpAddr) -> Result<Option<Location>, GeoError> {
        let lookup_error = |e: maxminddb::MaxMindDbError| GeoError::Lookup {
            ip,
            message: e.to_string(),
        };
        // An IPv6 address in an IPv4-only database has no record: not an error.
        if ip.is_ipv6() && self.reader.metadata().ip_version == 4 {
            return Ok(None);
        }
        let result = self.reader.lookup(ip).map_err(lookup_error)?;
        let Some(city) = result.decode::<geoip2::City>().map_err(lookup_error)? else {
            return Ok(None);
        };
        let location = Location {
            country_iso_code: non_empty(city.country.iso_code),
            country_name: non_empty(city.country.names.english),
            region: city.subdivisions.first().and_then(|s| non_empty(s.names.english)),
            city: non_empty(city.city.names.english),
            coordinates: match (city.location.latitude, city.location.longitude) {
                (Some(lat), Some(lon)) => Coordinates::new(lat, lon),
                _ => None,
            },
            accuracy_radius_km: city.location.accuracy_radius,
        };
        Ok((!location.is_empty()).then_some(location))
    }
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// City, country and enterprise databases carry the GeoIP2 City layout (or a
/// subset of it); ASN, ISP, anonymous-IP and the like do not, and would yield
/// silent "unknown" for every address if configured by mistake.
fn is_location_database(database_type: &str) -> bool {
    let kind = database_type.to_ascii_lowercase();
    ["city", "country", "enterprise", "location"]
        .iter()
        .any(|k| kind.contains(k))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 1680308777 s: DB-IP's April 2023 build.
        assert_eq!(civil_from_days(1_680_308_777 / 86_400), (2023, 4, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn coordinates_reject_out_of_range_and_nan() {
        assert!(Coordinates::new(59.9, 10.7).is_some());
        assert!(Coordinates::new(91.0, 10.0).is_none());
        assert!(Coordinates::new(0.0, -180.5).is_none());
        assert!(Coordinates::new(f64::NAN, 0.0).is_none());
        assert!(Coordinates::new(0.0, f64::INFINITY).is_none());
    }

    #[test]
    fn distance_oslo_bergen() {
        let oslo = Coordinates::new(59.9139, 10.7522).unwrap();
        let bergen = Coordinates::new(60.3913, 5.3221).unwrap();
        let d = oslo.distance_km(bergen);
        assert!((300.0..310.0).contains(&d), "{d}");
        assert_eq!(oslo.distance_km(oslo), 0.0);
    }

    #[test]
    fn database_kinds() {
        for ok in [
            "DBIP-City-Lite",
            "GeoLite2-City",
            "GeoIP2-City",
            "GeoLite2-Country",
            "DBIP-Country-Lite",
            "GeoIP2-Enterprise",
        ] {
            assert!(is_location_database(ok), "{ok}");
        }
        for bad in [
            "GeoLite2-ASN",
            "DBIP-ASN-Lite",
            "GeoIP2-ISP",
            "GeoIP2-Anonymous-IP",
        ] {
            assert!(!is_location_database(bad), "{bad}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(GeoDb::from_bytes(Vec::new()).is_err());
        assert!(GeoDb::from_bytes(vec![0xab; 4096]).is_err());
        // The metadata marker followed by nonsense.
        let mut bytes = vec![0u8; 64];
        bytes.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        bytes.extend_from_slice(&[0xff; 32]);
        assert!(GeoDb::from_bytes(bytes).is_err());
    }
}
