//! Image decoding for everything setr ingests: JPEG, PNG, WebP, GIF (first frame), BMP and
//! TIFF, EXIF orientation applied, alpha composited on white, and a pixel limit checked
//! from the header before any pixel buffer is allocated.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::{ModelError, Result};

/// Default pixel limit: 64 megapixels (an 8k x 8k photo). Larger headers are refused.
pub const DEFAULT_MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Limits applied while decoding untrusted bytes.
#[derive(Clone, Copy, Debug)]
pub struct DecodeLimits {
    /// Largest width * height accepted (checked on the header, before decoding).
    pub max_pixels: u64,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_alloc: DEFAULT_MAX_PIXELS * 8,
        }
    }
}

/// Formats setr decodes.
const SUPPORTED: [ImageFormat; 6] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
    ImageFormat::Tiff,
];

/// Decodes `bytes` into an upright RGB8 image: the format is sniffed from the content (not
/// from a file name), the header's size is checked against `limits` first, EXIF
/// orientation is applied and alpha is composited on white with
/// `out = (c * a + 255 * (255 - a) + 127) / 255`.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(ModelError::Decode("empty input (0 bytes)".into()));
    }
    let format = image::guess_format(bytes).map_err(|_| {
        ModelError::UnsupportedFormat(": not a JPEG, PNG, WebP, GIF, BMP or TIFF".into())
    })?;
    if !SUPPORTED.contains(&format) {
        return Err(ModelError::UnsupportedFormat(format!(" {format:?}")));
    }
    if format == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // The JPEG decoder fills a truncated scan with grey instead of failing; a cut-off
        // upload must be refused, not indexed half grey.
        return Err(ModelError::Decode(
            "truncated JPEG (no end-of-image marker after the last scan)".into(),
        ));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ModelError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ModelError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    if pixels == 0 {
        return Err(ModelError::Decode(format!("image is {width}x{height}")));
    }
    // A missing or unreadable EXIF block is not an error: the image is shown as stored.
    let orientation = decoder.orientation().ok();
    let mut image =
        DynamicImage::from_decoder(decoder).map_err(|e| ModelError::Decode(e.to_string()))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(to_rgb_on_white(image))
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan (FF DA). Inside
/// entropy-coded data a literal FF is always followed by 00 or a restart marker, so an FF
/// D9 after the last scan header can only be the real end of the image.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(pos) => bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

/// Reads and decodes a file (see [`decode_image`]).
pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
    decode_image(&bytes, limits)
}

/// RGB8 from any colour type; alpha composited on white, 16-bit and float reduced to 8 bits.
fn to_rgb_on_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut out = RgbImage::new(width, height);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            let v = (u32::from(src[c]) * a + 255 * (255 - a) + 127) / 255;
            dst[c] = v as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(image: &DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn alpha_is_composited_on_white() {
        let mut rgba = image::RgbaImage::new(3, 1);
        rgba.put_pixel(0, 0, image::Rgba([10, 20, 30, 0]));
        rgba.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        rgba.put_pixel(2, 0, image::Rgba([0, 100, 200, 128]));
        let rgb = decode_image(
            &png_bytes(&DynamicImage::ImageRgba8(rgba)),
            &DecodeLimits::default(),
        )
        .unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);
        // (c * 128 + 255 * 127 + 127) / 255 for c = 0, 100, 200.
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 177, 227]);
    }

    #[test]
    fn pixel_limit_is_checked_before_decoding() {
        let image = DynamicImage::ImageRgb8(RgbImage::new(40, 30));
        let limits = DecodeLimits {
            max_pixels: 1000,
            ..DecodeLimits::default()
        };
        let err = decode_image(&png_bytes(&image), &limits).unwrap_err();
        assert!(
            matches!(err, ModelError::TooManyPixels { pixels: 1200, .. }),
            "{err}"
        );
    }

    #[test]
    fn garbage_and_empty_inputs_are_clear_errors() {
        assert!(matches!(
            decode_image(b"", &DecodeLimits::default()),
            Err(ModelError::Decode(_))
        ));
        assert!(matches!(
            decode_image(b"hello, not an image", &DecodeLimits::default()),
            Err(ModelError::UnsupportedFormat(_))
        ));
    }
}
