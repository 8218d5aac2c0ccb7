//! setr-plugins: loads reranker plugins and runs them behind [`setr_core::Reranker`].
//!
//! Every check happens before the plugin runs any code of its own beyond its entry point:
//! the symbol exists, the table's ABI version matches and its size covers the version-1
//! fields, no function pointer is null, the name is UTF-8 and unique; then `create` gets the
//! plugin's JSON configuration.
//! A plugin that fails any of it is *refused* with the reason, and the others load. At
//! search time a plugin's error, panic (caught by the Rust helper), NaN/inf or missing
//! score fails that reranker for that request only. Libraries are never unloaded:
//! `dlclose` with Rust thread-locals inside the library is unsound.
#![deny(missing_docs)]

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use setr_core::{CandidateScore, RerankCandidate, RerankError, RerankQuery, Reranker};
use setr_plugin_api::{
    CreateFn, DestroyFn, EntryFn, LastErrorFn, ScoreFn, SetrCandidate, SetrImage, SetrQuery,
    SetrRerankerV1, ABI_VERSION, ENTRY_SYMBOL, SETR_OK,
};

/// Why a plugin was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginError {
    /// The file could not be loaded as a shared library.
    #[error("cannot load the library: {0}")]
    Load(String),
    /// The library does not export `setr_reranker_v1`: not a setr plugin.
    #[error("not a setr plugin: no `setr_reranker_v1` symbol")]
    MissingSymbol,
    /// The entry point returned null.
    #[error("the entry point returned no table")]
    NullTable,
    /// Built against another ABI version.
    #[error("ABI version {found}, this setr speaks {expected}")]
    AbiVersion {
        /// The plugin's.
        found: u32,
        /// Ours.
        expected: u32,
    },
    /// The table is smaller than version 1's fields.
    #[error("table of {found} bytes, version 1 needs at least {needed}")]
    TableTooSmall {
        /// The plugin's `struct_size`.
        found: u32,
        /// What version 1 needs.
        needed: usize,
    },
    /// Name null, not UTF-8 or empty.
    #[error("invalid plugin name")]
    BadName,
    /// A function pointer of the table is null.
    #[error("the table's `{0}` function is null")]
    NullFunction(&'static str),
    /// Another loaded reranker has this name.
    #[error("duplicate reranker name `{0}`")]
    DuplicateName(String),
    /// `create` failed.
    #[error("create failed: {0}")]
    Create(String),
    /// The configuration is not JSON.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// A loaded plugin instance.
pub struct LoadedPlugin {
    name: String,
    description: String,
    path: PathBuf,
    /// The table's functions, copied out once checked (the table is immutable static data).
    score: ScoreFn,
    last_error: LastErrorFn,
    /// The instance; `score` is never called concurrently on one handle.
    handle: Mutex<usize>,
}

/// The version-1 table as the host first reads it: the layout of [`SetrRerankerV1`] with
/// every function pointer nullable, so that a C plugin's NULL is caught before it becomes
/// a (never-null) Rust `fn` value.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawTableV1 {
    abi_version: u32,
    struct_size: u32,
    name: *const c_char,
    description: *const c_char,
    create: Option<CreateFn>,
    score: Option<ScoreFn>,
    last_error: Option<LastErrorFn>,
    destroy: Option<DestroyFn>,
}

const _: () = assert!(
    std::mem::size_of::<RawTableV1>() == std::mem::size_of::<SetrRerankerV1>()
        && std::mem::align_of::<RawTableV1>() == std::mem::align_of::<SetrRerankerV1>()
);

/// What the loader did with one library.
#[derive(Clone, Debug, Serialize)]
pub struct Refused {
    /// The library.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

/// Description of a loaded plugin (for listings).
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// The library.
    pub path: PathBuf,
}

/// Loaded plugins and the refused ones.
#[derive(Default)]
pub struct PluginSet {
    /// Usable plugins.
    pub loaded: Vec<LoadedPlugin>,
    /// Libraries that failed a check, with the reason.
    pub refused: Vec<Refused>,
}

impl PluginSet {
    /// Loads each `(path, config)`; `reserved` are names already taken (e.g. built-in
    /// rerankers). Never fails as a whole: refusals are recorded.
    pub fn load(plugins: &[(PathBuf, serde_json::Value)], reserved: &[&str]) -> PluginSet {
        let mut set = PluginSet::default();
        for (path, config) in plugins {
            let taken: Vec<String> = reserved
                .iter()
                .map(|s| s.to_string())
                .chain(set.loaded.iter().map(|p| p.name.clone()))
                .collect();
            match load_one(path, config, &taken) {
                Ok(plugin) => {
                    tracing::info!(name = %plugin.name, path = %path.display(), "plugin loaded");
                    set.loaded.push(plugin);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "plugin refused");
                    set.refused.push(Refused {
                        path: path.clone(),
                        why: e.to_string(),
                    });
                }
            }
        }
        set
    }

    /// Every shared library (`.so`, `.dylib`, `.dll`) directly in `dir`, sorted, with the
    /// configuration `configs` gives for its file stem (or `{}`).
    pub fn libraries_in(
        dir: &Path,
        configs: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> std::io::Result<Vec<(PathBuf, serde_json::Value)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION) {
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_owned();
                let config = configs
                    .get(&stem)
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({}));
                out.push((path, config));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Names and descriptions of the loaded plugins.
    pub fn infos(&self) -> Vec<PluginInfo> {
        self.loaded
            .iter()
            .map(|p| PluginInfo {
                name: p.name.clone(),
                description: p.description.clone(),
                path: p.path.clone(),
            })
            .collect()
    }
}

fn c_str(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: plugin contract: NUL-terminated static strings.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .ok()
        .map(str::to_owned)
}

fn load_one(
    path: &Path,
    config: &serde_json::Value,
    taken: &[String],
) -> Result<LoadedPlugin, PluginError> {
    // SAFETY: loading runs the library's initialisers; a plugin is trusted code by
    // definition (the administrator installed it). Everything after is checked.
    let library =
        unsafe { libloading::Library::new(path) }.map_err(|e| PluginError::Load(e.to_string()))?;
    // Never unloaded (see the crate docs): leak it so the table stays valid.
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: the symbol's type is fixed by the ABI.
    let entry: libloading::Symbol<EntryFn> =
        unsafe { library.get(ENTRY_SYMBOL) }.map_err(|_| PluginError::MissingSymbol)?;
    // SAFETY: the entry point takes nothing and returns a pointer.
    let table = unsafe { entry() };
    // SAFETY: the ABI's contract on the returned table (see `load_table`); the library
    // is never unloaded.
    unsafe { load_table(table, path, config, taken) }
}

/// The loader's checks on a table already in memory, then `create`: what
/// [`PluginSet::load`] does once the library is open and its entry point has returned
/// `table`. Public for the fuzzer (`fuzz/fuzz_targets/plugin_table.rs`), not an API.
///
/// Checked, in order: not null; ABI version; `struct_size` covers version 1; every
/// function pointer non-null; name non-null, UTF-8, not blank and not in `taken`. Then
/// `create` runs with `config` as JSON.
///
/// # Safety
/// `table` is null or points to 8 readable bytes; when those hold [`ABI_VERSION`] and a
/// `struct_size` of at least `size_of::<SetrRerankerV1>()`, to that many readable bytes
/// (any alignment). Non-null `name` and `description` are NUL-terminated strings; non-null
/// function pointers are functions keeping the ABI's contract for as long as the returned
/// plugin lives.
#[doc(hidden)]
pub unsafe fn load_table(
    table: *const SetrRerankerV1,
    path: &Path,
    config: &serde_json::Value,
    taken: &[String],
) -> Result<LoadedPlugin, PluginError> {
    if table.is_null() {
        return Err(PluginError::NullTable);
    }
    // Read the two leading u32s before trusting the rest of the table's layout.
    // SAFETY: every version starts with them (caller's contract).
    let (version, size) = unsafe {
        let head = table.cast::<u32>();
        (head.read_unaligned(), head.add(1).read_unaligned())
    };
    if version != ABI_VERSION {
        return Err(PluginError::AbiVersion {
            found: version,
            expected: ABI_VERSION,
        });
    }
    let needed = std::mem::size_of::<SetrRerankerV1>();
    if (size as usize) < needed {
        return Err(PluginError::TableTooSmall {
            found: size,
            needed,
        });
    }
    // SAFETY: version and size checked, so version 1's fields are readable; read as a copy
    // with nullable function pointers (no alignment or non-null assumption yet).
    let raw = unsafe { table.cast::<RawTableV1>().read_unaligned() };
    let (Some(create), Some(score), Some(last_error)) = (raw.create, raw.score, raw.last_error)
    else {
        let which = match (raw.create, raw.score) {
            (None, _) => "create",
            (_, None) => "score",
            _ => "last_error",
        };
        return Err(PluginError::NullFunction(which));
    };
    if raw.destroy.is_none() {
        return Err(PluginError::NullFunction("destroy"));
    }
    let name = c_str(raw.name)
        .filter(|n| !n.trim().is_empty())
        .ok_or(PluginError::BadName)?;
    if taken.iter().any(|t| t == &name) {
        return Err(PluginError::DuplicateName(name));
    }
    let description = c_str(raw.description).unwrap_or_default();
    let config_text =
        serde_json::to_string(config).map_err(|e| PluginError::Config(e.to_string()))?;
    let config_c =
        CString::new(config_text.clone()).map_err(|e| PluginError::Config(e.to_string()))?;
    let mut handle: *mut c_void = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated config and a writable out pointer.
    let status = unsafe { create(config_c.as_ptr(), config_text.len(), &mut handle) };
    if status != SETR_OK || handle.is_null() {
        // SAFETY: last_error(NULL) reports the last create failure.
        let why = c_str(unsafe { last_error(std::ptr::null_mut()) })
            .unwrap_or_else(|| format!("status {status}, no message"));
        return Err(PluginError::Create(why));
    }
    Ok(LoadedPlugin {
        name,
        description,
        path: path.to_path_buf(),
        score,
        last_error,
        handle: Mutex::new(handle as usize),
    })
}

impl LoadedPlugin {
    /// Its description.
    pub fn description(&self) -> &str {
        &self.description
    }
}

fn image(view: Option<&setr_core::RgbView<'_>>) -> SetrImage {
    match view {
        Some(v) => SetrImage {
            width: v.width,
            height: v.height,
            pixels: v.pixels.as_ptr(),
        },
        None => SetrImage {
            width: 0,
            height: 0,
            pixels: std::ptr::null(),
        },
    }
}

impl Reranker for LoadedPlugin {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(
        &self,
        query: &RerankQuery<'_>,
        candidates: &[RerankCandidate<'_>],
    ) -> Result<Vec<CandidateScore>, RerankError> {
        let fail = |message: String| RerankError {
            reranker: self.name.clone(),
            kind: setr_core::RerankErrorKind::Failed,
            message,
        };
        for view in query
            .reference
            .iter()
            .chain(candidates.iter().filter_map(|c| c.image.as_ref()))
        {
            if view.pixels.len() != 3 * view.width as usize * view.height as usize {
                return Err(fail("an image buffer does not match its size".into()));
            }
        }
        let dim = query
            .reference_embedding
            .map(<[f32]>::len)
            .or_else(|| {
                candidates
                    .iter()
                    .find_map(|c| c.embedding.map(<[f32]>::len))
            })
            .unwrap_or(0);
        if candidates
            .iter()
            .any(|c| c.embedding.is_some_and(|e| e.len() != dim))
        {
            return Err(fail("embeddings of different dimensions".into()));
        }
        let text =
            CString::new(query.text).map_err(|_| fail("the text contains a NUL byte".into()))?;
        let metadata: Vec<CString> = candidates
            .iter()
            .map(|c| CString::new(c.metadata.to_string()).unwrap_or_default())
            .collect();
        let c_query = SetrQuery {
            text: text.as_ptr(),
            text_len: query.text.len(),
            reference: image(query.reference.as_ref()),
            reference_embedding: query
                .reference_embedding
                .map_or(std::ptr::null(), <[f32]>::as_ptr),
            embedding_dim: dim,
        };
        let c_candidates: Vec<SetrCandidate> = candidates
            .iter()
            .zip(&metadata)
            .map(|(c, m)| SetrCandidate {
                id: c.id.0,
                image: image(c.image.as_ref()),
                embedding: c.embedding.map_or(std::ptr::null(), <[f32]>::as_ptr),
                coarse_score: c.coarse_score,
                metadata_json: m.as_ptr(),
                metadata_len: m.as_bytes().len(),
            })
            .collect();
        // NaN marks "not written": a plugin that writes fewer scores is caught below.
        let mut scores = vec![f32::NAN; candidates.len()];
        let handle = self
            .handle
            .lock()
            .map_err(|_| fail("a previous call poisoned the plugin".into()))?;
        let handle = *handle as *mut c_void;
        // SAFETY: every pointer is valid for the call; `scores` has room for n floats.
        let status = unsafe {
            (self.score)(
                handle,
                &c_query,
                c_candidates.as_ptr(),
                c_candidates.len(),
                scores.as_mut_ptr(),
            )
        };
        if status != SETR_OK {
            // SAFETY: plugin contract.
            let why = c_str(unsafe { (self.last_error)(handle) })
                .unwrap_or_else(|| format!("status {status}, no message"));
            return Err(fail(why));
        }
        if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
            return Err(fail(format!(
                "score {i} of {} is {} (not written, NaN or infinite)",
                scores.len(),
                scores[i]
            )));
        }
        Ok(scores.into_iter().map(Ok).collect())
    }
}

// SAFETY: the handle is only used under its mutex; the functions are plain code pointers.
unsafe impl Send for LoadedPlugin {}
unsafe impl Sync for LoadedPlugin {}
