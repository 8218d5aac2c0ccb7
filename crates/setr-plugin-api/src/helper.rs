//! The Rust author's side: implement [`Plugin`], call [`export_plugin!`](crate::export_plugin),
//! and get the exported table, panic catching and error strings for free.

use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::{SetrCandidate, SetrImage, SetrQuery, SETR_ERROR, SETR_OK};

/// A borrowed RGB8 image.
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `3 * width * height` bytes, row-major RGB.
    pub pixels: &'a [u8],
}

/// The query, safe view.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The modification text.
    pub text: &'a str,
    /// The reference image.
    pub reference: Option<Image<'a>>,
    /// The reference embedding.
    pub reference_embedding: Option<&'a [f32]>,
}

/// A candidate, safe view.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// Gallery id.
    pub id: u64,
    /// Its image, when the host could read it.
    pub image: Option<Image<'a>>,
    /// Its embedding.
    pub embedding: Option<&'a [f32]>,
    /// First-stage score.
    pub coarse_score: f32,
    /// Metadata JSON text (`null` when none).
    pub metadata_json: &'a str,
}

/// A reranker plugin written in Rust.
pub trait Plugin: Sized + Send + 'static {
    /// Unique name.
    const NAME: &'static str;
    /// One-line description.
    const DESCRIPTION: &'static str;
    /// Builds an instance from its JSON configuration text.
    fn create(config_json: &str) -> Result<Self, String>;
    /// Writes one finite score per candidate into `scores` (same length as `candidates`).
    fn score(
        &mut self,
        query: &Query<'_>,
        candidates: &[Candidate<'_>],
        scores: &mut [f32],
    ) -> Result<(), String>;
}

/// Used by [`export_plugin!`](crate::export_plugin); not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        static CREATE_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
    }

    /// The handle: the instance and its last error.
    pub struct State<P> {
        plugin: P,
        error: Option<CString>,
    }

    fn c_string(message: String) -> CString {
        CString::new(message.replace('\0', " ")).unwrap_or_default()
    }

    fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown payload".into());
        format!("the plugin panicked: {what}")
    }

    /// # Safety
    /// `config` points to `len` readable bytes; `out` is writable.
    pub unsafe fn create<P: Plugin>(
        config: *const c_char,
        len: usize,
        out: *mut *mut c_void,
    ) -> i32 {
        let result = catch_unwind(|| {
            let bytes = if config.is_null() {
                &[][..]
            } else {
                // SAFETY: the host passes `len` readable bytes.
                unsafe { std::slice::from_raw_parts(config.cast::<u8>(), len) }
            };
            let text =
                std::str::from_utf8(bytes).map_err(|e| format!("config is not UTF-8: {e}"))?;
            P::create(text)
        })
        .unwrap_or_else(|p| Err(panic_message(p)));
        match result {
            Ok(plugin) => {
                let state = Box::new(State {
                    plugin,
                    error: None,
                });
                // SAFETY: `out` is writable (host contract).
                unsafe { *out = Box::into_raw(state).cast() };
                SETR_OK
            }
            Err(message) => {
                CREATE_ERROR.with(|e| *e.borrow_mut() = Some(c_string(message)));
                SETR_ERROR
            }
        }
    }

    fn image<'a>(image: &SetrImage) -> Option<Image<'a>> {
        if image.pixels.is_null() {
            return None;
        }
        let len = 3 * image.width as usize * image.height as usize;
        // SAFETY: the host passes 3 * w * h readable bytes, valid for the call.
        Some(Image {
            width: image.width,
            height: image.height,
            pixels: unsafe { std::slice::from_raw_parts(image.pixels, len) },
        })
    }

    fn text<'a>(ptr: *const c_char, len: usize) -> Result<&'a str, String> {
        if ptr.is_null() {
            return Ok("");
        }
        // SAFETY: the host passes `len` readable bytes, valid for the call.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) };
        std::str::from_utf8(bytes).map_err(|e| format!("text is not UTF-8: {e}"))
    }

    fn floats<'a>(ptr: *const f32, len: usize) -> Option<&'a [f32]> {
        // SAFETY: the host passes `len` readable floats when non-null.
        (!ptr.is_null() && len > 0).then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// # Safety
    /// Host contract of [`crate::ScoreFn`].
    pub unsafe fn score<P: Plugin>(
        handle: *mut c_void,
        query: *const SetrQuery,
        candidates: *const SetrCandidate,
        n: usize,
        out: *mut f32,
    ) -> i32 {
        if handle.is_null() || query.is_null() || (n > 0 && (candidates.is_null() || out.is_null()))
        {
            return SETR_ERROR;
        }
        // SAFETY: a handle made by `create::<P>`.
        let state = unsafe { &mut *handle.cast::<State<P>>() };
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: host contract: valid pointers for the call.
            let q = unsafe { &*query };
            let dim = q.embedding_dim;
            let query = Query {
                text: text(q.text, q.text_len)?,
                reference: image(&q.reference),
                reference_embedding: floats(q.reference_embedding, dim),
            };
            let raw = if n == 0 {
                &[][..]
            } else {
                unsafe { std::slice::from_raw_parts(candidates, n) }
            };
            let candidates = raw
                .iter()
                .map(|c| {
                    Ok(Candidate {
                        id: c.id,
                        image: image(&c.image),
                        embedding: floats(c.embedding, dim),
                        coarse_score: c.coarse_score,
                        metadata_json: text(c.metadata_json, c.metadata_len)?,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            let scores = if n == 0 {
                &mut [][..]
            } else {
                unsafe { std::slice::from_raw_parts_mut(out, n) }
            };
            state.plugin.score(&query, &candidates, scores)
        }))
        .unwrap_or_else(|p| Err(panic_message(p)));
        match result {
            Ok(()) => {
                state.error = None;
                SETR_OK
            }
            Err(message) => {
                state.error = Some(c_string(message));
                SETR_ERROR
            }
        }
    }

    /// # Safety
    /// `handle` is null or made by `create::<P>`.
    pub unsafe fn last_error<P: Plugin>(handle: *mut c_void) -> *const c_char {
        if handle.is_null() {
            return CREATE_ERROR
                .with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()));
        }
        // SAFETY: a handle made by `create::<P>`.
        let state = unsafe { &*handle.cast::<State<P>>() };
        state
            .error
            .as_ref()
            .map_or(std::ptr::null(), |c| c.as_ptr())
    }

    /// # Safety
    /// `handle` is null or made by `create::<P>` and not yet destroyed.
    pub unsafe fn destroy<P: Plugin>(handle: *mut c_void) {
        if !handle.is_null() {
            // SAFETY: as above; dropping may panic, which must not cross the boundary.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                drop(unsafe { Box::from_raw(handle.cast::<State<P>>()) })
            }));
        }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as a setr reranker plugin: defines
/// the `setr_reranker_v1` symbol and its table. Use once per `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            unsafe extern "C" fn create(
                c: *const ::std::ffi::c_char,
                l: usize,
                o: *mut *mut ::std::ffi::c_void,
            ) -> i32 {
                unsafe { $crate::__private::create::<$plugin>(c, l, o) }
            }
            unsafe extern "C" fn score(
                h: *mut ::std::ffi::c_void,
                q: *const $crate::SetrQuery,
                c: *const $crate::SetrCandidate,
                n: usize,
                o: *mut f32,
            ) -> i32 {
                unsafe { $crate::__private::score::<$plugin>(h, q, c, n, o) }
            }
            unsafe extern "C" fn last_error(
                h: *mut ::std::ffi::c_void,
            ) -> *const ::std::ffi::c_char {
                unsafe { $crate::__private::last_error::<$plugin>(h) }
            }
            unsafe extern "C" fn destroy(h: *mut ::std::ffi::c_void) {
                unsafe { $crate::__private::destroy::<$plugin>(h) }
            }
            struct Table($crate::SetrRerankerV1);
            static TABLE: ::std::sync::OnceLock<Table> = ::std::sync::OnceLock::new();
            static NAME: ::std::sync::OnceLock<::std::ffi::CString> = ::std::sync::OnceLock::new();
            static DESCRIPTION: ::std::sync::OnceLock<::std::ffi::CString> =
                ::std::sync::OnceLock::new();
            // SAFETY: the table only holds pointers to static data and functions.
            unsafe impl Sync for Table {}
            unsafe impl Send for Table {}

            /// The plugin entry point.
            #[unsafe(no_mangle)]
            pub extern "C" fn setr_reranker_v1() -> *const $crate::SetrRerankerV1 {
                let table = TABLE.get_or_init(|| {
                    let name = NAME.get_or_init(|| {
                        ::std::ffi::CString::new(<$plugin as $crate::Plugin>::NAME)
                            .unwrap_or_default()
                    });
                    let description = DESCRIPTION.get_or_init(|| {
                        ::std::ffi::CString::new(<$plugin as $crate::Plugin>::DESCRIPTION)
                            .unwrap_or_default()
                    });
                    Table($crate::SetrRerankerV1 {
                        abi_version: $crate::ABI_VERSION,
                        struct_size: ::std::mem::size_of::<$crate::SetrRerankerV1>() as u32,
                        name: name.as_ptr(),
                        description: description.as_ptr(),
                        create,
                        score,
                        last_error,
                        destroy,
                    })
                });
                &table.0
            }
        };
    };
}
