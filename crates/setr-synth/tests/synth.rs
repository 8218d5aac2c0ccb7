//! The generator is deterministic and writes what the CIRR / CIRCO readers expect.

use std::path::Path;

use serde_json::Value;
use setr_synth::{generate, SynthOptions};

fn read(dir: &Path, rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(rel)).unwrap()).unwrap()
}

#[test]
fn same_seed_same_bytes_and_annotations_are_consistent() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let opts = SynthOptions {
        images: 150,
        seed: 42,
        ..SynthOptions::default()
    };
    let summary = generate(a.path(), &opts).unwrap();
    generate(
        b.path(),
        &SynthOptions {
            threads: 1,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(summary.images, 150);
    assert_eq!(
        std::fs::read_dir(a.path().join("images")).unwrap().count(),
        150
    );
    for rel in [
        "captions/cap.rc2.val.json",
        "circo/annotations/val.json",
        "scenes.jsonl",
        "images/synth-0000007.png",
    ] {
        assert_eq!(
            std::fs::read(a.path().join(rel)).unwrap(),
            std::fs::read(b.path().join(rel)).unwrap(),
            "{rel}"
        );
    }
    let other = tempfile::tempdir().unwrap();
    generate(
        other.path(),
        &SynthOptions {
            seed: 43,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_ne!(
        std::fs::read(a.path().join("scenes.jsonl")).unwrap(),
        std::fs::read(other.path().join("scenes.jsonl")).unwrap()
    );

    for split in ["train", "val"] {
        let caps = read(a.path(), &format!("captions/cap.rc2.{split}.json"));
        let names = read(a.path(), &format!("image_splits/split.rc2.{split}.json"));
        let caps = caps.as_array().unwrap();
        assert!(!caps.is_empty());
        for c in caps {
            let (r, t) = (
                c["reference"].as_str().unwrap(),
                c["target_hard"].as_str().unwrap(),
            );
            assert_ne!(r, t);
            let members = c["img_set"]["members"].as_array().unwrap();
            assert_eq!(members.len(), 6);
            assert!(members.iter().any(|m| m == r) && members.iter().any(|m| m == t));
            for m in members {
                let path = names[m.as_str().unwrap()].as_str().unwrap();
                assert!(a.path().join(path).is_file(), "{path}");
            }
            assert!(!c["caption"].as_str().unwrap().is_empty());
        }
    }
    let circo = read(a.path(), "circo/annotations/val.json");
    let ids = read(a.path(), "circo/image_ids.json");
    let circo = circo.as_array().unwrap();
    assert!(!circo.is_empty());
    for q in circo {
        let gt = q["gt_img_ids"].as_array().unwrap();
        assert!(gt.len() >= 2, "CIRCO queries have several targets");
        assert_eq!(q["target_img_id"], gt[0]);
        for id in gt.iter().chain([&q["reference_img_id"]]) {
            assert!(ids[id.to_string()].is_string());
        }
    }
    // Scene descriptions differ between reference and target.
    let scenes: Vec<Value> = std::fs::read_to_string(a.path().join("scenes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_ne!(scenes[0]["scene"], scenes[1]["scene"]);
}

#[test]
fn too_small_requests_are_refused() {
    let a = tempfile::tempdir().unwrap();
    assert!(generate(
        a.path(),
        &SynthOptions {
            images: 5,
            ..SynthOptions::default()
        }
    )
    .is_err());
    assert!(generate(
        a.path(),
        &SynthOptions {
            image_size: 4,
            ..SynthOptions::default()
        }
    )
    .is_err());
}
