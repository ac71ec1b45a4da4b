//! MP4 (ISO/IEC 14496-12 / -14 / -15) with one H.264 track.
//!
//! Layout: `ftyp`, `moov`, `mdat` — the index comes before the media
//! ("fast start") so a player can start from the first bytes of a partial
//! download. All samples sit in one chunk, so `stsc` and `stco` have one
//! entry each.

use crate::{len_u32, EncodedVideo};

/// Movie timescale: `mvhd`/`tkhd` durations are in milliseconds.
const MOVIE_TIMESCALE: u32 = 1000;
/// Media ticks per frame; the media timescale is `fps * TICKS_PER_FRAME`,
/// so every frame has the same whole-number duration at any integer fps.
const TICKS_PER_FRAME: u32 = 1000;

/// Muxes the stream into a fast-start MP4.
pub fn mux_mp4(v: &EncodedVideo) -> Vec<u8> {
    let samples: Vec<Vec<u8>> = v.frames.iter().map(|f| length_prefixed(&f.nals)).collect();

    let ftyp = make_box(b"ftyp", &{
        let mut b = Vec::new();
        b.extend_from_slice(b"isom"); // major brand
        b.extend_from_slice(&512u32.to_be_bytes()); // minor version, as ffmpeg writes
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            b.extend_from_slice(brand);
        }
        b
    });

    // stco needs the absolute offset of the first sample, which depends on
    // the size of moov itself; the offset field has a fixed width, so build
    // moov once to learn its size, then again with the real offset.
    let probe = moov(v, &samples, 0);
    let data_offset = ftyp.len() + probe.len() + 8; // + mdat header
    let moov = moov(v, &samples, len_u32(data_offset));

    let payload: usize = samples.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(data_offset + payload);
    out.extend_from_slice(&ftyp);
    out.extend_from_slice(&moov);
    out.extend_from_slice(&len_u32(payload + 8).to_be_bytes());
    out.extend_from_slice(b"mdat");
    for s in &samples {
        out.extend_from_slice(s);
    }
    out
}

/// MP4 samples carry NAL units with a 4-byte big-endian length instead of
/// start codes (lengthSizeMinusOne = 3 in avcC).
pub(crate) fn length_prefixed(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for nal in nals {
        out.extend_from_slice(&len_u32(nal.len()).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

fn make_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&len_u32(body.len() + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

/// A "full box": version 0 and 24 bits of flags before the body.
fn full_box(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(body.len() + 4);
    b.extend_from_slice(&(flags & 0x00FF_FFFF).to_be_bytes());
    b.extend_from_slice(body);
    make_box(kind, &b)
}

/// Unity transformation matrix (16.16 and 2.30 fixed point).
const MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

fn moov(v: &EncodedVideo, samples: &[Vec<u8>], data_offset: u32) -> Vec<u8> {
    let fps = v.fps.max(1);
    let frames = len_u32(samples.len());
    let movie_duration = len_u32((u64::from(frames) * u64::from(MOVIE_TIMESCALE) / u64::from(fps)) as usize);
    let media_timescale = fps.saturating_mul(TICKS_PER_FRAME);
    let media_duration = frames.saturating_mul(TICKS_PER_FRAME);

    // Times are zero: the file's bytes must not depend on when it was made.
    let mvhd = full_box(b"mvhd", 0, &{
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_be_bytes()); // creation_time
        b.extend_from_slice(&0u32.to_be_bytes()); // modification_time
        b.extend_from_slice(&MOVIE_TIMESCALE.to_be_bytes());
        b.extend_from_slice(&movie_duration.to_be_bytes());
        b.extend_from_slice(&0x0001_0000u32.to_be_bytes()); // rate 1.0
        b.extend_from_slice(&0x0100u16.to_be_bytes()); // volume 1.0
        b.extend_from_slice(&[0; 10]); // reserved
        MATRIX.iter().for_each(|m| b.extend_from_slice(&m.to_be_bytes()));
        b.extend_from_slice(&[0; 24]); // pre_defined
        b.extend_from_slice(&2u32.to_be_bytes()); // next_track_ID
        b
    });

    // flags 3 = track_enabled | track_in_movie.
    let tkhd = full_box(b"tkhd", 3, &{
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_be_bytes()); // creation_time
        b.extend_from_slice(&0u32.to_be_bytes()); // modification_time
        b.extend_from_slice(&1u32.to_be_bytes()); // track_ID
        b.extend_from_slice(&0u32.to_be_bytes()); // reserved
        b.extend_from_slice(&movie_duration.to_be_bytes()); // in the movie timescale
        b.extend_from_slice(&[0; 8]); // reserved
        b.extend_from_slice(&0u16.to_be_bytes()); // layer
        b.extend_from_slice(&0u16.to_be_bytes()); // alternate_group
        b.extend_from_slice(&0u16.to_be_bytes()); // volume: 0 for video
        b.extend_from_slice(&0u16.to_be_bytes()); // reserved
        MATRIX.iter().for_each(|m| b.extend_from_slice(&m.to_be_bytes()));
        b.extend_from_slice(&(v.width << 16).to_be_bytes()); // 16.16 fixed point
        b.extend_from_slice(&(v.height << 16).to_be_bytes());
        b
    });

    let mdhd = full_box(b"mdhd", 0, &{
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_be_bytes()); // creation_time
        b.extend_from_slice(&0u32.to_be_bytes()); // modification_time
        b.extend_from_slice(&media_timescale.to_be_bytes());
        b.extend_from_slice(&media_duration.to_be_bytes());
        // Language "und" packed as three 5-bit letters (each minus 0x60).
        let und =
            ((u16::from(b'u') - 0x60) << 10) | ((u16::from(b'n') - 0x60) << 5) | (u16::from(b'd') - 0x60);
        b.extend_from_slice(&und.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes()); // pre_defined
        b
    });

    let hdlr = full_box(b"hdlr", 0, &{
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_be_bytes()); // pre_defined
        b.extend_from_slice(b"vide"); // handler_type
        b.extend_from_slice(&[0; 12]); // reserved
        b.extend_from_slice(b"VideoHandler\0");
        b
    });

    // vmhd's flags must be 1 (a quirk of the spec); graphicsmode/opcolor 0.
    let vmhd = full_box(b"vmhd", 1, &[0; 8]);
    // One data reference, flag 1 = "the media is in this file".
    let dinf = make_box(
        b"dinf",
        &full_box(b"dref", 0, &{
            let mut b = 1u32.to_be_bytes().to_vec();
            b.extend_from_slice(&full_box(b"url ", 1, &[]));
            b
        }),
    );

    let stbl = make_box(
        b"stbl",
        &[
            stsd(v),
            // Constant frame rate: one run of `frames` samples, each one frame long.
            full_box(
                b"stts",
                0,
                &[1u32, frames, TICKS_PER_FRAME].map(u32::to_be_bytes).concat(),
            ),
            // Sync samples (1-based): the IDRs. Without stss every sample would
            // count as a keyframe and seeking would land on P-frames.
            full_box(b"stss", 0, &{
                let keys: Vec<u32> = v
                    .frames
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.keyframe)
                    .map(|(i, _)| len_u32(i + 1))
                    .collect();
                let mut b = len_u32(keys.len()).to_be_bytes().to_vec();
                keys.iter().for_each(|k| b.extend_from_slice(&k.to_be_bytes()));
                b
            }),
            // All samples in chunk 1, sample description 1.
            full_box(b"stsc", 0, &[1u32, 1, frames, 1].map(u32::to_be_bytes).concat()),
            full_box(b"stsz", 0, &{
                let mut b = 0u32.to_be_bytes().to_vec(); // sample_size 0: sizes listed
                b.extend_from_slice(&frames.to_be_bytes());
                samples
                    .iter()
                    .for_each(|s| b.extend_from_slice(&len_u32(s.len()).to_be_bytes()));
                b
            }),
            full_box(b"stco", 0, &[1u32, data_offset].map(u32::to_be_bytes).concat()),
        ]
        .concat(),
    );

    let minf = make_box(b"minf", &[vmhd, dinf, stbl].concat());
    let mdia = make_box(b"mdia", &[mdhd, hdlr, minf].concat());
    let trak = make_box(b"trak", &[tkhd, mdia].concat());
    make_box(b"moov", &[mvhd, trak].concat())
}

fn stsd(v: &EncodedVideo) -> Vec<u8> {
    let avc1 = make_box(b"avc1", &{
        let mut b = Vec::new();
        b.extend_from_slice(&[0; 6]); // reserved
        b.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
        b.extend_from_slice(&[0; 16]); // pre_defined / reserved
        b.extend_from_slice(&(v.width.min(0xFFFF) as u16).to_be_bytes());
        b.extend_from_slice(&(v.height.min(0xFFFF) as u16).to_be_bytes());
        b.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi horizontally
        b.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi vertically
        b.extend_from_slice(&0u32.to_be_bytes()); // reserved
        b.extend_from_slice(&1u16.to_be_bytes()); // frame_count per sample
        b.extend_from_slice(&[0; 32]); // compressorname: empty Pascal string
        b.extend_from_slice(&0x0018u16.to_be_bytes()); // depth: colour, no alpha
        b.extend_from_slice(&(-1i16).to_be_bytes()); // pre_defined
        b.extend_from_slice(&make_box(b"avcC", &v.avc_decoder_configuration()));
        b
    });
    let mut body = 1u32.to_be_bytes().to_vec(); // entry_count
    body.extend_from_slice(&avc1);
    full_box(b"stsd", 0, &body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::EncodedFrame;

    /// A fake stream: the muxers only copy NAL bytes, so they need not decode.
    pub(crate) fn fake_video() -> EncodedVideo {
        let mut frames = Vec::new();
        for i in 0..20 {
            let keyframe = i % 10 == 0;
            let nal = if keyframe {
                vec![0x65, 1, 2, 3, 4, 5]
            } else {
                vec![0x41, i as u8]
            };
            frames.push(EncodedFrame {
                nals: vec![nal],
                keyframe,
            });
        }
        EncodedVideo {
            width: 64,
            height: 48,
            fps: 2,
            sps: vec![0x67, 66, 0xC0, 30, 9],
            pps: vec![0x68, 0xCE],
            frames,
        }
    }

    /// Top-level boxes as (type, offset, size).
    fn top_level(file: &[u8]) -> Vec<([u8; 4], usize, usize)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at + 8 <= file.len() {
            let size = u32::from_be_bytes(file[at..at + 4].try_into().unwrap()) as usize;
            out.push((file[at + 4..at + 8].try_into().unwrap(), at, size));
            assert!(size >= 8);
            at += size;
        }
        assert_eq!(at, file.len(), "boxes tile the file");
        out
    }

    fn find(file: &[u8], kind: &[u8; 4]) -> usize {
        file.windows(4).position(|w| w == kind).expect("box present") - 4
    }

    #[test]
    fn layout_is_ftyp_moov_mdat_and_stco_points_at_the_first_sample() {
        let v = fake_video();
        let file = mux_mp4(&v);
        let boxes = top_level(&file);
        let kinds: Vec<&[u8; 4]> = boxes.iter().map(|(k, _, _)| k).collect();
        assert_eq!(kinds, vec![b"ftyp", b"moov", b"mdat"]);
        assert_eq!(&file[8..12], b"isom");
        let stco = find(&file, b"stco");
        let offset = u32::from_be_bytes(file[stco + 16..stco + 20].try_into().unwrap()) as usize;
        assert_eq!(offset, boxes[2].1 + 8);
        // First sample: 4-byte length then the IDR NAL.
        assert_eq!(&file[offset..offset + 10], &[0, 0, 0, 6, 0x65, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn durations_and_sync_samples_are_right() {
        let v = fake_video();
        let file = mux_mp4(&v);
        let mvhd = find(&file, b"mvhd");
        let u32_at = |i: usize| u32::from_be_bytes(file[i..i + 4].try_into().unwrap());
        assert_eq!(u32_at(mvhd + 20), 1000); // timescale
        assert_eq!(u32_at(mvhd + 24), 10_000); // 20 frames at 2 fps = 10 s
        let tkhd = find(&file, b"tkhd");
        assert_eq!(u32_at(tkhd + 28), 10_000);
        let mdhd = find(&file, b"mdhd");
        assert_eq!(u32_at(mdhd + 20), 2000);
        assert_eq!(u32_at(mdhd + 24), 20_000);
        let stss = find(&file, b"stss");
        assert_eq!(u32_at(stss + 12), 2);
        assert_eq!((u32_at(stss + 16), u32_at(stss + 20)), (1, 11));
        let stsz = find(&file, b"stsz");
        assert_eq!(u32_at(stsz + 16), 20);
        assert_eq!(u32_at(stsz + 20), 10); // 4 + 6
    }

    #[test]
    fn avcc_carries_sps_and_pps() {
        let v = fake_video();
        let file = mux_mp4(&v);
        let avcc = find(&file, b"avcC") + 8;
        assert_eq!(&file[avcc..avcc + 6], &[1, 66, 0xC0, 30, 0xFF, 0xE1]);
        assert_eq!(&file[avcc + 6..avcc + 8], &[0, 5]);
        assert_eq!(&file[avcc + 8..avcc + 13], &v.sps[..]);
    }
}
