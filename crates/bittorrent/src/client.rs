//! Names the client software behind a 20-byte peer id.
//!
//! Most clients follow the Azureus convention `-XXabcd-` (two letters, four
//! version characters); a few use their own. Decoding is best effort and never
//! fails: an unknown id becomes `unknown` plus its printable prefix, so the
//! ledger always records something an analyst can group by.

/// Azureus-style two-letter codes of clients seen in the wild.
const AZUREUS_CODES: &[(&str, &str)] = &[
    ("LT", "libtorrent"),
    ("lt", "rTorrent"),
    ("qB", "qBittorrent"),
    ("TR", "Transmission"),
    ("DE", "Deluge"),
    ("UT", "µTorrent"),
    ("UM", "µTorrent Mac"),
    ("UW", "µTorrent Web"),
    ("BT", "BitTorrent"),
    ("BC", "BitComet"),
    ("BI", "BiglyBT"),
    ("AZ", "Vuze"),
    ("KT", "KTorrent"),
    ("FD", "Free Download Manager"),
    ("FW", "FrostWire"),
    ("TX", "Tixati"),
    ("WW", "WebTorrent"),
    ("WD", "WebTorrent Desktop"),
    ("XL", "Xunlei"),
    ("SD", "Thunder"),
    ("PI", "PicoTorrent"),
    ("TB", "Torch"),
    ("HL", "Halite"),
    ("FL", "Folx"),
    ("RT", "Retriever"),
    ("LW", "LimeWire"),
    ("BF", "BitFlu"),
    ("MG", "MediaGet"),
    ("TT", "TuoTu"),
    ("MO", "MonoTorrent"),
    ("RZ", "RezTorrent"),
    ("TL", "Tribler"),
    ("WS", "warnseed"),
];

/// A decoded peer id: the client's name and, when the id carries one, its
/// version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientId {
    pub name: String,
    pub version: Option<String>,
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{} {}", self.name, v),
            None => write!(f, "{}", self.name),
        }
    }
}

pub fn decode_peer_id(id: &[u8; 20]) -> ClientId {
    if id[0] == b'-' && id[7] == b'-' {
        let code = std::str::from_utf8(&id[1..3]).unwrap_or("");
        if let Some((_, name)) = AZUREUS_CODES.iter().find(|(c, _)| *c == code) {
            return ClientId {
                name: (*name).to_string(),
                version: azureus_version(code, &id[3..7]),
            };
        }
    }
    if id.starts_with(b"A2-") {
        // aria2: "A2-1-36-0-" followed by random bytes.
        return ClientId {
            name: "aria2".into(),
            version: dashed_version(&id[3..]),
        };
    }
    if id.starts_with(b"exbc") || id.starts_with(b"FUTB") || id.starts_with(b"xUTB") {
        return ClientId {
            name: "BitComet".into(),
            version: Some(format!("{}.{:02}", id[4], id[5])),
        };
    }
    if id[0] == b'M' && id[2] == b'-' {
        // Mainline: "M4-3-6--".
        return ClientId {
            name: "BitTorrent Mainline".into(),
            version: dashed_version(&id[1..8]),
        };
    }
    if let Some(name) = shadow_name(id[0]) {
        if id[1..6]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'.' || *b == b'-')
        {
            let version: String = id[1..6]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.')
                .map(|&b| shadow_digit(b))
                .collect::<Vec<_>>()
                .join(".");
            return ClientId {
                name: name.into(),
                version: (!version.is_empty()).then_some(version),
            };
        }
    }
    let printable: String = id
        .iter()
        .take(8)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    ClientId {
        name: "unknown".into(),
        version: Some(printable),
    }
}

/// "1-36-0-xyz" → "1.36.0": digits separated by dashes, up to the first
/// byte that is neither.
fn dashed_version(bytes: &[u8]) -> Option<String> {
    let text: String = bytes
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'-')
        .map(|&b| b as char)
        .collect();
    let parts: Vec<&str> = text.split('-').filter(|p| !p.is_empty()).collect();
    (!parts.is_empty()).then(|| parts.join("."))
}

fn azureus_version(code: &str, v: &[u8]) -> Option<String> {
    if !v.iter().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let digit = |b: u8| -> String {
        match b {
            b'0'..=b'9' => ((b - b'0') as u32).to_string(),
            b'A'..=b'Z' => ((b - b'A') as u32 + 10).to_string(),
            b'a'..=b'z' => ((b - b'a') as u32 + 10).to_string(),
            _ => "?".into(),
        }
    };
    match code {
        // Transmission: -TRabcd- is a.bc (1.x-3.x) or a.b.c for 4.x; a
        // trailing Z or X marks a development build.
        "TR" => {
            let tail = match v[3] {
                b'Z' | b'X' => "+",
                _ => "",
            };
            if v[0] >= b'4' {
                Some(format!("{}.{}.{}{tail}", digit(v[0]), digit(v[1]), digit(v[2])))
            } else {
                Some(format!("{}.{}{}{tail}", digit(v[0]), digit(v[1]), digit(v[2])))
            }
        }
        _ => Some(v.iter().map(|&b| digit(b)).collect::<Vec<_>>().join(".")),
    }
}

fn shadow_name(b: u8) -> Option<&'static str> {
    Some(match b {
        b'A' => "ABC",
        b'O' => "Osprey",
        b'Q' => "BTQueue",
        b'R' => "Tribler",
        b'S' => "Shadow",
        b'T' => "BitTornado",
        b'U' => "UPnP NAT Bit Torrent",
        _ => return None,
    })
}

fn shadow_digit(b: u8) -> String {
    match b {
        b'0'..=b'9' => (b - b'0').to_string(),
        b'A'..=b'Z' => (b - b'A' + 10).to_string(),
        b'a'..=b'z' => (b - b'a' + 36).to_string(),
        _ => ".".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> [u8; 20] {
        let mut out = [b'x'; 20];
        out[..prefix.len()].copy_from_slice(prefix);
        out
    }

    #[test]
    fn decodes_common_clients() {
        let cases: &[(&[u8], &str)] = &[
            (b"-LT2080-", "libtorrent 2.0.8.0"),
            (b"-qB4620-", "qBittorrent 4.6.2.0"),
            (b"-TR3000-", "Transmission 3.00"),
            (b"-TR4060-", "Transmission 4.0.6"),
            (b"-DE13F0-", "Deluge 1.3.15.0"),
            (b"-UT355W-", "µTorrent 3.5.5.32"),
            (b"A2-1-36-0-", "aria2 1.36.0"),
            (b"-BC0206-", "BitComet 0.2.0.6"),
            (b"M4-3-6--", "BitTorrent Mainline 4.3.6"),
            (b"T03I-----", "BitTornado 0.3.18"),
        ];
        for (prefix, want) in cases {
            assert_eq!(decode_peer_id(&id(prefix)).to_string(), *want);
        }
    }

    #[test]
    fn unknown_ids_keep_a_printable_prefix() {
        let mut raw = [0u8; 20];
        raw[..4].copy_from_slice(b"ZZZZ");
        let c = decode_peer_id(&raw);
        assert_eq!(c.name, "unknown");
        assert_eq!(c.version.as_deref(), Some("ZZZZ...."));
    }
}
