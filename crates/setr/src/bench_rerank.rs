//! `setr bench rerank`: per-query latency of the Qwen3-VL reranker for K candidates, with
//! the shared prefix (reference image + text computed once, each candidate continues a
//! clone of its KV cache) and without it (every candidate recomputes the whole prompt).
//! Runs on the tiny fixture checkpoint and on a Qwen3-VL-2B-shaped model with random
//! weights (full widths and vocabulary, fewer layers: CPU).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use setr_models::qwen3vl::{Chunk, Config, KvCache, Patches, Qwen3Vl};

#[derive(clap::Args, Debug)]
pub struct RerankBenchArgs {
    /// Candidates per query.
    #[arg(long, value_delimiter = ',', default_value = "10,50,100")]
    ks: Vec<usize>,
    /// Tiny checkpoint directory (the fixture written by transformers).
    #[arg(long, default_value = "tests/fixtures/models/qwen3vl-a")]
    tiny: PathBuf,
    /// Text and vision layers of the 2B-shaped model (the real one has 28 and 24).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Skip the 2B-shaped model.
    #[arg(long)]
    tiny_only: bool,
}

/// Qwen3-VL-2B-Instruct's shapes, with `layers` text and vision layers.
fn two_b_config(layers: usize) -> Result<Config> {
    let json = serde_json::json!({
        "image_token_id": 151655, "vision_start_token_id": 151652, "tie_word_embeddings": true,
        "text_config": {
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
            "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 8,
            "head_dim": 128, "rms_norm_eps": 1e-6, "tie_word_embeddings": true,
            "rope_parameters": {"rope_theta": 5000000.0, "mrope_section": [24, 20, 20], "rope_type": "default"}
        },
        "vision_config": {
            "depth": layers, "hidden_size": 1024, "intermediate_size": 4096, "num_heads": 16,
            "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
            "out_hidden_size": 2048, "num_position_embeddings": 2304,
            "deepstack_visual_indexes": (0..layers.min(3)).collect::<Vec<_>>()
        }
    });
    Ok(serde_json::from_value(json)?)
}

struct Bench {
    model: Qwen3Vl,
    grid: (usize, usize, usize),
    pixels: Vec<f32>,
}

impl Bench {
    /// A prompt shaped like the rerank prompt: header, reference image, instruction;
    /// then candidate image, question, generation prompt.
    fn ids(&self, image_tokens: usize, text_before: usize, text_after: usize) -> Vec<u32> {
        let pad = self.model.config().image_token_id;
        let text = |n: usize, seed: u32| (0..n as u32).map(move |i| (seed + i * 7) % 900 + 10);
        let mut ids: Vec<u32> = text(text_before, 1).collect();
        ids.extend(std::iter::repeat_n(pad, image_tokens));
        ids.extend(text(text_after, 3));
        ids
    }

    fn query(&self, k: usize, shared_prefix: bool) -> Result<f64> {
        let patches = Patches {
            values: &self.pixels,
            grid: self.grid,
        };
        let tokens = self.grid.1 * self.grid.2 / 4;
        let prefix = self.ids(tokens, 5, 14);
        let suffix = self.ids(tokens, 1, 25);
        let started = Instant::now();
        if shared_prefix {
            let reference = self.model.encode_image(&patches)?;
            let mut cache = KvCache::default();
            let (_, next) = self.model.forward(
                &Chunk {
                    ids: &prefix,
                    images: &[&reference],
                    grids: &[self.grid],
                },
                0,
                &mut cache,
            )?;
            for _ in 0..k {
                let candidate = self.model.encode_image(&patches)?;
                let mut branch = cache.clone();
                self.model.forward(
                    &Chunk {
                        ids: &suffix,
                        images: &[&candidate],
                        grids: &[self.grid],
                    },
                    next,
                    &mut branch,
                )?;
            }
        } else {
            let full: Vec<u32> = prefix.iter().chain(&suffix).copied().collect();
            for _ in 0..k {
                let reference = self.model.encode_image(&patches)?;
                let candidate = self.model.encode_image(&patches)?;
                self.model.forward(
                    &Chunk {
                        ids: &full,
                        images: &[&reference, &candidate],
                        grids: &[self.grid, self.grid],
                    },
                    0,
                    &mut KvCache::default(),
                )?;
            }
        }
        Ok(started.elapsed().as_secs_f64() * 1e3)
    }
}

fn pixels(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

pub fn rerank(args: RerankBenchArgs) -> Result<()> {
    let mut benches = Vec::new();
    let config: Config = serde_json::from_str(
        &std::fs::read_to_string(args.tiny.join("config.json"))
            .context("tiny checkpoint config.json")?,
    )?;
    let patch_dim = 3 * 2 * config.vision_config.patch_size.pow(2);
    // SAFETY: read-only mapping of a checkpoint setr never writes.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(
            &[args.tiny.join("model.safetensors")],
            DType::F32,
            &Device::Cpu,
        )?
    };
    benches.push((
        format!("tiny fixture ({})", args.tiny.display()),
        Bench {
            model: Qwen3Vl::new(config, vb)?,
            grid: (1, 4, 6),
            pixels: pixels(24 * patch_dim),
        },
    ));
    if !args.tiny_only {
        eprintln!(
            "building the random 2B-shaped model ({} layers)",
            args.layers
        );
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = Qwen3Vl::new(two_b_config(args.layers)?, vb)?;
        // 256x256 images: a 16x16 patch grid, 64 tokens each.
        benches.push((
            format!(
                "Qwen3-VL-2B shapes, random weights, {} text + {} vision layers (of 28 + 24)",
                args.layers, args.layers
            ),
            Bench {
                model,
                grid: (1, 16, 16),
                pixels: pixels(256 * 3 * 2 * 16 * 16),
            },
        ));
    }
    outln!(
        "setr bench rerank: per-query latency, f32, CPU, {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    outln!("| model | K | shared prefix (ms) | full recompute (ms) | speed-up |");
    outln!("|---|---:|---:|---:|---:|");
    for (name, bench) in &benches {
        bench.query(2, true)?; // warm up
        for &k in &args.ks {
            let shared = bench.query(k, true)?;
            let full = bench.query(k, false)?;
            outln!(
                "| {name} | {k} | {shared:.1} | {full:.1} | {:.2}x |",
                full / shared
            );
        }
    }
    Ok(())
}
