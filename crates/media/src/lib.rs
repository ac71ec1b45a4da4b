//! The warning media: a short police-warning video and still images of the
//! same text, rendered from per-language [`Script`]s.
//!
//! Everything here is deterministic: the same scripts, options and side
//! image give the same bytes, so a decoy's content (and therefore its info
//! hash) does not change between runs or restarts. Fonts (DejaVu Sans and
//! Sans Bold, licence in `assets/DejaVu-LICENSE.txt`) are embedded; nothing
//! is read from the system at run time.
//!
//! The pipeline is
//! [`render_slide`] / [`render_poster`] → [`RgbFrame`] →
//! [`encode_video`] (H.264 constrained baseline via OpenH264) →
//! [`mux_mp4`] / [`mux_matroska`] / [`mux_avi`], or [`encode_still`] for
//! JPEG, PNG, GIF and BMP.
//!
//! Not here: choosing which file a decoy gets, appending payload bytes after
//! a container, or serving anything (`warnseed-payload`, `warnseed-seeder`).
//! The muxers write only what the warning video needs (one H.264 track, no
//! audio, no B-frames); they are not general-purpose.
#![forbid(unsafe_code)]

mod avi;
mod h264;
mod matroska;
mod mp4;
mod render;
mod script;
mod still;

pub use avi::mux_avi;
pub use h264::{encode_video, EncodedFrame, EncodedVideo};
pub use matroska::mux_matroska;
pub use mp4::mux_mp4;
pub use render::{render_poster, render_slide, RenderOptions};
pub use script::Script;
pub use still::{decode_image, encode_still, StillFormat};

/// An 8-bit RGB image, rows top to bottom, no padding:
/// `rgb.len() == width * height * 3`.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

impl std::fmt::Debug for RgbFrame {
    // The pixel buffer is hundreds of kilobytes; printing it helps nobody.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RgbFrame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("rgb_len", &self.rgb.len())
            .finish()
    }
}

impl RgbFrame {
    /// A frame of one colour.
    pub fn filled(width: u32, height: u32, colour: [u8; 3]) -> RgbFrame {
        let pixels = width as usize * height as usize;
        let mut rgb = Vec::with_capacity(pixels * 3);
        for _ in 0..pixels {
            rgb.extend_from_slice(&colour);
        }
        RgbFrame { width, height, rgb }
    }

    /// Whether the buffer length matches the dimensions.
    pub fn is_consistent(&self) -> bool {
        self.rgb.len() as u64 == u64::from(self.width) * u64::from(self.height) * 3
    }
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// A script file is not valid TOML or lacks a key.
    #[error("script: {0}")]
    ScriptToml(#[from] toml::de::Error),
    /// A script parsed but a field is unusable (for example an empty heading).
    #[error("script: {0}")]
    ScriptInvalid(String),
    /// Render options the encoder or renderer cannot honour.
    #[error("render options: {0}")]
    InvalidOptions(String),
    /// `encode_video` was given no slides.
    #[error("no slides to encode")]
    NoSlides,
    /// A slide's size differs from the render options (or its buffer from its size).
    #[error("slide {index} is {width}x{height} ({len} bytes); expected {expected_width}x{expected_height}")]
    SlideSize {
        index: usize,
        width: u32,
        height: u32,
        len: usize,
        expected_width: u32,
        expected_height: u32,
    },
    /// OpenH264 refused or produced something unusable.
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    /// The image crate failed to encode or decode.
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    /// An image in a format other than PNG or JPEG was offered as side image.
    #[error("unsupported image format: {0} (PNG or JPEG expected)")]
    UnsupportedImage(String),
}

/// Length of a buffer as the 32-bit field every container here uses.
///
/// The video is at most 30 s of one small H.264 track, so no field comes
/// near 4 GiB; saturating instead of panicking keeps hand-built
/// [`EncodedVideo`]s from crashing a muxer.
fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
