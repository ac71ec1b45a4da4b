//! Geolocation of downloaders' IP addresses, for reports and the map: country,
//! region, city and coordinates from a MaxMind-format database, and for
//! Norway the kommune (municipality).
//!
//! # What it reads
//!
//! Any `.mmdb` with the GeoIP2 City layout: MaxMind GeoLite2/GeoIP2 City and
//! DB-IP IP-to-City (the free "Lite" edition included); country databases
//! work too, at country level. The operator supplies the file (DB-IP Lite is
//! CC BY 4.0; GeoLite2 needs a MaxMind account) and updates it monthly: IP
//! allocations move. It is read into memory once ([`GeoDb::open`]); the
//! reader checks every record it decodes, so a damaged file gives errors or
//! "unknown", never a panic.
//!
//! [`Geo`] is what callers hold: either an open database or *disabled* (no
//! file configured, or the file could not be opened). Disabled answers every
//! lookup with "unknown", so callers never special-case a missing database.
//!
//! # What the answers mean (and do not)
//!
//! - IP geolocation is city-level at best, and often only country-level. The
//!   coordinates are the *city's* (or the network's registered location), not
//!   the subscriber's; never treat them as an address.
//! - Mobile networks and carrier-grade NAT (CGNAT) put many subscribers behind
//!   addresses that the databases place at the operator's hub: of Norwegian
//!   blocks in DB-IP City Lite 2023-04 (one address per /21 sampled), 39 %
//!   say "Oslo" and 32 % "Fornebu" (Telenor's headquarters), whatever part of
//!   the country the subscriber is in. A kommune found with confidence "city"
//!   is the database's city, not proof of the subscriber's: counts for Oslo
//!   are inflated, other kommuner undercounted.
//! - `accuracy_radius_km` (MaxMind only) is a ~67 % radius: a third of
//!   addresses lie outside it. DB-IP Lite gives none.
//! - VPNs, proxies and Tor exits are placed where the exit is.
//! - Databases put some blocks in the wrong city and go stale as blocks move
//!   between operators; record the database's build date
//!   ([`GeoDb::build_date`]) beside any published figure.
//!
//! # Kommuner
//!
//! [`match_kommune`] maps a Norwegian location to one of the 357 kommuner of
//! 2024 by city name, then by coordinates, with a stated
//! [`KommuneConfidence`], or says why it cannot ([`UnknownReason`]). It
//! prefers "unknown" to a guess; see the [`kommune`](mod@crate::kommune) module for
//! the rules and how they were measured.
//!
//! # Credit
//!
//! DB-IP's licence requires [`DBIP_ATTRIBUTION`] wherever its results are
//! shown; [`Geo::attribution`] gives the right credit for the open database.
//! The kommune table derives from Kartverket (CC BY 4.0): [`KOMMUNE_DATA_ATTRIBUTION`].
//!
//! Not here: storing locations (the ledger), aggregating them (reports), or
//! downloading databases (the operator's job; nodes make no such traffic).
#![forbid(unsafe_code)]

pub mod kommune;
mod mmdb;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use kommune::{
    kommune, kommuner, match_kommune, Kommune, KommuneConfidence, KommuneMatch, KommuneNumber, UnknownReason,
    KOMMUNE_YEAR,
};
pub use mmdb::{Coordinates, GeoDb, Location, DBIP_ATTRIBUTION, GEOLITE2_ATTRIBUTION, MAX_DATABASE_BYTES};

/// Credit for the embedded kommune table (boundaries from which centroids,
/// areas and extents were computed).
pub const KOMMUNE_DATA_ATTRIBUTION: &str =
    "Kommune boundaries © Kartverket (https://www.kartverket.no), CC BY 4.0";

#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {bytes} bytes is larger than any city database ({MAX_DATABASE_BYTES} at most)", path.display())]
    TooLarge { path: PathBuf, bytes: u64 },
    #[error("{}not a readable MaxMind DB: {message}", prefix(path))]
    Invalid { path: Option<PathBuf>, message: String },
    #[error(
        "{}database type {database_type:?} has no locations (want a City or Country database)",
        prefix(path)
    )]
    Unsupported {
        path: Option<PathBuf>,
        database_type: String,
    },
    #[error("record for {ip} unreadable: {message}")]
    Lookup { ip: IpAddr, message: String },
}

fn prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!("{}: ", p.display()))
        .unwrap_or_default()
}

impl GeoError {
    fn at(self, at: &Path) -> GeoError {
        match self {
            GeoError::Invalid { message, .. } => GeoError::Invalid {
                path: Some(at.to_path_buf()),
                message,
            },
            GeoError::Unsupported { database_type, .. } => GeoError::Unsupported {
                path: Some(at.to_path_buf()),
                database_type,
            },
            other => other,
        }
    }
}

/// Geolocation as callers use it: an open database, or disabled (every
/// answer "unknown").
#[derive(Debug)]
pub struct Geo {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Database(GeoDb),
    Disabled { reason: String },
}

/// Everything known about one address.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// `None` when geolocation is disabled or the address is not in the database.
    pub location: Option<Location>,
    /// For Norwegian locations, the kommune; otherwise unknown with the reason.
    pub kommune: KommuneMatch,
}

impl Geo {
    /// No database: every lookup is unknown.
    pub fn disabled() -> Geo {
        Geo {
            backend: Backend::Disabled {
                reason: "no geolocation database configured".into(),
            },
        }
    }

    /// Opens `path`; any problem with the file is an error (for checking a
    /// configuration).
    pub fn open(path: impl AsRef<Path>) -> Result<Geo, GeoError> {
        Ok(Geo::from(GeoDb::open(path)?))
    }

    /// Opens `path` if one is configured; a missing or unreadable file is
    /// logged as a warning and leaves geolocation disabled, so a node runs
    /// (and registers downloads) without it.
    pub fn open_or_disabled(path: Option<&Path>) -> Geo {
        let Some(path) = path else {
            return Geo::disabled();
        };
        match GeoDb::open(path) {
            Ok(db) => {
                tracing::info!(
                    path = %path.display(),
                    database_type = db.database_type(),
                    build_date = %db.build_date(),
                    "geolocation database open"
                );
                Geo::from(db)
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "geolocation disabled");
                Geo {
                    backend: Backend::Disabled {
                        reason: error.to_string(),
                    },
                }
            }
        }
    }

    pub fn is_enabled(&self) -> bool {
        matches!(self.backend, Backend::Database(_))
    }

    /// The open database, if any.
    pub fn database(&self) -> Option<&GeoDb> {
        match &self.backend {
            Backend::Database(db) => Some(db),
            Backend::Disabled { .. } => None,
        }
    }

    /// One line for `status` output: `DBIP-City-Lite built 2023-04-01`, or
    /// `disabled: <why>`.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Database(db) => {
                format!("{} built {}", db.database_type(), db.build_date())
            }
            Backend::Disabled { reason } => format!("disabled: {reason}"),
        }
    }

    /// The credit to show beside results from the open database.
    pub fn attribution(&self) -> Option<&'static str> {
        self.database().and_then(GeoDb::attribution)
    }

    /// The location of `ip`; `None` when disabled or not in the database.
    pub fn lookup(&self, ip: IpAddr) -> Option<Location> {
        self.database().and_then(|db| db.lookup(ip))
    }

    /// The location of `ip` and, for Norway, its kommune.
    pub fn locate(&self, ip: IpAddr) -> Placement {
        let Some(db) = self.database() else {
            return Placement {
                location: None,
                kommune: KommuneMatch::Unknown(UnknownReason::NoDatabase),
            };
        };
        let location = db.lookup(ip);
        let kommune = match &location {
            Some(location) => match_kommune(location),
            None => KommuneMatch::Unknown(UnknownReason::NoLocation),
        };
        Placement { location, kommune }
    }
}

impl From<GeoDb> for Geo {
    fn from(db: GeoDb) -> Geo {
        Geo {
            backend: Backend::Database(db),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_answers_unknown() {
        let geo = Geo::disabled();
        assert!(!geo.is_enabled());
        assert!(geo.attribution().is_none());
        let ip: IpAddr = "129.240.1.1".parse().unwrap();
        assert_eq!(geo.lookup(ip), None);
        let p = geo.locate(ip);
        assert_eq!(p.location, None);
        assert_eq!(p.kommune, KommuneMatch::Unknown(UnknownReason::NoDatabase));
        assert!(geo.describe().starts_with("disabled: "));
    }

    #[test]
    fn missing_file_disables_instead_of_failing() {
        let path = Path::new("/nonexistent/warnseed-geo-test.mmdb");
        assert!(matches!(Geo::open(path), Err(GeoError::Io { .. })));
        let geo = Geo::open_or_disabled(Some(path));
        assert!(!geo.is_enabled());
        assert!(
            geo.describe().contains("warnseed-geo-test.mmdb"),
            "{}",
            geo.describe()
        );
        assert_eq!(
            geo.locate("10.0.0.1".parse().unwrap()).kommune,
            KommuneMatch::Unknown(UnknownReason::NoDatabase)
        );
        assert!(!Geo::open_or_disabled(None).is_enabled());
    }

    #[test]
    fn geo_is_shareable_across_threads() {
        // The ledger's enricher is `Send`; one `Geo` serves every writer.
        fn shareable<T: Send + Sync>() {}
        shareable::<Geo>();
        shareable::<Placement>();
    }

    #[test]
    fn attribution_strings() {
        assert_eq!(
            DBIP_ATTRIBUTION,
            "IP geolocation by DB-IP (https://db-ip.com), CC BY 4.0"
        );
        assert!(KOMMUNE_DATA_ATTRIBUTION.contains("Kartverket"));
    }
}
