//! JPEG decoding with libjpeg-turbo, the decoder inside Pillow, so that a JPEG gives setr
//! the very pixels Hugging Face's processors see (chroma upsampling and the inverse DCT
//! differ between decoders by a few levels, which moves embeddings by ~5e-3).
//!
//! libjpeg-turbo 3.1 is built from the source bundled with `turbojpeg-sys` and called
//! through its TurboJPEG 3 API with Pillow's settings: accurate integer IDCT, fancy
//! (triangle) upsampling, non-fatal warnings tolerated (Pillow decodes JPEGs with
//! extraneous bytes too). Untrusted input is bounded before libjpeg allocates: the pixel
//! count is checked from the header, libjpeg's own memory manager is capped
//! (`TJPARAM_MAXMEMORY`, which covers a progressive image's coefficient buffer) and a
//! progressive image may have at most [`MAX_SCANS`] scans (a few-KB file with thousands of
//! scans would otherwise cost minutes of CPU).

use std::ffi::CStr;

use image::RgbImage;
use turbojpeg_sys as tj;

use crate::decode::{check_pixels, DecodeLimits};
use crate::{ModelError, Result};

/// Most scans a progressive JPEG may have (real encoders write about 10).
pub const MAX_SCANS: i32 = 256;

/// A TurboJPEG decompressor handle, destroyed on drop.
struct Handle(tj::tjhandle);

impl Handle {
    fn new() -> Result<Handle> {
        // SAFETY: tj3Init has no preconditions; a null result is checked.
        let ptr = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
        if ptr.is_null() {
            return Err(ModelError::Decode("cannot start libjpeg-turbo".into()));
        }
        Ok(Handle(ptr))
    }

    fn set(&mut self, param: tj::TJPARAM, value: i32) -> Result<()> {
        // SAFETY: the handle is live for self's lifetime.
        match unsafe { tj::tj3Set(self.0, param as i32, value) } {
            0 => Ok(()),
            _ => Err(self.error()),
        }
    }

    fn get(&mut self, param: tj::TJPARAM) -> i32 {
        // SAFETY: as above.
        unsafe { tj::tj3Get(self.0, param as i32) }
    }

    /// True when the last call's failure was only a warning (the image was decoded).
    fn last_was_warning(&mut self) -> bool {
        // SAFETY: as above.
        unsafe { tj::tj3GetErrorCode(self.0) == tj::TJERR_TJERR_WARNING as i32 }
    }

    fn error(&mut self) -> ModelError {
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle,
        // copied before the handle is used again.
        let message = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) };
        ModelError::Decode(format!("JPEG: {}", message.to_string_lossy()))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from tj3Init and is destroyed once.
        unsafe { tj::tj3Destroy(self.0) }
    }
}

/// What the header says, read before anything is allocated for pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct JpegHeader {
    width: u32,
    height: u32,
    /// True for CMYK and YCCK images (converted to RGB as Pillow does).
    cmyk: bool,
}

/// Decodes a JPEG to RGB8 as Pillow's `Image.open(...).convert("RGB")` does (without
/// EXIF orientation, which the caller applies). Refuses images over `limits.max_pixels`
/// before allocating their pixels, and caps libjpeg's working memory at
/// `limits.max_alloc`.
pub fn decode_rgb8(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage> {
    // The frame's claimed size first: libjpeg refuses sizes over 65500 itself, but a size
    // over the budget is "too large" (413), not "unsupported".
    if let Some((width, height)) = frame_size(bytes) {
        check_pixels(width, height, limits)?;
    }
    let mut handle = Handle::new()?;
    let header = read_header(&mut handle, bytes)?;
    let (width, height) = (header.width, header.height);
    let pixels = check_pixels(width, height, limits)?;
    let channels: u64 = if header.cmyk { 4 } else { 3 };
    let out_bytes = pixels * channels;
    // CMYK is converted into a second (RGB) buffer.
    let peak = if header.cmyk {
        out_bytes + pixels * 3
    } else {
        out_bytes
    };
    if peak > limits.max_alloc {
        return Err(ModelError::OverBudget(format!(
            "a {width}x{height} JPEG decodes to {peak} bytes, over the limit of {}",
            limits.max_alloc
        )));
    }
    // libjpeg's memory manager is capped in whole megabytes; at least 1.
    let max_memory_mb = i32::try_from(limits.max_alloc >> 20)
        .unwrap_or(i32::MAX)
        .max(1);
    handle.set(tj::TJPARAM_TJPARAM_MAXMEMORY, max_memory_mb)?;
    handle.set(tj::TJPARAM_TJPARAM_SCANLIMIT, MAX_SCANS)?;
    handle.set(tj::TJPARAM_TJPARAM_STOPONWARNING, 0)?;
    let format = if header.cmyk {
        tj::TJPF_TJPF_CMYK
    } else {
        tj::TJPF_TJPF_RGB
    };
    // Sizes fit: out_bytes <= peak <= max_alloc was checked above.
    let mut out = vec![0u8; out_bytes as usize];
    let pitch = width as usize * channels as usize;
    let pitch = i32::try_from(pitch).map_err(|_| ModelError::Decode("JPEG too wide".into()))?;
    // SAFETY: `out` holds height rows of `pitch` bytes, the size libjpeg-turbo writes for
    // this header in this pixel format; `bytes` outlives the call.
    let status = unsafe {
        tj::tj3Decompress8(
            handle.0,
            bytes.as_ptr(),
            bytes.len() as tj::size_t,
            out.as_mut_ptr(),
            pitch,
            format as i32,
        )
    };
    if status != 0 && !handle.last_was_warning() {
        return Err(handle.error());
    }
    let rgb = if header.cmyk { cmyk_to_rgb(&out) } else { out };
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| ModelError::Decode("JPEG decoded to the wrong size".into()))
}

/// The marker segments before the first scan, as (marker, body), walked without trusting
/// any length beyond `bytes`.
fn segments(bytes: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut pos = 2; // after SOI
    std::iter::from_fn(move || {
        if pos + 4 > bytes.len() || bytes[pos] != 0xFF {
            return None;
        }
        let marker = bytes[pos + 1];
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan or end of image
        }
        let len = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
        let body = bytes.get(pos + 4..(pos + 2 + len).max(pos + 4))?;
        pos += 2 + len.max(2);
        Some((marker, body))
    })
}

/// The EXIF block of a JPEG: the APP1 segment starting `Exif\0\0`, before the first scan.
pub fn exif(bytes: &[u8]) -> Option<&[u8]> {
    segments(bytes)
        .filter(|(marker, _)| *marker == 0xE1)
        .find_map(|(_, body)| body.strip_prefix(b"Exif\0\0"))
}

/// (width, height) as the start-of-frame segment claims them.
fn frame_size(bytes: &[u8]) -> Option<(u32, u32)> {
    // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC).
    let is_frame = |m: u8| (0xC0..=0xCF).contains(&m) && ![0xC4, 0xC8, 0xCC].contains(&m);
    let (_, body) = segments(bytes).find(|(marker, _)| is_frame(*marker))?;
    let height = u16::from_be_bytes([*body.get(1)?, *body.get(2)?]);
    let width = u16::from_be_bytes([*body.get(3)?, *body.get(4)?]);
    Some((u32::from(width), u32::from(height)))
}

/// Reads the header of a JPEG (no pixel memory is allocated).
fn read_header(handle: &mut Handle, bytes: &[u8]) -> Result<JpegHeader> {
    // SAFETY: the handle is live and `bytes` outlives the call.
    let status =
        unsafe { tj::tj3DecompressHeader(handle.0, bytes.as_ptr(), bytes.len() as tj::size_t) };
    if status != 0 {
        return Err(handle.error());
    }
    let width = handle.get(tj::TJPARAM_TJPARAM_JPEGWIDTH);
    let height = handle.get(tj::TJPARAM_TJPARAM_JPEGHEIGHT);
    let colorspace = handle.get(tj::TJPARAM_TJPARAM_COLORSPACE);
    let cmyk = colorspace == tj::TJCS_TJCS_CMYK as i32 || colorspace == tj::TJCS_TJCS_YCCK as i32;
    match (u32::try_from(width), u32::try_from(height)) {
        (Ok(width), Ok(height)) if width > 0 && height > 0 => Ok(JpegHeader {
            width,
            height,
            cmyk,
        }),
        _ => Err(ModelError::Decode(format!("JPEG is {width}x{height}"))),
    }
}

/// CMYK to RGB as Pillow does: it reads every CMYK JPEG as inverted (`CMYK;I`, Adobe's
/// convention: libjpeg hands over 255 - ink), then converts with `cmyk2rgb`:
/// `(255 - k) - c * (255 - k) / 255`, the division rounded as its `MULDIV255`.
fn cmyk_to_rgb(inverted_cmyk: &[u8]) -> Vec<u8> {
    let muldiv255 = |a: u32, b: u32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let mut rgb = Vec::with_capacity(inverted_cmyk.len() / 4 * 3);
    for px in inverted_cmyk.chunks_exact(4) {
        let nk = u32::from(px[3]); // 255 - k
        for &c in &px[..3] {
            let ink = 255 - u32::from(c);
            rgb.push(nk.saturating_sub(muldiv255(ink, nk)) as u8);
        }
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::read(dir.join("../../tests/fixtures/jpeg").join(name)).unwrap()
    }

    fn header(bytes: &[u8]) -> Result<JpegHeader> {
        read_header(&mut Handle::new()?, bytes)
    }

    #[test]
    fn the_header_is_read_without_decoding() {
        let h = header(&fixture("chelsea_420_odd.jpg")).unwrap();
        assert_eq!(
            h,
            JpegHeader {
                width: 451,
                height: 299,
                cmyk: false
            }
        );
        assert!(header(&fixture("astronaut_cmyk.jpg")).unwrap().cmyk);
        assert!(matches!(
            header(b"\xFF\xD8 not a jpeg"),
            Err(ModelError::Decode(_))
        ));
    }

    #[test]
    fn libjpegs_memory_is_capped_by_the_budget() {
        // 512 x 512 progressive 4:4:4: the output is 786 KB, the coefficient buffer libjpeg
        // needs is twice that. A 1 MiB budget admits the output and refuses the buffer:
        // a clear error, not an allocation.
        let bytes = fixture("astronaut_444_progressive.jpg");
        let tight = DecodeLimits {
            max_alloc: 1 << 20,
            ..DecodeLimits::default()
        };
        let err = decode_rgb8(&bytes, &tight).unwrap_err();
        assert!(
            matches!(err, ModelError::Decode(ref m) if m.contains("JPEG")),
            "{err}"
        );
        let roomy = DecodeLimits {
            max_alloc: 4 << 20,
            ..DecodeLimits::default()
        };
        assert_eq!(
            decode_rgb8(&bytes, &roomy).unwrap().dimensions(),
            (512, 512)
        );
        // The same pixels as baseline need only row buffers: 1 MiB is enough.
        assert!(decode_rgb8(&fixture("astronaut_444.jpg"), &tight).is_ok());
    }

    #[test]
    fn the_frame_and_exif_segments_are_found() {
        assert_eq!(frame_size(&fixture("coffee_422.jpg")), Some((600, 400)));
        assert_eq!(frame_size(b"\xFF\xD8\xFF\xC0\x00"), None);
        assert_eq!(exif(&fixture("coffee_422.jpg")), None);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let rotated = std::fs::read(dir.join("../../tests/fixtures/images/exif_rot6.jpg")).unwrap();
        assert!(exif(&rotated).is_some_and(|e| e.starts_with(b"II") || e.starts_with(b"MM")));
    }

    #[test]
    fn pixel_and_output_limits_come_before_decoding() {
        let bytes = fixture("astronaut_420.jpg");
        let few_pixels = DecodeLimits::with_max_pixels(512 * 511);
        assert!(matches!(
            decode_rgb8(&bytes, &few_pixels),
            Err(ModelError::TooManyPixels {
                pixels: 262_144,
                ..
            })
        ));
        let small_output = DecodeLimits {
            max_alloc: 512 * 512 * 3 - 1,
            ..DecodeLimits::default()
        };
        assert!(matches!(
            decode_rgb8(&bytes, &small_output),
            Err(ModelError::OverBudget(_))
        ));
    }

    #[test]
    fn a_corrupt_scan_is_a_warning_and_a_broken_header_an_error() {
        // Flipping bytes inside the entropy-coded data gives libjpeg warnings (corrupt
        // data), which Pillow accepts too; the image still decodes at its size.
        let mut bytes = fixture("chelsea_420_odd.jpg");
        let mid = bytes.len() / 2;
        bytes[mid..mid + 8].copy_from_slice(&[0x55; 8]);
        let decoded = decode_rgb8(&bytes, &DecodeLimits::default());
        assert_eq!(decoded.map(|i| i.dimensions()).ok(), Some((451, 299)));
        let mut broken = fixture("chelsea_420_odd.jpg");
        broken.truncate(200); // inside the tables: no frame header
        assert!(decode_rgb8(&broken, &DecodeLimits::default()).is_err());
    }

    #[test]
    fn cmyk_converts_as_pillow() {
        // Inverted CMYK as libjpeg hands it over: no ink is white, full black ink black.
        let rgb = cmyk_to_rgb(&[255, 255, 255, 255, 0, 0, 0, 0, 0, 255, 255, 255]);
        assert_eq!(rgb, [255, 255, 255, 0, 0, 0, 0, 255, 255]);
    }
}
