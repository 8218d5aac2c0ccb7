//! JPEG parity with transformers' Pillow path (tests/fixtures/generate_jpeg.py): photos
//! saved as 4:2:0, 4:2:2, 4:4:4, progressive, greyscale and CMYK JPEGs decode to exactly
//! Pillow's pixels (both sides run libjpeg-turbo with the same settings), so their
//! embeddings match transformers' to 1e-4, as lossless formats already did.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use setr_models::{decode_file, DecodeLimits, EncoderOptions, ImageTextEncoder, Precision};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn golden_json() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("golden/jpeg.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn strings(json: &serde_json::Value, key: &str) -> Vec<String> {
    json[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in jpeg.json"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

fn decoded_photos(json: &serde_json::Value) -> Vec<image::RgbImage> {
    strings(json, "files")
        .iter()
        .map(|f| decode_file(&fixtures().join(f), &DecodeLimits::default()))
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn jpeg_pixels_equal_pillows() {
    let json = golden_json();
    let files = strings(&json, "files");
    let hashes = strings(&json, "decoded_sha256");
    let sizes = json["decoded_hw"].as_array().unwrap();
    for (((image, file), hash), hw) in decoded_photos(&json)
        .iter()
        .zip(&files)
        .zip(&hashes)
        .zip(sizes)
    {
        let (h, w) = (hw[0].as_u64().unwrap(), hw[1].as_u64().unwrap());
        assert_eq!(
            (u64::from(image.height()), u64::from(image.width())),
            (h, w),
            "{file}: size"
        );
        let ours = format!("{:x}", Sha256::digest(image.as_raw()));
        assert_eq!(&ours, hash, "{file}: pixels differ from Pillow's");
    }
}

#[test]
fn jpeg_embeddings_match_transformers_to_1e_4() {
    let json = golden_json();
    let files = strings(&json, "files");
    let images = decoded_photos(&json);
    let tensors =
        candle_core::safetensors::load(fixtures().join("golden/jpeg.safetensors"), &Device::Cpu)
            .unwrap();
    for name in strings(&json, "models") {
        let options = EncoderOptions {
            precision: Precision::F32,
            offline: true,
            ..EncoderOptions::default()
        };
        let model = fixtures().join("models").join(&name);
        let encoder = ImageTextEncoder::load(model.to_str().unwrap(), &options).unwrap();
        let ours = encoder.embed_images(&images).unwrap();
        let theirs: Vec<Vec<f32>> = tensors[&format!("image_embeds_{name}")]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2()
            .unwrap();
        for ((a, b), file) in ours.iter().zip(&theirs).zip(&files) {
            let norm = b.iter().map(|x| x * x).sum::<f32>().sqrt();
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y / norm).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-4, "{name}/{file}: max abs diff {diff}");
        }
    }
}
