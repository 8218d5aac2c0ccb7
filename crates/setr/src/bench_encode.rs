//! `setr bench encode`: images/s and texts/s of the CLIP encoder on CPU against
//! transformers + torch on the same checkpoint, same threads, same run. Prints a table.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use setr_models::{EncoderOptions, ImageTextEncoder};

const TEXT: &str = "same dress but red and sleeveless with a thin belt";

#[derive(clap::Args, Debug)]
pub struct EncodeBenchArgs {
    /// Checkpoint to time. Default: a ViT-B/32-shaped CLIP with random weights, made once
    /// by the peer script under target/bench-models (needs torch + transformers).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Batch sizes.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    batches: Vec<usize>,
    /// Threads for setr (candle) and torch; 0 = one per core.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Minimum seconds timed per cell.
    #[arg(long, default_value_t = 2.0)]
    min_time: f64,
    /// Python with torch and transformers for the peer; empty to skip the peer.
    #[arg(long, default_value = "python3")]
    python: String,
    /// The peer script.
    #[arg(long, default_value = "benches/encode_peer.py")]
    peer: PathBuf,
}

/// Seconds per call: one warm-up, then at least 3 calls and `min_time` seconds.
fn timed(min_time: f64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let (mut runs, started) = (0u32, Instant::now());
    loop {
        f()?;
        runs += 1;
        let elapsed = started.elapsed().as_secs_f64();
        if elapsed >= min_time && runs >= 3 {
            return Ok(elapsed / f64::from(runs));
        }
    }
}

pub fn encode(args: EncodeBenchArgs) -> Result<()> {
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            let dir = PathBuf::from("target/bench-models/clip-vit-b32-random");
            if !dir.join("model.safetensors").is_file() {
                eprintln!("making {} with {}", dir.display(), args.peer.display());
                let status = Command::new(&args.python)
                    .arg(&args.peer)
                    .args(["make-model", "--out"])
                    .arg(&dir)
                    .status()
                    .context("running the peer script to make the model")?;
                if !status.success() {
                    bail!("making the bench model failed (pip install torch transformers?)");
                }
            }
            dir
        }
    };
    // candle's CPU kernels use rayon's global pool and gemm's threads.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    let encoder = ImageTextEncoder::load(
        model.to_str().context("model path is not UTF-8")?,
        &EncoderOptions {
            offline: true,
            max_batch: args.batches.iter().copied().max().unwrap_or(1),
            ..EncoderOptions::default()
        },
    )?;
    let size = encoder
        .preprocessor()
        .output_size()
        .context("preprocessor without a fixed size")?;
    let mut ours = Vec::new();
    for &b in &args.batches {
        // Pixel values as the preprocessor would give them; the values do not change
        // the time of a dense model.
        let pixels: Vec<Vec<f32>> = (0..b)
            .map(|i| {
                (0..3 * size.0 as usize * size.1 as usize)
                    .map(|j| ((i * 7919 + j * 104_729) % 1000) as f32 / 500.0 - 1.0)
                    .collect()
            })
            .collect();
        let image = timed(args.min_time, || {
            encoder.image_features(&pixels)?;
            Ok(())
        })?;
        let texts = vec![TEXT; b];
        let tokens = encoder.tokenizer().encode_batch(&texts)?;
        let text = timed(args.min_time, || {
            encoder.text_features(&tokens)?;
            Ok(())
        })?;
        eprintln!(
            "setr batch {b}: image {:.1} ms, text {:.1} ms",
            image * 1e3,
            text * 1e3
        );
        ours.push((b, image, text));
    }
    let peer = if args.python.is_empty() {
        None
    } else {
        let batches: Vec<String> = args.batches.iter().map(usize::to_string).collect();
        let out = Command::new(&args.python)
            .arg(&args.peer)
            .args(["time", "--model"])
            .arg(&model)
            .args(["--threads", &threads.to_string()])
            .args(["--batches", &batches.join(",")])
            .args(["--min-time", &args.min_time.to_string()])
            .output()
            .context("running the torch peer")?;
        if !out.status.success() {
            bail!(
                "the torch peer failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(serde_json::from_slice::<serde_json::Value>(&out.stdout).context("peer output")?)
    };
    outln!(
        "setr bench encode: {} ({} dims), f32, CPU, {threads} threads; peer: transformers + torch {}",
        model.display(),
        encoder.dim(),
        peer.as_ref().and_then(|p| p["torch"].as_str()).unwrap_or("(skipped)")
    );
    outln!(
        "| batch | setr images/s | torch images/s | ratio | setr texts/s | torch texts/s | ratio |"
    );
    outln!("|---:|---:|---:|---:|---:|---:|---:|");
    for (b, image, text) in ours {
        let peer_s = |kind: &str| peer.as_ref().and_then(|p| p[kind][b.to_string()].as_f64());
        let cell = |ours: f64, theirs: Option<f64>| match theirs {
            Some(t) => (format!("{:.1}", b as f64 / t), format!("{:.2}x", t / ours)),
            None => ("-".into(), "-".into()),
        };
        let (pi, ri) = cell(image, peer_s("image"));
        let (pt, rt) = cell(text, peer_s("text"));
        outln!(
            "| {b} | {:.1} | {pi} | {ri} | {:.1} | {pt} | {rt} |",
            b as f64 / image,
            b as f64 / text
        );
    }
    Ok(())
}
