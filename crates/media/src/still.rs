//! Still images: encoding posters and decoding the operator's side image.

use std::io::Cursor;

use image::codecs::bmp::BmpEncoder;
use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageFormat, ImageReader, Limits};

use crate::{MediaError, RgbFrame};

/// JPEG quality: high enough that text edges do not ring visibly.
const JPEG_QUALITY: u8 = 90;
/// GIF palette quantiser speed (1 best … 30 fastest). 10 is the library's
/// default trade-off; the picture has few colours anyway.
const GIF_SPEED: i32 = 10;
/// Largest side image accepted, per side; a photo larger than this is a
/// mistake or a decompression bomb.
const MAX_SIDE_IMAGE: u32 = 8192;

/// Still image formats [`encode_still`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StillFormat {
    Jpeg,
    Png,
    Gif,
    Bmp,
}

/// Encodes a frame as a still image. Encoders write no timestamps, so the
/// same frame gives the same bytes.
pub fn encode_still(frame: &RgbFrame, format: StillFormat) -> Result<Vec<u8>, MediaError> {
    if !frame.is_consistent() {
        return Err(MediaError::InvalidOptions(format!(
            "frame {}x{} has {} bytes",
            frame.width,
            frame.height,
            frame.rgb.len()
        )));
    }
    let mut out = Vec::new();
    let (w, h, rgb) = (frame.width, frame.height, frame.rgb.as_slice());
    match format {
        StillFormat::Jpeg => JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY).write_image(
            rgb,
            w,
            h,
            ExtendedColorType::Rgb8,
        )?,
        StillFormat::Png => PngEncoder::new(&mut out).write_image(rgb, w, h, ExtendedColorType::Rgb8)?,
        StillFormat::Bmp => BmpEncoder::new(&mut out).write_image(rgb, w, h, ExtendedColorType::Rgb8)?,
        StillFormat::Gif => {
            // GIF has no RGB mode; the encoder quantises RGBA to a palette.
            let mut rgba = Vec::with_capacity(rgb.len() / 3 * 4);
            for p in rgb.chunks_exact(3) {
                rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
            }
            let mut encoder = GifEncoder::new_with_speed(&mut out, GIF_SPEED);
            encoder.encode(&rgba, w, h, ExtendedColorType::Rgba8)?;
        }
    }
    Ok(out)
}

/// Decodes the operator's side image (PNG or JPEG) to RGB.
pub fn decode_image(bytes: &[u8]) -> Result<RgbFrame, MediaError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| MediaError::Image(image::ImageError::IoError(e)))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => return Err(MediaError::UnsupportedImage(format!("{other:?}"))),
        None => return Err(MediaError::UnsupportedImage("unrecognised".into())),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE_IMAGE);
    limits.max_image_height = Some(MAX_SIDE_IMAGE);
    let mut reader = reader;
    reader.limits(limits);
    let rgb = reader.decode()?.into_rgb8();
    Ok(RgbFrame {
        width: rgb.width(),
        height: rgb.height(),
        rgb: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_frame() -> RgbFrame {
        let mut f = RgbFrame::filled(40, 30, [8, 18, 44]);
        for x in 5..35 {
            let i = (15 * 40 + x) * 3;
            f.rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
        }
        f
    }

    #[test]
    fn each_format_has_its_signature_and_is_deterministic() {
        let f = test_frame();
        let cases: [(StillFormat, &[u8]); 4] = [
            (StillFormat::Jpeg, &[0xFF, 0xD8, 0xFF]),
            (StillFormat::Png, b"\x89PNG"),
            (StillFormat::Gif, b"GIF8"),
            (StillFormat::Bmp, b"BM"),
        ];
        for (format, magic) in cases {
            let a = encode_still(&f, format).unwrap();
            assert!(a.starts_with(magic), "{format:?}");
            assert_eq!(a, encode_still(&f, format).unwrap(), "{format:?} deterministic");
        }
    }

    #[test]
    fn png_and_jpeg_round_trip_through_decode() {
        let f = test_frame();
        let png = decode_image(&encode_still(&f, StillFormat::Png).unwrap()).unwrap();
        assert_eq!(png, f);
        let jpeg = decode_image(&encode_still(&f, StillFormat::Jpeg).unwrap()).unwrap();
        assert_eq!((jpeg.width, jpeg.height), (40, 30));
    }

    #[test]
    fn other_formats_and_garbage_are_rejected() {
        let gif = encode_still(&test_frame(), StillFormat::Gif).unwrap();
        assert!(matches!(decode_image(&gif), Err(MediaError::UnsupportedImage(_))));
        assert!(matches!(
            decode_image(b"not an image"),
            Err(MediaError::UnsupportedImage(_))
        ));
        let mut png = encode_still(&test_frame(), StillFormat::Png).unwrap();
        png.truncate(60);
        assert!(matches!(decode_image(&png), Err(MediaError::Image(_))));
    }

    #[test]
    fn inconsistent_frame_is_an_error() {
        let f = RgbFrame {
            width: 10,
            height: 10,
            rgb: vec![0; 5],
        };
        assert!(encode_still(&f, StillFormat::Png).is_err());
    }
}
