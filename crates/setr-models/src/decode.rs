//! Image decoding for everything setr ingests: JPEG, PNG, WebP, GIF (first frame), BMP and
//! TIFF, EXIF orientation applied, alpha composited on white, and a pixel limit checked
//! from the header before any pixel buffer is allocated.
//!
//! Memory holds by construction: the file size is checked before it is read, the pixel
//! count and the decoder's buffer size from the header before decoding, PNG's compressed
//! metadata chunks (which inflate a few KB into hundreds of MB) are dropped before the
//! decoder sees them, and the conversion to RGB8 writes one output buffer, never an
//! intermediate copy. Peak: the file, the decoder's buffer (at most `max_alloc`) and the
//! RGB8 output (3 bytes a pixel).
//!
//! JPEG goes to libjpeg-turbo, Pillow's own decoder (see [`crate::jpeg`]), the other
//! formats to the image crate. 8-bit conversions follow Pillow (what Hugging Face's
//! processors see): 16-bit grey is clipped to 255 (`I;16` to `L`), 16-bit colour and
//! grey-with-alpha keep the high byte.

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
    /// Largest allocation the decoder may make, in bytes (its pixel buffer included:
    /// checked from the header before decoding).
    pub max_alloc: u64,
    /// Largest encoded file read from disk, in bytes (checked before reading).
    pub max_file_bytes: u64,
}

/// Default limit on an encoded file read from disk: 256 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_pixels: DEFAULT_MAX_PIXELS,
            max_alloc: DEFAULT_MAX_PIXELS * 8,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

impl DecodeLimits {
    /// Limits with this pixel limit and the default decoder and file limits.
    pub fn with_max_pixels(max_pixels: u64) -> DecodeLimits {
        DecodeLimits {
            max_pixels,
            ..DecodeLimits::default()
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
    if format == ImageFormat::Jpeg {
        return decode_jpeg(bytes, limits);
    }
    let stripped;
    let bytes = if format == ImageFormat::Png {
        stripped = strip_png_metadata(bytes)?;
        &stripped[..]
    } else {
        bytes
    };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc);
    reader.limits(image_limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| ModelError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    let pixels = check_pixels(width, height, limits)?;
    if pixels == 0 {
        return Err(ModelError::Decode(format!("image is {width}x{height}")));
    }
    if decoder.total_bytes() > limits.max_alloc {
        return Err(ModelError::OverBudget(format!(
            "a {width}x{height} {:?} image decodes to {} bytes, over the limit of {}",
            decoder.color_type(),
            decoder.total_bytes(),
            limits.max_alloc
        )));
    }
    // A missing or unreadable EXIF block is not an error: the image is shown as stored.
    let orientation = decoder.orientation().ok();
    let image =
        DynamicImage::from_decoder(decoder).map_err(|e| ModelError::Decode(e.to_string()))?;
    // Orientation after the conversion: rotating RGB8 copies 3 bytes a pixel, not the
    // decoder's (up to 8).
    let mut image = DynamicImage::ImageRgb8(to_rgb_on_white(image));
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image.into_rgb8())
}

/// `width * height`, or the error for a header over `limits.max_pixels`.
pub(crate) fn check_pixels(width: u32, height: u32, limits: &DecodeLimits) -> Result<u64> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ModelError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(pixels)
}

/// A JPEG decoded by libjpeg-turbo (Pillow's decoder, see [`crate::jpeg`]), upright by its
/// EXIF orientation (an unreadable one is ignored, as for the other formats).
fn decode_jpeg(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    let orientation =
        crate::jpeg::exif(bytes).and_then(image::metadata::Orientation::from_exif_chunk);
    let rgb = crate::jpeg::decode_rgb8(bytes, limits)?;
    let mut image = DynamicImage::ImageRgb8(rgb);
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(image.into_rgb8())
}

/// PNG chunks that are zlib-compressed metadata: a few KB of them inflate to hundreds of
/// MB (an "ICC bomb"). setr uses none of them (Pillow applies no ICC profile either).
const PNG_COMPRESSED_METADATA: [&[u8; 4]; 3] = [b"iCCP", b"zTXt", b"iTXt"];

/// The PNG without its compressed metadata chunks, so that no decoder inflates them. The
/// chunk walk trusts no length: a chunk running past the end is left to the decoder,
/// which refuses it.
fn strip_png_metadata(bytes: &[u8]) -> Result<Vec<u8>> {
    const SIGNATURE: usize = 8;
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..SIGNATURE.min(bytes.len())]);
    let mut pos = SIGNATURE;
    while pos + 8 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
        let end = pos
            .saturating_add(12)
            .saturating_add(len as usize)
            .min(bytes.len());
        let kind = &bytes[pos + 4..pos + 8];
        if !PNG_COMPRESSED_METADATA.iter().any(|m| kind == &m[..]) {
            out.extend_from_slice(&bytes[pos..end]);
        }
        pos = end;
    }
    out.extend_from_slice(&bytes[pos.min(bytes.len())..]);
    Ok(out)
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

/// Reads and decodes a file (see [`decode_image`] and [`read_image_file`]).
pub fn decode_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<RgbImage> {
    decode_image(&read_image_file(path, limits)?, limits)
}

/// Reads an image file's bytes; files over `limits.max_file_bytes` are refused before they
/// are read (and a file growing while it is read cannot exceed the limit either).
pub fn read_image_file(path: &std::path::Path, limits: &DecodeLimits) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| ModelError::io(path, e))?;
    let len = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let too_large = |bytes| ModelError::FileTooLarge {
        bytes,
        limit: limits.max_file_bytes,
    };
    if len > limits.max_file_bytes {
        return Err(too_large(len));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limits.max_file_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ModelError::io(path, e))?;
    if bytes.len() as u64 > limits.max_file_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// RGB8 from any colour type, as Pillow's `convert("RGB")` after HF's composite on white:
/// alpha composited on white with `(c * a + 255 * (255 - a) + 127) / 255`; 16-bit grey
/// clipped to 255 (Pillow's `I;16`), other 16-bit samples reduced to their high byte
/// (Pillow's `;16B` raw modes); float samples clamped to [0, 1] and scaled. One output
/// buffer, written pixel by pixel from the decoder's.
fn to_rgb_on_white(image: DynamicImage) -> RgbImage {
    let image = match image {
        DynamicImage::ImageRgb8(rgb) => return rgb,
        other => other,
    };
    let mut out = RgbImage::new(image.width(), image.height());
    let on_white = |c: u8, a: u8| {
        let (c, a) = (u32::from(c), u32::from(a));
        ((c * a + 255 * (255 - a) + 127) / 255) as u8
    };
    let hi = |v: u16| (v >> 8) as u8;
    let dst = out.pixels_mut();
    match image {
        DynamicImage::ImageLuma8(g) => {
            dst.zip(g.pixels()).for_each(|(d, s)| d.0 = [s[0]; 3]);
        }
        DynamicImage::ImageLumaA8(g) => dst.zip(g.pixels()).for_each(|(d, s)| {
            d.0 = [on_white(s[0], s[1]); 3];
        }),
        DynamicImage::ImageRgba8(rgba) => dst.zip(rgba.pixels()).for_each(|(d, s)| {
            d.0 = [0, 1, 2].map(|c| on_white(s[c], s[3]));
        }),
        DynamicImage::ImageLuma16(g) => dst.zip(g.pixels()).for_each(|(d, s)| {
            d.0 = [s[0].min(255) as u8; 3];
        }),
        DynamicImage::ImageLumaA16(g) => dst.zip(g.pixels()).for_each(|(d, s)| {
            d.0 = [on_white(hi(s[0]), hi(s[1])); 3];
        }),
        DynamicImage::ImageRgb16(rgb) => dst.zip(rgb.pixels()).for_each(|(d, s)| {
            d.0 = [0, 1, 2].map(|c| hi(s[c]));
        }),
        DynamicImage::ImageRgba16(rgba) => dst.zip(rgba.pixels()).for_each(|(d, s)| {
            d.0 = [0, 1, 2].map(|c| on_white(hi(s[c]), hi(s[3])));
        }),
        other => {
            // Float images (TIFF, HDR-like): the image crate's clamped scaling, then the
            // same composite.
            let rgba = other.into_rgba8();
            out.pixels_mut().zip(rgba.pixels()).for_each(|(d, s)| {
                d.0 = [0, 1, 2].map(|c| on_white(s[c], s[3]));
            });
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

    /// A PNG from raw chunks: IHDR for `width` x `height` at `depth` bits of `colour`
    /// type, the scanlines `raw` (filter bytes included), and `extra` chunks before IDAT.
    fn png_chunks(
        width: u32,
        height: u32,
        depth: u8,
        colour: u8,
        raw: &[u8],
        extra: &[(&[u8; 4], Vec<u8>)],
    ) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let mut crc = 0xffff_ffffu32;
            for &b in kind.iter().chain(data) {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 == 1 {
                        (crc >> 1) ^ 0xedb8_8320
                    } else {
                        crc >> 1
                    };
                }
            }
            out.extend_from_slice(&(!crc).to_be_bytes());
        }
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&width.to_be_bytes());
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[depth, colour, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        for (kind, data) in extra {
            chunk(&mut out, kind, data);
        }
        let mut z = flate2_free_zlib(raw);
        chunk(&mut out, b"IDAT", &std::mem::take(&mut z));
        chunk(&mut out, b"IEND", &[]);
        out
    }

    /// zlib with stored (uncompressed) blocks: enough for tests, no compressor needed.
    fn flate2_free_zlib(data: &[u8]) -> Vec<u8> {
        let mut out = vec![0x78, 0x01];
        let blocks: Vec<&[u8]> = data.chunks(65_535).collect();
        for (i, block) in blocks.iter().enumerate() {
            out.push(u8::from(i + 1 == blocks.len()));
            let len = block.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(block);
        }
        let (mut a, mut b) = (1u32, 0u32);
        for &x in data {
            a = (a + u32::from(x)) % 65_521;
            b = (b + a) % 65_521;
        }
        out.extend_from_slice(&((b << 16) | a).to_be_bytes());
        out
    }

    #[test]
    fn sixteen_bit_pngs_convert_as_pillow_does() {
        // Values checked against Pillow 12: grey 16 (`I;16`) is clipped to 255, colour and
        // grey-with-alpha keep the high byte.
        let values = [0u16, 255, 256, 1000, 0x8180, 65535];
        let mut grey = Vec::new();
        let mut rgb = Vec::new();
        for v in values {
            grey.extend_from_slice(&v.to_be_bytes());
            for _ in 0..3 {
                rgb.extend_from_slice(&v.to_be_bytes());
            }
        }
        let row = |data: Vec<u8>| [vec![0u8], data].concat();
        let n = values.len() as u32;
        let limits = DecodeLimits::default();
        let g = decode_image(&png_chunks(n, 1, 16, 0, &row(grey), &[]), &limits).unwrap();
        let got: Vec<u8> = g.pixels().map(|p| p[0]).collect();
        assert_eq!(got, [0, 255, 255, 255, 255, 255]);
        let c = decode_image(&png_chunks(n, 1, 16, 2, &row(rgb), &[]), &limits).unwrap();
        let got: Vec<u8> = c.pixels().map(|p| p[0]).collect();
        assert_eq!(got, [0, 0, 1, 3, 129, 255]);
    }

    #[test]
    fn compressed_metadata_chunks_are_never_inflated() {
        // iCCP and zTXt chunks (a bomb's would inflate to hundreds of MB) are dropped
        // before decoding: the pixels are those of the same PNG without them.
        let raw = [0u8, 10, 20, 30, 40, 50, 60];
        let plain = png_chunks(2, 1, 8, 2, &raw, &[]);
        let mut iccp = b"bomb\0\0".to_vec();
        iccp.extend_from_slice(&flate2_free_zlib(&vec![0u8; 1 << 16]));
        let bomb = png_chunks(
            2,
            1,
            8,
            2,
            &raw,
            &[(b"iCCP", iccp), (b"zTXt", b"k\0\0xx".to_vec())],
        );
        let limits = DecodeLimits::default();
        assert_eq!(
            decode_image(&bomb, &limits).unwrap(),
            decode_image(&plain, &limits).unwrap()
        );
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
