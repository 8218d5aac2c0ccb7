//! The plugin loader's checks on the `setr_reranker_v1` table, and the host side of
//! `score`, without `dlopen`.
//!
//! Each input lays out a table in memory as a plugin's entry point would return it: any
//! ABI version and `struct_size`, any alignment, name and description absent or any bytes
//! (not UTF-8, blank, taken), each function pointer absent (NULL) or one of the fake
//! functions below, whose behaviour the input also picks (succeed, fail with or without a
//! message, return a null handle, write fewer scores, NaN or infinite scores). The table
//! goes through `setr_plugins::load_table`, the same checks `PluginSet::load` runs after
//! `dlopen`; a plugin that loads is then scored with candidates whose image buffers,
//! embeddings, text and metadata the input chooses. The fake `score` checks the host's
//! side of the ABI contract (every buffer readable for the length it claims, strings
//! NUL-terminated); ASan catches any out-of-bounds read. Only refusals and clean errors
//! may come out: a crash, or scores accepted that the plugin did not write finite, is a bug.
#![no_main]

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::path::Path;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use setr_core::{ImageId, RerankCandidate, RerankQuery, Reranker, RgbView};
use setr_plugin_api::{
    CreateFn, DestroyFn, LastErrorFn, ScoreFn, SetrCandidate, SetrQuery, SetrRerankerV1,
    ABI_VERSION, SETR_ERROR, SETR_OK,
};

/// `SetrRerankerV1` with nullable function pointers: what a C plugin can really export.
#[repr(C)]
struct CTable {
    abi_version: u32,
    struct_size: u32,
    name: *const c_char,
    description: *const c_char,
    create: Option<CreateFn>,
    score: Option<ScoreFn>,
    last_error: Option<LastErrorFn>,
    destroy: Option<DestroyFn>,
}

const V1_SIZE: usize = std::mem::size_of::<SetrRerankerV1>();

#[derive(Arbitrary, Debug, Clone)]
enum CreateBehaviour {
    Ok,
    OkNullHandle,
    Fail(Vec<u8>),
    FailNoMessage,
    FailWithHandle,
}

#[derive(Arbitrary, Debug, Clone)]
enum ScoreBehaviour {
    /// Writes these values (cycled) into every slot.
    Write(Vec<f32>),
    /// Writes only the first `n` slots.
    WriteFirst(u8),
    Fail(Vec<u8>),
    FailNoMessage,
    /// Returns OK without writing anything.
    Nothing,
}

#[derive(Arbitrary, Debug)]
enum Version {
    Current,
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum Size {
    Exact,
    Larger(u8),
    Other(u32),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Null,
    Bytes(Vec<u8>),
    Taken,
}

#[derive(Arbitrary, Debug)]
struct Table {
    /// Only the two leading u32s exist (allowed when they fail the checks).
    header_only: bool,
    null: bool,
    misalign: u8,
    version: Version,
    size: Size,
    name: Name,
    description: Option<Vec<u8>>,
    create: bool,
    score: bool,
    last_error: bool,
    destroy: bool,
}

#[derive(Arbitrary, Debug)]
struct Image {
    width: u8,
    height: u8,
    /// Pixel bytes: the right count or off by this much.
    off_by: i8,
}

#[derive(Arbitrary, Debug)]
struct Candidate {
    image: Option<Image>,
    embedding: Option<Vec<f32>>,
    coarse_score: f32,
    metadata: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    table: Table,
    config: Option<String>,
    create: CreateBehaviour,
    score: ScoreBehaviour,
    text: String,
    reference: Option<Image>,
    reference_embedding: Option<Vec<f32>>,
    candidates: Vec<Candidate>,
}

thread_local! {
    static CREATE: RefCell<CreateBehaviour> = const { RefCell::new(CreateBehaviour::Ok) };
    static SCORE: RefCell<ScoreBehaviour> = const { RefCell::new(ScoreBehaviour::Nothing) };
    /// The last error message; `last_error` hands out a pointer into it.
    static MESSAGE: RefCell<Option<CString>> = const { RefCell::new(None) };
}

static mut INSTANCE: u8 = 0;

fn set_message(bytes: Option<&[u8]>) {
    let message = bytes.map(|b| {
        CString::new(b.iter().copied().filter(|c| *c != 0).collect::<Vec<u8>>())
            .expect("NULs removed")
    });
    MESSAGE.with(|m| *m.borrow_mut() = message);
}

/// Reads a NUL-terminated string of `len` bytes, as a plugin would.
unsafe fn read_c(ptr: *const c_char, len: usize) {
    assert!(!ptr.is_null(), "the host passed a null string");
    let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len + 1);
    assert_eq!(bytes[len], 0, "string not NUL-terminated at its length");
    assert!(
        !bytes[..len].contains(&0),
        "string contains a NUL before its length"
    );
}

unsafe fn read_image(image: &setr_plugin_api::SetrImage) -> u64 {
    if image.pixels.is_null() {
        return 0;
    }
    let n = 3 * image.width as usize * image.height as usize;
    std::slice::from_raw_parts(image.pixels, n)
        .iter()
        .map(|b| u64::from(*b))
        .sum()
}

unsafe extern "C" fn create(config: *const c_char, len: usize, out: *mut *mut c_void) -> i32 {
    read_c(config, len);
    let behaviour = CREATE.with(|c| c.borrow().clone());
    let instance = std::ptr::addr_of_mut!(INSTANCE).cast::<c_void>();
    match behaviour {
        CreateBehaviour::Ok => {
            *out = instance;
            SETR_OK
        }
        CreateBehaviour::OkNullHandle => SETR_OK,
        CreateBehaviour::Fail(msg) => {
            set_message(Some(&msg));
            SETR_ERROR
        }
        CreateBehaviour::FailNoMessage => {
            set_message(None);
            SETR_ERROR
        }
        CreateBehaviour::FailWithHandle => {
            *out = instance;
            SETR_ERROR
        }
    }
}

unsafe extern "C" fn score(
    handle: *mut c_void,
    query: *const SetrQuery,
    candidates: *const SetrCandidate,
    n: usize,
    out: *mut f32,
) -> i32 {
    assert_eq!(handle, std::ptr::addr_of_mut!(INSTANCE).cast::<c_void>());
    // Everything the host passes must be readable for the length it claims.
    let q = &*query;
    read_c(q.text, q.text_len);
    let mut sink = read_image(&q.reference);
    let dim = q.embedding_dim;
    if !q.reference_embedding.is_null() {
        sink += std::slice::from_raw_parts(q.reference_embedding, dim).len() as u64;
    }
    let cands = if n == 0 {
        &[][..]
    } else {
        std::slice::from_raw_parts(candidates, n)
    };
    for c in cands {
        sink += read_image(&c.image);
        if !c.embedding.is_null() {
            sink += std::slice::from_raw_parts(c.embedding, dim).len() as u64;
        }
        read_c(c.metadata_json, c.metadata_len);
    }
    std::hint::black_box(sink);
    let scores = if n == 0 {
        &mut [][..]
    } else {
        std::slice::from_raw_parts_mut(out, n)
    };
    assert!(
        scores.iter().all(|s| s.is_nan()),
        "the host must fill the scores with NaN first"
    );
    match SCORE.with(|s| s.borrow().clone()) {
        ScoreBehaviour::Write(values) => {
            for (i, s) in scores.iter_mut().enumerate() {
                *s = values.get(i % values.len().max(1)).copied().unwrap_or(0.5);
            }
            SETR_OK
        }
        ScoreBehaviour::WriteFirst(m) => {
            for s in scores.iter_mut().take(usize::from(m)) {
                *s = 1.0;
            }
            SETR_OK
        }
        ScoreBehaviour::Fail(msg) => {
            set_message(Some(&msg));
            SETR_ERROR
        }
        ScoreBehaviour::FailNoMessage => {
            set_message(None);
            SETR_ERROR
        }
        ScoreBehaviour::Nothing => SETR_OK,
    }
}

unsafe extern "C" fn last_error(_handle: *mut c_void) -> *const c_char {
    MESSAGE.with(|m| m.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

unsafe extern "C" fn destroy(_handle: *mut c_void) {}

fn c_string(bytes: &[u8]) -> CString {
    CString::new(
        bytes
            .iter()
            .copied()
            .filter(|c| *c != 0)
            .collect::<Vec<u8>>(),
    )
    .expect("NULs removed")
}

/// Pixel buffers and embeddings that outlive the views borrowing them.
struct Owned {
    pixels: Vec<Vec<u8>>,
    reference: Option<Vec<u8>>,
    metadata: Vec<serde_json::Value>,
}

fn pixels(image: &Image) -> Vec<u8> {
    let n = 3 * usize::from(image.width) * usize::from(image.height);
    let n = n.saturating_add_signed(isize::from(image.off_by));
    vec![128; n]
}

fn view<'a>(image: &Image, pixels: &'a [u8]) -> RgbView<'a> {
    RgbView {
        width: u32::from(image.width),
        height: u32::from(image.height),
        pixels,
    }
}

fuzz_target!(|input: Input| {
    let t = &input.table;
    CREATE.with(|c| *c.borrow_mut() = input.create.clone());
    SCORE.with(|s| *s.borrow_mut() = input.score.clone());
    set_message(None);

    let taken = vec!["qwen3-vl".to_owned(), "colour".to_owned()];
    let name = match &t.name {
        Name::Null => None,
        Name::Bytes(b) => Some(c_string(b)),
        Name::Taken => Some(CString::new("colour").expect("no NUL")),
    };
    let description = t.description.as_deref().map(c_string);
    let abi_version = match t.version {
        Version::Current => ABI_VERSION,
        Version::Other(v) => v,
    };
    let struct_size = match t.size {
        Size::Exact => V1_SIZE as u32,
        Size::Larger(n) => (V1_SIZE + usize::from(n)) as u32,
        Size::Other(n) => n,
    };
    let passes_header = abi_version == ABI_VERSION && struct_size as usize >= V1_SIZE;
    let table = CTable {
        abi_version,
        struct_size,
        name: name.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
        description: description
            .as_ref()
            .map_or(std::ptr::null(), |c| c.as_ptr()),
        create: t.create.then_some(create as CreateFn),
        score: t.score.then_some(score as ScoreFn),
        last_error: t.last_error.then_some(last_error as LastErrorFn),
        destroy: t.destroy.then_some(destroy as DestroyFn),
    };
    // The memory the entry point's pointer designates: exactly as many bytes as the
    // contract says the host may read, at any alignment.
    let readable = if t.header_only && !passes_header {
        8
    } else {
        (struct_size as usize).clamp(V1_SIZE, 4096)
    };
    let misalign = usize::from(t.misalign % 8);
    let mut memory = vec![0u8; misalign + readable].into_boxed_slice();
    let base = memory[misalign..].as_mut_ptr();
    // SAFETY: `readable` bytes at `base`; the header alone or the whole table.
    unsafe {
        if readable == 8 {
            base.cast::<u32>().write_unaligned(abi_version);
            base.cast::<u32>().add(1).write_unaligned(struct_size);
        } else {
            base.cast::<CTable>().write_unaligned(table);
        }
    }
    // The Box is freed at the end of this iteration, after the plugin is dropped; the
    // loader copies what it keeps out of the table.
    let ptr = if t.null {
        std::ptr::null()
    } else {
        base.cast_const().cast::<SetrRerankerV1>()
    };
    let config = match &input.config {
        None => serde_json::json!({}),
        Some(s) => serde_json::from_str(s).unwrap_or_else(|_| serde_json::json!(s)),
    };
    // SAFETY: the table honours the contract of `load_table` (see above).
    let loaded = unsafe { setr_plugins::load_table(ptr, Path::new("fuzz.so"), &config, &taken) };
    let plugin = match loaded {
        Ok(p) => p,
        Err(_) => return,
    };
    assert!(
        passes_header && t.create && t.score && t.last_error && t.destroy,
        "a table failing a check was loaded"
    );
    assert!(!plugin.name().trim().is_empty());
    assert!(!taken.iter().any(|n| n == plugin.name()));

    let owned = Owned {
        pixels: input
            .candidates
            .iter()
            .map(|c| c.image.as_ref().map(pixels).unwrap_or_default())
            .collect(),
        reference: input.reference.as_ref().map(pixels),
        metadata: input
            .candidates
            .iter()
            .map(|c| {
                c.metadata
                    .clone()
                    .map_or(serde_json::Value::Null, serde_json::Value::String)
            })
            .collect(),
    };
    let query = RerankQuery {
        text: &input.text,
        reference: input
            .reference
            .as_ref()
            .zip(owned.reference.as_deref())
            .map(|(i, p)| view(i, p)),
        reference_embedding: input.reference_embedding.as_deref(),
        cancel: None,
    };
    let candidates: Vec<RerankCandidate<'_>> = input
        .candidates
        .iter()
        .take(64)
        .enumerate()
        .map(|(i, c)| RerankCandidate {
            id: ImageId(i as u64 + 1),
            image: c.image.as_ref().map(|img| view(img, &owned.pixels[i])),
            embedding: c.embedding.as_deref(),
            coarse_score: c.coarse_score,
            metadata: &owned.metadata[i],
        })
        .collect();
    if let Ok(scores) = plugin.score(&query, &candidates) {
        assert_eq!(scores.len(), candidates.len(), "one score per candidate");
        for s in &scores {
            let s = s.as_ref().expect("a plugin score is a number");
            assert!(s.is_finite(), "a non-finite score was accepted");
        }
        match &input.score {
            ScoreBehaviour::Write(_) => {}
            ScoreBehaviour::WriteFirst(m) => assert!(usize::from(*m) >= candidates.len()),
            _ => assert!(
                candidates.is_empty(),
                "a failed or empty score was accepted"
            ),
        }
    }
    drop(plugin);
    drop(memory);
});
