//! Image preprocessing equal to a checkpoint's `preprocessor_config.json`, as Hugging
//! Face's (slow, PIL-based) `CLIPImageProcessor` and `SiglipImageProcessor` do it: resize
//! (shortest edge, or to a fixed size) with Pillow's filter, centre crop, rescale,
//! normalise, channels first.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;
use serde_json::Value;

use crate::resize::{resize, Filter};
use crate::{ModelError, Result};

/// How the image is resized before cropping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeTo {
    /// Shortest edge to this length, aspect ratio kept (CLIP).
    ShortestEdge(u32),
    /// Exactly this width and height (SigLIP).
    Exact {
        /// Output width.
        width: u32,
        /// Output height.
        height: u32,
    },
}

/// The preprocessing of one checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessor {
    /// Resize step, if any.
    pub resize: Option<(ResizeTo, Filter)>,
    /// Centre crop (width, height), if any.
    pub crop: Option<(u32, u32)>,
    /// Multiplier applied to 8-bit values, if rescaling.
    pub rescale: Option<f64>,
    /// Per-channel mean and std, if normalising.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

/// The fields of `preprocessor_config.json` setr reads (names as Hugging Face writes them).
#[derive(Debug, Deserialize)]
struct RawConfig {
    #[serde(default)]
    image_processor_type: Option<String>,
    #[serde(default = "yes")]
    do_resize: bool,
    #[serde(default)]
    size: Option<Value>,
    #[serde(default)]
    resample: Option<u32>,
    #[serde(default)]
    do_center_crop: Option<bool>,
    #[serde(default)]
    crop_size: Option<Value>,
    #[serde(default = "yes")]
    do_rescale: bool,
    #[serde(default)]
    rescale_factor: Option<f64>,
    #[serde(default = "yes")]
    do_normalize: bool,
    #[serde(default)]
    image_mean: Option<Value>,
    #[serde(default)]
    image_std: Option<Value>,
}

fn yes() -> bool {
    true
}

const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

impl Preprocessor {
    /// Reads `preprocessor_config.json` of a checkpoint directory. Defaults are those of
    /// the processor class the file names (CLIP's when it names none).
    pub fn from_file(path: &Path) -> Result<Preprocessor> {
        let dir = path.parent().unwrap_or(path);
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
        let raw: RawConfig = serde_json::from_str(&text)
            .map_err(|e| ModelError::invalid(dir, format!("preprocessor_config.json: {e}")))?;
        Self::from_raw(raw)
            .map_err(|why| ModelError::invalid(dir, format!("preprocessor_config.json: {why}")))
    }

    fn from_raw(raw: RawConfig) -> std::result::Result<Preprocessor, String> {
        let kind = raw
            .image_processor_type
            .as_deref()
            .unwrap_or("CLIPImageProcessor");
        let siglip = match kind.trim_end_matches("Fast") {
            "CLIPImageProcessor" => false,
            "SiglipImageProcessor" => true,
            other => return Err(format!("unsupported image processor `{other}`")),
        };
        let resize = if raw.do_resize {
            let default = if siglip {
                serde_json::json!({"height": 224, "width": 224})
            } else {
                serde_json::json!({"shortest_edge": 224})
            };
            let to = parse_size(raw.size.as_ref().unwrap_or(&default), !siglip)?;
            let code = raw.resample.unwrap_or(3);
            let filter = Filter::from_pil(code).ok_or_else(|| {
                format!("resample {code} is not supported (nearest is not; use 1-5)")
            })?;
            Some((to, filter))
        } else {
            None
        };
        let crop = if raw.do_center_crop.unwrap_or(!siglip) {
            let default = serde_json::json!({"height": 224, "width": 224});
            match parse_size(raw.crop_size.as_ref().unwrap_or(&default), false)? {
                ResizeTo::Exact { width, height } => Some((width, height)),
                ResizeTo::ShortestEdge(_) => return Err("crop_size must be height/width".into()),
            }
        } else {
            None
        };
        let rescale = raw
            .do_rescale
            .then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0));
        let normalize = if raw.do_normalize {
            let (dm, ds) = if siglip {
                ([0.5; 3], [0.5; 3])
            } else {
                (CLIP_MEAN, CLIP_STD)
            };
            let mean = parse_triple(raw.image_mean.as_ref(), dm)?;
            let std = parse_triple(raw.image_std.as_ref(), ds)?;
            if std.iter().any(|s| *s == 0.0 || !s.is_finite()) {
                return Err("image_std has a zero or non-finite entry".into());
            }
            Some((mean, std))
        } else {
            None
        };
        let pre = Preprocessor {
            resize,
            crop,
            rescale,
            normalize,
        };
        if pre.output_size().is_none() {
            return Err("the output size depends on the input (no crop after a shortest-edge resize); setr needs a fixed size".into());
        }
        Ok(pre)
    }

    /// (width, height) of every output, when it does not depend on the input.
    pub fn output_size(&self) -> Option<(u32, u32)> {
        if let Some(crop) = self.crop {
            return Some(crop);
        }
        match self.resize {
            Some((ResizeTo::Exact { width, height }, _)) => Some((width, height)),
            _ => None,
        }
    }

    /// Preprocesses one upright RGB image into `3 * height * width` floats, channels first.
    pub fn apply(&self, image: &RgbImage) -> Vec<f32> {
        let mut image = match self.resize {
            Some((ResizeTo::ShortestEdge(edge), filter)) => {
                let (w, h) = image.dimensions();
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python's int(edge * long / short): float division, truncated.
                let new_long = (f64::from(edge) * f64::from(long) / f64::from(short)) as u32;
                let (nw, nh) = if w <= h {
                    (edge, new_long)
                } else {
                    (new_long, edge)
                };
                resize(image, nw, nh, filter)
            }
            Some((ResizeTo::Exact { width, height }, filter)) => {
                resize(image, width, height, filter)
            }
            None => image.clone(),
        };
        if let Some((cw, ch)) = self.crop {
            image = center_crop(&image, cw, ch);
        }
        let (w, h) = image.dimensions();
        let plane = (w * h) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in image.pixels().enumerate() {
            for c in 0..3 {
                let mut v = match self.rescale {
                    // numpy: float64 multiply, then cast to float32.
                    Some(factor) => (f64::from(px[c]) * factor) as f32,
                    None => f32::from(px[c]),
                };
                if let Some((mean, std)) = &self.normalize {
                    v = (v - mean[c]) / std[c];
                }
                out[c * plane + i] = v;
            }
        }
        out
    }
}

/// HF's `center_crop`: top-left at `(size - crop) // 2` (floor), zero padding where the
/// image is smaller than the crop.
fn center_crop(image: &RgbImage, crop_w: u32, crop_h: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if (w, h) == (crop_w, crop_h) {
        return image.clone();
    }
    // ceil(pad / 2) on each axis, as numpy's padded copy does.
    let pad_top = ((i64::from(crop_h) - i64::from(h)).max(0) + 1) / 2;
    let pad_left = ((i64::from(crop_w) - i64::from(w)).max(0) + 1) / 2;
    let top = (i64::from(h) - i64::from(crop_h)).div_euclid(2) + pad_top;
    let left = (i64::from(w) - i64::from(crop_w)).div_euclid(2) + pad_left;
    RgbImage::from_fn(crop_w, crop_h, |x, y| {
        // Coordinates in the padded image, then back into the source.
        let sy = top + i64::from(y) - pad_top;
        let sx = left + i64::from(x) - pad_left;
        if sy >= 0 && sx >= 0 && sy < i64::from(h) && sx < i64::from(w) {
            *image.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

fn parse_size(value: &Value, int_is_shortest_edge: bool) -> std::result::Result<ResizeTo, String> {
    let as_u32 = |v: &Value| -> std::result::Result<u32, String> {
        v.as_u64()
            .filter(|n| *n > 0 && *n <= 16384)
            .map(|n| n as u32)
            .ok_or_else(|| format!("size {v} is not a positive integer"))
    };
    match value {
        Value::Number(_) => {
            let n = as_u32(value)?;
            Ok(if int_is_shortest_edge {
                ResizeTo::ShortestEdge(n)
            } else {
                ResizeTo::Exact {
                    width: n,
                    height: n,
                }
            })
        }
        Value::Object(map) => {
            if let Some(edge) = map.get("shortest_edge") {
                if map.contains_key("longest_edge") {
                    return Err("size.longest_edge is not supported".into());
                }
                Ok(ResizeTo::ShortestEdge(as_u32(edge)?))
            } else if let (Some(h), Some(w)) = (map.get("height"), map.get("width")) {
                Ok(ResizeTo::Exact {
                    width: as_u32(w)?,
                    height: as_u32(h)?,
                })
            } else {
                Err(format!("unsupported size {value}"))
            }
        }
        _ => Err(format!("unsupported size {value}")),
    }
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
    use super::*;

    fn parse(json: &str) -> std::result::Result<Preprocessor, String> {
        Preprocessor::from_raw(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn clip_and_siglip_defaults() {
        let clip = parse(r#"{"image_processor_type": "CLIPImageProcessor"}"#).unwrap();
        assert_eq!(
            clip.resize,
            Some((ResizeTo::ShortestEdge(224), Filter::Bicubic))
        );
        assert_eq!(clip.crop, Some((224, 224)));
        let siglip = parse(r#"{"image_processor_type": "SiglipImageProcessor"}"#).unwrap();
        assert_eq!(siglip.crop, None);
        assert_eq!(siglip.output_size(), Some((224, 224)));
        assert_eq!(siglip.normalize, Some(([0.5; 3], [0.5; 3])));
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(parse(r#"{"image_processor_type": "ViTImageProcessor"}"#).is_err());
        assert!(parse(r#"{"resample": 0}"#).is_err());
        assert!(parse(r#"{"image_std": [1, 0, 1]}"#).is_err());
        assert!(parse(r#"{"do_center_crop": false}"#).is_err());
    }

    #[test]
    fn crop_pads_with_zeros_when_smaller() {
        let image = RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let out = center_crop(&image, 4, 3);
        // pad_left = 1, pad_top = 1 (ceil(1/2)).
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(2, 2).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(3, 2).0, [0, 0, 0]);
    }
}
