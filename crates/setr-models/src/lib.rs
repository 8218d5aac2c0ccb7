//! setr-models: the models of setr on candle.
//!
//! - [`ImageTextEncoder`]: CLIP and SigLIP checkpoints in the Hugging Face layout
//!   (config.json, safetensors, tokenizer.json, preprocessor_config.json), loaded from a
//!   directory or a hub id, producing L2-normalised embeddings in batches;
//! - [`decode_image`]: untrusted bytes to an upright RGB image, with a pixel limit;
//! - [`Preprocessor`]: the checkpoint's image preprocessing, bit-exact with Hugging Face's
//!   PIL-based processors (Pillow's resampler reimplemented in [`resize`]);
//! - [`TextTokenizer`]: `tokenizer.json` with the model's truncation and padding.
#![deny(missing_docs)]

mod clip;
mod decode;
mod encoder;
mod error;
mod flat;
mod gemm;
mod jpeg;
pub mod lora;
mod preprocess;
pub mod qwen3vl;
mod reranker;
pub mod resize;
mod siglip;
mod source;
mod tokenize;
mod transformer;

pub use decode::{
    decode_file, decode_image, read_image_file, DecodeLimits, DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_PIXELS,
};
pub use encoder::{device, EncoderOptions, Family, ImageTextEncoder, Precision};
pub use error::ModelError;
pub use image::RgbImage;
pub use preprocess::{Preprocessor, ResizeTo};
pub use reranker::{RerankerOptions, VlmReranker, YesNo};
pub use source::{fingerprint, offline_from_env, resolve, Checkpoint};
pub use tokenize::{Padding, TextTokenizer, TokenBatch};

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
