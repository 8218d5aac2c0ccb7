use image::{Rgb, RgbImage};

use crate::scene::{Rng, Scene, Shape, Size, BACKGROUNDS};

/// Draws a scene on a `side` x `side` canvas. `jitter_seed` moves each object by a few
/// pixels inside its cell, so equal scenes give different pixels.
pub fn render(scene: &Scene, side: u32, jitter_seed: u64) -> RgbImage {
    let mut rng = Rng::new(jitter_seed);
    let mut img = RgbImage::from_pixel(side, side, Rgb(BACKGROUNDS[scene.background as usize].1));
    let cell = side as f32 / 3.0;
    for o in &scene.objects {
        let frac = match o.size {
            Size::Small => 0.18,
            Size::Medium => 0.30,
            Size::Large => 0.44,
        };
        let r = cell * frac;
        let slack = (cell / 2.0 - r).max(0.0) * 0.5;
        let mut jitter = || (rng.below(1000) as f32 / 1000.0 - 0.5) * 2.0 * slack;
        let cx = (o.cell % 3) as f32 * cell + cell / 2.0 + jitter();
        let cy = (o.cell / 3) as f32 * cell + cell / 2.0 + jitter();
        let colour = Rgb(o.colour.rgb());
        let (x0, x1) = (
            (cx - r).floor().max(0.0) as u32,
            ((cx + r).ceil() as u32).min(side),
        );
        let (y0, y1) = (
            (cy - r).floor().max(0.0) as u32,
            ((cy + r).ceil() as u32).min(side),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                let (dx, dy) = ((x as f32 + 0.5 - cx) / r, (y as f32 + 0.5 - cy) / r);
                let inside = match o.shape {
                    Shape::Circle => dx * dx + dy * dy <= 1.0,
                    Shape::Square => dx.abs() <= 0.85 && dy.abs() <= 0.85,
                    Shape::Diamond => dx.abs() + dy.abs() <= 1.0,
                    // Apex up, base at dy = 0.8.
                    Shape::Triangle => dy <= 0.8 && dx.abs() <= (dy + 1.0) * 0.55,
                };
                if inside {
                    img.put_pixel(x, y, colour);
                }
            }
        }
    }
    img
}
