//! A hostile-input corpus, generated at test time (nothing large is committed): images of
//! extreme aspect ratios in every format setr decodes, pixel bombs (headers claiming far
//! more pixels than the bytes carry), metadata bombs (ICC profiles, text chunks and EXIF
//! blocks far larger than the image), truncated, mislabelled and empty files, 16-bit PNGs,
//! and the request bodies a hostile client sends (huge texts, deep JSON, huge strings,
//! multipart forms with hundreds of parts or huge headers).
//!
//! Every input says what setr must do with it ([`Expect`]); `tests/hostile.rs` sends each
//! through `setr index` and the HTTP routes, and `benches/hostile.py` measures them against
//! a release server (the corpus is written to a directory by the ignored test
//! `write_hostile_corpus`).

use std::io::{Cursor, Write};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};

/// What setr must answer for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A valid image within the limits: accepted (2xx; indexed by `setr index`).
    Accept,
    /// Accepted, or refused with a 4xx: both are fine, a crash, a 5xx or a memory peak is not.
    AcceptOrRefuse,
    /// Refused with some 4xx (reported unreadable by `setr index`).
    Refuse,
    /// Refused with this status and error `type`.
    Exactly(u16, &'static str),
}

impl Expect {
    /// `413 payload_too_large`: over `max_pixels`, `max_text_bytes` or `max_body_bytes`.
    pub const TOO_LARGE: Expect = Expect::Exactly(413, "payload_too_large");
    /// `415 unsupported_image`: bytes that are no image setr decodes.
    pub const UNSUPPORTED: Expect = Expect::Exactly(415, "unsupported_image");

    /// Whether an answer with `status` and error `kind` (None for a 2xx) fulfils this.
    pub fn allows(self, status: u16, kind: Option<&str>) -> bool {
        let ok = (200..300).contains(&status);
        let refused = (400..500).contains(&status);
        match self {
            Expect::Accept => ok,
            Expect::AcceptOrRefuse => ok || refused,
            Expect::Refuse => refused,
            Expect::Exactly(s, k) => status == s && kind == Some(k),
        }
    }
}

/// One hostile file.
pub struct Input {
    /// Short unique name (also the case's directory name).
    pub name: String,
    /// Name of the file on disk for `setr index` (the extension decides whether it is
    /// walked at all; the content decides the format).
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
    /// Whether the HTTP test sends it through every upload route; false for the few
    /// valid images that take seconds to decode in a debug build (they go through one
    /// route of each kind: add, search, rerank).
    pub every_route: bool,
}

fn input(name: &str, file_name: &str, bytes: Vec<u8>, expect: Expect) -> Input {
    Input {
        name: name.to_owned(),
        file_name: file_name.to_owned(),
        bytes,
        expect,
        every_route: true,
    }
}

// ---------------------------------------------------------------------------------------
// Encoders and hand-written containers.

/// A deterministic RGB8 pattern (noisy enough that truncation cuts real pixel data).
pub fn pattern(width: u32, height: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    let mut state = 0x9E37_79B9u32 ^ seed.wrapping_mul(0x85EB_CA6B);
    for y in 0..height {
        for x in 0..width {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let noise = (state & 0x1F) as u8;
            out.push((x.wrapping_mul(7).wrapping_add(seed * 31)) as u8 ^ noise);
            out.push((y.wrapping_mul(5).wrapping_add(seed * 17)) as u8);
            out.push(((x ^ y).wrapping_add(seed * 3)) as u8 ^ (noise >> 1));
        }
    }
    out
}

/// Encodes `pixels` (of `color`) as `format` with the image crate's encoders.
pub fn encode(
    format: image::ImageFormat,
    pixels: &[u8],
    width: u32,
    height: u32,
    color: ExtendedColorType,
) -> Vec<u8> {
    use image::codecs::{bmp, gif, jpeg, tiff, webp};
    let mut out = Cursor::new(Vec::new());
    let result = match format {
        image::ImageFormat::Png => {
            PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive)
                .write_image(pixels, width, height, color)
        }
        image::ImageFormat::Jpeg => jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .write_image(pixels, width, height, color),
        image::ImageFormat::Gif => {
            gif::GifEncoder::new_with_speed(&mut out, 30).write_image(pixels, width, height, color)
        }
        image::ImageFormat::Bmp => {
            bmp::BmpEncoder::new(&mut out).write_image(pixels, width, height, color)
        }
        image::ImageFormat::Tiff => {
            tiff::TiffEncoder::new(&mut out).write_image(pixels, width, height, color)
        }
        image::ImageFormat::WebP => {
            webp::WebPEncoder::new_lossless(&mut out).write_image(pixels, width, height, color)
        }
        other => panic!("no encoder for {other:?}"),
    };
    result.unwrap_or_else(|e| panic!("encoding {width}x{height} {format:?}: {e}"));
    out.into_inner()
}

/// A small valid RGB image in `format`.
pub fn small(format: image::ImageFormat, seed: u32) -> Vec<u8> {
    encode(
        format,
        &pattern(64, 48, seed),
        64,
        48,
        ExtendedColorType::Rgb8,
    )
}

/// A zlib stream of `len` zero bytes, compressed as hard as miniz can (about 1000:1),
/// written without ever holding the plain bytes.
pub fn zlib_zeros(len: usize) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(block.len());
        z.write_all(&block[..n]).unwrap();
        left -= n;
    }
    z.finish().unwrap()
}

/// A zlib stream of `bytes`.
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// One PNG chunk: length, type, data, CRC of type and data.
pub fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

/// A PNG written chunk by chunk: IHDR (`width` x `height`, 8-bit of `color_type`),
/// `extra` chunks, one IDAT holding `idat` (already zlib-compressed), IEND.
pub fn png_raw(
    width: u32,
    height: u32,
    color_type: u8,
    extra: &[(&[u8; 4], Vec<u8>)],
    idat: &[u8],
) -> Vec<u8> {
    let mut out = PNG_SIGNATURE.to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, color_type, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    png_chunk(&mut out, b"IDAT", idat);
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// `png` (a complete PNG) with `extra` chunks spliced in right after IHDR.
pub fn png_with_chunks(png: &[u8], extra: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    // Signature (8) + IHDR (4 length + 4 type + 13 data + 4 CRC).
    let (head, rest) = png.split_at(33);
    assert_eq!(&head[12..16], b"IHDR");
    let mut out = head.to_vec();
    for (kind, data) in extra {
        png_chunk(&mut out, kind, data);
    }
    out.extend_from_slice(rest);
    out
}

/// `jpeg` with `segments` (each a complete marker segment) inserted after SOI and APP0.
pub fn jpeg_with_segments(jpeg: &[u8], segments: &[Vec<u8>]) -> Vec<u8> {
    assert_eq!(&jpeg[..2], [0xFF, 0xD8]);
    let mut at = 2;
    if jpeg[2..4] == [0xFF, 0xE0] {
        at = 4 + usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    }
    let mut out = jpeg[..at].to_vec();
    for s in segments {
        out.extend_from_slice(s);
    }
    out.extend_from_slice(&jpeg[at..]);
    out
}

/// A JPEG marker segment `FF <marker>` with `payload` (at most 65,533 bytes).
pub fn jpeg_segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len() + 2).expect("JPEG segment over 64 KiB");
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `jpeg` whose start-of-frame claims `width` x `height` (the scan data stays as it was).
pub fn jpeg_claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = out
        .windows(2)
        .position(|w| w[0] == 0xFF && (0xC0..=0xC2).contains(&w[1]))
        .expect("no SOF marker");
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// A big-endian TIFF (EXIF) block: IFD0 at offset 8 holding `entries` of
/// `(tag, type, count, value)`, `count_override` entries claimed if given, and the next-IFD
/// offset `next`; then `padding` zero bytes.
pub fn exif_block(
    entries: &[(u16, u16, u32, u32)],
    count_override: Option<u16>,
    next: u32,
    padding: usize,
) -> Vec<u8> {
    let mut out = b"MM\0\x2A\0\0\0\x08".to_vec();
    let count = count_override.unwrap_or(entries.len() as u16);
    out.extend_from_slice(&count.to_be_bytes());
    for (tag, kind, n, value) in entries {
        out.extend_from_slice(&tag.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&n.to_be_bytes());
        if *kind == 3 && *n == 1 {
            // A SHORT value sits left-justified in the 4-byte field.
            out.extend_from_slice(&(*value as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
    out.extend_from_slice(&next.to_be_bytes());
    out.resize(out.len() + padding, 0);
    out
}

/// An 8-bit greyscale little-endian TIFF claiming `width` x `height` in one strip that
/// holds `data`.
pub fn tiff_grey(width: u32, height: u32, data: &[u8]) -> Vec<u8> {
    let entries: [(u16, u16, u32); 9] = [
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 0), // strip offset, patched below
        (277, 3, 1),
        (278, 4, height),
        (279, 4, data.len() as u32),
    ];
    let ifd_len = 2 + entries.len() * 12 + 4;
    let data_offset = (8 + ifd_len) as u32;
    let mut out = b"II\x2A\0\x08\0\0\0".to_vec();
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, kind, value) in entries {
        let value = if tag == 273 { data_offset } else { value };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        if kind == 3 {
            out.extend_from_slice(&(value as u16).to_le_bytes());
            out.extend_from_slice(&[0, 0]);
        } else {
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// A RIFF WebP from its chunks `(fourcc, data)` (odd chunks padded).
pub fn webp_riff(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
    let mut body = b"WEBP".to_vec();
    for (kind, data) in chunks {
        body.extend_from_slice(*kind);
        body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        body.extend_from_slice(data);
        if data.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The VP8L chunk payload of a simple-format lossless WebP made by the image crate.
pub fn vp8l_payload(webp: &[u8]) -> Vec<u8> {
    assert_eq!(&webp[12..16], b"VP8L", "not a simple lossless WebP");
    let len = u32::from_le_bytes(webp[16..20].try_into().unwrap()) as usize;
    webp[20..20 + len].to_vec()
}

/// A VP8X chunk: `flags` and a canvas of `width` x `height` (each up to 2^24).
pub fn vp8x(flags: u8, width: u32, height: u32) -> Vec<u8> {
    let mut out = vec![flags, 0, 0, 0];
    out.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    out.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    out
}

/// A GIF89a: a logical screen of `screen` with a two-colour table, and one image of
/// `frame` whose LZW data is a single pixel.
pub fn gif_raw(screen: (u16, u16), frame: (u16, u16)) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&screen.0.to_le_bytes());
    out.extend_from_slice(&screen.1.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0x2C, 0, 0, 0, 0]);
    out.extend_from_slice(&frame.0.to_le_bytes());
    out.extend_from_slice(&frame.1.to_le_bytes());
    // No local table; LZW minimum code size 2; clear, index 0, end.
    out.extend_from_slice(&[0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B]);
    out
}

// ---------------------------------------------------------------------------------------
// The image corpus, by theme.

/// Slivers: 1 x N and N x 1 in every format setr decodes, up to each format's limit.
pub fn extreme_aspect_ratios() -> Vec<Input> {
    use image::ImageFormat::*;
    let rgb = ExtendedColorType::Rgb8;
    let mut out = Vec::new();
    // The 7.8 KB PNG of issue 13: 1 x 2,000,000 passes max_pixels, then shortest-edge
    // resizing upscales it to (edge) x (edge * 2,000,000).
    for (w, h) in [
        (1u32, 2_000_000u32),
        (2_000_000, 1),
        (1, 300_000),
        (1, 65_535),
        (2, 1_000_000),
    ] {
        let px = vec![200u8; (w * h * 3) as usize];
        out.push(input(
            &format!("png_{w}x{h}"),
            &format!("png_{w}x{h}.png"),
            encode(Png, &px, w, h, rgb),
            Expect::AcceptOrRefuse,
        ));
    }
    // JPEG, GIF, BMP and TIFF store sizes in 16 bits (or accept that much); WebP's lossless
    // encoder stops at 16,383.
    for (format, ext, long) in [
        (Jpeg, "jpg", 65_535u32),
        (Gif, "gif", 65_535),
        (Bmp, "bmp", 65_535),
        (Tiff, "tiff", 65_535),
        (WebP, "webp", 16_383),
    ] {
        for (w, h) in [(1, long), (long, 1)] {
            let px = pattern(w, h, 3);
            out.push(input(
                &format!("{ext}_{w}x{h}"),
                &format!("{ext}_{w}x{h}.{ext}"),
                encode(format, &px, w, h, rgb),
                Expect::AcceptOrRefuse,
            ));
        }
    }
    out.push(input(
        "png_1x1",
        "png_1x1.png",
        encode(Png, &[9, 99, 199], 1, 1, rgb),
        Expect::Accept,
    ));
    out
}

/// Headers claiming far more pixels than `max_pixels` over a few bytes of data, and the
/// largest valid images under the default limit.
pub fn pixel_bombs() -> Vec<Input> {
    use image::ImageFormat::*;
    let tiny_idat = zlib(&[0, 1, 2, 3]);
    let mut out = vec![
        input(
            "png_claims_100000x100000",
            "png_claims_100000x100000.png",
            png_raw(100_000, 100_000, 2, &[], &tiny_idat),
            Expect::TOO_LARGE,
        ),
        // One row over the default max_pixels (64 Mi).
        input(
            "png_claims_8192x8193",
            "png_claims_8192x8193.png",
            png_raw(8192, 8193, 0, &[], &tiny_idat),
            Expect::TOO_LARGE,
        ),
        input(
            "jpeg_claims_65535x65535",
            "jpeg_claims_65535x65535.jpg",
            jpeg_claiming(&small(Jpeg, 1), 65_535, 65_535),
            Expect::TOO_LARGE,
        ),
        input(
            "gif_screen_65535x65535",
            "gif_screen_65535x65535.gif",
            gif_raw((65_535, 65_535), (1, 1)),
            Expect::TOO_LARGE,
        ),
        // The screen passes the header check; the frame is 4 Gi pixels.
        input(
            "gif_frame_65535x65535_on_1x1_screen",
            "gif_frame_65535x65535_on_1x1_screen.gif",
            gif_raw((1, 1), (65_535, 65_535)),
            Expect::AcceptOrRefuse,
        ),
        input(
            "tiff_claims_100000x100000",
            "tiff_claims_100000x100000.tiff",
            tiff_grey(100_000, 100_000, &[7; 64]),
            Expect::TOO_LARGE,
        ),
        // 16,383 x 16,383 (the largest either WebP header can say: image-webp 0.2 reads a
        // lossless 16,384 as 0) with a few bytes of data, lossless and lossy.
        input(
            "webp_vp8l_claims_16383x16383",
            "webp_vp8l_claims_16383x16383.webp",
            {
                // Signature, then 14 bits width-1, 14 bits height-1, alpha, version 0.
                let bits: u32 = 16_382 | (16_382 << 14);
                let mut payload = vec![0x2F];
                payload.extend_from_slice(&bits.to_le_bytes());
                payload.extend_from_slice(&[0; 16]);
                webp_riff(&[(b"VP8L", &payload[..])])
            },
            Expect::TOO_LARGE,
        ),
        input(
            "webp_vp8_claims_16383x16383",
            "webp_vp8_claims_16383x16383.webp",
            {
                // Key-frame tag (show frame, first partition of 16 bytes), start code, sizes.
                let mut payload = vec![0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A];
                payload.extend_from_slice(&16_383u16.to_le_bytes());
                payload.extend_from_slice(&16_383u16.to_le_bytes());
                payload.extend_from_slice(&[0; 16]);
                webp_riff(&[(b"VP8 ", &payload[..])])
            },
            Expect::TOO_LARGE,
        ),
        input(
            "webp_vp8x_canvas_16777216x16777216",
            "webp_vp8x_canvas_16777216x16777216.webp",
            webp_riff(&[
                (b"VP8X", &vp8x(0, 1 << 24, 1 << 24)[..]),
                (b"VP8L", &vp8l_payload(&small(WebP, 2))[..]),
            ]),
            Expect::Refuse,
        ),
    ];
    // BMP sizes are capped at 65,535 by the decoder: 65,535 x 65,535 is 4 Gi pixels.
    let mut bmp = small(Bmp, 3);
    bmp[18..22].copy_from_slice(&65_535i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&65_535i32.to_le_bytes());
    out.push(input(
        "bmp_claims_65535x65535",
        "bmp_claims_65535x65535.bmp",
        bmp,
        Expect::TOO_LARGE,
    ));
    out.extend(large_valid_images());
    out
}

/// The largest images the default limit admits, cheap to send: a 64 MP solid JPEG (about
/// 1 MB) and an 8192 x 8192 greyscale PNG exactly at `max_pixels`.
pub fn large_valid_images() -> Vec<Input> {
    use image::ImageFormat::*;
    let side = 8000u32;
    let solid = vec![0x5Au8; (side * side * 3) as usize];
    let jpeg = encode(Jpeg, &solid, side, side, ExtendedColorType::Rgb8);
    drop(solid);
    let grey = vec![0x80u8; 8192 * 8192];
    let png = encode(Png, &grey, 8192, 8192, ExtendedColorType::L8);
    let mut out = vec![
        input(
            "jpeg_8000x8000_solid",
            "jpeg_8000x8000_solid.jpg",
            jpeg,
            Expect::Accept,
        ),
        input(
            "png_8192x8192_grey",
            "png_8192x8192_grey.png",
            png,
            Expect::Accept,
        ),
    ];
    for i in &mut out {
        i.every_route = false;
    }
    out
}

/// Small images carrying huge or malicious metadata: ICC profiles, text chunks and EXIF.
pub fn metadata_bombs() -> Vec<Input> {
    use image::ImageFormat::*;
    let png = small(Png, 4);
    let jpeg = small(Jpeg, 5);
    let mut out = Vec::new();

    // ~400 MB of ICC profile in ~400 KB (issue 13: accepted with a 437 MB peak).
    let zeros_400m = zlib_zeros(400 << 20);
    let mut iccp = b"bomb\0\0".to_vec();
    iccp.extend_from_slice(&zeros_400m);
    out.push(input(
        "png_iccp_400mb",
        "png_iccp_400mb.png",
        png_with_chunks(&png, &[(b"iCCP", &iccp[..])]),
        Expect::AcceptOrRefuse,
    ));
    let mut ztxt = b"Comment\0\0".to_vec();
    ztxt.extend_from_slice(&zeros_400m);
    out.push(input(
        "png_ztxt_400mb",
        "png_ztxt_400mb.png",
        png_with_chunks(&png, &[(b"zTXt", &ztxt[..])]),
        Expect::AcceptOrRefuse,
    ));
    // iTXt: keyword, compressed, method 0, no language, no translated keyword.
    let mut itxt = b"Description\0\x01\0\0\0".to_vec();
    itxt.extend_from_slice(&zeros_400m);
    out.push(input(
        "png_itxt_400mb",
        "png_itxt_400mb.png",
        png_with_chunks(&png, &[(b"iTXt", &itxt[..])]),
        Expect::AcceptOrRefuse,
    ));
    // A 1 x 1 PNG whose image data inflates to 400 MB: a decoder must stop at the 4 bytes
    // it needs.
    out.push(input(
        "png_1x1_idat_inflates_to_400mb",
        "png_1x1_idat_inflates_to_400mb.png",
        png_raw(1, 1, 2, &[], &zeros_400m),
        Expect::AcceptOrRefuse,
    ));
    drop(zeros_400m);
    // 1000 zTXt chunks of 4 MB each: 4 GB of text in 4 MB.
    let mut ztxt_4m = b"Comment\0\0".to_vec();
    ztxt_4m.extend_from_slice(&zlib_zeros(4 << 20));
    let many: Vec<(&[u8; 4], &[u8])> = (0..1000).map(|_| (b"zTXt", &ztxt_4m[..])).collect();
    out.push(input(
        "png_1000_ztxt_of_4mb",
        "png_1000_ztxt_of_4mb.png",
        png_with_chunks(&png, &many),
        Expect::AcceptOrRefuse,
    ));
    // 100,000 tiny tEXt chunks.
    let many: Vec<(&[u8; 4], &[u8])> = (0..100_000).map(|_| (b"tEXt", &b"k\0v"[..])).collect();
    out.push(input(
        "png_100000_text_chunks",
        "png_100000_text_chunks.png",
        png_with_chunks(&png, &many),
        Expect::AcceptOrRefuse,
    ));
    // A 10 MB eXIf chunk (orientation 6 first, then zeros).
    let exif = exif_block(&[(0x0112, 3, 1, 6)], None, 0, 10 << 20);
    out.push(input(
        "png_exif_10mb",
        "png_exif_10mb.png",
        png_with_chunks(&png, &[(b"eXIf", &exif[..])]),
        Expect::AcceptOrRefuse,
    ));

    // JPEG: 150 APP2 ICC segments of 64 KiB (a 9.8 MB profile), numbered 1..=150 of 150.
    let chunk = vec![0u8; 65_519];
    let icc: Vec<Vec<u8>> = (1..=150u8)
        .map(|i| {
            let mut p = b"ICC_PROFILE\0".to_vec();
            p.extend_from_slice(&[i, 150]);
            p.extend_from_slice(&chunk);
            jpeg_segment(0xE2, &p)
        })
        .collect();
    out.push(input(
        "jpeg_150_icc_segments",
        "jpeg_150_icc_segments.jpg",
        jpeg_with_segments(&jpeg, &icc),
        Expect::AcceptOrRefuse,
    ));
    // 1000 small ICC segments that all claim to be number 1 of 255.
    let icc: Vec<Vec<u8>> = (0..1000)
        .map(|_| {
            let mut p = b"ICC_PROFILE\0\x01\xFF".to_vec();
            p.extend_from_slice(&[0x42; 64]);
            jpeg_segment(0xE2, &p)
        })
        .collect();
    out.push(input(
        "jpeg_1000_icc_segments_numbered_1",
        "jpeg_1000_icc_segments_numbered_1.jpg",
        jpeg_with_segments(&jpeg, &icc),
        Expect::AcceptOrRefuse,
    ));
    // EXIF: an IFD claiming 65,535 entries in a 64 KiB segment; an IFD chain that loops to
    // itself; an orientation of 65,535; 200 APP1 segments of 64 KiB (12.5 MB of EXIF).
    let exif_app1 = |tiff: Vec<u8>| {
        let mut p = b"Exif\0\0".to_vec();
        p.extend_from_slice(&tiff);
        jpeg_segment(0xE1, &p)
    };
    for (name, tiff) in [
        (
            "jpeg_exif_ifd_claims_65535_entries",
            exif_block(&[(0x0112, 3, 1, 6)], Some(65_535), 0, 60_000),
        ),
        (
            "jpeg_exif_ifd_loops_to_itself",
            exif_block(&[(0x0112, 3, 1, 6)], None, 8, 0),
        ),
        (
            "jpeg_exif_orientation_65535",
            exif_block(&[(0x0112, 3, 1, 65_535)], None, 0, 0),
        ),
        (
            "jpeg_exif_value_offset_past_the_end",
            exif_block(&[(0x0112, 3, 0xFFFF_FFFF, 0xFFFF_FFF0)], None, 0, 0),
        ),
    ] {
        out.push(input(
            name,
            &format!("{name}.jpg"),
            jpeg_with_segments(&jpeg, &[exif_app1(tiff)]),
            Expect::AcceptOrRefuse,
        ));
    }
    let big_exif: Vec<Vec<u8>> = (0..200)
        .map(|_| exif_app1(exif_block(&[(0x0112, 3, 1, 3)], None, 0, 65_000)))
        .collect();
    out.push(input(
        "jpeg_200_exif_segments_of_64k",
        "jpeg_200_exif_segments_of_64k.jpg",
        jpeg_with_segments(&jpeg, &big_exif),
        Expect::AcceptOrRefuse,
    ));

    // WebP (extended format): a 10 MB ICC profile, and a 10 MB EXIF chunk.
    let vp8l = vp8l_payload(&small(WebP, 6));
    let ten_mb = vec![0u8; 10 << 20];
    out.push(input(
        "webp_iccp_10mb",
        "webp_iccp_10mb.webp",
        webp_riff(&[
            (b"VP8X", &vp8x(0x20, 64, 48)[..]),
            (b"ICCP", &ten_mb[..]),
            (b"VP8L", &vp8l[..]),
        ]),
        Expect::AcceptOrRefuse,
    ));
    let exif = exif_block(&[(0x0112, 3, 1, 8)], None, 0, 10 << 20);
    out.push(input(
        "webp_exif_10mb",
        "webp_exif_10mb.webp",
        webp_riff(&[
            (b"VP8X", &vp8x(0x08, 64, 48)[..]),
            (b"VP8L", &vp8l[..]),
            (b"EXIF", &exif[..]),
        ]),
        Expect::AcceptOrRefuse,
    ));
    out
}

/// Truncated files of every format, mislabelled files, empty files, non-images.
pub fn malformed() -> Vec<Input> {
    use image::ImageFormat::*;
    let mut out = Vec::new();
    for (format, ext) in [
        (Png, "png"),
        (Jpeg, "jpg"),
        (Gif, "gif"),
        (Bmp, "bmp"),
        (Tiff, "tiff"),
        (WebP, "webp"),
    ] {
        let full = small(format, 7);
        for (what, cut) in [("half", full.len() / 2), ("header", 40.min(full.len() - 1))] {
            out.push(input(
                &format!("{ext}_truncated_{what}"),
                &format!("{ext}_truncated_{what}.{ext}"),
                full[..cut].to_vec(),
                Expect::Refuse,
            ));
        }
        out.push(input(
            &format!("{ext}_magic_only"),
            &format!("{ext}_magic_only.{ext}"),
            full[..4].to_vec(),
            Expect::Refuse,
        ));
        out.push(input(
            &format!("{ext}_empty"),
            &format!("{ext}_empty.{ext}"),
            Vec::new(),
            Expect::Refuse,
        ));
    }
    // The content decides, not the name.
    out.push(input(
        "png_named_jpg",
        "png_named_jpg.jpg",
        small(Png, 8),
        Expect::Accept,
    ));
    out.push(input(
        "jpeg_named_gif",
        "jpeg_named_gif.gif",
        small(Jpeg, 9),
        Expect::Accept,
    ));
    out.push(input(
        "text_named_png",
        "text_named_png.png",
        b"hello, I am not an image\n".repeat(100),
        Expect::UNSUPPORTED,
    ));
    out.push(input(
        "html_named_jpg",
        "html_named_jpg.jpg",
        b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>".to_vec(),
        Expect::UNSUPPORTED,
    ));
    // Formats the image crate knows but setr does not accept.
    out.push(input(
        "ico_named_png",
        "ico_named_png.png",
        vec![
            0, 0, 1, 0, 1, 0, 16, 16, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 22, 0, 0, 0,
        ],
        Expect::Refuse,
    ));
    // A damaged CRC on the image data.
    out.push(input(
        "png_idat_crc_wrong",
        "png_idat_crc_wrong.png",
        {
            let mut p = small(Png, 10);
            let n = p.len();
            // IEND is the last 12 bytes; the IDAT CRC ends right before it.
            p[n - 13] ^= 0xFF;
            p
        },
        Expect::AcceptOrRefuse,
    ));
    out
}

/// Valid but unusual pixel formats: 16-bit PNGs (RGB16, RGBA16, L16) and a 16-bit TIFF.
pub fn deep_colour() -> Vec<Input> {
    use image::ImageFormat::*;
    let (w, h) = (40u32, 30u32);
    // Native-endian 16-bit samples (what the image crate's encoders take), with a low
    // byte that differs from the high one so that scaling and clipping to 8 bits differ.
    let rgb16: Vec<u8> = pattern(w, h, 11)
        .iter()
        .flat_map(|v| (u16::from(*v) * 256 + u16::from(*v ^ 0x5A)).to_ne_bytes())
        .collect();
    let rgba16: Vec<u8> = rgb16
        .chunks(6)
        .enumerate()
        .flat_map(|(i, c)| {
            let mut v = c.to_vec();
            v.extend_from_slice(&((i as u16).wrapping_mul(997)).to_ne_bytes());
            v
        })
        .collect();
    let l16: Vec<u8> = rgb16.chunks(6).flat_map(|c| c[..2].to_vec()).collect();
    vec![
        input(
            "png_rgb16",
            "png_rgb16.png",
            encode(Png, &rgb16, w, h, ExtendedColorType::Rgb16),
            Expect::Accept,
        ),
        input(
            "png_rgba16",
            "png_rgba16.png",
            encode(Png, &rgba16, w, h, ExtendedColorType::Rgba16),
            Expect::Accept,
        ),
        input(
            "png_l16",
            "png_l16.png",
            encode(Png, &l16, w, h, ExtendedColorType::L16),
            Expect::Accept,
        ),
        input(
            "tiff_rgb16",
            "tiff_rgb16.tiff",
            encode(Tiff, &rgb16, w, h, ExtendedColorType::Rgb16),
            Expect::Accept,
        ),
    ]
}

/// Every hostile image.
pub fn all_images() -> Vec<Input> {
    let mut out = extreme_aspect_ratios();
    out.extend(pixel_bombs());
    out.extend(metadata_bombs());
    out.extend(malformed());
    out.extend(deep_colour());
    out
}

// ---------------------------------------------------------------------------------------
// Request bodies.

/// `n` bytes of plausible text (words, spaces, punctuation, some multi-byte characters).
pub fn huge_text(n: usize) -> String {
    let words = [
        "red ",
        "dress ",
        "but ",
        "sleeveless ",
        "ünd ",
        "the ",
        "same ",
        "blue, ",
        "日本 ",
    ];
    let mut out = String::with_capacity(n + 16);
    let mut i = 0usize;
    while out.len() < n {
        out.push_str(words[i % words.len()]);
        i = i.wrapping_mul(31).wrapping_add(7) % 1_000_003;
    }
    while out.len() > n {
        out.pop();
    }
    out
}

/// `depth` nested JSON arrays around `inner`.
pub fn deep_array(depth: usize, inner: &str) -> String {
    let mut out = String::with_capacity(depth * 2 + inner.len());
    out.extend(std::iter::repeat_n('[', depth));
    out.push_str(inner);
    out.extend(std::iter::repeat_n(']', depth));
    out
}

/// `depth` nested JSON objects `{"a": ...}` around `inner`.
pub fn deep_object(depth: usize, inner: &str) -> String {
    let mut out = String::with_capacity(depth * 7 + inner.len());
    for _ in 0..depth {
        out.push_str("{\"a\":");
    }
    out.push_str(inner);
    out.extend(std::iter::repeat_n('}', depth));
    out
}

/// A JSON string literal of `s`.
pub fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// One part of a multipart/form-data body: the field name, an optional file name, and
/// the bytes.
pub struct Part<'a> {
    pub name: &'a str,
    pub file: Option<&'a str>,
    pub bytes: &'a [u8],
}

pub const BOUNDARY: &str = "setr-hostile-boundary-91c3";

/// A multipart/form-data body from `parts`; returns (content type, body).
pub fn multipart(parts: &[Part<'_>]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for p in parts {
        write!(
            body,
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"",
            p.name
        )
        .unwrap();
        if let Some(f) = p.file {
            write!(
                body,
                "; filename=\"{f}\"\r\nContent-Type: application/octet-stream"
            )
            .unwrap();
        }
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(p.bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{BOUNDARY}--\r\n").unwrap();
    (multipart_type(), body)
}

pub fn multipart_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// `n` distinct small PNGs (48 x 40), for many-part uploads.
pub fn distinct_pngs(n: u32, seed: u32) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            encode(
                image::ImageFormat::Png,
                &pattern(48, 40, seed * 100_000 + i),
                48,
                40,
                ExtendedColorType::Rgb8,
            )
        })
        .collect()
}
