//! `setr bench encode`: images/s and texts/s of the CLIP encoder on CPU against
//! transformers + torch on the same checkpoint, same threads, same run. Prints a table.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use setr_models::{EncoderOptions, ImageTextEncoder, Precision};

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
    /// Runs of each side, alternated (setr, torch, setr, ...); the table shows medians.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Also time setr in bf16 and report its cosine to f32.
    #[arg(long)]
    bf16: bool,
}

/// Seconds per call of each batch: (batch, image, text).
type Cells = Vec<(usize, f64, f64)>;

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
    let path = model.to_str().context("model path is not UTF-8")?;
    let load = |precision| {
        ImageTextEncoder::load(
            path,
            &EncoderOptions {
                offline: true,
                precision,
                max_batch: args.batches.iter().copied().max().unwrap_or(1),
                ..EncoderOptions::default()
            },
        )
    };
    let encoder = load(Precision::F32)?;
    let bf16 = if args.bf16 {
        Some(load(Precision::Bf16)?)
    } else {
        None
    };
    let (mut ours, mut ours_bf16, mut peers) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..args.repeats.max(1) {
        eprintln!("run {} of {}", run + 1, args.repeats.max(1));
        ours.push(time_setr(&encoder, &args)?);
        if let Some(bf16) = &bf16 {
            ours_bf16.push(time_setr(bf16, &args)?);
        }
        if let Some(peer) = time_peer(&args, &model, threads)? {
            peers.push(peer);
        }
    }
    let ours = median_cells(&ours);
    let peer: Option<Cells> = (!peers.is_empty()).then(|| median_cells(&peers));
    outln!(
        "setr bench encode: {} ({} dims), f32, CPU, {threads} threads, median of {} runs; peer: transformers + torch",
        model.display(),
        encoder.dim(),
        args.repeats.max(1),
    );
    print_table("setr", &ours, peer.as_ref())?;
    if let Some(bf16) = &bf16 {
        let cosine = bf16_cosine(&encoder, bf16, &args)?;
        outln!();
        outln!(
            "bf16 weights (min cosine to f32 over the bench inputs: image {:.5}, text {:.5}):",
            cosine.0,
            cosine.1
        );
        print_table("setr bf16", &median_cells(&ours_bf16), peer.as_ref())?;
    }
    Ok(())
}

/// Pixel values as the preprocessor would give them; the values do not change the time
/// of a dense model.
fn bench_pixels(encoder: &ImageTextEncoder, b: usize) -> Result<Vec<Vec<f32>>> {
    let size = encoder
        .preprocessor()
        .output_size()
        .context("preprocessor without a fixed size")?;
    Ok((0..b)
        .map(|i| {
            (0..3 * size.0 as usize * size.1 as usize)
                .map(|j| ((i * 7919 + j * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        })
        .collect())
}

fn time_setr(encoder: &ImageTextEncoder, args: &EncodeBenchArgs) -> Result<Cells> {
    let mut cells = Vec::new();
    for &b in &args.batches {
        let pixels = bench_pixels(encoder, b)?;
        let image = timed(args.min_time, || {
            encoder.image_features(&pixels)?;
            Ok(())
        })?;
        let tokens = encoder.tokenizer().encode_batch(&vec![TEXT; b])?;
        let text = timed(args.min_time, || {
            encoder.text_features(&tokens)?;
            Ok(())
        })?;
        eprintln!(
            "setr batch {b}: image {:.1} ms, text {:.1} ms",
            image * 1e3,
            text * 1e3
        );
        cells.push((b, image, text));
    }
    Ok(cells)
}

fn time_peer(
    args: &EncodeBenchArgs,
    model: &std::path::Path,
    threads: usize,
) -> Result<Option<Cells>> {
    if args.python.is_empty() {
        return Ok(None);
    }
    let batches: Vec<String> = args.batches.iter().map(usize::to_string).collect();
    let out = Command::new(&args.python)
        .arg(&args.peer)
        .args(["time", "--model"])
        .arg(model)
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
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("peer output")?;
    let seconds = |kind: &str, b: usize| {
        json[kind][b.to_string()]
            .as_f64()
            .with_context(|| format!("peer output lacks {kind} batch {b}"))
    };
    let cells = args
        .batches
        .iter()
        .map(|&b| Ok((b, seconds("image", b)?, seconds("text", b)?)))
        .collect::<Result<Cells>>()?;
    eprintln!("torch: {cells:?}");
    Ok(Some(cells))
}

/// The per-cell median over runs (every run has the same batches in the same order).
fn median_cells(runs: &[Cells]) -> Cells {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (0..runs[0].len())
        .map(|i| {
            let b = runs[0][i].0;
            let image = median(runs.iter().map(|r| r[i].1).collect());
            let text = median(runs.iter().map(|r| r[i].2).collect());
            (b, image, text)
        })
        .collect()
}

fn print_table(name: &str, ours: &Cells, peer: Option<&Cells>) -> Result<()> {
    outln!(
        "| batch | {name} images/s | torch images/s | ratio | {name} texts/s | torch texts/s | ratio |"
    );
    outln!("|---:|---:|---:|---:|---:|---:|---:|");
    for (i, &(b, image, text)) in ours.iter().enumerate() {
        let cell = |ours: f64, theirs: Option<f64>| match theirs {
            Some(t) => (format!("{:.1}", b as f64 / t), format!("{:.2}x", t / ours)),
            None => ("-".into(), "-".into()),
        };
        let (pi, ri) = cell(image, peer.map(|p| p[i].1));
        let (pt, rt) = cell(text, peer.map(|p| p[i].2));
        outln!(
            "| {b} | {:.1} | {pi} | {ri} | {:.1} | {pt} | {rt} |",
            b as f64 / image,
            b as f64 / text
        );
    }
    Ok(())
}

/// The smallest cosine between f32 and bf16 embeddings of the bench's images and texts.
fn bf16_cosine(
    f32s: &ImageTextEncoder,
    bf16: &ImageTextEncoder,
    args: &EncodeBenchArgs,
) -> Result<(f32, f32)> {
    let b = args.batches.iter().copied().max().unwrap_or(1);
    let pixels = bench_pixels(f32s, b)?;
    let texts: Vec<String> = (0..b).map(|i| format!("{TEXT} number {i}")).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let min_cos = |a: Vec<Vec<f32>>, e: Vec<Vec<f32>>| {
        a.iter()
            .zip(&e)
            .map(|(x, y)| {
                setr_core::dot_f32(x, y)
                    / (setr_core::dot_f32(x, x) * setr_core::dot_f32(y, y)).sqrt()
            })
            .fold(1.0f32, f32::min)
    };
    let image = min_cos(f32s.image_features(&pixels)?, bf16.image_features(&pixels)?);
    let text = min_cos(
        f32s.text_features(&f32s.tokenizer().encode_batch(&texts)?)?,
        bf16.text_features(&bf16.tokenizer().encode_batch(&texts)?)?,
    );
    Ok((image, text))
}
