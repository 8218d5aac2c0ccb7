//! Where a checkpoint comes from: a local directory, or a Hugging Face hub id fetched into
//! the hub cache when online. Offline (`offline = true` or `HF_HUB_OFFLINE=1`) a hub id is
//! looked up in the local cache only and the network is never touched.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{ModelError, Result};

/// A checkpoint on local disk.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// What the user gave (path or hub id), for messages and the store's record.
    pub source: String,
    /// Directory holding config.json (for hub ids, the cache snapshot).
    pub dir: PathBuf,
    /// The safetensors weight files.
    pub weights: Vec<PathBuf>,
}

/// Files every CLIP-family checkpoint needs besides its weights.
const REQUIRED: [&str; 3] = ["config.json", "tokenizer.json", "preprocessor_config.json"];
/// Files read when present.
const OPTIONAL: [&str; 1] = ["tokenizer_config.json"];

/// True when `HF_HUB_OFFLINE` asks for offline use.
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "False"))
}

/// Resolves `reference` (a directory, or a hub id such as `openai/clip-vit-base-patch32`).
pub fn resolve(reference: &str, offline: bool) -> Result<Checkpoint> {
    let path = Path::new(reference);
    if path.is_dir() {
        let dir = path.canonicalize().map_err(|e| ModelError::io(path, e))?;
        for file in REQUIRED {
            if !dir.join(file).is_file() {
                return Err(ModelError::MissingFile {
                    dir,
                    file: file.into(),
                });
            }
        }
        let weights = weight_files(&dir)?;
        return Ok(Checkpoint {
            source: dir.display().to_string(),
            dir,
            weights,
        });
    }
    if path.exists() {
        return Err(ModelError::invalid(path, "not a directory"));
    }
    if !looks_like_hub_id(reference) {
        return Err(ModelError::MissingFile {
            dir: path.to_path_buf(),
            file: "(directory does not exist)".into(),
        });
    }
    fetch(reference, offline || offline_from_env())
}

/// `owner/name` or `name`, made of the characters the hub allows.
fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    !s.is_empty()
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// `model.safetensors`, or the shards named by `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return shard_files(dir, &index);
    }
    let why = if dir.join("pytorch_model.bin").is_file() {
        "only pytorch_model.bin is present; setr reads safetensors (convert with `transformers`' save_pretrained(safe_serialization=True))"
    } else {
        "no model.safetensors or model.safetensors.index.json"
    };
    Err(ModelError::invalid(dir, why))
}

fn shard_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index).map_err(|e| ModelError::io(index, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ModelError::invalid(dir, format!("model.safetensors.index.json: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            ModelError::invalid(dir, "model.safetensors.index.json has no weight_map")
        })?;
    let mut names: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let file = dir.join(name);
            if file.is_file() && !name.contains("..") {
                Ok(file)
            } else {
                Err(ModelError::MissingFile {
                    dir: dir.to_path_buf(),
                    file: name.into(),
                })
            }
        })
        .collect()
}

#[cfg(feature = "hub")]
fn fetch(id: &str, offline: bool) -> Result<Checkpoint> {
    let hub_err = |why: String| ModelError::Hub {
        id: id.to_owned(),
        why,
    };
    let cache = hf_hub::Cache::from_env();
    let cached = cache.model(id.to_owned());
    let api = if offline {
        None
    } else {
        Some(
            hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(false)
                .build()
                .map_err(|e| hub_err(e.to_string()))?
                .model(id.to_owned()),
        )
    };
    let get = |file: &str| -> std::result::Result<PathBuf, String> {
        match &api {
            Some(api) => api.get(file).map_err(|e| e.to_string()),
            None => cached.get(file).ok_or_else(|| {
                format!("{file} is not in the local hub cache and HF_HUB_OFFLINE is set")
            }),
        }
    };
    let config = get("config.json").map_err(hub_err)?;
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_err("bad cache path".into()))?;
    for file in REQUIRED {
        get(file).map_err(hub_err)?;
    }
    for file in OPTIONAL {
        let _ = get(file); // absent is fine
    }
    let weights = match get("model.safetensors") {
        Ok(file) => vec![file],
        Err(single) => {
            let index = get("model.safetensors.index.json")
                .map_err(|_| hub_err(format!("no model.safetensors ({single})")))?;
            let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| hub_err(e.to_string()))?;
            let mut names: Vec<String> = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            names.sort_unstable();
            names.dedup();
            names
                .iter()
                .map(|n| get(n).map_err(hub_err))
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(Checkpoint {
        source: id.to_owned(),
        dir,
        weights,
    })
}

#[cfg(not(feature = "hub"))]
fn fetch(id: &str, _offline: bool) -> Result<Checkpoint> {
    Err(ModelError::Hub {
        id: id.to_owned(),
        why: "this build has no hub support (cargo feature `hub`); give a local directory".into(),
    })
}

/// A stable fingerprint of a checkpoint: SHA-256 over config.json, and per weight file its
/// length, its safetensors header and 64 evenly spaced 4 KiB samples of the data. Cheap on
/// multi-GB files, and two random initialisations of one shape still differ.
pub fn fingerprint(checkpoint: &Checkpoint) -> Result<String> {
    let mut hash = Sha256::new();
    let config = checkpoint.dir.join("config.json");
    hash.update(std::fs::read(&config).map_err(|e| ModelError::io(&config, e))?);
    for path in &checkpoint.weights {
        let io = |e| ModelError::io(path, e);
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        hash.update(len.to_le_bytes());
        let mut header_len = [0u8; 8];
        file.read_exact(&mut header_len).map_err(io)?;
        let header_len = u64::from_le_bytes(header_len)
            .min(len.saturating_sub(8))
            .min(100 << 20);
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        hash.update(&header);
        let data_start = 8 + header_len;
        let data_len = len - data_start;
        let mut sample = vec![0u8; 4096];
        for i in 0..64u64 {
            let offset = data_start + data_len * i / 64;
            file.seek(SeekFrom::Start(offset)).map_err(io)?;
            let n = (len - offset).min(4096) as usize;
            file.read_exact(&mut sample[..n]).map_err(io)?;
            hash.update(&sample[..n]);
        }
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_and_paths_are_told_apart() {
        assert!(looks_like_hub_id("openai/clip-vit-base-patch32"));
        assert!(looks_like_hub_id("google/siglip-base-patch16-224"));
        assert!(!looks_like_hub_id("./models/clip"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
        assert!(!looks_like_hub_id("../x"));
    }

    #[test]
    fn a_missing_local_path_is_not_fetched() {
        let err = resolve("/definitely/not/here", false).unwrap_err();
        assert!(matches!(err, ModelError::MissingFile { .. }), "{err}");
    }

    #[test]
    fn offline_hub_id_not_in_cache_is_a_clear_error_without_network() {
        let cache = tempfile::tempdir().unwrap();
        std::env::set_var("HF_HOME", cache.path());
        let err = resolve("nobody/no-such-model", true).unwrap_err();
        assert!(matches!(err, ModelError::Hub { .. }), "{err}");
        assert!(err.to_string().contains("cache"), "{err}");
    }
}
