//! Untrusted bytes through `setr_models::decode_image` and, when they decode, a CLIP
//! preprocessor (shortest edge 224, bicubic, centre crop 224, rescale, normalise).
//!
//! Every format setr accepts (JPEG, PNG, WebP, GIF, BMP, TIFF) is reached by sniffing; the
//! corpus seeds one small file of each. Decoding may fail with any error; a decoded image
//! must be non-empty, within the pixel limit, and preprocess into exactly 3 x 224 x 224
//! finite floats, bit-equal to the centre crop of the full resize (as Hugging Face computes
//! it) wherever that full resize is under a megapixel. A panic, an abort, a slow unit or an allocation over the fuzzer's
//! `-rss_limit_mb` is a bug (run with `-rss_limit_mb=1024`: no request may need more).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use setr_models::{decode_image, DecodeLimits, Preprocessor};

/// Pixel limit of the fuzzer: 16 MP (the server's default is 64 MP; smaller keeps each
/// run fast while extreme aspect ratios stay reachable).
const MAX_PIXELS: u64 = 16 << 20;

fn clip() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| {
        // Built the way a checkpoint's is: from its preprocessor_config.json (CLIP's).
        let dir = std::env::temp_dir().join(format!("setr-fuzz-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("preprocessor_config.json");
        std::fs::write(
            &path,
            r#"{"image_processor_type": "CLIPImageProcessor", "do_resize": true,
                "size": {"shortest_edge": 224}, "resample": 3, "do_center_crop": true,
                "crop_size": {"height": 224, "width": 224}, "do_rescale": true,
                "rescale_factor": 0.00392156862745098, "do_normalize": true,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711]}"#,
        )
        .expect("write config");
        let p = Preprocessor::from_file(&path).expect("CLIP preprocessor");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(p.output_size(), Some((224, 224)));
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = DecodeLimits {
        max_pixels: MAX_PIXELS,
        ..DecodeLimits::default()
    };
    let Ok(image) = decode_image(data, &limits) else {
        return;
    };
    let (w, h) = image.dimensions();
    assert!(w > 0 && h > 0, "decoded an empty {w}x{h} image");
    assert!(
        u64::from(w) * u64::from(h) <= MAX_PIXELS,
        "decoded {w}x{h}, over the pixel limit"
    );
    let out = clip().apply(&image);
    assert_eq!(out.len(), 3 * 224 * 224);
    assert!(out.iter().all(|v| v.is_finite()), "non-finite pixel value");

    // Differential: the crop of the full resize (what Hugging Face computes), where the
    // full resize is small enough to afford, equals the preprocessor's output bit for bit.
    let (short, long) = (w.min(h), w.max(h));
    let new_long = (224.0 * f64::from(long) / f64::from(short)) as u64;
    if new_long * 224 <= 1 << 20 {
        let mut full = clip().clone();
        full.crop = None;
        let all = full.apply(&image);
        let (fw, fh) = if w <= h {
            (224, new_long as usize)
        } else {
            (new_long as usize, 224)
        };
        assert_eq!(all.len(), 3 * fw * fh, "full resize of {w}x{h}");
        // HF's centre crop: top-left at (size - crop) // 2; no padding (both sides >= 224).
        let (top, left) = ((fh - 224) / 2, (fw - 224) / 2);
        for c in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let want = all[c * fw * fh + (top + y) * fw + left + x];
                    let got = out[c * 224 * 224 + y * 224 + x];
                    assert!(
                        want.to_bits() == got.to_bits(),
                        "{w}x{h}: channel {c} pixel ({x}, {y}) is {got}, the crop of the full resize has {want}"
                    );
                }
            }
        }
    }
});
