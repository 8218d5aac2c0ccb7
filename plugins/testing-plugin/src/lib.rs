//! Test plugin: `{"mode": "ok" | "panic" | "nan" | "error" | "slow" | "fail-create" |
//! "panic-create" | "oracle"}`. `ok` scores candidates by their coarse score reversed (so
//! the order visibly changes); `slow` does the same after sleeping two seconds (timeout
//! tests). `oracle` knows the ground truth (`"truth": PATH`, see [`Oracle`]) and scores 1
//! for a query's target, 0 for every other candidate: the pipeline tests use it to prove
//! that fusion, candidate order and k handling lose nothing.

use std::collections::HashMap;

use setr_plugin_api::{export_plugin, Candidate, Image, Plugin, Query};
use sha2::{Digest, Sha256};

/// The instance.
pub struct Testing {
    mode: String,
    oracle: Option<Oracle>,
}

/// Ground truth by pixels: a JSON array of `{"text", "reference", "targets": [..]}` whose
/// images are the lowercase hex SHA-256 of their RGB8 pixels (row-major, as the host
/// hands them over). A query is known by its text and its reference's pixels.
pub struct Oracle {
    targets: HashMap<(String, String), Vec<String>>,
}

#[derive(serde::Deserialize)]
struct Truth {
    text: String,
    reference: String,
    targets: Vec<String>,
}

impl Oracle {
    fn load(path: &str) -> Result<Oracle, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let truths: Vec<Truth> = serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))?;
        let targets = truths
            .into_iter()
            .map(|t| ((t.text, t.reference), t.targets))
            .collect();
        Ok(Oracle { targets })
    }

    fn score(&self, query: &Query<'_>, candidates: &[Candidate<'_>], scores: &mut [f32]) {
        let reference = query.reference.map(pixel_hash).unwrap_or_default();
        let targets = self.targets.get(&(query.text.to_owned(), reference));
        for (s, c) in scores.iter_mut().zip(candidates) {
            let hit = match (targets, c.image) {
                (Some(targets), Some(image)) => targets.contains(&pixel_hash(image)),
                _ => false,
            };
            *s = if hit { 1.0 } else { 0.0 };
        }
    }
}

/// Lowercase hex SHA-256 of an image's RGB8 pixels.
fn pixel_hash(image: Image<'_>) -> String {
    Sha256::digest(image.pixels)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plugin for Testing {
    const NAME: &'static str = "testing";
    const DESCRIPTION: &'static str = "misbehaves on request, or knows the truth, for tests";

    fn create(config_json: &str) -> Result<Self, String> {
        let config: serde_json::Value =
            serde_json::from_str(config_json).unwrap_or(serde_json::Value::Null);
        let mode = config["mode"].as_str().unwrap_or("ok").to_owned();
        let oracle = match mode.as_str() {
            "fail-create" => return Err("asked to fail".into()),
            "panic-create" => panic!("asked to panic in create"),
            "oracle" => Some(Oracle::load(
                config["truth"]
                    .as_str()
                    .ok_or("oracle mode needs \"truth\"")?,
            )?),
            _ => None,
        };
        Ok(Testing { mode, oracle })
    }

    fn score(
        &mut self,
        query: &Query<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [f32],
    ) -> Result<(), String> {
        match self.mode.as_str() {
            "panic" => panic!("asked to panic in score"),
            "error" => Err("asked to fail in score".into()),
            "nan" => {
                scores.fill(f32::NAN);
                Ok(())
            }
            "oracle" => {
                if let Some(oracle) = &self.oracle {
                    oracle.score(query, candidates, scores);
                }
                Ok(())
            }
            mode => {
                if mode == "slow" {
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
                for (s, c) in scores.iter_mut().zip(candidates) {
                    *s = -c.coarse_score;
                }
                Ok(())
            }
        }
    }
}

export_plugin!(Testing);
