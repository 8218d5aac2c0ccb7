//! The device check + benchmark that benches/gpu/run.sh runs on the GPU machine: checks
//! every kernel against its CPU twin on fresh random inputs (poisoned outputs), measures the
//! device copy bandwidth, times the fused scan + merge on a large fp16 gallery and prints a
//! table (with torch / CuPy times when benches/gpu/peers.py wrote them).
//!
//!     gpu_bench [--dry-run] [--rows N] [--dim D] [--batches 1,4,..] [--ks 10,100,..]
//!               [--reps R] [--peers peers.tsv] [--out DIR]
//!
//! --dry-run touches no device: it parses the arguments, builds a small gallery and runs
//! the CPU twin for every configuration, so the script can be tried on a machine without GPU.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::ExitCode;

use common::{compare, strategies, truth, twin, Fixture, Rng};
use half::f16;
use setr_core::{ImageId, Strategy};
use setr_cuda::{CudaDevice, DeviceGallery};

struct Args {
    dry_run: bool,
    rows: usize,
    dim: usize,
    batches: Vec<usize>,
    ks: Vec<usize>,
    reps: usize,
    peers: Option<String>,
    out: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        dry_run: false,
        rows: 1_000_000,
        dim: 512,
        batches: vec![1, 4, 16, 64, 256],
        ks: vec![10, 100, 1000, 4096],
        reps: 20,
        peers: None,
        out: None,
    };
    let list = |s: &str| -> Result<Vec<usize>, String> {
        s.split(',')
            .map(|x| x.trim().parse().map_err(|_| format!("bad number `{x}`")))
            .collect()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--dry-run" => a.dry_run = true,
            "--rows" => a.rows = val()?.parse().map_err(|_| "bad --rows")?,
            "--dim" => a.dim = val()?.parse().map_err(|_| "bad --dim")?,
            "--batches" => a.batches = list(&val()?)?,
            "--ks" => a.ks = list(&val()?)?,
            "--reps" => a.reps = val()?.parse().map_err(|_| "bad --reps")?,
            "--peers" => a.peers = Some(val()?),
            "--out" => a.out = Some(val()?),
            "-h" | "--help" => return Err("usage: see the header of examples/gpu_bench.rs".into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.rows == 0 || a.dim == 0 || a.batches.is_empty() || a.ks.is_empty() {
        return Err("rows, dim, batches and ks must be non-empty".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.dry_run {
        dry_run(&args)
    } else {
        run(&args)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu_bench: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn timed_strategies() -> [(&'static str, Strategy); 2] {
    [
        ("union", Strategy::Union { text_weight: 0.5 }),
        ("intersection", Strategy::Intersection { lambda: 0.0 }),
    ]
}

fn dry_run(args: &Args) -> Result<(), String> {
    let rows = args.rows.min(20_000);
    println!(
        "dry run: no device used; CPU twin on {rows} x {} rows",
        args.dim
    );
    let mut rng = Rng(seed());
    let fx = Fixture::random(&mut rng, rows, args.dim, 0.05);
    for (name, strategy) in timed_strategies() {
        for &b in &args.batches {
            let batch = fx.batch(&mut rng, b, strategy);
            for &k in args.ks.iter().filter(|&&k| k <= fx.live()) {
                let t = std::time::Instant::now();
                let hits = twin(&fx.view(), &batch, k);
                compare(&hits, &hits, &batch, k, None)?;
                println!(
                    "  twin {name:<12} batch {b:>3} k {k:>4}: {:>8.2} ms",
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
        }
    }
    println!("dry run: device check, copy bandwidth and kernel timings skipped");
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let dev = CudaDevice::open(0).map_err(|e| e.to_string())?;
    let info = dev.info().clone();
    println!(
        "device: {} (cc {}.{}, {} SMs, {:.1} GiB, {} KiB shared/block), max k at dim {}: {}",
        info.name,
        info.compute_capability.0,
        info.compute_capability.1,
        info.multiprocessors,
        info.memory as f64 / (1u64 << 30) as f64,
        info.shared_memory_per_block / 1024,
        args.dim,
        dev.max_k(args.dim)
    );
    let s = seed();
    println!("seed {s}");
    let mut rng = Rng(s);
    let mut log = String::new();

    // 1. Correctness: each kernel against its twin, before anything is timed.
    let t = std::time::Instant::now();
    let mut cases = 0;
    for (rows, dim, dead) in [
        (1, 8, 0.0),
        (300, 3, 0.1),
        (5_000, 64, 0.2),
        (20_000, 512, 0.05),
    ] {
        let fx = Fixture::random(&mut rng, rows, dim, dead);
        let mut g = DeviceGallery::from_view(dev.clone(), &fx.view()).map_err(|e| e.to_string())?;
        g.set_poison(true);
        for strategy in strategies() {
            for queries in [1, 64] {
                let batch = fx.batch(&mut rng, queries, strategy);
                let tr = (rows <= 5_000).then(|| truth(&fx.view(), &batch));
                for k in [1, 10, 100, 1000, 4096]
                    .into_iter()
                    .filter(|&k| k <= fx.live())
                {
                    let what = format!("rows {rows} dim {dim} {strategy} batch {queries} k {k}");
                    let gpu = g.search(&batch, k).map_err(|e| format!("{what}: {e}"))?;
                    compare(&gpu, &twin(&fx.view(), &batch, k), &batch, k, tr.as_deref())
                        .map_err(|e| format!("{what}: {e}"))?;
                    cases += 1;
                }
            }
        }
    }
    for dim in [3, 512, 1152] {
        let data: Vec<f32> = (0..257 * dim).map(|_| 3.0 * rng.value()).collect();
        let gpu = dev.to_f16(&data, dim, true).map_err(|e| e.to_string())?;
        for (r, row) in data.chunks_exact(dim).enumerate() {
            let mut want = row.to_vec();
            setr_core::l2_normalize("row", &mut want).map_err(|e| e.to_string())?;
            for (j, w) in want.iter().enumerate() {
                if gpu[r * dim + j]
                    .to_bits()
                    .abs_diff(f16::from_f32(*w).to_bits())
                    > 1
                {
                    return Err(format!("l2_normalize_f16 dim {dim} row {r} [{j}]"));
                }
            }
        }
        cases += 1;
    }
    println!(
        "check: {cases} cases match the CPU twin ({:.1} s)",
        t.elapsed().as_secs_f64()
    );

    // 2. Copy bandwidth: the ceiling of a scan that reads each byte once.
    let copy = dev.copy_bandwidth(2 << 30, 20).map_err(|e| e.to_string())?;
    println!("copy bandwidth: {copy:.0} GB/s (read + write, 2 GiB device-to-device, median of 20)");

    // 3. Timings on the large gallery; batch-1 results are checked against the twin too.
    let t = std::time::Instant::now();
    let fx = Fixture::random_sampled(&mut rng, args.rows, args.dim, 0.0, 100_000);
    let g = DeviceGallery::from_view(dev.clone(), &fx.view()).map_err(|e| e.to_string())?;
    println!(
        "gallery {} x {} fp16 ({:.2} GB) built and uploaded in {:.1} s",
        args.rows,
        args.dim,
        (args.rows * args.dim * 2) as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let peers = read_peers(args.peers.as_deref());
    let bytes = (args.rows * (args.dim * 2 + std::mem::size_of::<ImageId>())) as f64;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<12} {:>5} {:>5} {:>9} {:>9} {:>9} {:>8} {:>7} {:>9} {:>8} {:>9} {:>8}",
        "strategy",
        "batch",
        "k",
        "scan ms",
        "merge ms",
        "total ms",
        "GB/s",
        "% copy",
        "torch ms",
        "x torch",
        "cupy ms",
        "x cupy"
    );
    let _ = writeln!(
        log,
        "strategy\tbatch\tk\tscan_ms\tmerge_ms\ttotal_ms\tGBps\tpct_copy\ttorch_ms\tcupy_ms"
    );
    for (name, strategy) in timed_strategies() {
        for &b in &args.batches {
            let batch = fx.batch(&mut rng, b, strategy);
            for &k in &args.ks {
                let (times, hits) = match g.time_search(&batch, k, 3, args.reps) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = writeln!(table, "{name:<12} {b:>5} {k:>5} error: {e}");
                        continue;
                    }
                };
                if b == 1 {
                    compare(&hits, &twin(&fx.view(), &batch, k), &batch, k, None)
                        .map_err(|e| format!("timed {name} batch {b} k {k}: {e}"))?;
                }
                let total = times.scan_ms + times.merge_ms;
                let gbps = bytes / (total as f64 * 1e-3) / 1e9;
                let pct = 100.0 * gbps / copy;
                let peer = |tool: &str| {
                    peers
                        .get(&(tool.to_string(), name.to_string(), b, k))
                        .copied()
                };
                let (torch, cupy) = (peer("torch"), peer("cupy"));
                let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
                let ratio = |v: Option<f64>| {
                    v.map_or("-".to_string(), |v| format!("{:.2}", v / total as f64))
                };
                let _ = writeln!(
                    table,
                    "{name:<12} {b:>5} {k:>5} {:>9.3} {:>9.3} {:>9.3} {gbps:>8.0} {pct:>6.1}% {:>9} {:>8} {:>9} {:>8}",
                    times.scan_ms, times.merge_ms, total, fmt(torch), ratio(torch), fmt(cupy), ratio(cupy)
                );
                let _ = writeln!(
                    log,
                    "{name}\t{b}\t{k}\t{}\t{}\t{total}\t{gbps:.1}\t{pct:.2}\t{}\t{}",
                    times.scan_ms,
                    times.merge_ms,
                    fmt(torch),
                    fmt(cupy)
                );
            }
        }
    }
    if let Some(dir) = &args.out {
        let head = format!(
            "# {} copy_GBps={copy:.1} rows={} dim={} seed={s}\n",
            info.name, args.rows, args.dim
        );
        std::fs::write(format!("{dir}/setr_cuda.tsv"), head + &log).map_err(|e| e.to_string())?;
    }
    println!("\n{table}");
    println!("% copy: gallery bytes read (rows x (2 dim + 8)) per total time, over the copy bandwidth; x torch / x cupy: peer time over ours (> 1 means setr is faster)");
    Ok(())
}

/// peers.tsv lines: tool, strategy, batch, k, ms.
fn read_peers(path: Option<&str>) -> HashMap<(String, String, usize, usize), f64> {
    let mut out = HashMap::new();
    let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return out;
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split('\t').collect();
        if let [tool, strategy, b, k, ms, ..] = f[..] {
            if let (Ok(b), Ok(k), Ok(ms)) = (b.parse(), k.parse(), ms.parse()) {
                out.insert((tool.to_string(), strategy.to_string(), b, k), ms);
            }
        }
    }
    out
}
