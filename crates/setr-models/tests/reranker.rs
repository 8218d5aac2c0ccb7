//! The Yes/No reranker end to end (files -> decode -> Qwen processor -> chat template ->
//! tokenizer -> model with a shared prefix) against P(Yes) from transformers, with and
//! without LoRA adapters, and its bad inputs.

use std::path::{Path, PathBuf};

use candle_core::Device;
use setr_models::{decode_file, DecodeLimits, Precision, RerankerOptions, VlmReranker};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn golden(
    name: &str,
) -> (
    std::collections::HashMap<String, candle_core::Tensor>,
    serde_json::Value,
) {
    let dir = fixtures().join("golden");
    (
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap(),
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap(),
    )
}

fn image(json: &serde_json::Value, stem: &str) -> image::RgbImage {
    let file = json["images"][stem]["file"].as_str().unwrap();
    decode_file(
        &fixtures().join("images").join(file),
        &DecodeLimits::default(),
    )
    .unwrap()
}

fn reranker(name: &str, lora: Option<&str>, precision: Precision) -> VlmReranker {
    let options = RerankerOptions {
        offline: true,
        precision,
        lora: lora.map(|l| fixtures().join("models").join(l)),
        ..RerankerOptions::default()
    };
    VlmReranker::load(
        fixtures().join("models").join(name).to_str().unwrap(),
        &options,
    )
    .unwrap()
}

/// (model, adapter, golden key prefix)
const CASES: [(&str, Option<&str>, &str); 5] = [
    ("qwen3vl-a", None, ""),
    ("qwen3vl-b", None, ""),
    ("qwen3vl-a", Some("qwen3vl-a-lora"), "lora_"),
    ("qwen3vl-b", Some("qwen3vl-b-lora"), "lora_"),
    ("qwen3vl-b", Some("qwen3vl-b-lora-rslora"), "lora_rslora_"),
];

#[test]
fn p_yes_matches_transformers_with_and_without_lora() {
    for (name, lora, prefix) in CASES {
        let (t, json) = golden(name);
        let r = reranker(name, lora, Precision::F32);
        let text = json["modification_text"].as_str().unwrap();
        let reference = image(&json, "landscape");
        let stems: Vec<String> = json["rerank"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["stem"].as_str().unwrap().to_owned())
            .collect();
        let images: Vec<_> = stems.iter().map(|s| image(&json, s)).collect();
        let refs: Vec<Option<&image::RgbImage>> = images.iter().map(Some).collect();
        let judged = r.judge(&reference, text, &refs).unwrap();
        for (i, j) in judged.iter().enumerate() {
            let ours = j.as_ref().unwrap().p_yes;
            let key = format!("{prefix}p_yes_{i}");
            let theirs: f32 = t[&key].flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
            assert!(
                (ours - theirs).abs() <= 1e-5,
                "{name} {lora:?} candidate {i}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn bf16_p_yes_stays_close() {
    let (t, json) = golden("qwen3vl-a");
    let r = reranker("qwen3vl-a", None, Precision::Bf16);
    let reference = image(&json, "landscape");
    let candidate = image(&json, "grey");
    let judged = r
        .judge(
            &reference,
            json["modification_text"].as_str().unwrap(),
            &[Some(&candidate)],
        )
        .unwrap();
    let theirs: f32 = t["p_yes_0"]
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()[0];
    let ours = judged[0].as_ref().unwrap().p_yes;
    assert!((ours - theirs).abs() <= 0.02, "{ours} vs {theirs}");
}

#[test]
fn a_missing_candidate_is_flagged_and_the_others_are_scored() {
    let (_, json) = golden("qwen3vl-a");
    let r = reranker("qwen3vl-a", None, Precision::F32);
    let reference = image(&json, "landscape");
    let candidate = image(&json, "grey");
    let judged = r
        .judge(&reference, "make it red", &[None, Some(&candidate)])
        .unwrap();
    assert!(judged[0].is_err());
    let p = judged[1].as_ref().unwrap().p_yes;
    assert!(p > 0.0 && p < 1.0);
    // Extreme aspect ratios are refused by the processor: flagged, not fatal.
    let sliver = image::RgbImage::from_pixel(2000, 4, image::Rgb([9, 9, 9]));
    let judged = r
        .judge(
            &reference,
            "make it red",
            &[Some(&sliver), Some(&candidate)],
        )
        .unwrap();
    assert!(judged[0].is_err(), "{:?}", judged[0]);
    assert!(judged[1].is_ok());
}

#[test]
fn an_empty_text_is_a_clear_error() {
    let (_, json) = golden("qwen3vl-a");
    let r = reranker("qwen3vl-a", None, Precision::F32);
    let reference = image(&json, "landscape");
    let err = r.judge(&reference, "  ", &[Some(&reference)]).unwrap_err();
    assert!(err.to_string().contains("modification text"), "{err}");
}

#[test]
fn answers_that_are_not_single_tokens_are_refused_at_load() {
    let options = RerankerOptions {
        offline: true,
        yes: "Yes, definitely".into(),
        ..RerankerOptions::default()
    };
    let err = VlmReranker::load(
        fixtures().join("models/qwen3vl-a").to_str().unwrap(),
        &options,
    )
    .err()
    .expect("must fail");
    assert!(err.to_string().contains("must be one"), "{err}");
}

#[test]
fn a_checkpoint_without_chat_template_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("models/qwen3vl-a");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.starts_with("chat_template") {
            continue;
        }
        if name == "tokenizer_config.json" {
            let mut cfg: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            cfg.as_object_mut().unwrap().remove("chat_template");
            std::fs::write(tmp.path().join(&name), cfg.to_string()).unwrap();
        } else {
            std::fs::copy(&path, tmp.path().join(&name)).unwrap();
        }
    }
    let options = RerankerOptions {
        offline: true,
        ..RerankerOptions::default()
    };
    let err = VlmReranker::load(tmp.path().to_str().unwrap(), &options)
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("chat template"), "{err}");
}
