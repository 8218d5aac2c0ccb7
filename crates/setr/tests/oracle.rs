//! The pipeline loses nothing: a reranker that knows the synthetic ground truth (the
//! testing plugin's `oracle` mode) must put the target first exactly when the coarse stage
//! handed it over, through `setr eval` (R@1 after reranking = the base's R@50) and through
//! the server (per query). A fusion, candidate-order or k bug shows as a difference.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

mod common;
use common::server::{http, start};
use common::{model, plugin_lib};

/// Candidates the reranker sees (the top 50).
const RERANK_K: usize = 50;

fn setr(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_setr"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One val query of the synthetic CIRR split.
struct Query {
    text: String,
    reference: PathBuf,
    target: PathBuf,
}

/// A synthetic benchmark whose every CIRR group is a val query (the gallery is large
/// enough, for the random fixture model, that many targets fall outside the top 50).
fn synthetic(dir: &Path) -> Vec<Query> {
    let out = dir.to_str().unwrap();
    setr(&[
        "synth",
        "--out",
        out,
        "--images",
        "400",
        "--seed",
        "5",
        "--val-fraction",
        "1",
    ]);
    let read = |rel: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(rel)).unwrap()).unwrap()
    };
    let paths = read("image_splits/split.rc2.val.json");
    let path = |name: &Value| dir.join(paths[name.as_str().unwrap()].as_str().unwrap());
    read("captions/cap.rc2.val.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|q| Query {
            text: q["caption"].as_str().unwrap().to_owned(),
            reference: path(&q["reference"]),
            target: path(&q["target_hard"]),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the oracle knows an image by: the hash of its RGB8 pixels.
fn pixel_hash(path: &Path) -> String {
    hex(image::open(path).unwrap().to_rgb8().as_raw())
}

/// What the store knows an image by: the hash of its file (identical files share an id).
fn file_hash(path: &Path) -> String {
    format!("sha256:{}", hex(&std::fs::read(path).unwrap()))
}

/// The `--plugin-config` that turns the testing plugin into the oracle of `queries`.
fn oracle_config(dir: &Path, queries: &[Query]) -> String {
    let truth: Vec<Value> = queries
        .iter()
        .map(|q| {
            json!({"text": q.text, "reference": pixel_hash(&q.reference),
                   "targets": [pixel_hash(&q.target)]})
        })
        .collect();
    let path = dir.join("truth.json");
    std::fs::write(&path, serde_json::to_vec(&truth).unwrap()).unwrap();
    let stem = Path::new(&plugin_lib("setr-testing-plugin"))
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    format!("{stem}={}", json!({"mode": "oracle", "truth": path}))
}

#[test]
fn an_oracle_reranker_lifts_r1_to_the_base_r50_through_eval_and_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = tmp.path().join("synth");
    let queries = synthetic(&synth);
    let config = oracle_config(tmp.path(), &queries);
    let plugin = plugin_lib("setr-testing-plugin");
    let store = tmp.path().join("store");
    let json_out = tmp.path().join("eval.json");
    let k = RERANK_K.to_string();
    let s = synth.to_str().unwrap();
    setr(&[
        "eval",
        "--format",
        "cirr",
        "--annotations",
        s,
        "--images",
        s,
        "--model",
        &model("clip-a"),
        "--store",
        store.to_str().unwrap(),
        "--strategies",
        "union",
        "--reranker",
        "testing",
        "--plugin",
        &plugin,
        "--plugin-config",
        &config,
        "--rerank-k",
        &k,
        "--rerank-weight",
        "1",
        "--json",
        json_out.to_str().unwrap(),
    ]);
    let out: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let row = |name: &str| -> Value {
        out["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["method"] == name)
            .unwrap_or_else(|| panic!("no row {name}: {out}"))["metrics"]
            .clone()
    };
    let (base, oracle) = (row("union"), row("union + testing"));
    let base_r50 = base["R@50"].as_f64().unwrap();
    assert!(
        base["R@1"].as_f64().unwrap() < base_r50 && base_r50 < 100.0,
        "the benchmark must have both recoverable misses and targets beyond the top 50: {base}"
    );
    assert_eq!(
        oracle["R@1"].as_f64().unwrap(),
        base_r50,
        "{oracle} vs {base}"
    );

    // The same through the server: per query, the reranked first result is the target
    // exactly when the coarse top 50 (the reference's own row included, as the server
    // does not know it is the reference) held it.
    let server = start(&store, &["--plugin", &plugin, "--plugin-config", &config]);
    let a = server.addr.as_str();
    let (status, list) = http(a, "GET", "/v1/images?limit=1000", None, None);
    assert_eq!(status, 200, "{list}");
    let id_by_hash: HashMap<String, u64> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["content_hash"].as_str().unwrap().to_owned(),
                r["id"].as_u64().unwrap(),
            )
        })
        .collect();
    let id_of = |path: &Path| id_by_hash[&file_hash(path)];
    let (mut recoverable, mut lifted) = (0, 0);
    for q in &queries {
        let (reference, target) = (id_of(&q.reference), id_of(&q.target));
        let search = |rerank: Value| {
            let body = json!({"image": {"id": reference}, "text": q.text, "k": RERANK_K,
                              "rerank": rerank});
            let (status, body) = http(a, "POST", "/v1/search", Some(&body), None);
            assert_eq!(status, 200, "{body}");
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap())
                .collect::<Vec<u64>>()
        };
        let coarse = search(json!({"enabled": false}));
        let reranked = search(json!({"k": RERANK_K, "rerankers": ["testing"], "weight": 1.0}));
        let handed_over = coarse.contains(&target);
        recoverable += usize::from(handed_over);
        lifted += usize::from(reranked[0] == target);
        assert_eq!(
            reranked[0] == target,
            handed_over,
            "{}: {coarse:?} -> {reranked:?}",
            q.text
        );
    }
    assert!(
        recoverable > 0 && recoverable < queries.len(),
        "{recoverable} of {}",
        queries.len()
    );
    assert_eq!(lifted, recoverable);
}
