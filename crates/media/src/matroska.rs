//! Matroska with one H.264 track.
//!
//! The Segment is written with the reserved "unknown size" so a later step
//! can append bytes after the last Cluster without rewriting any header.
//! Clusters have known sizes, so a reader that meets the appended bytes is
//! at an element boundary and can stop or skip there. No Cues: the file is
//! short and every Cluster starts at a keyframe, so a player can seek by
//! scanning Clusters.

use crate::{len_u32, EncodedVideo};

const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const DEFAULT_DURATION: u32 = 0x23_E383;
const LANGUAGE: u32 = 0x22_B59C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

/// The 8-byte size with every value bit set: "size unknown".
pub(crate) const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Muxes the stream into Matroska (`DocType` "matroska").
pub fn mux_matroska(v: &EncodedVideo) -> Vec<u8> {
    let fps = u64::from(v.fps.max(1));
    let mut out = element(
        EBML,
        &[
            uint(EBML_VERSION, 1),
            uint(EBML_READ_VERSION, 1),
            uint(EBML_MAX_ID_LENGTH, 4),
            uint(EBML_MAX_SIZE_LENGTH, 8),
            string(DOC_TYPE, "matroska"),
            // 4 is current; SimpleBlock only needs a version-2 reader.
            uint(DOC_TYPE_VERSION, 4),
            uint(DOC_TYPE_READ_VERSION, 2),
        ]
        .concat(),
    );

    out.extend_from_slice(&id(SEGMENT));
    out.extend_from_slice(&UNKNOWN_SIZE);

    // No SegmentUUID or DateUTC: both would make the bytes differ per run.
    let duration_ms = v.frames.len() as f64 * 1000.0 / fps as f64;
    out.extend_from_slice(&element(
        INFO,
        &[
            // Timestamps count milliseconds.
            uint(TIMESTAMP_SCALE, 1_000_000),
            float(DURATION, duration_ms),
            string(MUXING_APP, "warnseed"),
            string(WRITING_APP, "warnseed"),
        ]
        .concat(),
    ));

    let video = element(
        VIDEO,
        &[
            uint(PIXEL_WIDTH, v.width.into()),
            uint(PIXEL_HEIGHT, v.height.into()),
        ]
        .concat(),
    );
    let track = element(
        TRACK_ENTRY,
        &[
            uint(TRACK_NUMBER, 1),
            uint(TRACK_UID, 1),
            uint(TRACK_TYPE, 1), // video
            uint(FLAG_LACING, 0),
            uint(DEFAULT_DURATION, 1_000_000_000 / fps), // nanoseconds per frame
            string(LANGUAGE, "und"),
            string(CODEC_ID, "V_MPEG4/ISO/AVC"),
            // Same record as MP4's avcC; blocks then hold 4-byte-length NALs.
            element(CODEC_PRIVATE, &v.avc_decoder_configuration()),
            video,
        ]
        .concat(),
    );
    out.extend_from_slice(&element(TRACKS, &track));

    // One Cluster per keyframe run (per slide). A block's timestamp is a
    // signed 16-bit offset from its Cluster's, so also cut before that
    // would overflow.
    let mut cluster: Vec<u8> = Vec::new();
    let mut cluster_start: u64 = 0;
    for (i, frame) in v.frames.iter().enumerate() {
        let timestamp = i as u64 * 1000 / fps;
        if frame.keyframe || cluster.is_empty() || timestamp - cluster_start > i16::MAX as u64 {
            if !cluster.is_empty() {
                out.extend_from_slice(&element(CLUSTER, &cluster));
            }
            cluster_start = timestamp;
            cluster = uint(CLUSTER_TIMESTAMP, cluster_start);
        }
        let mut block = vec![0x81]; // track number 1 as a 1-byte vint
        block.extend_from_slice(&((timestamp - cluster_start) as i16).to_be_bytes());
        block.push(if frame.keyframe { 0x80 } else { 0x00 });
        block.extend_from_slice(&crate::mp4::length_prefixed(&frame.nals));
        cluster.extend_from_slice(&element(SIMPLE_BLOCK, &block));
    }
    if !cluster.is_empty() {
        out.extend_from_slice(&element(CLUSTER, &cluster));
    }
    out
}

/// Element IDs are written as their full byte pattern (marker bit included).
fn id(id: u32) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(3);
    bytes[skip..].to_vec()
}

/// The shortest EBML variable-length integer for a data size. A length
/// whose value bits are all ones means "unknown", so those are skipped.
pub(crate) fn size_vint(n: u64) -> Vec<u8> {
    for len in 1..=8u32 {
        let max = (1u64 << (7 * len)) - 1; // all ones = reserved
        if n < max {
            let marked = n | (1u64 << (7 * len));
            return marked.to_be_bytes()[(8 - len as usize)..].to_vec();
        }
    }
    // Unreachable for anything this crate writes (< 2^56 - 1 bytes).
    UNKNOWN_SIZE.to_vec()
}

fn element(element_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = id(element_id);
    out.extend_from_slice(&size_vint(len_u32(body.len()).into()));
    out.extend_from_slice(body);
    out
}

fn uint(element_id: u32, value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
    element(element_id, &bytes[skip..])
}

fn float(element_id: u32, value: f64) -> Vec<u8> {
    element(element_id, &value.to_be_bytes())
}

fn string(element_id: u32, value: &str) -> Vec<u8> {
    element(element_id, value.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::tests::fake_video;

    /// Reads one element header: (id, size or None if unknown, header length).
    fn header(b: &[u8]) -> (u32, Option<u64>, usize) {
        let id_len = b[0].leading_zeros() as usize + 1;
        let id = b[..id_len].iter().fold(0u32, |a, &x| (a << 8) | u32::from(x));
        let s = &b[id_len..];
        let size_len = s[0].leading_zeros() as usize + 1;
        let mut size = u64::from(s[0]) & ((1 << (8 - size_len)) - 1);
        for &x in &s[1..size_len] {
            size = (size << 8) | u64::from(x);
        }
        let all_ones = size == (1u64 << (7 * size_len)) - 1;
        (id, (!all_ones).then_some(size), id_len + size_len)
    }

    fn children(b: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let (id, size, h) = header(&b[at..]);
            let size = size.expect("known size") as usize;
            out.push((id, &b[at + h..at + h + size]));
            at += h + size;
        }
        assert_eq!(at, b.len());
        out
    }

    #[test]
    fn size_vints_are_minimal_and_avoid_the_reserved_value() {
        assert_eq!(size_vint(0), vec![0x80]);
        assert_eq!(size_vint(126), vec![0xFE]);
        assert_eq!(size_vint(127), vec![0x40, 0x7F]);
        assert_eq!(size_vint(300), vec![0x41, 0x2C]);
        assert_eq!(id(SEGMENT), vec![0x18, 0x53, 0x80, 0x67]);
        assert_eq!(id(TRACK_ENTRY), vec![0xAE]);
    }

    #[test]
    fn structure_is_ebml_then_open_ended_segment() {
        let v = fake_video();
        let file = mux_matroska(&v);
        let (ebml, size, h) = header(&file);
        assert_eq!(ebml, EBML);
        let ebml_body = &file[h..h + size.unwrap() as usize];
        let doc_type = children(ebml_body)
            .into_iter()
            .find(|(i, _)| *i == DOC_TYPE)
            .unwrap()
            .1;
        assert_eq!(doc_type, b"matroska");

        let seg = h + ebml_body.len();
        assert_eq!(&file[seg..seg + 4], &[0x18, 0x53, 0x80, 0x67]);
        assert_eq!(&file[seg + 4..seg + 12], &UNKNOWN_SIZE);
        let top = children(&file[seg + 12..]);
        let ids: Vec<u32> = top.iter().map(|(i, _)| *i).collect();
        assert_eq!(ids, vec![INFO, TRACKS, CLUSTER, CLUSTER]); // keyframes at 0 and 10

        let info = children(top[0].1);
        let duration = info.iter().find(|(i, _)| *i == DURATION).unwrap().1;
        assert_eq!(f64::from_be_bytes(duration.try_into().unwrap()), 10_000.0);

        // Second cluster starts at frame 10 = 5 s; its first block is a keyframe.
        let second = children(top[3].1);
        assert_eq!(second[0], (CLUSTER_TIMESTAMP, &[0x13, 0x88][..]));
        let block = second[1].1;
        assert_eq!(second[1].0, SIMPLE_BLOCK);
        assert_eq!(&block[..4], &[0x81, 0, 0, 0x80]);
        assert_eq!(&block[4..14], &[0, 0, 0, 6, 0x65, 1, 2, 3, 4, 5]);
        // The next block is 500 ms later and not a keyframe.
        assert_eq!(&second[2].1[..4], &[0x81, 0x01, 0xF4, 0x00]);
    }

    #[test]
    fn codec_private_is_the_avcc_record() {
        let v = fake_video();
        let file = mux_matroska(&v);
        let avcc = v.avc_decoder_configuration();
        assert!(file.windows(avcc.len()).any(|w| w == avcc));
        assert!(file.windows(15).any(|w| w == b"V_MPEG4/ISO/AVC"));
    }
}
