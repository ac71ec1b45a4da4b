//! Fuzzes the fleet's connection-string reader
//! (`warnseed_fleet::split_conninfo`), which takes libpq's TLS keywords out
//! of an operator's `fleet.postgres` string in either libpq form.
//!
//! The input (UTF-8, lossily repaired) is split, and also split again as a
//! URL (`postgresql://h/d?` + input) so the query-string path gets the same
//! bytes. For each:
//! - `split_conninfo` returns (Ok or Err), never panics;
//! - on Ok, what is passed on holds no TLS keyword: splitting it again
//!   gives the same text and no TLS settings (the split is idempotent);
//! - a `sslcert` without `sslkey` (or the reverse) is never accepted;
//! - where tokio-postgres parses what is passed on, choosing the default
//!   mode from its hosts never panics, and with no `sslmode` it is plain
//!   text only if every host or `hostaddr` is this machine.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warnseed_fleet::{split_conninfo, TlsMode, TlsSettings};

fn check(text: &str) {
    let Ok((rest, tls)) = split_conninfo(text) else {
        return;
    };
    assert_eq!(
        tls.client_cert.is_some(),
        tls.client_key.is_some(),
        "a client certificate without its key (or the reverse) was accepted: {text:?}"
    );
    let (again, none) = split_conninfo(&rest).unwrap_or_else(|e| panic!("{rest:?} from {text:?}: {e}"));
    assert_eq!(again, rest, "splitting twice changed {text:?}");
    assert_eq!(
        none,
        TlsSettings::default(),
        "TLS keywords left in {rest:?} from {text:?}"
    );
    if let Ok(config) = rest.parse::<tokio_postgres::Config>() {
        let mode = tls.mode_for(&config);
        if tls.mode.is_none() && mode == TlsMode::Disable {
            let local_ip = |ip: &std::net::IpAddr| ip.is_loopback();
            let addrs = config.get_hostaddrs();
            let hosts = config.get_hosts();
            assert!(
                if addrs.is_empty() {
                    !hosts.is_empty()
                } else {
                    addrs.iter().all(local_ip)
                },
                "plain text chosen for {text:?}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
    check(&format!("postgresql://h/d?{text}"));
});
