//! AVI (RIFF) with one H.264 stream.
//!
//! H.264 in AVI has no codec-private field that players agree on, so the
//! stream is stored as Annex B (start codes) with SPS and PPS repeated in
//! front of every keyframe: each keyframe chunk decodes on its own. The
//! RIFF size covers exactly the bytes written, so anything appended later
//! lies outside the RIFF and readers stop before it.

use crate::{len_u32, EncodedVideo};

/// avih.dwFlags: the file has an idx1 index.
const AVIF_HASINDEX: u32 = 0x10;
/// idx1 flag: the chunk is a keyframe.
const AVIIF_KEYFRAME: u32 = 0x10;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Muxes the stream into AVI.
pub fn mux_avi(v: &EncodedVideo) -> Vec<u8> {
    let fps = v.fps.max(1);
    let chunks: Vec<Vec<u8>> = v
        .frames
        .iter()
        .map(|f| {
            let mut data = Vec::new();
            if f.keyframe {
                for ps in [&v.sps, &v.pps] {
                    data.extend_from_slice(&START_CODE);
                    data.extend_from_slice(ps);
                }
            }
            for nal in &f.nals {
                data.extend_from_slice(&START_CODE);
                data.extend_from_slice(nal);
            }
            data
        })
        .collect();
    let frames = len_u32(chunks.len());
    let largest = len_u32(chunks.iter().map(Vec::len).max().unwrap_or(0));

    let avih = chunk(b"avih", &{
        let mut b = Vec::new();
        for field in [
            1_000_000 / fps,             // dwMicroSecPerFrame
            largest.saturating_mul(fps), // dwMaxBytesPerSec: an upper bound
            0,                           // dwPaddingGranularity
            AVIF_HASINDEX,               // dwFlags
            frames,                      // dwTotalFrames
            0,                           // dwInitialFrames
            1,                           // dwStreams
            largest,                     // dwSuggestedBufferSize: one chunk fits
            v.width,                     // dwWidth
            v.height,                    // dwHeight
            0,
            0,
            0,
            0, // dwReserved
        ] {
            b.extend_from_slice(&field.to_le_bytes());
        }
        b
    });

    let strh = chunk(b"strh", &{
        let mut b = Vec::new();
        b.extend_from_slice(b"vids"); // fccType
        b.extend_from_slice(b"H264"); // fccHandler
        b.extend_from_slice(&0u32.to_le_bytes()); // dwFlags
        b.extend_from_slice(&0u16.to_le_bytes()); // wPriority
        b.extend_from_slice(&0u16.to_le_bytes()); // wLanguage
        for field in [
            0,        // dwInitialFrames
            1,        // dwScale: rate/scale = fps
            fps,      // dwRate
            0,        // dwStart
            frames,   // dwLength, in dwScale/dwRate units = frames
            largest,  // dwSuggestedBufferSize
            u32::MAX, // dwQuality: -1 = driver default
            0,        // dwSampleSize: 0 = variable-size samples
        ] {
            b.extend_from_slice(&field.to_le_bytes());
        }
        // rcFrame: left, top, right, bottom.
        for edge in [0, 0, v.width.min(0x7FFF) as i16, v.height.min(0x7FFF) as i16] {
            b.extend_from_slice(&edge.to_le_bytes());
        }
        b
    });

    // BITMAPINFOHEADER; biCompression names the codec.
    let strf = chunk(b"strf", &{
        let mut b = Vec::new();
        b.extend_from_slice(&40u32.to_le_bytes()); // biSize
        b.extend_from_slice(&v.width.to_le_bytes()); // biWidth
        b.extend_from_slice(&v.height.to_le_bytes()); // biHeight (positive; no meaning for H.264)
        b.extend_from_slice(&1u16.to_le_bytes()); // biPlanes
        b.extend_from_slice(&24u16.to_le_bytes()); // biBitCount
        b.extend_from_slice(b"H264"); // biCompression
        b.extend_from_slice(&v.width.saturating_mul(v.height).saturating_mul(3).to_le_bytes()); // biSizeImage
        b.extend_from_slice(&[0; 16]); // pels per metre x/y, colours used/important
        b
    });

    let strl = list(b"strl", &[strh, strf].concat());
    let hdrl = list(b"hdrl", &[avih, strl].concat());

    // movi, and idx1 entries pointing into it. Offsets count from the
    // 'movi' fourcc, the convention most readers expect.
    let mut movi = Vec::new();
    let mut idx1 = Vec::new();
    for (data, frame) in chunks.iter().zip(&v.frames) {
        let offset = len_u32(movi.len() + 4);
        idx1.extend_from_slice(b"00dc"); // stream 0, compressed video
        idx1.extend_from_slice(&(if frame.keyframe { AVIIF_KEYFRAME } else { 0 }).to_le_bytes());
        idx1.extend_from_slice(&offset.to_le_bytes());
        idx1.extend_from_slice(&len_u32(data.len()).to_le_bytes());
        movi.extend_from_slice(&chunk(b"00dc", data));
    }
    let movi = list(b"movi", &movi);
    let idx1 = chunk(b"idx1", &idx1);

    let mut body = b"AVI ".to_vec();
    body.extend_from_slice(&hdrl);
    body.extend_from_slice(&movi);
    body.extend_from_slice(&idx1);
    chunk(b"RIFF", &body)
}

/// A RIFF chunk: fourcc, little-endian size, data, and a pad byte to keep
/// the next chunk word-aligned (the pad is not counted in the size).
fn chunk(fourcc: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 9);
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&len_u32(data.len()).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

fn list(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    chunk(b"LIST", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mp4::tests::fake_video;

    fn u32_at(b: &[u8], i: usize) -> u32 {
        u32::from_le_bytes(b[i..i + 4].try_into().unwrap())
    }

    #[test]
    fn riff_size_is_exactly_the_file() {
        let file = mux_avi(&fake_video());
        assert_eq!(&file[..4], b"RIFF");
        assert_eq!(&file[8..12], b"AVI ");
        assert_eq!(u32_at(&file, 4) as usize + 8, file.len());
    }

    #[test]
    fn headers_name_h264_and_count_frames() {
        let v = fake_video();
        let file = mux_avi(&v);
        let avih = file.windows(4).position(|w| w == b"avih").unwrap() + 8;
        assert_eq!(u32_at(&file, avih), 500_000); // 2 fps
        assert_eq!(u32_at(&file, avih + 16), 20);
        let strh = file.windows(4).position(|w| w == b"strh").unwrap() + 8;
        assert_eq!(&file[strh..strh + 8], b"vidsH264");
        let strf = file.windows(4).position(|w| w == b"strf").unwrap() + 8;
        assert_eq!(&file[strf + 16..strf + 20], b"H264");
        assert_eq!(u32_at(&file, strf + 4), 64);
    }

    #[test]
    fn index_points_at_chunks_and_flags_keyframes() {
        let v = fake_video();
        let file = mux_avi(&v);
        let movi = file.windows(4).position(|w| w == b"movi").unwrap();
        let idx1 = file.windows(4).rposition(|w| w == b"idx1").unwrap();
        assert_eq!(u32_at(&file, idx1 + 4), 16 * 20);
        for i in 0..20 {
            let e = idx1 + 8 + i * 16;
            assert_eq!(&file[e..e + 4], b"00dc");
            let key = u32_at(&file, e + 4) == AVIIF_KEYFRAME;
            assert_eq!(key, v.frames[i].keyframe);
            let at = movi + u32_at(&file, e + 8) as usize;
            assert_eq!(&file[at..at + 4], b"00dc");
            assert_eq!(u32_at(&file, at + 4), u32_at(&file, e + 12));
            if key {
                // SPS, PPS, then the IDR, each behind a start code.
                let data = &file[at + 8..];
                assert_eq!(&data[..9], &[0, 0, 0, 1, 0x67, 66, 0xC0, 30, 9]);
                assert_eq!(&data[9..15], &[0, 0, 0, 1, 0x68, 0xCE]);
                assert_eq!(&data[15..20], &[0, 0, 0, 1, 0x65]);
            }
        }
    }
}
