//! H.264 encoding of the slides through OpenH264.
//!
//! The slides are still pictures, so the stream is one IDR per slide
//! followed by P-frames that repeat it (a few bytes each). Rate control is
//! off, so every picture is coded at OpenH264's fixed base QP (26) and the
//! bytes depend only on the pixels; the encoder runs single-threaded so
//! no slice threading can reorder its work.
//!
//! Why QP 26 and no other: the `openh264` crate does not expose the QP
//! used with rate control off. The alternative, quality mode with the QP
//! range pinned, needs frame skipping disabled (a skipped frame would break
//! the constant frame rate, and it does skip after a noisy slide), and
//! OpenH264 then prints a warning on stderr at every encoder start. QP 26
//! measured: 24 KB per text-slide IDR at 854x480, decoded PSNR 35.7 dB
//! against the slide (QP 22: 29 KB, 36.6 dB), and the small help line is
//! visibly as sharp at both; 4:2:0 chroma, not quantisation, limits the
//! coloured edges.

use openh264::encoder::{
    Complexity, Encoder, EncoderConfig, FrameType, IntraFramePeriod, Profile, RateControlMode, UsageType,
    VuiConfig,
};
use openh264::formats::YUVBuffer;
use openh264::{OpenH264API, Timestamp};

use crate::{MediaError, RenderOptions, RgbFrame};

/// Shortest and longest total video, in seconds.
const MIN_SECONDS: u64 = 10;
const MAX_SECONDS: u64 = 30;

/// An encoded H.264 stream, ready for a muxer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedVideo {
    pub width: u32,
    pub height: u32,
    /// Constant frame rate; every frame lasts `1 / fps` s.
    pub fps: u32,
    /// Sequence parameter set NAL unit, without start code.
    pub sps: Vec<u8>,
    /// Picture parameter set NAL unit, without start code.
    pub pps: Vec<u8>,
    pub frames: Vec<EncodedFrame>,
}

/// One access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// NAL units without start codes, SPS and PPS left out (they are in
    /// [`EncodedVideo::sps`] / [`EncodedVideo::pps`]).
    pub nals: Vec<Vec<u8>>,
    /// An IDR picture: decoding can start here.
    pub keyframe: bool,
}

impl EncodedVideo {
    /// Duration in milliseconds (frames / fps).
    pub fn duration_ms(&self) -> u64 {
        self.frames.len() as u64 * 1000 / u64::from(self.fps.max(1))
    }

    /// The `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §5.3.3.1): the
    /// `avcC` box body in MP4 and the CodecPrivate in Matroska.
    pub(crate) fn avc_decoder_configuration(&self) -> Vec<u8> {
        let byte = |i: usize| self.sps.get(i).copied().unwrap_or(0);
        let mut out = vec![
            1,       // configurationVersion
            byte(1), // AVCProfileIndication: profile_idc from the SPS
            byte(2), // profile_compatibility: the constraint_set flags
            byte(3), // AVCLevelIndication: level_idc
            0xFF,    // 6 reserved bits set, lengthSizeMinusOne = 3 (4-byte NAL lengths)
            0xE1,    // 3 reserved bits set, numOfSequenceParameterSets = 1
        ];
        out.extend_from_slice(&(crate::len_u32(self.sps.len()) as u16).to_be_bytes());
        out.extend_from_slice(&self.sps);
        out.push(1); // numOfPictureParameterSets
        out.extend_from_slice(&(crate::len_u32(self.pps.len()) as u16).to_be_bytes());
        out.extend_from_slice(&self.pps);
        // Baseline profile: no chroma_format / bit depth extension fields.
        out
    }
}

/// Encodes the slides in order, each shown for `opts.seconds_per_slide`
/// at `opts.fps`, with an IDR at each slide's first frame.
///
/// The total is kept within 10–30 s: if `slides.len() * seconds_per_slide`
/// is shorter every slide is lengthened, if longer every slide is shortened
/// (all slides stay equally long, rounded to whole frames).
pub fn encode_video(slides: &[RgbFrame], opts: &RenderOptions) -> Result<EncodedVideo, MediaError> {
    validate(slides, opts)?;
    let frames_per_slide = frames_per_slide(slides.len() as u64, opts)?;

    let config = EncoderConfig::new()
        .profile(Profile::Baseline)
        // The screen-content modes are 6–7x slower here for the same bytes
        // and quality (and the non-real-time ones are refused by OpenH264
        // 2.x's parameter check).
        .usage_type(UsageType::CameraVideoRealTime)
        .rate_control_mode(RateControlMode::Off)
        // Every input frame must come out as a frame: the containers assume
        // a constant frame rate.
        .skip_frames(false)
        .max_frame_rate(openh264::encoder::FrameRate::from_hz(opts.fps as f32))
        .num_threads(1)
        // IDRs only where we force them (slide starts).
        .intra_frame_period(IntraFramePeriod::from_num_frames(0))
        .scene_change_detect(false)
        .background_detection(false)
        .adaptive_quantization(false)
        .complexity(Complexity::High)
        // The RGB→YUV conversion below is BT.601 limited range; say so in
        // the SPS so players convert back with the same matrix.
        .vui(VuiConfig::bt601());
    let mut encoder = Encoder::with_api_config(OpenH264API::from_source(), config)
        .map_err(|e| MediaError::Encoder(e.to_string()))?;

    let mut sps: Option<Vec<u8>> = None;
    let mut pps: Option<Vec<u8>> = None;
    let mut frames = Vec::with_capacity(slides.len() * frames_per_slide as usize);
    let mut frame_index: u64 = 0;
    for slide in slides {
        let yuv = YUVBuffer::from_vec(rgb_to_i420(slide), slide.width as usize, slide.height as usize);
        for j in 0..frames_per_slide {
            if j == 0 {
                encoder.force_intra_frame();
            }
            let timestamp = Timestamp::from_millis(frame_index * 1000 / u64::from(opts.fps));
            let bitstream = encoder
                .encode_at(&yuv, timestamp)
                .map_err(|e| MediaError::Encoder(e.to_string()))?;
            let mut frame = EncodedFrame {
                nals: Vec::new(),
                keyframe: bitstream.frame_type() == FrameType::IDR,
            };
            let mut has_picture = false;
            for l in 0..bitstream.num_layers() {
                let Some(layer) = bitstream.layer(l) else { continue };
                for n in 0..layer.nal_count() {
                    let Some(nal) = layer.nal_unit(n).map(strip_start_code) else {
                        continue;
                    };
                    match nal.first().map(|b| b & 0x1F) {
                        None => {}
                        Some(7) => set_once(&mut sps, nal, "SPS")?,
                        Some(8) => set_once(&mut pps, nal, "PPS")?,
                        Some(t) => {
                            // 1 = non-IDR slice, 5 = IDR slice.
                            has_picture |= t == 1 || t == 5;
                            frame.keyframe |= t == 5;
                            frame.nals.push(nal.to_vec());
                        }
                    }
                }
            }
            if !has_picture {
                return Err(MediaError::Encoder(format!(
                    "frame {frame_index} produced no picture"
                )));
            }
            if j == 0 && !frame.keyframe {
                return Err(MediaError::Encoder(format!(
                    "slide start frame {frame_index} is not an IDR"
                )));
            }
            frames.push(frame);
            frame_index += 1;
        }
    }
    let (Some(mut sps), Some(pps)) = (sps, pps) else {
        return Err(MediaError::Encoder("no SPS/PPS in the stream".into()));
    };
    mark_constrained_baseline(&mut sps);
    Ok(EncodedVideo {
        width: opts.width,
        height: opts.height,
        fps: opts.fps,
        sps,
        pps,
        frames,
    })
}

fn validate(slides: &[RgbFrame], opts: &RenderOptions) -> Result<(), MediaError> {
    if slides.is_empty() {
        return Err(MediaError::NoSlides);
    }
    if opts.width == 0 || opts.height == 0 || !opts.width.is_multiple_of(2) || !opts.height.is_multiple_of(2)
    {
        return Err(MediaError::InvalidOptions(format!(
            "{}x{}: width and height must be even and non-zero",
            opts.width, opts.height
        )));
    }
    // OpenH264's own limit (level 5.2).
    if opts.width.max(opts.height) > 3840 || opts.width.min(opts.height) > 2160 {
        return Err(MediaError::InvalidOptions(format!(
            "{}x{}: larger than 3840x2160",
            opts.width, opts.height
        )));
    }
    if opts.fps == 0 || opts.fps > 120 {
        return Err(MediaError::InvalidOptions(format!(
            "fps {}: must be 1–120",
            opts.fps
        )));
    }
    for (index, slide) in slides.iter().enumerate() {
        if slide.width != opts.width || slide.height != opts.height || !slide.is_consistent() {
            return Err(MediaError::SlideSize {
                index,
                width: slide.width,
                height: slide.height,
                len: slide.rgb.len(),
                expected_width: opts.width,
                expected_height: opts.height,
            });
        }
    }
    Ok(())
}

/// Frames each slide is shown, with the total fitted into 10–30 s.
fn frames_per_slide(slides: u64, opts: &RenderOptions) -> Result<u64, MediaError> {
    let fps = u64::from(opts.fps);
    let wanted = u64::from(opts.seconds_per_slide) * fps;
    let (min_total, max_total) = (MIN_SECONDS * fps, MAX_SECONDS * fps);
    let per_slide = if slides * wanted < min_total {
        min_total.div_ceil(slides)
    } else if slides * wanted > max_total {
        max_total / slides
    } else {
        wanted
    };
    if per_slide == 0 {
        return Err(MediaError::InvalidOptions(format!(
            "{slides} slides do not fit in {MAX_SECONDS} s at {fps} fps"
        )));
    }
    Ok(per_slide)
}

fn set_once(slot: &mut Option<Vec<u8>>, nal: &[u8], what: &str) -> Result<(), MediaError> {
    match slot {
        None => {
            *slot = Some(nal.to_vec());
            Ok(())
        }
        // Repeated at every IDR; the containers carry one copy, which is
        // only right if they are all the same.
        Some(existing) if existing == nal => Ok(()),
        Some(_) => Err(MediaError::Encoder(format!("{what} changed mid-stream"))),
    }
}

/// OpenH264 hands out Annex-B units (`00 00 00 01` or `00 00 01` first).
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}

/// Sets constraint_set1_flag in a Baseline SPS.
///
/// OpenH264's Baseline never uses FMO, ASO or redundant slices, so its
/// streams already are Constrained Baseline; the flag says so, and players
/// that only accept Constrained Baseline (browsers, phones) then take it.
/// The flag byte follows profile_idc (66 = 0x42), so setting a bit in it
/// cannot create an emulation-prevention pattern.
fn mark_constrained_baseline(sps: &mut [u8]) {
    if sps.len() > 3 && sps[1] == 66 {
        sps[2] |= 0x40;
    }
}

/// RGB to planar YUV 4:2:0, BT.601 limited range, integer arithmetic
/// (the usual 8-bit coefficients), chroma from the mean of each 2x2 block.
fn rgb_to_i420(frame: &RgbFrame) -> Vec<u8> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut out = vec![0u8; w * h * 3 / 2];
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut(w * h / 4);
    let px = |x: usize, y: usize| {
        let i = (y * w + x) * 3;
        (
            i32::from(frame.rgb[i]),
            i32::from(frame.rgb[i + 1]),
            i32::from(frame.rgb[i + 2]),
        )
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            y_plane[y * w + x] = (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8;
        }
    }
    for cy in 0..h / 2 {
        for cx in 0..w / 2 {
            let (mut r, mut g, mut b) = (0, 0, 0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let (pr, pg, pb) = px(cx * 2 + dx, cy * 2 + dy);
                r += pr;
                g += pg;
                b += pb;
            }
            let (r, g, b) = ((r + 2) / 4, (g + 2) / 4, (b + 2) / 4);
            u_plane[cy * (w / 2) + cx] = (((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128) as u8;
            v_plane[cy * (w / 2) + cx] = (((112 * r - 94 * g - 18 * b + 128) >> 8) + 128) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seconds: u32) -> RenderOptions {
        RenderOptions {
            seconds_per_slide: seconds,
            ..RenderOptions::default()
        }
    }

    #[test]
    fn total_duration_is_fitted_into_ten_to_thirty_seconds() {
        // 2 x 8 s = 16 s: unchanged.
        assert_eq!(frames_per_slide(2, &opts(8)).unwrap(), 200);
        // 1 x 8 s = 8 s: lengthened to 10 s.
        assert_eq!(frames_per_slide(1, &opts(8)).unwrap(), 250);
        // 3 x 3 s = 9 s: each slide lengthened, total just over 10 s.
        assert_eq!(frames_per_slide(3, &opts(3)).unwrap(), 84);
        // 5 x 8 s = 40 s: shortened to 6 s each.
        assert_eq!(frames_per_slide(5, &opts(8)).unwrap(), 150);
        // 0 s per slide still gives 10 s.
        assert_eq!(frames_per_slide(2, &opts(0)).unwrap(), 125);
        // More slides than frames in 30 s cannot be encoded.
        assert!(frames_per_slide(751, &opts(8)).is_err());
    }

    #[test]
    fn conversion_matches_bt601_reference_values() {
        let white = RgbFrame::filled(2, 2, [255, 255, 255]);
        assert_eq!(rgb_to_i420(&white), vec![235, 235, 235, 235, 128, 128]);
        let black = RgbFrame::filled(2, 2, [0, 0, 0]);
        assert_eq!(rgb_to_i420(&black), vec![16, 16, 16, 16, 128, 128]);
        let red = RgbFrame::filled(2, 2, [255, 0, 0]);
        assert_eq!(rgb_to_i420(&red), vec![82, 82, 82, 82, 90, 240]);
    }

    #[test]
    fn start_codes_are_stripped() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67, 1]), &[0x67, 1]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68]), &[0x68]);
        assert_eq!(strip_start_code(&[0x65, 0]), &[0x65, 0]);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let o = RenderOptions::default();
        assert!(matches!(encode_video(&[], &o), Err(MediaError::NoSlides)));
        let small = RgbFrame::filled(16, 16, [0, 0, 0]);
        assert!(matches!(
            encode_video(&[small], &o),
            Err(MediaError::SlideSize { index: 0, .. })
        ));
        let odd = RenderOptions {
            width: 15,
            height: 16,
            ..RenderOptions::default()
        };
        let f = RgbFrame::filled(15, 16, [0, 0, 0]);
        assert!(matches!(
            encode_video(&[f], &odd),
            Err(MediaError::InvalidOptions(_))
        ));
        let no_fps = RenderOptions {
            fps: 0,
            ..RenderOptions::default()
        };
        let f = RgbFrame::filled(854, 480, [0, 0, 0]);
        assert!(matches!(
            encode_video(&[f], &no_fps),
            Err(MediaError::InvalidOptions(_))
        ));
    }

    #[test]
    fn small_video_has_idr_per_slide_and_is_deterministic() {
        let o = RenderOptions {
            width: 64,
            height: 48,
            seconds_per_slide: 5,
            fps: 5,
            side_image: None,
        };
        let a = RgbFrame::filled(64, 48, [255, 255, 255]);
        let b = RgbFrame::filled(64, 48, [0, 0, 80]);
        let v1 = encode_video(&[a.clone(), b.clone()], &o).unwrap();
        let v2 = encode_video(&[a, b], &o).unwrap();
        assert_eq!(v1, v2);
        assert_eq!(v1.frames.len(), 50);
        let keys: Vec<usize> = v1
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| f.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, vec![0, 25]);
        assert_eq!(v1.sps[0] & 0x1F, 7);
        assert_eq!(v1.pps[0] & 0x1F, 8);
        // Constrained Baseline: profile_idc 66 with constraint_set1_flag.
        assert_eq!(v1.sps[1], 66);
        assert_ne!(v1.sps[2] & 0x40, 0);
        assert_eq!(v1.duration_ms(), 10_000);
        let avcc = v1.avc_decoder_configuration();
        assert_eq!(&avcc[..4], &[1, 66, v1.sps[2], v1.sps[3]]);
        assert_eq!(avcc.len(), 6 + 2 + v1.sps.len() + 1 + 2 + v1.pps.len());
    }
}
