//! The `setr` binary end to end on the fixture checkpoints (tests/fixtures): embed, index
//! (idempotent, unreadable files reported), search by image and text, and a store that
//! refuses queries from another model.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

mod common;
use common::{fixtures, model, plugin_lib};

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
    // Every fixture image decodes but corrupt.png, truncated.jpg, empty.png, huge_dims.png.
    let files = std::fs::read_dir(fixtures().join("images"))
        .unwrap()
        .count();
    let good = files as u64 - 4;
    assert_eq!(first["files"], files, "{first}");
    assert_eq!(first["added"], good, "{first}");
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
    assert_eq!(second["duplicates"], good, "{second}");
    assert_eq!(second["gallery"], good, "{second}");

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
    assert_eq!(
        found["results"].as_array().unwrap().len() as u64,
        good.min(10)
    );

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

#[test]
fn rerank_reorders_candidates_and_flags_unreadable_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    for name in [
        "landscape.png",
        "grey.png",
        "portrait_rgba.png",
        "small.bmp",
        "palette.gif",
    ] {
        std::fs::copy(fixtures().join("images").join(name), images.join(name)).unwrap();
    }
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let (ok, _, err) = setr(&[
        "index",
        images.to_str().unwrap(),
        "--store",
        store,
        "--model",
        &model("clip-a"),
    ]);
    assert!(ok, "{err}");
    // A candidate whose file disappears after indexing cannot be judged.
    std::fs::remove_file(images.join("small.bmp")).unwrap();
    let query = fixtures().join("images/landscape.png");
    let (ok, out, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "make it red",
        "--rerank",
        "--reranker-model",
        &model("qwen3vl-a"),
        "--rerank-k",
        "10",
        "--rerank-weight",
        "1",
        "--k",
        "5",
    ]);
    assert!(ok, "{err}");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let mut ranks: Vec<u64> = results
        .iter()
        .map(|r| r["coarse_rank"].as_u64().unwrap())
        .collect();
    ranks.sort_unstable();
    assert_eq!(
        ranks,
        [0, 1, 2, 3, 4],
        "every coarse candidate appears once"
    );
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["rank"].as_u64().unwrap(), i as u64);
        assert!(r["coarse_score"].is_number());
        if r["source_path"].as_str().unwrap().ends_with("small.bmp") {
            assert!(r["rerank_score"].is_null(), "{r}");
            assert!(
                r["not_reranked"].as_str().unwrap().contains("unreadable"),
                "{r}"
            );
            assert_eq!(
                r["rank"], r["coarse_rank"],
                "an unreadable candidate keeps its coarse rank"
            );
        } else {
            let p = r["rerank_score"].as_f64().unwrap();
            assert!(p > 0.0 && p < 1.0, "{r}");
            assert_eq!(r["score"].as_f64().unwrap(), p, "rerank-only fusion");
        }
    }
    // Scored candidates are ordered by P(Yes).
    let scored: Vec<f64> = results
        .iter()
        .filter_map(|r| r["rerank_score"].as_f64())
        .collect();
    assert!(scored.windows(2).all(|w| w[0] >= w[1]), "{scored:?}");
    for stage in [
        "encode_image_ms",
        "encode_text_ms",
        "search_ms",
        "rerank_ms",
    ] {
        assert!(
            out["timings"][stage].is_number(),
            "{stage} missing: {}",
            out["timings"]
        );
    }
    // Weighted fusion: score = w * P(Yes) + (1 - w) * min-max normalised coarse score over
    // the candidates, and results ordered by it (unreadable ones at their coarse rank).
    let (ok, out, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "make it red",
        "--rerank",
        "--reranker-model",
        &model("qwen3vl-a"),
        "--rerank-k",
        "10",
        "--k",
        "5",
        "--rerank-weight",
        "0.25",
    ]);
    assert!(ok, "{err}");
    let results = out["results"].as_array().unwrap();
    let coarse: Vec<f64> = results
        .iter()
        .map(|r| r["coarse_score"].as_f64().unwrap())
        .collect();
    let (lo, hi) = coarse
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &c| (l.min(c), h.max(c)));
    let mut previous = f64::INFINITY;
    for r in results {
        let norm = (r["coarse_score"].as_f64().unwrap() - lo) / (hi - lo);
        let score = r["score"].as_f64().unwrap();
        match r["rerank_score"].as_f64() {
            Some(p) => {
                assert!((score - (0.25 * p + 0.75 * norm)).abs() < 1e-4, "{r}");
                assert!(
                    score <= previous + 1e-9,
                    "not ordered by the final score: {results:?}"
                );
                previous = score;
            }
            None => assert_eq!(r["rank"], r["coarse_rank"], "{r}"),
        }
    }
    // Reranking needs the modification text.
    let (ok, _, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--strategy",
        "image",
        "--rerank",
        "--reranker-model",
        &model("qwen3vl-a"),
    ]);
    assert!(!ok);
    assert!(err.contains("--text"), "{err}");
}

#[test]
fn plugin_rerankers_chain_and_a_failing_one_does_not_fail_the_search() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let images = fixtures().join("images");
    let (ok, _, err) = setr(&[
        "index",
        images.to_str().unwrap(),
        "--store",
        store,
        "--model",
        &model("clip-a"),
    ]);
    assert!(ok, "{err}");
    let query = fixtures().join("images/landscape.png");
    let colour = plugin_lib("setr-colour-reranker");
    let testing = plugin_lib("setr-testing-plugin");
    // Colour then VLM, chained.
    let (ok, out, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "make it red",
        "--reranker",
        "colour,qwen3-vl",
        "--plugin",
        &colour,
        "--reranker-model",
        &model("qwen3vl-a"),
        "--k",
        "4",
    ]);
    assert!(ok, "{err}");
    let results = out["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        if r["not_reranked"].is_null() {
            assert!(r["rerank_scores"]["colour"].is_number(), "{r}");
            assert!(r["rerank_scores"]["qwen3-vl"].is_number(), "{r}");
        }
    }
    assert_eq!(out["reranker_errors"].as_array().unwrap().len(), 0);
    // A plugin that panics fails only its own stage; the search still answers.
    let config = format!(
        "{}={{\"mode\": \"panic\"}}",
        Path::new(&testing).file_stem().unwrap().to_str().unwrap()
    );
    let (ok, out, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "make it red",
        "--reranker",
        "testing,colour",
        "--plugin",
        &testing,
        "--plugin",
        &colour,
        "--plugin-config",
        &config,
        "--k",
        "3",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out["results"].as_array().unwrap().len(), 3);
    let errors = out["reranker_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["reranker"], "testing");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("panicked"),
        "{errors:?}"
    );
    // An unknown reranker name is a clear error.
    let (ok, _, err) = setr(&[
        "search",
        "--store",
        store,
        "--image",
        query.to_str().unwrap(),
        "--text",
        "x",
        "--reranker",
        "nope",
    ]);
    assert!(!ok);
    assert!(err.contains("unknown reranker `nope`"), "{err}");
}

#[test]
fn plugins_list_shows_loaded_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("libjunk.so");
    std::fs::write(&junk, "not a library").unwrap();
    let colour = plugin_lib("setr-colour-reranker");
    let (ok, out, err) = setr(&[
        "plugins",
        "list",
        "--plugin",
        &colour,
        "--plugin",
        junk.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(out["builtin"][0]["name"], "qwen3-vl");
    assert_eq!(out["loaded"][0]["name"], "colour");
    assert_eq!(out["refused"].as_array().unwrap().len(), 1);
    assert!(
        out["refused"][0]["why"]
            .as_str()
            .unwrap()
            .contains("cannot load"),
        "{out}"
    );
}

#[test]
fn eval_scores_every_strategy_and_the_reranked_row_on_a_synthetic_split() {
    let tmp = tempfile::tempdir().unwrap();
    let synth = tmp.path().join("synth");
    let (ok, _, err) = setr(&[
        "synth",
        "--out",
        synth.to_str().unwrap(),
        "--images",
        "120",
        "--seed",
        "3",
    ]);
    assert!(ok, "{err}");
    let json_out = tmp.path().join("eval.json");
    let store = tmp.path().join("store");
    let colour = plugin_lib("setr-colour-reranker");
    let (ok, _, err) = setr(&[
        "eval",
        "--format",
        "cirr",
        "--annotations",
        synth.to_str().unwrap(),
        "--images",
        synth.to_str().unwrap(),
        "--model",
        &model("clip-a"),
        "--store",
        store.to_str().unwrap(),
        "--reranker",
        "colour",
        "--plugin",
        &colour,
        "--rerank-k",
        "20",
        "--json",
        json_out.to_str().unwrap(),
        "--submission",
        tmp.path().join("sub").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let out: Value = serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    let methods: Vec<&str> = out["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        ["image", "text", "union", "intersection", "union + colour"]
    );
    for row in out["rows"].as_array().unwrap() {
        for key in [
            "R@1",
            "R@5",
            "R@10",
            "R@50",
            "Rsubset@1",
            "Rsubset@2",
            "Rsubset@3",
        ] {
            let v = row["metrics"][key].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v), "{key} {v}");
        }
        // Recall is monotone in K.
        assert!(row["metrics"]["R@1"].as_f64() <= row["metrics"]["R@50"].as_f64());
    }
    assert!(out["queries"].as_u64().unwrap() > 0);
    let sub: Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("sub/intersection.recall.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sub["version"], "rc2");
    assert_eq!(sub["metric"], "recall");
}

#[test]
fn index_shards_split_a_tree_into_parts_that_add_up_to_the_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store = store.to_str().unwrap();
    let images = fixtures().join("images");
    let images = images.to_str().unwrap();
    let mut files = 0;
    let mut added = 0;
    for shard in ["0/2", "1/2"] {
        let (ok, out, err) = setr(&[
            "index",
            images,
            "--store",
            store,
            "--shard",
            shard,
            "--model",
            &model("clip-a"),
        ]);
        assert!(ok, "{err}");
        assert_eq!(out["shard"], shard, "{out}");
        files += out["files"].as_u64().unwrap();
        added += out["added"].as_u64().unwrap() + out["duplicates"].as_u64().unwrap();
    }
    // Every fixture image decodes but four (see the test above); each file in one part.
    let all = std::fs::read_dir(fixtures().join("images"))
        .unwrap()
        .count() as u64;
    assert_eq!(files, all);
    let (ok, whole, err) = setr(&[
        "index",
        images,
        "--store",
        store,
        "--model",
        &model("clip-a"),
    ]);
    assert!(ok, "{err}");
    assert_eq!(whole["added"], 0, "{whole}");
    assert_eq!(whole["gallery"], added, "{whole}");
    assert_eq!(added, all - 4);
    let (ok, _, err) = setr(&["index", images, "--store", store, "--shard", "2/2"]);
    assert!(!ok && err.contains("not a shard"), "{err}");
}
