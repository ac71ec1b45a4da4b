//! The ledger's geolocation: `warnseed_geo` behind the ledger's
//! `Enricher`, so each record gets country, city, coordinates and, in
//! Norway, the kommune as it is written.

use std::net::IpAddr;
use std::sync::Arc;
use warnseed_geo::{Geo, KommuneMatch};
use warnseed_ledger::{Enricher, GeoFields};

pub struct GeoEnricher(pub Arc<Geo>);

impl Enricher for GeoEnricher {
    fn enrich(&self, ip: IpAddr) -> GeoFields {
        let placement = self.0.locate(ip);
        let Some(location) = placement.location else {
            return GeoFields::default();
        };
        let (kommune, kommune_name, kommune_confidence) = match placement.kommune {
            KommuneMatch::Found { kommune, confidence } => (
                Some(kommune.number.to_string()),
                Some(kommune.name.to_string()),
                Some(confidence.as_str().to_string()),
            ),
            KommuneMatch::Unknown(_) => (None, None, None),
        };
        GeoFields {
            country: location.country_iso_code,
            country_name: location.country_name,
            region: location.region,
            city: location.city,
            latitude: location.coordinates.map(|c| c.latitude),
            longitude: location.coordinates.map(|c| c.longitude),
            accuracy_km: location.accuracy_radius_km.map(u32::from),
            kommune,
            kommune_name,
            kommune_confidence,
        }
    }
}

/// A kommune's name from its number (`0301` → `Oslo`).
pub fn kommune_name(number: &str) -> Option<String> {
    let n: warnseed_geo::KommuneNumber = number.parse().ok()?;
    warnseed_geo::kommune(n).map(|k| k.name.to_string())
}
