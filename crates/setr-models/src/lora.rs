//! PEFT LoRA adapters merged into base weights: `W' = W + scaling * B @ A` with
//! `scaling = lora_alpha / r` (or `lora_alpha / sqrt(r)` with rsLoRA), as PEFT's
//! `merge_and_unload` does. Only plain LoRA on linear layers is supported; adapters using
//! anything that changes the merge (DoRA, bias, patterns, extra saved modules, ...) are
//! refused with a clear error.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::{ModelError, Result};

/// A LoRA adapter (`adapter_config.json` + `adapter_model.safetensors`), F32 on the CPU.
#[derive(Clone, Debug)]
pub struct LoraAdapter {
    /// Rank.
    pub r: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// rsLoRA: scaling `alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// `target_modules` of the config (informational; the tensors decide what is merged).
    pub target_modules: Vec<String>,
    /// Per adapted module, by its path in the base model: (A [r, in], B [out, r]).
    pairs: BTreeMap<String, (Tensor, Tensor)>,
}

/// Config keys whose non-empty / true values change what merging means.
const REFUSED: [(&str, &str); 12] = [
    ("fan_in_fan_out", "transposed (Conv1D) weights"),
    ("use_dora", "DoRA"),
    ("lora_bias", "LoRA biases"),
    ("use_qalora", "QA-LoRA"),
    ("modules_to_save", "fully trained extra modules"),
    ("rank_pattern", "per-module ranks"),
    ("alpha_pattern", "per-module alphas"),
    ("layer_replication", "layer replication"),
    ("trainable_token_indices", "trained token embeddings"),
    ("alora_invocation_tokens", "activated LoRA"),
    ("target_parameters", "LoRA on parameters"),
    ("use_bdlora", "block-diagonal LoRA"),
];

/// Whether a JSON value is "set": not null, false, 0, or empty.
fn is_set(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl LoraAdapter {
    /// Loads a PEFT adapter directory. Fails on a missing or unsupported config and on
    /// tensors that are not pairs of `<module>.lora_A[.<name>].weight` /
    /// `<module>.lora_B[.<name>].weight` of rank `r`.
    pub fn load(dir: &Path) -> Result<LoraAdapter> {
        let missing = |file: &str| ModelError::MissingFile {
            dir: dir.to_path_buf(),
            file: file.into(),
        };
        let config_path = dir.join("adapter_config.json");
        if !config_path.is_file() {
            return Err(missing("adapter_config.json"));
        }
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| ModelError::io(&config_path, e))?;
        let config: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(dir, format!("adapter_config.json: {e}")))?;
        let (r, alpha, use_rslora, target_modules) = parse_config(&config)
            .map_err(|why| ModelError::invalid(dir, format!("adapter_config.json: {why}")))?;

        let weights_path = dir.join("adapter_model.safetensors");
        if !weights_path.is_file() {
            if dir.join("adapter_model.bin").is_file() {
                return Err(ModelError::invalid(
                    dir,
                    "adapter_model.bin (pickle) is not supported; save the adapter with \
                     safe_serialization=True",
                ));
            }
            return Err(missing("adapter_model.safetensors"));
        }
        let bad =
            |why: String| ModelError::invalid(dir, format!("adapter_model.safetensors: {why}"));
        let mut halves: BTreeMap<String, [Option<Tensor>; 2]> = BTreeMap::new();
        for (key, tensor) in candle_core::safetensors::load(&weights_path, &Device::Cpu)? {
            let (module, side) = split_key(&key).ok_or_else(|| {
                bad(format!(
                    "unsupported tensor `{key}` (only lora_A / lora_B weights)"
                ))
            })?;
            let slot = &mut halves.entry(module).or_default()[side];
            if slot.is_some() {
                return Err(bad(format!(
                    "`{key}` is given twice (several adapters in one file?)"
                )));
            }
            *slot = Some(tensor.to_dtype(DType::F32)?);
        }
        if halves.is_empty() {
            return Err(bad("no LoRA tensors".into()));
        }
        let mut pairs = BTreeMap::new();
        for (module, [a, b]) in halves {
            let (Some(a), Some(b)) = (a, b) else {
                return Err(bad(format!("`{module}` lacks its lora_A or lora_B")));
            };
            match (a.dims(), b.dims()) {
                ([ra, _], [_, rb]) if *ra == r && *rb == r => {}
                (da, db) => {
                    return Err(bad(format!(
                        "`{module}`: lora_A {da:?} / lora_B {db:?} do not fit rank {r}"
                    )))
                }
            }
            pairs.insert(module, (a, b));
        }
        Ok(LoraAdapter {
            r,
            alpha,
            use_rslora,
            target_modules,
            pairs,
        })
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    /// Names of the base weights the adapter changes (`<module>.weight`), sorted.
    pub fn base_keys(&self) -> impl Iterator<Item = String> + '_ {
        self.pairs.keys().map(|m| format!("{m}.weight"))
    }

    /// Merges the adapter into `weights` (base checkpoint tensors by name):
    /// `W' = W + scaling * (B @ A)`, computed in F32 on `W`'s device and cast back to `W`'s
    /// dtype. Every target is checked before any weight changes: a missing base weight or
    /// a shape mismatch is an error. Returns the number of merged weights.
    pub fn merge_into(&self, weights: &mut HashMap<String, Tensor>) -> Result<usize> {
        for (module, (a, b)) in &self.pairs {
            let key = format!("{module}.weight");
            let w = weights.get(&key).ok_or_else(|| {
                ModelError::InvalidInput(format!(
                    "LoRA adapts `{key}`, which is not a weight of the base model"
                ))
            })?;
            let want = [b.dim(0)?, a.dim(1)?];
            if w.dims() != want.as_slice() {
                return Err(ModelError::InvalidInput(format!(
                    "LoRA for `{key}` is {want:?} but the base weight is {:?}",
                    w.dims()
                )));
            }
        }
        let scaling = self.scaling();
        for (module, (a, b)) in &self.pairs {
            let key = format!("{module}.weight");
            let Some(w) = weights.get(&key) else { continue };
            let device = w.device();
            let delta = b
                .to_device(device)?
                .matmul(&a.to_device(device)?)?
                .affine(scaling, 0.0)?;
            let merged = w.to_dtype(DType::F32)?.add(&delta)?.to_dtype(w.dtype())?;
            weights.insert(key, merged);
        }
        tracing::debug!(count = self.pairs.len(), scaling, "merged LoRA adapter");
        Ok(self.pairs.len())
    }
}

/// (r, alpha, use_rslora, target_modules) of `adapter_config.json`.
fn parse_config(c: &Value) -> std::result::Result<(usize, f64, bool, Vec<String>), String> {
    if let Some(kind) = c.get("peft_type").and_then(Value::as_str) {
        if kind != "LORA" {
            return Err(format!("peft_type `{kind}` is not supported (only LORA)"));
        }
    }
    for (key, what) in REFUSED {
        if let Some(v) = c.get(key).filter(|v| is_set(v)) {
            return Err(format!(
                "`{key}` = {v} ({what}) is not supported; merge the adapter with PEFT instead"
            ));
        }
    }
    match c.get("bias") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s == "none" => {}
        Some(v) => return Err(format!("bias = {v} is not supported (only \"none\")")),
    }
    let r = c
        .get("r")
        .and_then(Value::as_u64)
        .filter(|r| *r > 0)
        .ok_or("`r` must be a positive integer")? as usize;
    let alpha = match c.get("lora_alpha") {
        None | Some(Value::Null) => 8.0, // PEFT's default
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("lora_alpha = {v} is not a number"))?,
    };
    let use_rslora = match c.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("use_rslora = {v} is not a boolean"))?,
    };
    let target_modules = match c.get("target_modules") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or("target_modules must be strings")?,
        Some(v) => return Err(format!("target_modules = {v} is not supported")),
    };
    Ok((r, alpha, use_rslora, target_modules))
}

/// `base_model.model.<module>.lora_{A,B}[.<adapter>].weight` -> (`<module>`, 0 for A, 1 for B).
fn split_key(key: &str) -> Option<(String, usize)> {
    let key = key.strip_prefix("base_model.model.").unwrap_or(key);
    let key = key.strip_suffix(".weight")?;
    [(".lora_A", 0), (".lora_B", 1)]
        .into_iter()
        .find_map(|(tag, side)| {
            let pos = key.rfind(tag)?;
            let rest = &key[pos + tag.len()..];
            // Nothing, or one adapter name such as `.default`.
            let plain = rest.is_empty()
                || rest
                    .strip_prefix('.')
                    .is_some_and(|n| !n.is_empty() && !n.contains('.'));
            (plain && pos > 0).then(|| (key[..pos].to_owned(), side))
        })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
    }

    #[test]
    fn keys() {
        let m = "model.language_model.layers.0.self_attn.q_proj";
        let k = |s: &str| split_key(s);
        assert_eq!(
            k(&format!("base_model.model.{m}.lora_A.weight")),
            Some((m.into(), 0))
        );
        assert_eq!(
            k(&format!("base_model.model.{m}.lora_B.default.weight")),
            Some((m.into(), 1))
        );
        assert_eq!(k(&format!("{m}.lora_B.weight")), Some((m.into(), 1)));
        assert_eq!(
            k(&format!("base_model.model.{m}.lora_magnitude_vector")),
            None
        );
        assert_eq!(
            k(&format!("base_model.model.{m}.lora_embedding_A.weight")),
            None
        );
        assert_eq!(k(&format!("base_model.model.{m}.base_layer.weight")), None);
    }

    #[test]
    fn merges_fixture_adapter() {
        let adapter_dir = fixtures().join("models").join("qwen3vl-a-lora");
        let base_dir = fixtures().join("models").join("qwen3vl-a");
        let adapter = LoraAdapter::load(&adapter_dir).unwrap();
        assert_eq!(
            (adapter.r, adapter.alpha, adapter.use_rslora),
            (4, 8.0, false)
        );
        assert_eq!(adapter.scaling(), 2.0);
        assert_eq!(
            adapter.target_modules,
            ["k_proj", "o_proj", "q_proj", "v_proj"]
        );

        let mut weights =
            candle_core::safetensors::load(base_dir.join("model.safetensors"), &Device::Cpu)
                .unwrap();
        let key = "model.language_model.layers.1.self_attn.k_proj.weight";
        let untouched = "model.language_model.layers.1.mlp.up_proj.weight";
        let before = weights[key].to_vec2::<f32>().unwrap();
        let before_mlp = weights[untouched].to_vec2::<f32>().unwrap();
        let merged = adapter.merge_into(&mut weights).unwrap();

        let config: Value =
            serde_json::from_str(&std::fs::read_to_string(base_dir.join("config.json")).unwrap())
                .unwrap();
        let layers = config["text_config"]["num_hidden_layers"].as_u64().unwrap() as usize;
        assert_eq!(merged, 4 * layers);
        assert_eq!(adapter.base_keys().count(), merged);

        // Independent reference: B @ A in f64 from the raw adapter tensors.
        let raw = candle_core::safetensors::load(
            adapter_dir.join("adapter_model.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let prefix = "base_model.model.model.language_model.layers.1.self_attn.k_proj";
        let a = raw[&format!("{prefix}.lora_A.weight")]
            .to_vec2::<f32>()
            .unwrap();
        let b = raw[&format!("{prefix}.lora_B.weight")]
            .to_vec2::<f32>()
            .unwrap();
        let after = weights[key].to_vec2::<f32>().unwrap();
        assert_eq!(
            (after.len(), after[0].len()),
            (before.len(), before[0].len())
        );
        let mut max_delta = 0f64;
        for o in 0..before.len() {
            for i in 0..before[0].len() {
                let ba: f64 = (0..a.len())
                    .map(|k| f64::from(b[o][k]) * f64::from(a[k][i]))
                    .sum();
                let want = f64::from(before[o][i]) + 2.0 * ba;
                assert!((f64::from(after[o][i]) - want).abs() < 1e-6, "[{o}, {i}]");
                max_delta = max_delta.max((2.0 * ba).abs());
            }
        }
        assert!(max_delta > 1e-3, "the adapter should change the weight");
        assert_eq!(weights[untouched].to_vec2::<f32>().unwrap(), before_mlp);
    }

    #[test]
    fn rslora_scaling() {
        let dir = fixtures().join("models").join("qwen3vl-b-lora-rslora");
        let adapter = LoraAdapter::load(&dir).unwrap();
        assert!(adapter.use_rslora);
        assert!((adapter.scaling() - 8.0 / 2f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn refusals() {
        let adapter = LoraAdapter::load(&fixtures().join("models").join("qwen3vl-a-lora")).unwrap();
        // Missing base weight: nothing merged, error.
        let mut empty = HashMap::new();
        assert!(adapter.merge_into(&mut empty).is_err());
        // Wrong shape.
        let mut wrong = HashMap::new();
        for key in adapter.base_keys() {
            wrong.insert(
                key,
                Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap(),
            );
        }
        assert!(adapter.merge_into(&mut wrong).is_err());

        let dir = tempfile::tempdir().unwrap();
        assert!(LoraAdapter::load(dir.path()).is_err());
        let base = r#""peft_type": "LORA", "r": 4, "lora_alpha": 8, "bias": "none""#;
        for extra in [
            r#""use_dora": true"#,
            r#""fan_in_fan_out": true"#,
            r#""bias": "all""#,
            r#""modules_to_save": ["lm_head"]"#,
            r#""rank_pattern": {"q_proj": 8}"#,
            r#""alpha_pattern": {"q_proj": 8}"#,
            r#""peft_type": "IA3""#,
        ] {
            let json = format!("{{{base}, {extra}}}");
            std::fs::write(dir.path().join("adapter_config.json"), &json).unwrap();
            let err = LoraAdapter::load(dir.path()).unwrap_err().to_string();
            assert!(err.contains("not supported"), "{json}: {err}");
        }
    }
}
