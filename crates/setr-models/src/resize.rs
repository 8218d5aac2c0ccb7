//! Pillow-exact resampling of RGB8 images.
//!
//! Hugging Face's (slow) image processors resize with `PIL.Image.resize`, so parity with
//! them needs Pillow's convolution resampler bit for bit: per output pixel a window of
//! `ceil(support * scale) * 2 + 1` taps centred on `(x + 0.5) * scale`, weights normalised
//! to sum 1, converted to fixed point with 22 fractional bits, a horizontal pass then a
//! vertical pass (or the reverse, see [`resize`]), each rounded and clamped to 8 bits
//! (Pillow's `libImaging/Resample.c`).

use image::RgbImage;

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

/// Fixed-point taps of one axis: for output index i, `bounds[i] = (first input, count)`,
/// weights in `weights[i * window..][..count]`.
struct Taps {
    window: usize,
    bounds: Vec<(usize, usize)>,
    weights: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let window = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * window];
    let mut float = vec![0f64; window];
    for (i, row) in weights.chunks_exact_mut(window).enumerate() {
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

/// Resizes to `width` x `height` exactly as `PIL.Image.resize(size, resample=filter)` does
/// on an RGB image (no `reducing_gap`, whole-image box), Pillow 11 and later: the vertical
/// pass runs first when the height shrinks by more than twice as many pixels as the width.
pub fn resize(src: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let need_horizontal = width != in_w;
    let need_vertical = height != in_h;
    let shrink_h = i64::from(in_h) - i64::from(height);
    let shrink_w = i64::from(in_w) - i64::from(width);
    let vertical_first = shrink_h > 0 && shrink_h > shrink_w * 2;
    let mut current = src.clone();
    if vertical_first {
        if need_vertical {
            current = vertical_pass(&current, height, filter);
        }
        if need_horizontal {
            current = horizontal_pass(&current, width, filter);
        }
    } else {
        if need_horizontal {
            current = horizontal_pass(&current, width, filter);
        }
        if need_vertical {
            current = vertical_pass(&current, height, filter);
        }
    }
    current
}

fn horizontal_pass(src: &RgbImage, width: u32, filter: Filter) -> RgbImage {
    let (in_w, in_h) = src.dimensions();
    let t = taps(in_w as usize, width as usize, filter);
    let mut out = RgbImage::new(width, in_h);
    let src_raw = src.as_raw();
    let dst_raw: &mut [u8] = &mut out;
    let in_stride = in_w as usize * 3;
    let out_stride = width as usize * 3;
    for y in 0..in_h as usize {
        let src_row = &src_raw[y * in_stride..][..in_stride];
        let dst_row = &mut dst_raw[y * out_stride..][..out_stride];
        for (x, &(first, count)) in t.bounds.iter().enumerate() {
            let k = &t.weights[x * t.window..][..count];
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

fn vertical_pass(src: &RgbImage, height: u32, filter: Filter) -> RgbImage {
    let (w, in_h) = src.dimensions();
    let t = taps(in_h as usize, height as usize, filter);
    let mut out = RgbImage::new(w, height);
    let src_raw = src.as_raw();
    let dst_raw: &mut [u8] = &mut out;
    let stride = w as usize * 3;
    for (y, &(first, count)) in t.bounds.iter().enumerate() {
        let k = &t.weights[y * t.window..][..count];
        let dst_row = &mut dst_raw[y * stride..][..stride];
        for (i, dst) in dst_row.iter_mut().enumerate() {
            let mut acc = 1i32 << (PRECISION_BITS - 1);
            for (j, &wt) in k.iter().enumerate() {
                acc += i32::from(src_raw[(first + j) * stride + i]) * wt;
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
                let t = taps(n_in, n_out, filter);
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
