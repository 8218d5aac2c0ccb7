//! The `setr` binary end to end on the fixture checkpoints (tests/fixtures): embed, index
//! (idempotent, unreadable files reported), search by image and text, and a store that
//! refuses queries from another model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

/// Runs setr; returns (success, stdout JSON or Null, stderr).
fn setr(args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_setr"))
        .args(args)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run setr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn embed_prints_normalised_embeddings_of_the_model_dimension() {
    let image = fixtures().join("images/landscape.png");
    let (ok, json, err) = setr(&[
        "embed",
        "--model",
        &model("siglip-a"),
        "--image",
        image.to_str().unwrap(),
        "--text",
        "a red circle",
    ]);
    assert!(ok, "{err}");
    let embeddings = json["embeddings"].as_array().unwrap();
    assert_eq!(embeddings.len(), 2);
    let dim = json["model"]["dim"].as_u64().unwrap() as usize;
    for e in embeddings {
        let v: Vec<f64> = e["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(v.len(), dim);
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
}

#[test]
fn index_is_idempotent_reports_unreadable_files_and_searches() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let images = fixtures().join("images");
    let images = images.to_str().unwrap();
    let (ok, first, err) = setr(&[
        "index",
        images,
        "--store",
        store,
        "--model",
        &model("clip-a"),
    ]);
    assert!(ok, "{err}");
    // 12 files: 8 decodable, and corrupt.png, truncated.jpg, empty.png, huge_dims.png.
    assert_eq!(first["files"], 12, "{first}");
    assert_eq!(first["added"], 8, "{first}");
    let unreadable: Vec<&str> = first["unreadable"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["path"].as_str().unwrap())
        .collect();
    assert_eq!(unreadable.len(), 4, "{unreadable:?}");
    for name in ["corrupt.png", "truncated.jpg", "empty.png", "huge_dims.png"] {
        assert!(
            unreadable.iter().any(|p| p.ends_with(name)),
            "{name} not reported"
        );
    }
    assert!(err.contains("unreadable"), "{err}");

    let (ok, second, err) = setr(&[
        "index",
        images,
        "--store",
        store,
        "--model",
        &model("clip-a"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(second["added"], 0, "{second}");
    assert_eq!(second["duplicates"], 8, "{second}");
    assert_eq!(second["gallery"], 8, "{second}");

    // The reference image itself is the best image-only match, with cosine ~1.
    let query = fixtures().join("images/grey.png");
    let (ok, found, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--strategy",
        "image",
        "--k",
        "3",
    ]);
    assert!(ok, "{err}");
    let top = &found["results"][0];
    assert!(
        top["source_path"].as_str().unwrap().ends_with("grey.png"),
        "{found}"
    );
    assert!(top["score"].as_f64().unwrap() > 0.999, "{found}");
    assert_eq!(found["results"].as_array().unwrap().len(), 3);

    // Composed query with the store's own model (no --model needed).
    let (ok, found, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "make it red",
    ]);
    assert!(ok, "{err}");
    assert_eq!(found["results"].as_array().unwrap().len(), 8);

    // Another model's query is refused, and says which models.
    let (ok, _, err) = setr(&[
        "search",
        "--store",
        store,
        "--text",
        "red",
        "--model",
        &model("clip-b"),
    ]);
    assert!(!ok);
    assert!(err.contains("clip-a") && err.contains("clip-b"), "{err}");
    // And so is indexing into it with another model.
    let (ok, _, err) = setr(&[
        "index",
        images,
        "--store",
        store,
        "--model",
        &model("siglip-a"),
    ]);
    assert!(!ok);
    assert!(err.contains("siglip-a"), "{err}");
}

#[test]
fn a_store_of_random_embeddings_refuses_encoded_queries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("random");
    let store = store.to_str().unwrap();
    let (ok, _, err) = setr(&[
        "synth",
        "--embeddings-only",
        "--store",
        store,
        "--images",
        "50",
        "--dim",
        "16",
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = setr(&[
        "search",
        "--store",
        store,
        "--text",
        "red",
        "--model",
        &model("clip-a"),
    ]);
    assert!(!ok);
    assert!(err.contains("no known model"), "{err}");
}

#[test]
fn bad_model_directories_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ok, _, err) = setr(&[
        "embed",
        "--model",
        tmp.path().to_str().unwrap(),
        "--text",
        "x",
    ]);
    assert!(!ok);
    assert!(err.contains("config.json"), "{err}");
    let (ok, _, err) = setr(&[
        "embed",
        "--model",
        "nobody/not-cached",
        "--offline",
        "--text",
        "x",
    ]);
    assert!(!ok);
    assert!(err.contains("cache"), "{err}");
}
