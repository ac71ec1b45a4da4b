//! A zip archive whose last entry is padding of any length.
//!
//! Layout: the warning files (stored), then a stored `padding.bin` entry
//! whose local header sets bit 3 (sizes and CRC follow the data in a data
//! descriptor). Everything that depends on the padding's length (descriptor,
//! central directory, ZIP64 end records) therefore sits at the end of the
//! file, so the head is the same bytes for every decoy. ZIP64 records are
//! always written so the tail has one fixed length at any size.

/// The padding entry's name, as archivers list it.
pub const PADDING_NAME: &str = "padding.bin";

const LOCAL_SIG: u32 = 0x0403_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const ZIP64_END_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const END_SIG: u32 = 0x0605_4b50;
/// 2026-01-01 00:00 in MS-DOS form: a fixed stamp keeps the bytes, and so
/// the info hashes, reproducible.
const DOS_DATE: u16 = ((2026 - 1980) << 9) | (1 << 5) | 1;
const DOS_TIME: u16 = 0;
/// Made by Unix (3), spec 4.5 (ZIP64).
const VERSION_MADE_BY: u16 = (3 << 8) | 45;
const VERSION_STORED: u16 = 10;
const VERSION_ZIP64: u16 = 45;
const FLAG_DESCRIPTOR: u16 = 1 << 3;
const UNIX_FILE_MODE: u32 = 0o100_644 << 16;

const DESCRIPTOR_LEN: u64 = 24;
const ZIP64_END_LEN: u64 = 56;
const ZIP64_LOCATOR_LEN: u64 = 20;
const END_LEN: u64 = 22;

/// The fields a local header and its central directory record share.
struct Entry<'a> {
    name: &'a str,
    version_needed: u16,
    flags: u16,
    crc: u32,
    /// Both sizes (stored entries), or `u32::MAX` when ZIP64 holds them.
    size: u32,
    extra: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The padding entry: stored, sizes in its ZIP64 field `extra`.
    fn padding(crc: u32, extra: &'a [u8]) -> Self {
        Self {
            name: PADDING_NAME,
            version_needed: VERSION_ZIP64,
            flags: FLAG_DESCRIPTOR,
            crc,
            size: u32::MAX,
            extra,
        }
    }

    /// From "version needed" to the sizes: the same in both records.
    fn put_common(&self, out: &mut Vec<u8>) {
        put16(out, self.version_needed);
        put16(out, self.flags);
        put16(out, 0); // stored
        put16(out, DOS_TIME);
        put16(out, DOS_DATE);
        put32(out, self.crc);
        put32(out, self.size);
        put32(out, self.size);
        put16(out, self.name.len() as u16);
        put16(out, self.extra.len() as u16);
    }

    fn put_local(&self, out: &mut Vec<u8>) {
        put32(out, LOCAL_SIG);
        self.put_common(out);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.extra);
    }

    fn put_central(&self, out: &mut Vec<u8>, local_offset: u32) {
        put32(out, CENTRAL_SIG);
        put16(out, VERSION_MADE_BY);
        self.put_common(out);
        put16(out, 0); // comment
        put16(out, 0); // disk
        put16(out, 0); // internal attributes
        put32(out, UNIX_FILE_MODE);
        put32(out, local_offset);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(self.extra);
    }
}

/// ZIP64 extended information with both sizes (uncompressed, compressed).
fn put_zip64_sizes(out: &mut Vec<u8>, size: u64) {
    put16(out, 0x0001);
    put16(out, 16);
    put64(out, size);
    put64(out, size);
}

#[derive(Debug)]
pub struct ZipTemplate {
    head: Vec<u8>,
    /// Central directory records of the warning files (fixed).
    fixed_central: Vec<u8>,
    padding_header_offset: u64,
    entries: u16,
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

impl ZipTemplate {
    /// `files` are stored as they are (video is already compressed).
    pub fn new(files: &[(&str, &[u8])]) -> Self {
        let mut head = Vec::new();
        let mut fixed_central = Vec::new();
        for (name, data) in files {
            let entry = Entry {
                name,
                version_needed: VERSION_STORED,
                flags: 0,
                crc: crc32fast::hash(data),
                size: u32::try_from(data.len()).expect("warning files are far below 4 GiB"),
                extra: &[],
            };
            entry.put_central(&mut fixed_central, head.len() as u32);
            entry.put_local(&mut head);
            head.extend_from_slice(data);
        }
        let padding_header_offset = head.len() as u64;
        // CRC and sizes follow the data (bit 3); the ZIP64 field says so
        // with zeros, as the specification asks when bit 3 is set.
        let mut zip64 = Vec::new();
        put_zip64_sizes(&mut zip64, 0);
        Entry::padding(0, &zip64).put_local(&mut head);
        Self {
            head,
            fixed_central,
            padding_header_offset,
            entries: files.len() as u16 + 1,
        }
    }

    pub fn head(&self) -> &[u8] {
        &self.head
    }

    fn padding_central_len() -> u64 {
        46 + PADDING_NAME.len() as u64 + 20
    }

    /// Bytes after the padding data, the same count at every size.
    pub fn tail_len(&self) -> u64 {
        DESCRIPTOR_LEN
            + self.fixed_central.len() as u64
            + Self::padding_central_len()
            + ZIP64_END_LEN
            + ZIP64_LOCATOR_LEN
            + END_LEN
    }

    /// The tail for `padding_len` bytes of padding whose CRC-32 is `crc`.
    pub fn tail(&self, padding_len: u64, crc: u32) -> Vec<u8> {
        let mut t = Vec::with_capacity(self.tail_len() as usize);
        put32(&mut t, DESCRIPTOR_SIG);
        put32(&mut t, crc);
        put64(&mut t, padding_len);
        put64(&mut t, padding_len);
        let central_offset = self.head.len() as u64 + padding_len + DESCRIPTOR_LEN;
        t.extend_from_slice(&self.fixed_central);
        let mut zip64 = Vec::new();
        put_zip64_sizes(&mut zip64, padding_len);
        Entry::padding(crc, &zip64).put_central(&mut t, self.padding_header_offset as u32);
        let central_len = self.fixed_central.len() as u64 + Self::padding_central_len();
        let zip64_end_offset = central_offset + central_len;
        put32(&mut t, ZIP64_END_SIG);
        put64(&mut t, ZIP64_END_LEN - 12);
        put16(&mut t, VERSION_MADE_BY);
        put16(&mut t, VERSION_ZIP64);
        put32(&mut t, 0);
        put32(&mut t, 0);
        put64(&mut t, u64::from(self.entries));
        put64(&mut t, u64::from(self.entries));
        put64(&mut t, central_len);
        put64(&mut t, central_offset);
        put32(&mut t, ZIP64_LOCATOR_SIG);
        put32(&mut t, 0);
        put64(&mut t, zip64_end_offset);
        put32(&mut t, 1);
        put32(&mut t, END_SIG);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put16(&mut t, self.entries);
        put16(&mut t, self.entries);
        put32(&mut t, central_len as u32);
        put32(&mut t, u32::try_from(central_offset).unwrap_or(u32::MAX));
        put16(&mut t, 0);
        debug_assert_eq!(t.len() as u64, self.tail_len());
        t
    }
}
