//! candle-transformers' own CLIP and SigLIP (0.11.1) against the same transformers golden
//! features as `parity.rs`, on the same fixture checkpoints. The issue that chose
//! candle-transformers asked to use its models where they match transformers to 1e-4 and
//! run as fast as setr's, and otherwise to keep a test that shows the difference: this is
//! that test. If an upstream release closes a gap, the assertion that expects the gap
//! fails, and the choice is up for review.
//!
//! What it shows (CPU, f32):
//! - CLIP: upstream has no config reader, hard-codes the layer norms' epsilon (1e-5) and
//!   knows only the quick GELU, so `clip-b` (exact GELU, epsilon 1e-6 in its vision tower)
//!   cannot be expressed; `clip-a`, which it can express, matches.
//! - SigLIP: upstream cannot read transformers 5's config.json (`"bos_token_id": null`),
//!   has no text `projection_size` (`siglip-b` fails to load) and no padding mask; with
//!   the nulls removed, `siglip-a` matches.
//! - Speed: upstream runs every product through candle's matmul, which packs the weights on
//!   each call; the note of issue 17 has its time against setr's on ViT-B/32 shapes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{clip, siglip};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn golden(name: &str) -> HashMap<String, Tensor> {
    let path = fixtures().join(format!("golden/{name}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu).expect("golden tensors")
}

fn weights(name: &str) -> VarBuilder<'static> {
    let path = fixtures().join(format!("models/{name}/model.safetensors"));
    // SAFETY: the fixture file is not modified while the test runs.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu) }
        .expect("fixture weights")
}

fn config(name: &str) -> serde_json::Value {
    let path = fixtures().join(format!("models/{name}/config.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The four golden images' pixel tensors as one batch.
fn pixels(g: &HashMap<String, Tensor>) -> Tensor {
    let stems = ["landscape", "portrait_rgba", "grey", "exif_rot6"];
    let each: Vec<&Tensor> = stems
        .iter()
        .map(|s| &g[&format!("pixel_values_{s}")])
        .collect();
    Tensor::cat(&each, 0).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap()
}

/// Upstream's nearest CLIP config to a checkpoint's config.json (upstream has no
/// deserialiser, so the fields are mapped by hand), and what it cannot express, if any:
/// it knows only the quick GELU and a layer-norm epsilon of 1e-5.
fn nearest_clip_config(name: &str) -> (clip::ClipConfig, Option<String>) {
    let c = config(name);
    let (t, v) = (&c["text_config"], &c["vision_config"]);
    let int = |x: &serde_json::Value, key: &str| x[key].as_u64().unwrap() as usize;
    let mut gap = None;
    for (tower, cfg) in [("text", t), ("vision", v)] {
        let act = cfg["hidden_act"].as_str().unwrap_or("quick_gelu");
        let eps = cfg["layer_norm_eps"].as_f64().unwrap_or(1e-5);
        if act != "quick_gelu" {
            gap = Some(format!(
                "{tower} hidden_act {act}: upstream has only quick_gelu"
            ));
        } else if eps != 1e-5 {
            gap = Some(format!("{tower} layer_norm_eps {eps}: upstream fixes 1e-5"));
        }
    }
    let projection_dim = int(&c, "projection_dim");
    let config = clip::ClipConfig {
        text_config: clip::text_model::ClipTextConfig {
            vocab_size: int(t, "vocab_size"),
            embed_dim: int(t, "hidden_size"),
            activation: clip::text_model::Activation::QuickGelu,
            intermediate_size: int(t, "intermediate_size"),
            max_position_embeddings: int(t, "max_position_embeddings"),
            pad_with: None,
            num_hidden_layers: int(t, "num_hidden_layers"),
            num_attention_heads: int(t, "num_attention_heads"),
            projection_dim,
        },
        vision_config: clip::vision_model::ClipVisionConfig {
            embed_dim: int(v, "hidden_size"),
            activation: clip::text_model::Activation::QuickGelu,
            intermediate_size: int(v, "intermediate_size"),
            num_hidden_layers: int(v, "num_hidden_layers"),
            num_attention_heads: int(v, "num_attention_heads"),
            projection_dim,
            num_channels: int(v, "num_channels"),
            image_size: int(v, "image_size"),
            patch_size: int(v, "patch_size"),
        },
        logit_scale_init_value: 2.6592,
        image_size: int(v, "image_size"),
    };
    (config, gap)
}

#[test]
fn upstream_clip_matches_where_it_can_express_the_checkpoint() {
    let g = golden("clip-a");
    let (cfg, gap) = nearest_clip_config("clip-a");
    assert_eq!(gap, None, "clip-a is within what upstream expresses");
    let model = clip::ClipModel::new(weights("clip-a"), &cfg).unwrap();
    let images = model.get_image_features(&pixels(&g)).unwrap();
    let diff = max_abs_diff(&images, &g["image_embeds"]);
    assert!(diff <= 1e-4, "clip-a images: {diff}");
    let ids = g["input_ids"].to_dtype(DType::U32).unwrap();
    let texts = model.get_text_features(&ids).unwrap();
    let diff = max_abs_diff(&texts, &g["text_embeds"]);
    assert!(diff <= 1e-4, "clip-a texts: {diff}");
}

#[test]
fn upstream_clip_cannot_express_exact_gelu_or_another_epsilon() {
    let (forced, gap) = nearest_clip_config("clip-b");
    let why = gap.expect("clip-b needs what upstream lacks");
    assert!(
        why.contains("gelu") || why.contains("layer_norm_eps"),
        "{why}"
    );
    // The nearest config it has (quick GELU, epsilon 1e-5) loads the weights but gives
    // other features: the gap setr's own tower does not have (parity.rs).
    let g = golden("clip-b");
    let model = clip::ClipModel::new(weights("clip-b"), &forced).unwrap();
    let images = model.get_image_features(&pixels(&g)).unwrap();
    let diff = max_abs_diff(&images, &g["image_embeds"]);
    assert!(
        diff > 1e-3,
        "clip-b images now match upstream ({diff}): review the choice"
    );
}

/// A config with its `null` fields removed, so that upstream's serde defaults apply.
fn without_nulls(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(map) = value.as_object_mut() {
        map.retain(|_, v| !v.is_null());
        for v in map.values_mut() {
            *v = without_nulls(v.take());
        }
    }
    value
}

/// Upstream's SigLIP on a fixture, its config read with the nulls removed.
fn upstream_siglip(name: &str) -> candle_core::Result<siglip::Model> {
    let cfg: siglip::Config = serde_json::from_value(without_nulls(config(name))).unwrap();
    siglip::Model::new(&cfg, weights(name))
}

#[test]
fn upstream_siglip_matches_where_it_can_load_the_checkpoint() {
    // transformers 5 writes `"bos_token_id": null` for SigLIP; upstream wants a number.
    let raw = serde_json::from_value::<siglip::Config>(config("siglip-a"));
    assert!(
        raw.is_err(),
        "upstream now reads transformers 5 SigLIP configs: review"
    );
    let g = golden("siglip-a");
    let model = upstream_siglip("siglip-a").unwrap();
    let images = model.get_image_features(&pixels(&g)).unwrap();
    let diff = max_abs_diff(&images, &g["image_embeds"]);
    assert!(diff <= 1e-4, "siglip-a images: {diff}");
    let ids = g["input_ids"].to_dtype(DType::U32).unwrap();
    let texts = model.get_text_features(&ids).unwrap();
    let diff = max_abs_diff(&texts, &g["text_embeds_no_attention_mask"]);
    assert!(diff <= 1e-4, "siglip-a texts: {diff}");
}

#[test]
fn upstream_siglip_has_no_text_projection_size_nor_padding_mask() {
    // siglip-b's text head projects 40 -> 48 (`projection_size`, as SigLIP 2 checkpoints
    // do); upstream's head is hidden -> hidden and fails on the weights' shape.
    match upstream_siglip("siglip-b") {
        Ok(_) => panic!("upstream now loads a projected SigLIP text head: review"),
        Err(e) => assert!(e.to_string().contains("head"), "{e}"),
    }
    // Upstream's text tower takes no attention mask, so it cannot give transformers 5's
    // padded-text features (setr can, with `siglip_text_padding_mask`).
    let g = golden("siglip-a");
    let model = upstream_siglip("siglip-a").unwrap();
    let ids = g["input_ids"].to_dtype(DType::U32).unwrap();
    let texts = model.get_text_features(&ids).unwrap();
    let diff = max_abs_diff(&texts, &g["text_embeds"]);
    assert!(
        diff > 1e-3,
        "siglip-a masked texts now match upstream ({diff}): review"
    );
}
