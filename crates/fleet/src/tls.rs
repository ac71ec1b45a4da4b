//! TLS to the fleet's PostgreSQL, set with libpq's own keywords in the
//! connection string (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`).
//!
//! Records carry IP addresses, so a node that reaches PostgreSQL over a
//! network encrypts and checks the server's certificate unless told
//! otherwise: with no `sslmode`, a server on a loopback address or a Unix
//! socket is reached in plain text and any other one with `verify-full`.
//! (libpq's default, `prefer`, falls back to plain text when the server
//! declines; warnseed has no such mode.)

use crate::FleetError;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use tokio_postgres::config::Host;

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text.
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted; the certificate must chain to a trusted root, for any name.
    VerifyCa,
    /// Encrypted; the certificate must chain to a trusted root and name the
    /// host connected to.
    VerifyFull,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyCa => "verify-ca",
            TlsMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Result<Self, FleetError> {
        Ok(match text {
            "disable" => TlsMode::Disable,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            "allow" | "prefer" => {
                return Err(FleetError::Config(format!(
                "fleet.postgres: sslmode={text} would fall back to plain text when the server declines TLS; \
                     use verify-full (recommended), verify-ca, require or disable"
            )))
            }
            other => {
                return Err(FleetError::Config(format!(
                    "fleet.postgres: unknown sslmode {other:?} (disable, require, verify-ca or verify-full)"
                )))
            }
        })
    }
}

/// The TLS part of a connection string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode`; `None` picks by host (see the module's comment).
    pub mode: Option<TlsMode>,
    /// `sslrootcert`: PEM file of the roots to trust instead of the
    /// system's (`system` or unset: the system's).
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate (PEM) and its PKCS#8
    /// PEM key, for servers that authenticate nodes by certificate.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl TlsSettings {
    /// The mode for this connection: the one asked for, else plain text
    /// when every address connected to is this machine, else `verify-full`.
    pub fn mode_for(&self, config: &tokio_postgres::Config) -> TlsMode {
        if let Some(mode) = self.mode {
            return mode;
        }
        // With `hostaddr`, that is where the connection goes (`host` then
        // only names the server for its certificate).
        let addrs = config.get_hostaddrs();
        if !addrs.is_empty() {
            return if addrs.iter().all(IpAddr::is_loopback) {
                TlsMode::Disable
            } else {
                TlsMode::VerifyFull
            };
        }
        let hosts = config.get_hosts();
        let local = |host: &Host| match host {
            #[cfg(unix)]
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .trim_matches(|c| c == '[' || c == ']')
                        .parse::<IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
        };
        // No host at all cannot connect; nothing is sent in plain text.
        if !hosts.is_empty() && hosts.iter().all(local) {
            TlsMode::Disable
        } else {
            TlsMode::VerifyFull
        }
    }

    fn check(&self) -> Result<(), FleetError> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(FleetError::Config(
                "fleet.postgres: sslcert and sslkey go together (a client certificate and its key)".into(),
            ));
        }
        Ok(())
    }

    /// The connector for an encrypted `mode`, with its roots and client
    /// certificate read now (so a missing file is named at connect time).
    pub(crate) fn connector(
        &self,
        mode: TlsMode,
    ) -> Result<postgres_native_tls::MakeTlsConnector, FleetError> {
        let mut builder = native_tls::TlsConnector::builder();
        builder.min_protocol_version(Some(native_tls::Protocol::Tlsv12));
        if let Some(path) = &self.root_cert {
            builder.disable_built_in_roots(true);
            for cert in read_pem_certificates(path)? {
                builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
            let cert_pem = read_file(cert, "sslcert")?;
            let key_pem = read_file(key, "sslkey")?;
            if !key_pem.windows(27).any(|w| w == b"-----BEGIN PRIVATE KEY-----") {
                return Err(FleetError::Config(format!(
                    "sslkey {}: not an unencrypted PKCS#8 PEM key (\"BEGIN PRIVATE KEY\"); \
                     convert it with `openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8`",
                    key.display()
                )));
            }
            let identity = native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).map_err(|e| {
                FleetError::Config(format!(
                    "sslcert {} with sslkey {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            builder.identity(identity);
        }
        match mode {
            TlsMode::Disable | TlsMode::VerifyFull => {}
            TlsMode::VerifyCa => {
                builder.danger_accept_invalid_hostnames(true);
            }
            TlsMode::Require => {
                builder.danger_accept_invalid_certs(true);
            }
        }
        let connector = builder
            .build()
            .map_err(|e| FleetError::Config(format!("TLS for PostgreSQL: {e}")))?;
        Ok(postgres_native_tls::MakeTlsConnector::new(connector))
    }
}

fn read_file(path: &Path, keyword: &str) -> Result<Vec<u8>, FleetError> {
    std::fs::read(path).map_err(|e| FleetError::Config(format!("{keyword} {}: {e}", path.display())))
}

/// Every certificate in a PEM file (a bundle may hold several).
fn read_pem_certificates(path: &Path) -> Result<Vec<native_tls::Certificate>, FleetError> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = read_file(path, "sslrootcert")?;
    let text = String::from_utf8_lossy(&text);
    let mut certs = Vec::new();
    let mut rest = &text[..];
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let block = &rest[start..start + len + END.len()];
        let cert = native_tls::Certificate::from_pem(block.as_bytes())
            .map_err(|e| FleetError::Config(format!("sslrootcert {}: {e}", path.display())))?;
        certs.push(cert);
        rest = &rest[start + len + END.len()..];
    }
    if certs.is_empty() {
        return Err(FleetError::Config(format!(
            "sslrootcert {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certs)
}

/// Splits a connection string into what tokio-postgres parses and the TLS
/// keywords, which it does not know (or knows only in part: it has no
/// `verify-*` modes). Both libpq forms are understood: `key=value` pairs
/// and `postgresql://` URLs with the keywords as query parameters.
pub fn split_conninfo(conninfo: &str) -> Result<(String, TlsSettings), FleetError> {
    let trimmed = conninfo.trim_start();
    let (rest, pairs) = if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        split_url(trimmed)?
    } else {
        split_key_values(conninfo)?
    };
    let mut settings = TlsSettings::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => settings.mode = Some(TlsMode::parse(&value)?),
            "sslrootcert" if value == "system" => settings.root_cert = None,
            "sslrootcert" => settings.root_cert = Some(PathBuf::from(value)),
            "sslcert" => settings.client_cert = Some(PathBuf::from(value)),
            "sslkey" => settings.client_key = Some(PathBuf::from(value)),
            _ => unreachable!("only the keywords in TLS_KEYWORDS are split off"),
        }
    }
    settings.check()?;
    // As libpq: `require` with a root certificate checks the chain.
    if settings.mode == Some(TlsMode::Require) && settings.root_cert.is_some() {
        settings.mode = Some(TlsMode::VerifyCa);
    }
    Ok((rest, settings))
}

const TLS_KEYWORDS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

fn is_tls_keyword(key: &str) -> bool {
    TLS_KEYWORDS.contains(&key)
}

/// libpq's `key = value` form: values bare (backslash escapes the next
/// character) or in single quotes (backslash escapes `'` and `\`).
fn split_key_values(conninfo: &str) -> Result<(String, Vec<(String, String)>), FleetError> {
    let bad = |what: &str| FleetError::Config(format!("fleet.postgres: {what}"));
    let mut chars = conninfo.chars().peekable();
    let mut kept = String::new();
    let mut tls = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(bad(&format!("missing \"=\" after {key:?}")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(bad(&format!("unterminated quoted value of {key:?}"))),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if is_tls_keyword(&key) {
            tls.push((key, value));
        } else {
            if !kept.is_empty() {
                kept.push(' ');
            }
            kept.push_str(&key);
            kept.push_str("='");
            for c in value.chars() {
                if c == '\'' || c == '\\' {
                    kept.push('\\');
                }
                kept.push(c);
            }
            kept.push('\'');
        }
    }
    Ok((kept, tls))
}

/// The URL form: TLS keywords are taken out of the query string, the
/// rest of the URL is passed on as written.
fn split_url(url: &str) -> Result<(String, Vec<(String, String)>), FleetError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = percent_decode(key)?;
        if is_tls_keyword(&key) {
            tls.push((key, percent_decode(value)?));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn percent_decode(text: &str) -> Result<String, FleetError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    FleetError::Config(format!("fleet.postgres: bad percent escape in {text:?}"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| FleetError::Config(format!("fleet.postgres: {text:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> (String, TlsSettings) {
        split_conninfo(text).unwrap()
    }

    #[test]
    fn key_value_strings_lose_only_the_tls_keywords() {
        let (rest, tls) = split(
            "host=db.example sslmode=verify-full user = warnseed sslrootcert='/etc/fleet ca/root.pem' \
             password='it\\'s' sslcert=/k/node.crt sslkey=/k/node\\ key",
        );
        assert_eq!(rest, "host='db.example' user='warnseed' password='it\\'s'");
        let parsed: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"it's"[..]));
        assert_eq!(tls.mode, Some(TlsMode::VerifyFull));
        assert_eq!(
            tls.root_cert.as_deref(),
            Some(Path::new("/etc/fleet ca/root.pem"))
        );
        assert_eq!(tls.client_cert.as_deref(), Some(Path::new("/k/node.crt")));
        assert_eq!(tls.client_key.as_deref(), Some(Path::new("/k/node key")));
    }

    #[test]
    fn urls_lose_only_the_tls_parameters() {
        let (rest, tls) =
            split("postgresql://warnseed@db.example:5433/fleet?sslmode=verify-ca&connect_timeout=5&sslrootcert=%2Fetc%2Fca.pem");
        assert_eq!(
            rest,
            "postgresql://warnseed@db.example:5433/fleet?connect_timeout=5"
        );
        assert_eq!(tls.mode, Some(TlsMode::VerifyCa));
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        let (rest, tls) = split("postgres://db.example/fleet?sslmode=require");
        assert_eq!(rest, "postgres://db.example/fleet");
        assert_eq!(tls.mode, Some(TlsMode::Require));
        let (rest, tls) = split("postgres://db.example/fleet");
        assert_eq!(
            (rest.as_str(), tls),
            ("postgres://db.example/fleet", TlsSettings::default())
        );
    }

    #[test]
    fn the_default_mode_is_plain_text_only_on_this_machine() {
        let mode = |text: &str| {
            let (rest, tls) = split(text);
            tls.mode_for(&rest.parse().unwrap())
        };
        assert_eq!(mode("host=127.0.0.1 user=u"), TlsMode::Disable);
        assert_eq!(mode("host=localhost,::1 user=u"), TlsMode::Disable);
        assert_eq!(mode("host=/run/postgresql user=u"), TlsMode::Disable);
        assert_eq!(mode("user=u"), TlsMode::VerifyFull);
        // hostaddr is where the connection goes, whatever host says.
        assert_eq!(mode("hostaddr=192.0.2.7 user=u"), TlsMode::VerifyFull);
        assert_eq!(
            mode("host=localhost hostaddr=192.0.2.7 user=u"),
            TlsMode::VerifyFull
        );
        assert_eq!(
            mode("host=db.example hostaddr=127.0.0.1 user=u"),
            TlsMode::Disable
        );
        assert_eq!(mode("postgresql://u@[::1]/fleet"), TlsMode::Disable);
        // require with a root certificate checks the chain, as in libpq.
        assert_eq!(
            mode("host=db.example sslmode=require sslrootcert=/ca.pem"),
            TlsMode::VerifyCa
        );
        assert_eq!(mode("host=db.example user=u"), TlsMode::VerifyFull);
        assert_eq!(mode("host=127.0.0.1,192.0.2.7 user=u"), TlsMode::VerifyFull);
        assert_eq!(mode("postgresql://u@[2001:db8::5]/fleet"), TlsMode::VerifyFull);
        assert_eq!(mode("host=db.example sslmode=disable"), TlsMode::Disable);
        assert_eq!(mode("host=127.0.0.1 sslmode=require"), TlsMode::Require);
    }

    #[test]
    fn unsafe_or_incomplete_settings_are_refused_with_the_reason() {
        let err = |text: &str| split_conninfo(text).unwrap_err().to_string();
        assert!(err("host=db sslmode=prefer").contains("fall back to plain text"));
        assert!(err("host=db sslmode=allow").contains("fall back to plain text"));
        assert!(err("host=db sslmode=verify").contains("unknown sslmode"));
        assert!(err("host=db sslcert=/a.crt").contains("sslcert and sslkey go together"));
        assert!(err("host=db sslmode").contains("missing \"=\""));
        assert!(err("host='db").contains("unterminated"));
        assert!(err("postgres://db/x?sslrootcert=%zz").contains("percent escape"));
        assert!(err("postgres://db/x?sslrootcert=%+f").contains("percent escape"));
        let (_, tls) = split("host=db sslrootcert=system");
        assert_eq!(tls.root_cert, None);
    }
}
