//! Pillow-exact resampling of RGB8 images.
//!
//! Hugging Face's (slow) image processors resize with `PIL.Image.resize`, so parity with
//! them needs Pillow's convolution resampler bit for bit: per output pixel a window of
//! `ceil(support * scale) * 2 + 1` taps centred on `(x + 0.5) * scale`, weights normalised
//! to sum 1, converted to fixed point with 22 fractional bits, a horizontal pass then a
//! vertical pass (or the reverse, see [`resize`]), each rounded and clamped to 8 bits
//! (Pillow's `libImaging/Resample.c`).

use std::ops::Deref;

use image::{ImageBuffer, Rgb, RgbImage};

/// Pillow's resampling filters, numbered as `PIL.Image.Resampling` (the number HF writes
/// in `preprocessor_config.json` as `resample`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// 1: Lanczos (a = 3).
    Lanczos,
    /// 2: triangle.
    Bilinear,
    /// 3: Keys cubic, a = -0.5.
    Bicubic,
    /// 4: box.
    Box,
    /// 5: Hamming window.
    Hamming,
}

impl Filter {
    /// The filter for Pillow's resample number; `None` for nearest (0) or unknown numbers.
    pub fn from_pil(resample: u32) -> Option<Filter> {
        match resample {
            1 => Some(Filter::Lanczos),
            2 => Some(Filter::Bilinear),
            3 => Some(Filter::Bicubic),
            4 => Some(Filter::Box),
            5 => Some(Filter::Hamming),
            _ => None,
        }
    }

    fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Fixed-point taps of one axis for a range of output indices: for the `i`-th output of the
/// range, `bounds[i] = (first input, count)`, weights in `weights[i * window..][..count]`.
struct Taps {
    window: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

impl Taps {
    /// The input indices the range reads, as one span.
    fn input_span(&self) -> std::ops::Range<usize> {
        let start = self.bounds.iter().map(|b| b.0).min().unwrap_or(0);
        let end = self.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(start);
        start..end
    }
}

/// Taps of the outputs `out` of an `in_size` -> `out_size` resize. Each output's taps depend
/// only on its own index, so a range costs its length, whatever `out_size` is.
fn taps(in_size: usize, out_size: usize, filter: Filter, out: std::ops::Range<usize>) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let window = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out.len());
    let mut weights = vec![0i32; out.len() * window];
    let mut float = vec![0f64; window];
    for (i, row) in out.zip(weights.chunks_exact_mut(window)) {
        let center = (i as f64 + 0.5) * scale;
        // `as i64` truncates toward zero like C's (int) cast.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let last = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = last.saturating_sub(first);
        let mut sum = 0.0;
        for (x, w) in float.iter_mut().enumerate().take(count) {
            *w = filter.weight(((x + first) as f64 - center + 0.5) / filter_scale);
            sum += *w;
        }
        for (x, w) in float.iter().enumerate().take(count) {
            let w = if sum != 0.0 { w / sum } else { *w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            row[x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((first, count));
    }
    Taps {
        window,
        bounds,
        weights,
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A rectangle of an image, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// Resizes to `width` x `height` exactly as `PIL.Image.resize(size, resample=filter)` does
/// on an RGB image (no `reducing_gap`, whole-image box), Pillow 11 and later: the vertical
/// pass runs first when the height shrinks by more than twice as many pixels as the width.
pub fn resize<C: Deref<Target = [u8]>>(
    src: &ImageBuffer<Rgb<u8>, C>,
    width: u32,
    height: u32,
    filter: Filter,
) -> RgbImage {
    let all = Region {
        x: 0,
        y: 0,
        width,
        height,
    };
    resize_region(src, width, height, filter, all)
}

/// The `region` of [`resize`]`(src, width, height, filter)`, computing only its pixels:
/// every output pixel depends only on its own taps, so the values are those of the whole
/// resize, and time and memory are those of the region (plus the input rows or columns it
/// reads), however large `width` x `height` is. This is what makes crop-after-upscale of a
/// 1 x 2,000,000 sliver cost a 224 x 224 crop. `region` must lie inside the output.
pub fn resize_region<C: Deref<Target = [u8]>>(
    src: &ImageBuffer<Rgb<u8>, C>,
    width: u32,
    height: u32,
    filter: Filter,
    region: Region,
) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let (in_w, in_h) = (in_w as usize, in_h as usize);
    let cols = region.x as usize..(region.x + region.width) as usize;
    let rows = region.y as usize..(region.y + region.height) as usize;
    let h_taps = (width as usize != in_w).then(|| taps(in_w, width as usize, filter, cols.clone()));
    let v_taps =
        (height as usize != in_h).then(|| taps(in_h, height as usize, filter, rows.clone()));
    let shrink_h = in_h as i64 - i64::from(height);
    let shrink_w = in_w as i64 - i64::from(width);
    let vertical_first = shrink_h > 0 && shrink_h > shrink_w * 2;
    let src_raw: &[u8] = src.as_raw();
    let raw = if vertical_first {
        // Vertical over the input columns the horizontal taps read, then horizontal.
        let in_cols = h_taps.as_ref().map_or(cols.clone(), Taps::input_span);
        let mid = match &v_taps {
            Some(t) => vertical_pass(src_raw, in_w, in_cols.clone(), t, 0),
            None => crop(src_raw, in_w, in_cols.clone(), rows.clone()),
        };
        match &h_taps {
            Some(t) => horizontal_pass(&mid, in_cols.len(), 0..rows.len(), t, in_cols.start),
            None => mid,
        }
    } else {
        // Horizontal over the input rows the vertical taps read, then vertical.
        let in_rows = v_taps.as_ref().map_or(rows.clone(), Taps::input_span);
        let mid = match &h_taps {
            Some(t) => horizontal_pass(src_raw, in_w, in_rows.clone(), t, 0),
            None => crop(src_raw, in_w, cols.clone(), in_rows.clone()),
        };
        match &v_taps {
            Some(t) => vertical_pass(&mid, cols.len(), 0..cols.len(), t, in_rows.start),
            None => mid,
        }
    };
    // Both passes produce exactly region.width * region.height pixels.
    RgbImage::from_raw(region.width, region.height, raw).unwrap_or_default()
}

/// Rows `rows` and columns `cols` of an RGB8 plane `src_w` pixels wide.
fn crop(
    src: &[u8],
    src_w: usize,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(cols.len() * rows.len() * 3);
    for y in rows {
        out.extend_from_slice(&src[(y * src_w + cols.start) * 3..(y * src_w + cols.end) * 3]);
    }
    out
}

/// Horizontal pass over `rows` of a plane `src_w` pixels wide whose column 0 is input
/// column `col_offset`; one output column per tap.
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    t: &Taps,
    col_offset: usize,
) -> Vec<u8> {
    let out_w = t.bounds.len();
    let mut out = vec![0u8; rows.len() * out_w * 3];
    let in_stride = src_w * 3;
    for (dst_row, y) in out.chunks_exact_mut(out_w * 3).zip(rows) {
        let src_row = &src[y * in_stride..][..in_stride];
        for (x, &(first, count)) in t.bounds.iter().enumerate() {
            let k = &t.weights[x * t.window..][..count];
            let first = first - col_offset;
            for c in 0..3 {
                let mut acc = 1i32 << (PRECISION_BITS - 1);
                for (j, &w) in k.iter().enumerate() {
                    acc += i32::from(src_row[(first + j) * 3 + c]) * w;
                }
                dst_row[x * 3 + c] = clip8(acc);
            }
        }
    }
    out
}

/// Vertical pass over columns `cols` of a plane `src_w` pixels wide whose row 0 is input
/// row `row_offset`; one output row per tap.
fn vertical_pass(
    src: &[u8],
    src_w: usize,
    cols: std::ops::Range<usize>,
    t: &Taps,
    row_offset: usize,
) -> Vec<u8> {
    let stride = src_w * 3;
    let out_stride = cols.len() * 3;
    let mut out = vec![0u8; t.bounds.len() * out_stride];
    for (y, &(first, count)) in t.bounds.iter().enumerate() {
        let k = &t.weights[y * t.window..][..count];
        let first = first - row_offset;
        let dst_row = &mut out[y * out_stride..][..out_stride];
        for (i, dst) in dst_row.iter_mut().enumerate() {
            let i = cols.start * 3 + i;
            let mut acc = 1i32 << (PRECISION_BITS - 1);
            for (j, &wt) in k.iter().enumerate() {
                acc += i32::from(src[(first + j) * stride + i]) * wt;
            }
            *dst = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        RgbImage::from_fn(width, height, |_, _| {
            let mut px = [0u8; 3];
            for v in &mut px {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *v = (state >> 56) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn every_filter_keeps_a_flat_image_flat() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 90]));
        for filter in [
            Filter::Lanczos,
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Box,
            Filter::Hamming,
        ] {
            for (w, h) in [(11, 7), (80, 50), (37, 9), (5, 23)] {
                let out = resize(&flat, w, h, filter);
                assert_eq!(out.dimensions(), (w, h));
                assert!(
                    out.pixels().all(|p| p.0 == [200, 17, 90]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn a_region_equals_the_same_crop_of_the_whole_resize() {
        let src = noise(31, 17);
        // Up and down on each axis, both pass orders (vertical first: (31, 17) -> (29, 5)).
        for (w, h) in [(64, 40), (10, 6), (29, 5), (31, 50), (7, 17), (200, 3)] {
            for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Box] {
                let whole = resize(&src, w, h, filter);
                for (x, y, rw, rh) in [(0, 0, w, h), (1, 2, w / 2, h / 2), (w - 1, h - 1, 1, 1)] {
                    let region = Region {
                        x,
                        y,
                        width: rw.max(1),
                        height: rh.max(1),
                    };
                    let part = resize_region(&src, w, h, filter, region);
                    let want = image::imageops::crop_imm(&whole, x, y, region.width, region.height)
                        .to_image();
                    assert_eq!(part, want, "{filter:?} {w}x{h} region {region:?}");
                }
            }
        }
    }

    #[test]
    fn box_downscale_by_two_is_the_rounded_mean() {
        let src = noise(8, 6);
        let out = resize(&src, 4, 3, Filter::Box);
        for y in 0..3 {
            for x in 0..4 {
                for c in 0..3 {
                    // Two rounded passes: horizontal mean of pairs, then vertical.
                    let h = |yy: u32| {
                        let s = u32::from(src.get_pixel(2 * x, yy)[c])
                            + u32::from(src.get_pixel(2 * x + 1, yy)[c]);
                        s.div_ceil(2)
                    };
                    let v = (h(2 * y) + h(2 * y + 1)).div_ceil(2);
                    assert_eq!(u32::from(out.get_pixel(x, y)[c]), v, "({x},{y},{c})");
                }
            }
        }
    }

    #[test]
    fn weights_of_each_tap_row_sum_to_one_in_fixed_point() {
        for filter in [Filter::Bicubic, Filter::Lanczos, Filter::Bilinear] {
            for (n_in, n_out) in [(97, 30), (30, 97), (61, 32), (7, 3)] {
                let t = taps(n_in, n_out, filter, 0..n_out);
                for (i, &(_, count)) in t.bounds.iter().enumerate() {
                    let sum: i64 = t.weights[i * t.window..][..count]
                        .iter()
                        .map(|&w| i64::from(w))
                        .sum();
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= count as i64, "{sum}");
                }
            }
        }
    }
}
