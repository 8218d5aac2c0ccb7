//! Decoding of every supported format from fixture files written by PIL, and clear errors
//! for bad inputs (tests/fixtures/images, made by tests/fixtures/generate.py).

use std::path::{Path, PathBuf};

use setr_models::{decode_file, decode_image, DecodeLimits, ModelError};

fn image(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/images")
        .join(name)
}

#[test]
fn every_supported_format_decodes_to_rgb() {
    let limits = DecodeLimits::default();
    let bmp = decode_file(&image("small.bmp"), &limits).unwrap();
    assert_eq!(bmp.dimensions(), (33, 29));
    for name in ["small.webp", "small.tiff"] {
        let other = decode_file(&image(name), &limits).unwrap();
        // Lossless formats of the same drawing decode to the same pixels.
        assert_eq!(other.as_raw(), bmp.as_raw(), "{name}");
    }
    let gif = decode_file(&image("palette.gif"), &limits).unwrap();
    assert_eq!(gif.dimensions(), (33, 29));
    let jpeg = decode_file(&image("exif_rot6.jpg"), &limits).unwrap();
    assert_eq!(
        jpeg.dimensions(),
        (40, 60),
        "EXIF orientation 6 turns 60x40 upright"
    );
}

#[test]
fn gif_gives_its_first_frame() {
    let bytes = std::fs::read(image("palette.gif")).unwrap();
    let first = decode_image(&bytes, &DecodeLimits::default()).unwrap();
    // The frames differ, so decoding the first frame by hand must match.
    let decoder = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
    use image::AnimationDecoder;
    let frames: Vec<_> = decoder.into_frames().collect::<Result<_, _>>().unwrap();
    assert!(frames.len() >= 2);
    let frame0 = image::DynamicImage::ImageRgba8(frames[0].buffer().clone()).into_rgb8();
    let frame1 = image::DynamicImage::ImageRgba8(frames[1].buffer().clone()).into_rgb8();
    assert_ne!(
        frame0.as_raw(),
        frame1.as_raw(),
        "fixture frames must differ"
    );
    assert_eq!(first.dimensions(), frame0.dimensions());
}

#[test]
fn corrupt_truncated_empty_and_huge_images_are_clear_errors() {
    let limits = DecodeLimits::default();
    let corrupt = decode_file(&image("corrupt.png"), &limits).unwrap_err();
    assert!(matches!(corrupt, ModelError::Decode(_)), "{corrupt}");
    let truncated = decode_file(&image("truncated.jpg"), &limits).unwrap_err();
    assert!(matches!(truncated, ModelError::Decode(_)), "{truncated}");
    assert!(truncated.to_string().contains("truncated"), "{truncated}");
    let empty = decode_file(&image("empty.png"), &limits).unwrap_err();
    assert!(matches!(empty, ModelError::Decode(_)), "{empty}");
    let huge = decode_file(&image("huge_dims.png"), &limits).unwrap_err();
    assert!(
        matches!(
            huge,
            ModelError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                ..
            }
        ),
        "{huge}"
    );
}

#[test]
fn a_truncated_png_is_an_error_too() {
    let bytes = std::fs::read(image("landscape.png")).unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 13] {
        let err = decode_image(&bytes[..cut], &DecodeLimits::default()).unwrap_err();
        assert!(matches!(err, ModelError::Decode(_)), "cut at {cut}: {err}");
    }
}
