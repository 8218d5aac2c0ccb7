//! Qwen3-VL parity with transformers 5.24 on the fixture checkpoints
//! (tests/fixtures/generate_qwen3vl.py): vision features, multimodal RoPE positions,
//! last-position logits and P(Yes) for full sequences, and the same logits when the shared
//! prefix runs once and each candidate continues a clone of its cache.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use setr_models::qwen3vl::{Chunk, Config, KvCache, Patches, Qwen3Vl, VisionOutput};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

struct Golden {
    t: HashMap<String, Tensor>,
    json: serde_json::Value,
}

impl Golden {
    fn load(name: &str) -> Golden {
        let dir = fixtures().join("golden");
        Golden {
            t: candle_core::safetensors::load(
                dir.join(format!("{name}.safetensors")),
                &Device::Cpu,
            )
            .unwrap(),
            json: serde_json::from_str(
                &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
            )
            .unwrap(),
        }
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        self.t[key]
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn ids(&self, key: &str) -> Vec<u32> {
        self.t[key]
            .flatten_all()
            .unwrap()
            .to_vec1::<i64>()
            .unwrap()
            .iter()
            .map(|&x| x as u32)
            .collect()
    }

    fn grid(&self, stem: &str) -> (usize, usize, usize) {
        let g = self.ids(&format!("grid_thw_{stem}"));
        (g[0] as usize, g[1] as usize, g[2] as usize)
    }

    fn candidates(&self) -> Vec<String> {
        self.json["rerank"]["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["stem"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn load(name: &str, dtype: DType) -> Qwen3Vl {
    let dir = fixtures().join("models").join(name);
    let config: Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    // SAFETY: fixture files are not modified while mapped.
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], dtype, &Device::Cpu)
            .unwrap()
    };
    Qwen3Vl::new(config, vb).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn encode(model: &Qwen3Vl, g: &Golden, stem: &str) -> VisionOutput {
    let values = g.f32s(&format!("pixel_values_{stem}"));
    model
        .encode_image(&Patches {
            values: &values,
            grid: g.grid(stem),
        })
        .unwrap()
}

fn p_yes(logits: &[f32], yes: usize, no: usize) -> f32 {
    let (a, b) = (logits[yes], logits[no]);
    let m = a.max(b);
    let (ea, eb) = ((a - m).exp(), (b - m).exp());
    ea / (ea + eb)
}

const REF: &str = "landscape";

#[test]
fn vision_tower_matches() {
    for name in ["qwen3vl-a", "qwen3vl-b"] {
        let g = Golden::load(name);
        let model = load(name, DType::F32);
        let out = encode(&model, &g, REF);
        let d = max_diff(
            &out.embeds.flatten_all().unwrap().to_vec1().unwrap(),
            &g.f32s("vision_embeds_landscape"),
        );
        assert!(d <= 1e-4, "{name}: vision embeds differ by {d}");
        for (k, feature) in out.deepstack.iter().enumerate() {
            let d = max_diff(
                &feature.flatten_all().unwrap().to_vec1().unwrap(),
                &g.f32s(&format!("deepstack_landscape_{k}")),
            );
            assert!(d <= 1e-4, "{name}: deepstack {k} differs by {d}");
        }
    }
}

#[test]
fn full_sequences_match_positions_logits_and_p_yes() {
    for name in ["qwen3vl-a", "qwen3vl-b"] {
        let g = Golden::load(name);
        let model = load(name, DType::F32);
        let yes = g.json["token_ids"]["Yes"].as_u64().unwrap() as usize;
        let no = g.json["token_ids"]["No"].as_u64().unwrap() as usize;
        let reference = encode(&model, &g, REF);
        for (i, stem) in g.candidates().iter().enumerate() {
            let ids = g.ids(&format!("input_ids_{i}"));
            let candidate = encode(&model, &g, stem);
            let grids = [g.grid(REF), g.grid(stem)];
            let (positions, _) = model.positions(&ids, &grids, 0).unwrap();
            let expected = g.ids(&format!("rope_position_ids_{i}"));
            let n = ids.len();
            for (j, p) in positions.iter().enumerate() {
                assert_eq!(
                    *p,
                    [expected[j], expected[n + j], expected[2 * n + j]],
                    "{name} cand {i} token {j}"
                );
            }
            let chunk = Chunk {
                ids: &ids,
                images: &[&reference, &candidate],
                grids: &grids,
            };
            let (logits, _) = model.forward(&chunk, 0, &mut KvCache::default()).unwrap();
            let logits: Vec<f32> = logits.to_vec1().unwrap();
            let d = max_diff(&logits, &g.f32s(&format!("logits_last_{i}")));
            assert!(d <= 1e-4, "{name} cand {i}: logits differ by {d}");
            let p = p_yes(&logits, yes, no);
            let expected_p = g.f32s(&format!("p_yes_{i}"))[0];
            assert!(
                (p - expected_p).abs() <= 1e-5,
                "{name} cand {i}: P(Yes) {p} vs {expected_p}"
            );
        }
    }
}

#[test]
fn a_shared_prefix_cache_gives_the_same_logits() {
    for name in ["qwen3vl-a", "qwen3vl-b"] {
        let g = Golden::load(name);
        let model = load(name, DType::F32);
        let split = g.json["prefix_len"].as_u64().unwrap() as usize;
        let reference = encode(&model, &g, REF);
        let prefix = g.ids("prefix_input_ids");
        let mut cache = KvCache::default();
        let grids = [g.grid(REF)];
        let (_, next) = model
            .forward(
                &Chunk {
                    ids: &prefix,
                    images: &[&reference],
                    grids: &grids,
                },
                0,
                &mut cache,
            )
            .unwrap();
        assert_eq!(cache.len(), split);
        for (i, stem) in g.candidates().iter().enumerate() {
            let ids = g.ids(&format!("input_ids_{i}"));
            assert_eq!(
                &ids[..split],
                &prefix[..],
                "{name}: prefix of candidate {i}"
            );
            let candidate = encode(&model, &g, stem);
            let mut branch = cache.clone();
            let (logits, _) = model
                .forward(
                    &Chunk {
                        ids: &ids[split..],
                        images: &[&candidate],
                        grids: &[g.grid(stem)],
                    },
                    next,
                    &mut branch,
                )
                .unwrap();
            let d = max_diff(
                &logits.to_vec1().unwrap(),
                &g.f32s(&format!("logits_last_{i}")),
            );
            assert!(d <= 1e-4, "{name} cand {i}: cached logits differ by {d}");
            assert_eq!(cache.len(), split, "the shared prefix cache must not grow");
        }
    }
}

#[test]
fn text_only_logits_match() {
    for name in ["qwen3vl-a", "qwen3vl-b"] {
        let g = Golden::load(name);
        let model = load(name, DType::F32);
        let ids = g.ids("input_ids_text_only");
        let (logits, _) = model
            .forward(
                &Chunk {
                    ids: &ids,
                    images: &[],
                    grids: &[],
                },
                0,
                &mut KvCache::default(),
            )
            .unwrap();
        let d = max_diff(&logits.to_vec1().unwrap(), &g.f32s("logits_text_only"));
        assert!(d <= 1e-4, "{name}: text-only logits differ by {d}");
    }
}
