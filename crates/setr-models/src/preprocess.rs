//! Image preprocessing equal to a checkpoint's `preprocessor_config.json`, as Hugging
//! Face's (slow, PIL-based) `CLIPImageProcessor` and `SiglipImageProcessor` do it: resize
//! (shortest edge, or to a fixed size) with Pillow's filter, centre crop, rescale,
//! normalise, channels first.

use std::path::Path;

use image::RgbImage;
use serde::Deserialize;
use serde_json::Value;

use crate::resize::{resize, resize_region, Filter, Region};
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
    /// A resize followed by a centre crop computes only the cropped pixels (the same
    /// values, see [`resize_region`]), so memory and time are those of the crop whatever
    /// the aspect ratio: a 1 x 2,000,000 sliver does not become 224 x 448,000,000 first.
    pub fn apply(&self, image: &RgbImage) -> Vec<f32> {
        let resized_size = match self.resize {
            Some((ResizeTo::ShortestEdge(edge), _)) => {
                let (w, h) = image.dimensions();
                let (short, long) = if w <= h { (w, h) } else { (h, w) };
                // Python's int(edge * long / short): float division, truncated (saturating
                // past u32, where only the crop is ever computed).
                let new_long = (f64::from(edge) * f64::from(long) / f64::from(short)) as u32;
                if w <= h {
                    (edge, new_long)
                } else {
                    (new_long, edge)
                }
            }
            Some((ResizeTo::Exact { width, height }, _)) => (width, height),
            None => image.dimensions(),
        };
        let filter = self.resize.map(|(_, f)| f);
        let image = match self.crop {
            Some((cw, ch)) => center_crop_of_resize(image, resized_size, filter, cw, ch),
            None => match filter {
                Some(f) => resize(image, resized_size.0, resized_size.1, f),
                None => image.clone(),
            },
        };
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

/// HF's `center_crop` of the image resized to `size` (by `filter`; `None`: not resized):
/// top-left at `(size - crop) // 2` (floor), zero padding where the image is smaller than
/// the crop. Only the pixels inside the crop are resized.
fn center_crop_of_resize(
    image: &RgbImage,
    size: (u32, u32),
    filter: Option<Filter>,
    crop_w: u32,
    crop_h: u32,
) -> RgbImage {
    let (w, h) = size;
    // The crop's top-left corner in the resized image's coordinates; negative where the
    // image is smaller than the crop: numpy pads ceil(pad / 2) before, the same offset.
    let top = (i64::from(h) - i64::from(crop_h)).div_euclid(2);
    let left = (i64::from(w) - i64::from(crop_w)).div_euclid(2);
    let (y0, x0) = (top.max(0), left.max(0));
    let y1 = (top + i64::from(crop_h)).min(i64::from(h));
    let x1 = (left + i64::from(crop_w)).min(i64::from(w));
    let region = Region {
        x: x0 as u32,
        y: y0 as u32,
        width: (x1 - x0) as u32,
        height: (y1 - y0) as u32,
    };
    let inside = match filter {
        Some(f) if size != image.dimensions() => resize_region(image, w, h, f, region),
        _ => image::imageops::crop_imm(image, region.x, region.y, region.width, region.height)
            .to_image(),
    };
    if (region.width, region.height) == (crop_w, crop_h) {
        return inside;
    }
    let mut out = RgbImage::new(crop_w, crop_h);
    image::imageops::replace(&mut out, &inside, x0 - left, y0 - top);
    out
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

    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        RgbImage::from_fn(width, height, |_, _| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            image::Rgb([
                (state >> 40) as u8,
                (state >> 48) as u8,
                (state >> 56) as u8,
            ])
        })
    }

    /// What HF does: the whole shortest-edge resize, then the centre crop.
    fn resize_then_crop(pre: &Preprocessor, image: &RgbImage) -> RgbImage {
        let Some((ResizeTo::ShortestEdge(edge), filter)) = pre.resize else {
            panic!("shortest-edge config expected")
        };
        let (w, h) = image.dimensions();
        let (short, long) = if w <= h { (w, h) } else { (h, w) };
        let new_long = (f64::from(edge) * f64::from(long) / f64::from(short)) as u32;
        let (nw, nh) = if w <= h {
            (edge, new_long)
        } else {
            (new_long, edge)
        };
        let whole = resize(image, nw, nh, filter);
        let (cw, ch) = pre.crop.unwrap();
        center_crop_of_resize(&whole, (nw, nh), None, cw, ch)
    }

    #[test]
    fn cropping_inside_the_resize_equals_resizing_then_cropping() {
        let pre = parse(r#"{"size": {"shortest_edge": 32}, "crop_size": 24}"#).unwrap();
        for (w, h) in [(1, 300), (300, 1), (2, 97), (61, 45), (20, 20), (10, 7)] {
            let image = noise(w, h);
            let want = resize_then_crop(&pre, &image);
            let plane = 24 * 24;
            let got = pre.apply(&image);
            for (i, px) in want.pixels().enumerate() {
                for c in 0..3 {
                    let v = ((f64::from(px[c]) / 255.0) as f32 - CLIP_MEAN[c]) / CLIP_STD[c];
                    assert_eq!(got[c * plane + i], v, "{w}x{h} pixel {i} channel {c}");
                }
            }
        }
    }

    #[test]
    fn an_extreme_sliver_costs_only_its_crop() {
        // 1 x 2,000,000 resizes to 224 x 448,000,000 (300 GB) before the crop: only the
        // 224 x 224 crop is computed.
        let pre = parse(r#"{"image_processor_type": "CLIPImageProcessor"}"#).unwrap();
        let out = pre.apply(&noise(1, 2_000_000));
        assert_eq!(out.len(), 3 * 224 * 224);
        assert!(out.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn crop_pads_with_zeros_when_smaller() {
        let image = RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let out = center_crop_of_resize(&image, (2, 2), None, 4, 3);
        // pad_left = 1, pad_top = 1 (ceil(1/2)).
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(out.get_pixel(1, 1).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(2, 2).0, [9, 9, 9]);
        assert_eq!(out.get_pixel(3, 2).0, [0, 0, 0]);
    }
}
