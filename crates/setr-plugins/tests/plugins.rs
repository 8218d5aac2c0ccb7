//! The plugin loader against real shared libraries: the example Rust plugin (built by the
//! workspace), the example C plugin and deliberately broken C plugins (compiled here with
//! the `cc` crate against plugins/setr_plugin.h), and the misbehaving test plugin.

use std::path::{Path, PathBuf};

use serde_json::json;
use setr_core::{ImageId, RerankCandidate, RerankQuery, Reranker, RgbView};
use setr_plugins::PluginSet;

/// target/<profile>, from this test binary's path (target/<profile>/deps/<test>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn rust_plugin(crate_name: &str) -> PathBuf {
    let path = target_dir().join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.is_file(),
        "{} not built (cargo builds every workspace member's cdylib)",
        path.display()
    );
    path
}

fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins")
}

/// Compiles C source into a shared library with the system C compiler (found by `cc`).
fn c_plugin(dir: &Path, name: &str, source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let target = format!(
        "{}-unknown-{}-gnu",
        std::env::consts::ARCH,
        std::env::consts::OS
    );
    let compiler = cc::Build::new()
        .target(&target)
        .host(&target)
        .opt_level(0)
        .cargo_metadata(false)
        .get_compiler();
    let status = compiler
        .to_command()
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I"])
        .arg(plugins_dir())
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .arg("-lm")
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "compiling {name}: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// A C plugin with a given table (ABI version, size) and score body.
fn c_table(abi: &str, size: &str, name: &str, score_body: &str) -> String {
    format!(
        r#"#include "setr_plugin.h"
static int dummy;
static int32_t create(const char *c, size_t l, void **h) {{ (void)c; (void)l; *h = &dummy; return SETR_OK; }}
static int32_t score(void *h, const SetrQuery *q, const SetrCandidate *c, size_t n, float *o) {{
    (void)h; (void)q; (void)c; (void)n; (void)o; {score_body} return SETR_OK; }}
static const char *last_error(void *h) {{ (void)h; return "no"; }}
static void destroy(void *h) {{ (void)h; }}
static const SetrRerankerV1 TABLE = {{ {abi}, {size}, "{name}", "test", create, score, last_error, destroy }};
const SetrRerankerV1 *setr_reranker_v1(void) {{ return &TABLE; }}
"#
    )
}

struct Images {
    red: Vec<u8>,
    wide: Vec<u8>,
}

fn images() -> Images {
    Images {
        red: [220u8, 30, 30].repeat(4 * 4),
        wide: [30u8, 60, 220].repeat(8 * 2),
    }
}

fn candidates<'a>(img: &'a Images, meta: &'a serde_json::Value) -> Vec<RerankCandidate<'a>> {
    vec![
        RerankCandidate {
            id: ImageId(1),
            image: Some(RgbView {
                width: 4,
                height: 4,
                pixels: &img.red,
            }),
            embedding: None,
            coarse_score: 0.5,
            metadata: meta,
        },
        RerankCandidate {
            id: ImageId(2),
            image: Some(RgbView {
                width: 8,
                height: 2,
                pixels: &img.wide,
            }),
            embedding: None,
            coarse_score: 0.9,
            metadata: meta,
        },
    ]
}

fn query<'a>(img: &'a Images, text: &'a str) -> RerankQuery<'a> {
    RerankQuery {
        text,
        reference: Some(RgbView {
            width: 4,
            height: 4,
            pixels: &img.red,
        }),
        reference_embedding: None,
        cancel: None,
    }
}

fn refused_why(set: &PluginSet) -> Vec<String> {
    set.refused.iter().map(|r| r.why.clone()).collect()
}

#[test]
fn the_rust_and_c_examples_load_and_score() {
    let tmp = tempfile::tempdir().unwrap();
    let aspect = c_plugin(
        tmp.path(),
        "setr_aspect",
        &std::fs::read_to_string(plugins_dir().join("aspect-c/aspect.c")).unwrap(),
    );
    let set = PluginSet::load(
        &[
            (rust_plugin("setr-colour-reranker"), json!({})),
            (aspect, json!({})),
        ],
        &["qwen3-vl"],
    );
    assert!(set.refused.is_empty(), "{:?}", refused_why(&set));
    let names: Vec<&str> = set.loaded.iter().map(|p| p.name()).collect();
    assert_eq!(names, ["colour", "aspect"]);
    let img = images();
    let meta = json!({"brand": "x"});
    let cands = candidates(&img, &meta);
    let colour = set.loaded[0]
        .score(&query(&img, "make it red"), &cands)
        .unwrap();
    assert_eq!(colour[0], Ok(1.0));
    assert_eq!(colour[1], Ok(0.0));
    let aspect = set.loaded[1]
        .score(&query(&img, "anything"), &cands)
        .unwrap();
    assert_eq!(aspect[0], Ok(0.0), "same aspect as the reference");
    let wide = *aspect[1].as_ref().unwrap();
    assert!((wide + 4f32.ln()).abs() < 1e-5, "{wide}");
}

#[test]
fn libraries_that_fail_a_check_are_refused_and_the_rest_load() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let no_symbol = c_plugin(d, "no_symbol", "int not_a_plugin(void) { return 1; }\n");
    let wrong_abi = c_plugin(
        d,
        "wrong_abi",
        &c_table("2u", "sizeof(SetrRerankerV1)", "v2", ""),
    );
    let small = c_plugin(d, "small", &c_table("SETR_ABI_VERSION", "8", "small", ""));
    let not_a_library = d.join("libjunk.so");
    std::fs::write(&not_a_library, "not an ELF file").unwrap();
    let colour = rust_plugin("setr-colour-reranker");
    let set = PluginSet::load(
        &[
            (no_symbol, json!({})),
            (wrong_abi, json!({})),
            (small, json!({})),
            (not_a_library, json!({})),
            (colour.clone(), json!({})),
            (colour.clone(), json!({})),
            (
                rust_plugin("setr-testing-plugin"),
                json!({"mode": "fail-create"}),
            ),
        ],
        &["qwen3-vl"],
    );
    let why = refused_why(&set);
    assert_eq!(set.loaded.len(), 1, "{why:?}");
    assert_eq!(set.loaded[0].name(), "colour");
    assert!(why[0].contains("no `setr_reranker_v1` symbol"), "{why:?}");
    assert!(why[1].contains("ABI version 2"), "{why:?}");
    assert!(why[2].contains("table of 8 bytes"), "{why:?}");
    assert!(why[3].contains("cannot load"), "{why:?}");
    assert!(
        why[4].contains("duplicate reranker name `colour`"),
        "{why:?}"
    );
    assert!(why[5].contains("create failed: asked to fail"), "{why:?}");
    // A built-in name is taken too.
    let tmp2 = tempfile::tempdir().unwrap();
    let clash = c_plugin(
        tmp2.path(),
        "clash",
        &c_table("SETR_ABI_VERSION", "sizeof(SetrRerankerV1)", "qwen3-vl", ""),
    );
    let set = PluginSet::load(&[(clash, json!({}))], &["qwen3-vl"]);
    assert!(
        refused_why(&set)[0].contains("duplicate"),
        "{:?}",
        refused_why(&set)
    );
}

#[test]
fn a_table_with_a_null_function_is_refused_before_anything_is_called() {
    let tmp = tempfile::tempdir().unwrap();
    // The C header cannot stop a plugin from leaving a slot NULL; calling it (or holding
    // it as a Rust `fn`) would crash the host.
    let null_table = |slot: &str| {
        c_table("SETR_ABI_VERSION", "sizeof(SetrRerankerV1)", "nulls", "").replace(
            "\"test\", create, score, last_error, destroy",
            &format!("\"test\", {slot}"),
        )
    };
    let plugins: Vec<_> = [
        ("null_create", "NULL, score, last_error, destroy"),
        ("null_score", "create, NULL, last_error, destroy"),
        ("null_last_error", "create, score, NULL, destroy"),
        ("null_destroy", "create, score, last_error, NULL"),
    ]
    .iter()
    .map(|(name, slots)| {
        // Unused functions would fail -Werror.
        let source = format!(
            "#pragma GCC diagnostic ignored \"-Wunused-function\"\n{}",
            null_table(slots)
        );
        (c_plugin(tmp.path(), name, &source), json!({}))
    })
    .collect();
    let set = PluginSet::load(&plugins, &[]);
    assert!(set.loaded.is_empty());
    let why = refused_why(&set);
    for (i, f) in ["create", "score", "last_error", "destroy"]
        .iter()
        .enumerate()
    {
        assert!(
            why[i].contains(&format!("`{f}` function is null")),
            "{why:?}"
        );
    }
}

#[test]
fn a_panic_in_create_is_a_refusal() {
    let set = PluginSet::load(
        &[(
            rust_plugin("setr-testing-plugin"),
            json!({"mode": "panic-create"}),
        )],
        &[],
    );
    assert!(
        refused_why(&set)[0].contains("panicked"),
        "{:?}",
        refused_why(&set)
    );
}

#[test]
fn misbehaving_scores_fail_that_reranker_for_that_request_only() {
    let tmp = tempfile::tempdir().unwrap();
    let fewer = c_plugin(
        tmp.path(),
        "fewer",
        &c_table(
            "SETR_ABI_VERSION",
            "sizeof(SetrRerankerV1)",
            "fewer",
            "if (n > 0) o[0] = 1.0f;",
        ),
    );
    let img = images();
    let meta = serde_json::Value::Null;
    let cands = candidates(&img, &meta);
    for (config, expected) in [
        (json!({"mode": "panic"}), "panicked"),
        (json!({"mode": "nan"}), "NaN"),
        (json!({"mode": "error"}), "asked to fail in score"),
    ] {
        let set = PluginSet::load(&[(rust_plugin("setr-testing-plugin"), config.clone())], &[]);
        let plugin = &set.loaded[0];
        let err = plugin.score(&query(&img, "x"), &cands).unwrap_err();
        assert!(err.to_string().contains(expected), "{config}: {err}");
        assert_eq!(err.reranker, "testing");
        // Still usable afterwards (a panic does not poison it).
        let again = plugin.score(&query(&img, "x"), &cands).unwrap_err();
        assert!(again.to_string().contains(expected), "{again}");
    }
    let set = PluginSet::load(&[(fewer, json!({}))], &[]);
    let err = set.loaded[0].score(&query(&img, "x"), &cands).unwrap_err();
    assert!(err.to_string().contains("score 1 of 2"), "{err}");
    // The well-behaved mode reorders: scores are -coarse.
    let set = PluginSet::load(
        &[(rust_plugin("setr-testing-plugin"), json!({"mode": "ok"}))],
        &[],
    );
    let scores = set.loaded[0].score(&query(&img, "x"), &cands).unwrap();
    assert_eq!(scores, [Ok(-0.5), Ok(-0.9)]);
}

#[test]
fn a_plugin_directory_is_scanned_with_per_plugin_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let colour = rust_plugin("setr-colour-reranker");
    std::fs::copy(&colour, tmp.path().join(colour.file_name().unwrap())).unwrap();
    std::fs::write(tmp.path().join("README.txt"), "not a library").unwrap();
    let mut configs = std::collections::BTreeMap::new();
    configs.insert(
        "libsetr_colour_reranker".to_owned(),
        json!({"tolerance": 10}),
    );
    let libs = PluginSet::libraries_in(tmp.path(), &configs).unwrap();
    assert_eq!(libs.len(), 1);
    assert_eq!(libs[0].1, json!({"tolerance": 10}));
    let set = PluginSet::load(&libs, &[]);
    assert_eq!(set.loaded.len(), 1);
}
