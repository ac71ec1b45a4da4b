//! One catalogue row and the rules it must meet.

/// Titles become file names on every client's disk: 255 bytes is the limit
/// of common file systems.
pub const MAX_TITLE_BYTES: usize = 255;
/// 64 GiB: with libtorrent's piece table that is 16,384 pieces of 4 MiB,
/// 320 KiB of piece hashes. Larger decoys would make metadata and the
/// per-connection delivery map grow past what a hostile peer should be
/// able to make us hold.
pub const MAX_SIZE_BYTES: u64 = 64 << 30;
const MAX_CAMPAIGN_BYTES: usize = 64;
const MAX_LANGUAGE_BYTES: usize = 35;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TitleRow {
    pub title: String,
    pub size_bytes: Option<u64>,
    pub campaign: Option<String>,
    pub language: Option<String>,
    /// Release order under `order = "priority"`: higher first.
    pub priority: Option<i64>,
}

/// Why a title cannot be a file name on a peer's disk, if it cannot.
pub fn validate_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("empty title".into());
    }
    // Imports drop them (they are the file's layout); a name with them
    // would hide its extension (`foo.mp4 `) and so its format.
    if title.trim() != title {
        return Err("title begins or ends with whitespace".into());
    }
    if title.len() > MAX_TITLE_BYTES {
        return Err(format!(
            "title is {} bytes of UTF-8; the limit is {MAX_TITLE_BYTES}",
            title.len()
        ));
    }
    if let Some(c) = title.chars().find(|c| *c == '/' || *c == '\\') {
        return Err(format!("title contains the path separator {c:?}"));
    }
    if let Some(c) = title.chars().find(|c| c.is_control()) {
        return Err(format!("title contains the control character U+{:04X}", c as u32));
    }
    if title == "." || title == ".." {
        return Err("title is a relative directory name".into());
    }
    Ok(())
}

pub(crate) fn parse_size(raw: &str) -> Result<Option<u64>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let n: u64 = raw
        .parse()
        .map_err(|_| format!("size_bytes {raw:?} is not a whole number of bytes"))?;
    check_size(n).map(Some)
}

pub(crate) fn check_size(n: u64) -> Result<u64, String> {
    if n == 0 {
        return Err("size_bytes is 0".into());
    }
    if n > MAX_SIZE_BYTES {
        return Err(format!(
            "size_bytes {n} is over the limit of {MAX_SIZE_BYTES} (64 GiB)"
        ));
    }
    Ok(n)
}

pub(crate) fn check_campaign(raw: &str) -> Result<Option<String>, String> {
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_CAMPAIGN_BYTES || v.chars().any(|c| c.is_control()) {
        return Err(format!(
            "campaign must be printable and at most {MAX_CAMPAIGN_BYTES} bytes"
        ));
    }
    Ok(Some(v.to_string()))
}

pub(crate) fn check_language(raw: &str) -> Result<Option<String>, String> {
    let v = raw.trim();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > MAX_LANGUAGE_BYTES || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "language {v:?} is not a language tag such as en or nb-NO"
        ));
    }
    Ok(Some(v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_titles() {
        assert!(validate_title("sample-title-000123.mp4").is_ok());
        assert!(validate_title("Sample title 7 (ø, æ).mkv").is_ok());
        assert!(validate_title(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn rejects_bad_titles() {
        for bad in [
            "",
            "   ",
            "a/b.mp4",
            "a\\b",
            "a\u{0}b",
            "tab\there",
            "\u{85}x",
            ".",
            "..",
            "sample-title-000001.mp4 ",
            " sample-title-000001.mp4",
            "sample-title-000001.mp4\u{a0}",
        ] {
            assert!(validate_title(bad).is_err(), "{bad:?}");
        }
        assert!(validate_title(&"é".repeat(128)).is_err(), "256 bytes of UTF-8");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(""), Ok(None));
        assert_eq!(parse_size("17"), Ok(Some(17)));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("68719476736").is_ok());
        assert!(parse_size("68719476737").is_err());
    }
}
