//! Image preprocessing of Qwen2-VL / Qwen3-VL, bit-exact with transformers'
//! `Qwen2VLImageProcessorPil`: `smart_resize` to a multiple of `patch_size * merge_size`
//! within `[min_pixels, max_pixels]`, Pillow resize, rescale, normalise, then patchify into
//! rows of `C * T * P * P` features in merge-block order.

use std::path::Path;

use image::RgbImage;
use rayon::prelude::*;
use serde_json::Value;

use crate::resize::{resize, Filter};
use crate::{ModelError, Result};

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// The vision preprocessing of one checkpoint (`preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct VisionPreprocessor {
    /// Spatial patch size of the vision encoder (pixels).
    pub patch_size: usize,
    /// Patches merged per side before the language model (2: 2x2 patches per token).
    pub merge_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Smallest number of pixels after resizing (`size.shortest_edge`).
    pub min_pixels: usize,
    /// Largest number of pixels after resizing (`size.longest_edge`).
    pub max_pixels: usize,
    /// Pillow resampling filter.
    pub filter: Filter,
    /// Multiplier applied to 8-bit values (1.0 when `do_rescale` is false).
    pub rescale: f64,
    /// Per-channel mean (0 when `do_normalize` is false).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (1 when `do_normalize` is false).
    pub std: [f32; 3],
}

/// One preprocessed image: the patch rows the vision encoder takes.
#[derive(Clone, Debug, PartialEq)]
pub struct PatchedImage {
    /// `rows * cols` floats, row-major.
    pub patches: Vec<f32>,
    /// Number of patches, `grid_t * grid_h * grid_w`, in merge-block order.
    pub rows: usize,
    /// Features per patch, `3 * temporal_patch_size * patch_size^2`, ordered (C, T, ph, pw).
    pub cols: usize,
    /// Temporal patches (1 for a still image).
    pub grid_t: usize,
    /// Patches along the height.
    pub grid_h: usize,
    /// Patches along the width.
    pub grid_w: usize,
}

impl Default for VisionPreprocessor {
    /// The defaults of transformers' `Qwen2VLImageProcessor`.
    fn default() -> Self {
        VisionPreprocessor {
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            filter: Filter::Bicubic,
            rescale: 1.0 / 255.0,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }
}

impl VisionPreprocessor {
    /// Reads `preprocessor_config.json`: `size.shortest_edge` / `size.longest_edge` (or
    /// `size.min_pixels` / `size.max_pixels`), overridden by top-level `min_pixels` /
    /// `max_pixels` as transformers does; missing keys take `Qwen2VLImageProcessor`'s
    /// defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(path);
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(dir, format!("preprocessor_config.json: {e}")))?;
        Self::from_json(&raw)
            .map_err(|why| ModelError::invalid(dir, format!("preprocessor_config.json: {why}")))
    }

    fn from_json(raw: &Value) -> std::result::Result<Self, String> {
        if let Some(kind) = raw.get("image_processor_type").and_then(Value::as_str) {
            if !kind.starts_with("Qwen2VLImageProcessor") {
                return Err(format!(
                    "unsupported image processor `{kind}` (expected Qwen2VLImageProcessor)"
                ));
            }
        }
        let get = |key: &str| raw.get(key).filter(|v| !v.is_null());
        let flag = |key: &str| match get(key) {
            None => Ok(true),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("`{key}` = {v} is not a boolean")),
        };
        let count = |key: &str, v: Option<&Value>| -> std::result::Result<Option<usize>, String> {
            v.filter(|v| !v.is_null())
                .map(|v| {
                    as_count(v).ok_or_else(|| format!("`{key}` = {v} is not a positive integer"))
                })
                .transpose()
        };
        let d = VisionPreprocessor::default();
        if !flag("do_resize")? {
            return Err("do_resize = false is not supported".into());
        }
        let patch_size = count("patch_size", get("patch_size"))?.unwrap_or(d.patch_size);
        let merge_size = count("merge_size", get("merge_size"))?.unwrap_or(d.merge_size);
        let temporal_patch_size = count("temporal_patch_size", get("temporal_patch_size"))?
            .unwrap_or(d.temporal_patch_size);
        // transformers: `size` (or its default) first, then top-level min/max_pixels override it.
        let (mut min_pixels, mut max_pixels) = match get("size") {
            None => (Some(d.min_pixels), Some(d.max_pixels)),
            Some(Value::Object(size)) => {
                let pick = |a: &str, b: &str| size.get(a).or_else(|| size.get(b));
                (
                    count("size.shortest_edge", pick("shortest_edge", "min_pixels"))?,
                    count("size.longest_edge", pick("longest_edge", "max_pixels"))?,
                )
            }
            Some(v) => {
                return Err(format!(
                    "unsupported size {v} (expected shortest_edge/longest_edge)"
                ))
            }
        };
        if let Some(n) = count("min_pixels", get("min_pixels"))? {
            min_pixels = Some(n);
        }
        if let Some(n) = count("max_pixels", get("max_pixels"))? {
            max_pixels = Some(n);
        }
        let (Some(min_pixels), Some(max_pixels)) = (min_pixels, max_pixels) else {
            return Err(
                "size must have shortest_edge and longest_edge (min and max pixels)".into(),
            );
        };
        if [
            patch_size,
            merge_size,
            temporal_patch_size,
            min_pixels,
            max_pixels,
        ]
        .contains(&0)
        {
            return Err(
                "patch_size, merge_size, temporal_patch_size and size must be positive".into(),
            );
        }
        let code = match get("resample") {
            None => 3,
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`resample` = {v} is not an integer"))?,
        };
        let filter = Filter::from_pil(code)
            .ok_or_else(|| format!("resample {code} is not supported (nearest is not; use 1-5)"))?;
        let rescale = if flag("do_rescale")? {
            match get("rescale_factor") {
                None => d.rescale,
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| format!("`rescale_factor` = {v} is not a number"))?,
            }
        } else {
            1.0
        };
        let (mean, std) = if flag("do_normalize")? {
            let mean = parse_triple(get("image_mean"), d.mean)?;
            let std = parse_triple(get("image_std"), d.std)?;
            if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err("image_std has a zero or non-finite entry".into());
            }
            (mean, std)
        } else {
            // (x - 0) / 1 is x exactly: the same as skipping the step.
            ([0.0; 3], [1.0; 3])
        };
        Ok(VisionPreprocessor {
            patch_size,
            merge_size,
            temporal_patch_size,
            min_pixels,
            max_pixels,
            filter,
            rescale,
            mean,
            std,
        })
    }

    /// The `(height, width)` an image of `height x width` is resized to, exactly as
    /// transformers' `smart_resize` (Python's round-half-to-even included): both multiples
    /// of `patch_size * merge_size`, the pixel count within `[min_pixels, max_pixels]`,
    /// the aspect ratio kept as closely as possible. Aspect ratios above 200 are refused.
    pub fn smart_resize(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        if height == 0 || width == 0 {
            return Err(ModelError::InvalidInput(format!(
                "image is {width}x{height} pixels"
            )));
        }
        let factor = self.patch_size * self.merge_size;
        let (h, w, f) = (height as f64, width as f64, factor as f64);
        let ratio = h.max(w) / h.min(w);
        if ratio > 200.0 {
            return Err(ModelError::InvalidInput(format!(
                "absolute aspect ratio must be smaller than 200, got {ratio} ({width}x{height})"
            )));
        }
        let area = h * w; // exact below 2^53, as Python's int product
        let mut h_bar = (h / f).round_ties_even() as usize * factor;
        let mut w_bar = (w / f).round_ties_even() as usize * factor;
        if h_bar.saturating_mul(w_bar) > self.max_pixels {
            let beta = (area / self.max_pixels as f64).sqrt();
            h_bar = factor.max((h / beta / f).floor() as usize * factor);
            w_bar = factor.max((w / beta / f).floor() as usize * factor);
        } else if h_bar * w_bar < self.min_pixels {
            let beta = (self.min_pixels as f64 / area).sqrt();
            h_bar = (h * beta / f).ceil() as usize * factor;
            w_bar = (w * beta / f).ceil() as usize * factor;
        }
        if h_bar == 0 || w_bar == 0 {
            return Err(ModelError::InvalidInput(format!(
                "{width}x{height} resizes to an empty image"
            )));
        }
        Ok((h_bar, w_bar))
    }

    /// Number of image tokens (`<|image_pad|>`) the language model sees for `image`.
    pub fn num_image_tokens(&self, image: &PatchedImage) -> usize {
        image.rows / (self.merge_size * self.merge_size)
    }

    /// The image [`VisionPreprocessor::apply`] would patchify: `image` smart-resized (a copy when the
    /// size does not change). Applying the processor to it again resizes nothing, so a host
    /// may resize candidates as soon as they are decoded and drop the full-size pixels.
    pub fn fit<C: std::ops::Deref<Target = [u8]>>(
        &self,
        image: &image::ImageBuffer<image::Rgb<u8>, C>,
    ) -> Result<RgbImage> {
        let (width, height) = self.target_size(image.dimensions())?;
        Ok(resize(image, width, height, self.filter))
    }

    /// `(width, height)` of an image of `(width, height)` after [`Self::smart_resize`].
    fn target_size(&self, (w0, h0): (u32, u32)) -> Result<(u32, u32)> {
        let (oh, ow) = self.smart_resize(h0 as usize, w0 as usize)?;
        let too_big = || ModelError::InvalidInput(format!("{w0}x{h0} resizes to {ow}x{oh}"));
        Ok((
            u32::try_from(ow).map_err(|_| too_big())?,
            u32::try_from(oh).map_err(|_| too_big())?,
        ))
    }

    /// Preprocesses one upright RGB image: smart resize (skipped when the size does not
    /// change), rescale `f32(f64(u8) * rescale)`, normalise `(x - mean) / std` in f32,
    /// then patchify. Row order is merge-block order (`grid_h / m`, `grid_w / m`, `m`,
    /// `m`); feature order is (C, T, ph, pw), the frame repeated `temporal_patch_size`
    /// times.
    pub fn apply(&self, image: &RgbImage) -> Result<PatchedImage> {
        let (ow32, oh32) = self.target_size(image.dimensions())?;
        let (ow, oh) = (ow32 as usize, oh32 as usize);
        let resized;
        let image = if (ow32, oh32) == image.dimensions() {
            image
        } else {
            resized = resize(image, ow32, oh32, self.filter);
            &resized
        };
        // Channels-first planes, normalised.
        let plane = ow * oh;
        let mut x = vec![0f32; 3 * plane];
        for (i, px) in image.pixels().enumerate() {
            for c in 0..3 {
                let v = (f64::from(px[c]) * self.rescale) as f32;
                x[c * plane + i] = (v - self.mean[c]) / self.std[c];
            }
        }
        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (grid_h, grid_w) = (oh / p, ow / p);
        let blocks_w = grid_w / m;
        let cols = 3 * t * p * p;
        let rows = grid_h * grid_w;
        let mut patches = vec![0f32; rows * cols];
        patches
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(row, out)| {
                let (mw, mh, block) = (row % m, (row / m) % m, row / (m * m));
                let (bh, bw) = (block / blocks_w, block % blocks_w);
                let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                for c in 0..3 {
                    for ti in 0..t {
                        for ph in 0..p {
                            let src = &x[c * plane + (y0 + ph) * ow + x0..][..p];
                            out[((c * t + ti) * p + ph) * p..][..p].copy_from_slice(src);
                        }
                    }
                }
            });
        Ok(PatchedImage {
            patches,
            rows,
            cols,
            grid_t: 1,
            grid_h,
            grid_w,
        })
    }
}

/// A JSON integer >= 0 (also written as a float, e.g. `12845056.0`).
fn as_count(v: &Value) -> Option<usize> {
    if let Some(n) = v.as_u64() {
        return usize::try_from(n).ok();
    }
    v.as_f64()
        .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < 9.007_199_254_740_992e15)
        .map(|x| x as usize)
}

fn parse_triple(value: Option<&Value>, default: [f32; 3]) -> std::result::Result<[f32; 3], String> {
    let Some(value) = value else {
        return Ok(default);
    };
    if let Some(x) = value.as_f64() {
        return Ok([x as f32; 3]);
    }
    let list = value
        .as_array()
        .filter(|l| l.len() == 3)
        .ok_or_else(|| format!("expected 3 numbers, got {value}"))?;
    let mut out = [0f32; 3];
    for (o, v) in out.iter_mut().zip(list) {
        *o = v.as_f64().ok_or_else(|| format!("not a number: {v}"))? as f32;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use candle_core::Device;

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures"))
    }

    #[test]
    fn smart_resize_matches_python() {
        // transformers' defaults: factor 28, min 56*56, max 28*28*1280. Expected values were
        // computed with transformers' `smart_resize`.
        let pre = VisionPreprocessor::default();
        let cases = [
            ((70, 70), (56, 56)),        // 2.5 rounds to 2 (half to even), not 3
            ((98, 126), (112, 112)),     // 3.5 -> 4 and 4.5 -> 4
            ((140, 70), (140, 56)),      // 5 and 2.5 -> 2
            ((42, 98), (56, 112)),       // 1.5 -> 2, 3.5 -> 4
            ((10, 20), (56, 84)),        // below min_pixels: ceil branch
            ((37, 100), (28, 112)),      // ceil branch
            ((4000, 3000), (1148, 840)), // above max_pixels: floor branch
            ((1080, 1920), (728, 1316)),
            ((1000, 1000), (980, 980)),
            ((28, 5600), (28, 5600)), // aspect ratio exactly 200 is accepted
            ((2, 400), (28, 812)),
        ];
        for ((h, w), want) in cases {
            assert_eq!(pre.smart_resize(h, w).unwrap(), want, "{h}x{w}");
        }
        assert!(pre.smart_resize(28, 5601).is_err());
        assert!(pre.smart_resize(0, 10).is_err());
    }

    #[test]
    fn config_forms() {
        let parse = |s: &str| VisionPreprocessor::from_json(&serde_json::from_str(s).unwrap());
        let d = parse("{}").unwrap();
        assert_eq!(d, VisionPreprocessor::default());
        let v5 = parse(r#"{"size": {"shortest_edge": 100, "longest_edge": 2000}}"#).unwrap();
        assert_eq!((v5.min_pixels, v5.max_pixels), (100, 2000));
        let old = parse(
            r#"{"min_pixels": 3136, "max_pixels": 12845056.0,
                "size": {"min_pixels": 1, "max_pixels": 2}, "do_normalize": false}"#,
        )
        .unwrap();
        assert_eq!((old.min_pixels, old.max_pixels), (3136, 12_845_056));
        assert_eq!((old.mean, old.std), ([0.0; 3], [1.0; 3]));
        assert!(parse(r#"{"size": {"shortest_edge": 100}}"#).is_err());
        assert!(parse(r#"{"resample": 0}"#).is_err());
        assert!(parse(r#"{"do_resize": false}"#).is_err());
        assert!(parse(r#"{"image_processor_type": "CLIPImageProcessor"}"#).is_err());
        assert!(parse(r#"{"image_std": [0.5, 0, 0.5]}"#).is_err());
    }

    #[test]
    fn golden_pixel_values() {
        for name in ["qwen3vl-a", "qwen3vl-b"] {
            let config = fixtures()
                .join("models")
                .join(name)
                .join("preprocessor_config.json");
            let pre = VisionPreprocessor::from_file(&config).unwrap();
            let golden_dir = fixtures().join("golden");
            let golden = candle_core::safetensors::load(
                golden_dir.join(format!("{name}.safetensors")),
                &Device::Cpu,
            )
            .unwrap();
            let meta: Value = serde_json::from_str(
                &std::fs::read_to_string(golden_dir.join(format!("{name}.json"))).unwrap(),
            )
            .unwrap();
            let images = meta["images"].as_object().unwrap();
            assert_eq!(images.len(), 6);
            for (stem, info) in images {
                let file = fixtures()
                    .join("images")
                    .join(info["file"].as_str().unwrap());
                let image = crate::decode_file(&file, &crate::DecodeLimits::default()).unwrap();
                let (w, h) = image.dimensions();
                let resized = pre.smart_resize(h as usize, w as usize).unwrap();
                let want_hw = &info["resized_hw"];
                assert_eq!(
                    [resized.0 as u64, resized.1 as u64],
                    [want_hw[0].as_u64().unwrap(), want_hw[1].as_u64().unwrap()],
                    "{name}/{stem}: resized size"
                );
                let out = pre.apply(&image).unwrap();
                let grid = golden[&format!("grid_thw_{stem}")]
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap();
                assert_eq!(
                    grid,
                    vec![out.grid_t as i64, out.grid_h as i64, out.grid_w as i64],
                    "{name}/{stem}: grid"
                );
                let pv = &golden[&format!("pixel_values_{stem}")];
                assert_eq!(pv.dims(), &[out.rows, out.cols], "{name}/{stem}: shape");
                let want = pv.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert_eq!(want.len(), out.patches.len());
                let max = want
                    .iter()
                    .zip(&out.patches)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(max <= 1e-5, "{name}/{stem}: max abs diff {max}");
                assert_eq!(
                    pre.num_image_tokens(&out) as u64,
                    info["num_image_tokens"].as_u64().unwrap()
                );
            }
        }
    }
}
