//! Warning payloads and the bytes of decoys built from them.
//!
//! A decoy's bytes are a payload (the warning) followed by padding up to the
//! decoy's size. Nothing per decoy is stored: [`DecoyBytes`] computes any
//! byte range, and [`PieceHashCache`] computes piece hashes so that the parts
//! decoys have in common (payload pieces, all-zero pieces) are hashed once per
//! payload and piece length, and the one part that varies, the short last
//! piece of padding, costs O(1) through precomputed SHA-1 states.
//!
//! Not here: choosing a payload per title format or rendering warning videos
//! (a later content source plugs in where [`Payload`] is built).
#![forbid(unsafe_code)]

mod hashes;
mod warning;

pub use hashes::{PieceHashCache, ZeroHasher};
pub use warning::BUILTIN_WARNING;

use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("cannot read payload {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("payload {0} is empty; a decoy must carry the warning")]
    Empty(String),
}

/// Warning bytes shared by every decoy that carries them.
#[derive(Debug)]
pub struct Payload {
    bytes: Box<[u8]>,
    sha256: [u8; 32],
    origin: String,
}

impl Payload {
    pub fn new(bytes: Vec<u8>, origin: impl Into<String>) -> Result<Self, PayloadError> {
        let origin = origin.into();
        if bytes.is_empty() {
            return Err(PayloadError::Empty(origin));
        }
        let sha256 = Sha256::digest(&bytes).into();
        Ok(Self {
            bytes: bytes.into_boxed_slice(),
            sha256,
            origin,
        })
    }

    /// The plain-text warning compiled into the binary, so a node runs with
    /// no set-up.
    pub fn builtin() -> Self {
        Self::new(BUILTIN_WARNING.as_bytes().to_vec(), "built-in warning")
            .expect("built-in warning is not empty")
    }

    pub fn from_file(path: &Path) -> Result<Self, PayloadError> {
        let bytes = std::fs::read(path).map_err(|source| PayloadError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::new(bytes, path.display().to_string())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// SHA-256 of the bytes: identifies the payload in caches and reports.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// A decoy's size: the requested size, but never less than the payload
    /// (the warning is never cut).
    pub fn decoy_size(&self, requested: Option<u64>) -> u64 {
        requested.unwrap_or(0).max(self.len())
    }
}

/// Appends bytes `offset..offset + len` of the decoy `payload ‖ zeros`
/// (`size` bytes in all) to `out`, clamped to the decoy. Every reader of
/// decoy bytes goes through here, so serving and exporting cannot differ.
pub fn read_decoy_range(payload: &[u8], size: u64, offset: u64, len: u32, out: &mut Vec<u8>) {
    let end = (offset + u64::from(len)).min(size);
    if offset >= end {
        return;
    }
    let payload_len = payload.len() as u64;
    if offset < payload_len {
        out.extend_from_slice(&payload[offset as usize..end.min(payload_len) as usize]);
    }
    let zero_from = offset.max(payload_len);
    if end > zero_from {
        out.resize(out.len() + (end - zero_from) as usize, 0);
    }
}

/// The bytes of one decoy: `payload ‖ zeros` up to `size`.
#[derive(Clone, Debug)]
pub struct DecoyBytes {
    payload: Arc<Payload>,
    size: u64,
}

impl DecoyBytes {
    pub fn new(payload: Arc<Payload>, size: u64) -> Self {
        let size = size.max(payload.len());
        Self { payload, size }
    }
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends bytes `offset..offset + len` (clamped to the decoy) to `out`.
    pub fn read_into(&self, offset: u64, len: u32, out: &mut Vec<u8>) {
        read_decoy_range(self.payload.bytes(), self.size, offset, len, out);
    }

    /// Writes the whole decoy to `w` (for exports and tests).
    pub fn write_all(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut offset = 0;
        while offset < self.size {
            buf.clear();
            let chunk = (self.size - offset).min(1 << 20) as u32;
            self.read_into(offset, chunk, &mut buf);
            w.write_all(&buf)?;
            offset += u64::from(chunk);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoy_bytes_are_payload_then_zeros() {
        let p = Arc::new(Payload::new(b"WARNING".to_vec(), "t").unwrap());
        let d = DecoyBytes::new(p.clone(), 12);
        let mut all = Vec::new();
        d.write_all(&mut all).unwrap();
        assert_eq!(all, b"WARNING\0\0\0\0\0");
        let mut mid = Vec::new();
        d.read_into(5, 4, &mut mid);
        assert_eq!(mid, b"NG\0\0");
        let mut past = Vec::new();
        d.read_into(10, 16, &mut past);
        assert_eq!(past, b"\0\0");
        assert_eq!(DecoyBytes::new(p, 3).size(), 7, "never shorter than the payload");
    }

    #[test]
    fn empty_payload_is_refused() {
        assert!(Payload::new(Vec::new(), "x").is_err());
    }
}
