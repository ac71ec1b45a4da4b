//! Where an address is, as far as a geolocation database says: filled in
//! by the caller's [`Enricher`] when a record is written (the database of
//! that day), stored with the record in its block (not chained: it is what
//! the database said, not what the peer did).

use std::net::IpAddr;

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeoFields {
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub country_name: Option<String>,
    pub region: Option<String>,
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub accuracy_km: Option<u32>,
    /// Norwegian municipality number (e.g. `0301`), when placed.
    pub kommune: Option<String>,
    pub kommune_name: Option<String>,
    /// How the kommune was found (e.g. `city`, `coordinates`).
    pub kommune_confidence: Option<String>,
}

impl GeoFields {
    pub fn is_empty(&self) -> bool {
        self.country.is_none() && self.city.is_none() && self.latitude.is_none()
    }
}

/// Looks an address up when its record is written.
pub trait Enricher: Send {
    fn enrich(&self, ip: IpAddr) -> GeoFields;
}
