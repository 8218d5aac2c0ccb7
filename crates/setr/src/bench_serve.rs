//! `setr bench serve`: a load test of `setr serve` over loopback. Starts the server on a
//! synthetic store (built once and reused), then drives composed searches at fixed rates
//! with an open-loop generator (each request has a scheduled start; its latency counts from
//! then, so a stalled server cannot hide its queueing), finds the highest rate whose p99
//! stays under the target, soaks at one rate while sampling the server's RSS, and measures
//! searches with reranking.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct ServeBenchArgs {
    /// Gallery size of the synthetic store.
    #[arg(long, default_value_t = 10_000)]
    images: usize,
    /// Where the synthetic gallery and its store are kept (reused across runs).
    #[arg(long, default_value = "data/bench-serve")]
    data: PathBuf,
    /// Encoder checkpoint.
    #[arg(long, default_value = "configs/models/demo-clip")]
    model: String,
    /// Reranker checkpoint for the rerank phase ("none" skips it).
    #[arg(long, default_value = "configs/models/demo-qwen3vl")]
    reranker_model: String,
    /// Request rates to try, ascending (requests per second).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "50,100,200,300,400,600,800"
    )]
    rates: Vec<f64>,
    /// Seconds per rate.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// p99 target in milliseconds: the highest rate meeting it is the sustained QPS.
    #[arg(long, default_value_t = 50.0)]
    p99_ms: f64,
    /// Soak: seconds at `soak_rate`, sampling RSS (0 skips it).
    #[arg(long, default_value_t = 600.0)]
    soak_seconds: f64,
    /// Soak rate (requests per second).
    #[arg(long, default_value_t = 200.0)]
    soak_rate: f64,
    /// Rerank phase: candidates reranked per search (0 skips it).
    #[arg(long, default_value_t = 10)]
    rerank_k: usize,
    /// Rerank phase: seconds (closed loop, `rerank_clients` clients).
    #[arg(long, default_value_t = 20.0)]
    rerank_seconds: f64,
    /// Rerank phase: concurrent clients.
    #[arg(long, default_value_t = 2)]
    rerank_clients: usize,
    /// Client connections of the open-loop generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Serve a store of this many random rows in the model's space instead of the rendered
    /// gallery (a million rows without rendering or encoding them; the rerank phase needs
    /// image files, so it is skipped).
    #[arg(long, default_value_t = 0)]
    random_rows: usize,
    /// Ingest phase: search p99 at `ingest_rate` alone, then while `POST /v1/index` adds
    /// this many rendered images (0 skips it; the server runs on a copy of the store).
    #[arg(long, default_value_t = 0)]
    ingest_images: usize,
    /// Ingest phase: search rate (requests per second).
    #[arg(long, default_value_t = 100.0)]
    ingest_rate: f64,
    /// The setr binary to serve with (default: this one), e.g. an older build to compare.
    #[arg(long)]
    server_exe: Option<PathBuf>,
}

struct ServerProcess {
    child: Child,
    addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Resident set size of the server, bytes.
    fn rss(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }
}

fn start_server(
    args: &ServeBenchArgs,
    store: &std::path::Path,
    index_root: &std::path::Path,
) -> Result<ServerProcess> {
    let exe = match &args.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().context("locating the setr binary")?,
    };
    let mut child = Command::new(exe)
        .args(["serve", "--listen", "127.0.0.1:0", "--demo-images", "0"])
        .arg("--index-root")
        .arg(index_root)
        .arg("--store")
        .arg(store)
        .args(["--model", &args.model])
        .args(["--reranker-model", &args.reranker_model])
        .args(["--max-in-flight", "256"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting setr serve")?;
    let stderr = child.stderr.take().context("server stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    break rest.trim().to_owned();
                }
            }
            _ => bail!("setr serve exited before listening"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok(ServerProcess { child, addr })
}

/// Builds (once) the synthetic gallery and its store; returns the store, its image ids
/// (identical renders share one) and the captions of its CIRR annotations.
fn prepare(args: &ServeBenchArgs) -> Result<(PathBuf, Vec<u64>, Vec<String>)> {
    let gallery = args.data.join(format!("gallery-{}", args.images));
    // One store per model version: the server refuses a store indexed by another model.
    let checkpoint = setr_models::resolve(&args.model, setr_models::offline_from_env())?;
    let fingerprint = setr_models::fingerprint(&checkpoint)?;
    let short: String = fingerprint
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect();
    let store = args.data.join(format!("store-{}-{short}", args.images));
    if !gallery.join("scenes.jsonl").is_file() {
        eprintln!(
            "rendering {} synthetic scenes into {}",
            args.images,
            gallery.display()
        );
        setr_synth::generate(
            &gallery,
            &setr_synth::SynthOptions {
                images: args.images,
                seed: 11,
                ..Default::default()
            },
        )?;
    }
    let store = match args.random_rows {
        0 => store,
        rows => crate::bench_gallery::random_store(&args.data, &args.model, rows)?,
    };
    if setr_index::Store::open(&store).is_err() {
        eprintln!("indexing into {}", store.display());
        let exe = std::env::current_exe()?;
        let status = Command::new(exe)
            .arg("index")
            .arg(gallery.join("images"))
            .arg("--store")
            .arg(&store)
            .args(["--model", &args.model])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("indexing the benchmark gallery failed");
        }
    }
    let ids: Vec<u64> = {
        let opened = setr_index::Store::open(&store)?;
        // Queries refer to the first 20,000 images.
        opened
            .list(0, 20_000)?
            .into_iter()
            .map(|r| r.id.0)
            .collect()
    };
    let mut texts = Vec::new();
    for split in ["train", "val"] {
        let path = gallery.join(format!("captions/cap.rc2.{split}.json"));
        let caps: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        for c in caps.as_array().into_iter().flatten() {
            if let Some(t) = c["caption"].as_str() {
                texts.push(t.to_owned());
            }
        }
    }
    if texts.is_empty() {
        bail!("no captions in {}", gallery.display());
    }
    if ids.is_empty() {
        bail!("the benchmark store {} is empty", store.display());
    }
    Ok((store, ids, texts))
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: String,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn post(&mut self, path: &str, body: &[u8]) -> Result<u16> {
        for attempt in 0..2 {
            if self.stream.is_none() {
                let s = TcpStream::connect(&self.addr)?;
                s.set_nodelay(true)?;
                self.stream = Some(BufReader::new(s));
            }
            match self.exchange(path, body) {
                Ok(status) => return Ok(status),
                Err(e) if attempt == 0 => {
                    // The server may close an idle keep-alive connection: reconnect once.
                    tracing::debug!(error = %e, "reconnecting");
                    self.stream = None;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("unreachable")
    }

    fn exchange(&mut self, path: &str, body: &[u8]) -> Result<u16> {
        let reader = self.stream.as_mut().context("not connected")?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(body)?;
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let lower = l.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("connection:") && lower.contains("close") {
                close = true;
            }
        }
        let mut sink = vec![0u8; length];
        reader.read_exact(&mut sink)?;
        if close {
            self.stream = None;
        }
        Ok(status)
    }
}

/// Latencies (ms) and failures of one phase.
struct Phase {
    latencies: Vec<f64>,
    errors: usize,
    /// Failures by HTTP status (0: the connection failed).
    failures: std::collections::BTreeMap<u16, usize>,
    seconds: f64,
}

impl Phase {
    /// Adds another slice of the same phase.
    fn merge(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for (status, n) in other.failures {
            *self.failures.entry(status).or_insert(0) += n;
        }
        self.seconds += other.seconds;
    }

    fn quantile(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn qps(&self) -> f64 {
        self.latencies.len() as f64 / self.seconds
    }

    fn row(&self, name: &str, target: &str) -> serde_json::Value {
        json!({
            "phase": name,
            "target": target,
            "requests": self.latencies.len() + self.errors,
            "errors": self.errors,
            "failures_by_status": self.failures,
            "achieved_qps": self.qps(),
            "p50_ms": self.quantile(0.5),
            "p99_ms": self.quantile(0.99),
            "max_ms": self.quantile(1.0),
        })
    }
}

fn body(texts: &[String], ids: &[u64], i: usize, rerank_k: usize) -> Vec<u8> {
    // A deterministic spread of references and captions (prime multipliers: no short cycles).
    let id = ids[i.wrapping_mul(7919) % ids.len()];
    let text = &texts[i.wrapping_mul(104_729) % texts.len()];
    let mut q = json!({ "image": { "id": id }, "text": text, "k": 10 });
    if rerank_k > 0 {
        q["rerank"] = json!({ "k": rerank_k });
    }
    q.to_string().into_bytes()
}

/// Drives `/v1/search` from `clients` keep-alive connections. Open loop (`rate` given):
/// request `i` is due at `start + i / rate` and its latency counts from then, so queueing in
/// a stalled server is not hidden. Closed loop (`rate` none): each client sends its next
/// request when the last one answers, for `seconds`.
fn drive(
    addr: &str,
    clients: usize,
    seconds: f64,
    rate: Option<f64>,
    make: &(dyn Fn(usize) -> Vec<u8> + Sync),
) -> Phase {
    let total = rate.map_or(usize::MAX, |r| (r * seconds).round() as usize);
    let next = AtomicUsize::new(0);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(seconds);
    let results: Vec<(Vec<f64>, Vec<u16>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut conn = Conn {
                        addr: addr.to_owned(),
                        stream: None,
                    };
                    let (mut lat, mut errors) = (Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let due = match rate {
                            Some(r) if i < total => start + Duration::from_secs_f64(i as f64 / r),
                            None if Instant::now() < end => Instant::now().max(start),
                            _ => break,
                        };
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        match conn.post("/v1/search", &make(i)) {
                            Ok(200) => lat.push(due.elapsed().as_secs_f64() * 1e3),
                            Ok(status) => errors.push(status),
                            Err(e) => {
                                tracing::warn!(error = %e, "request failed");
                                errors.push(0)
                            }
                        }
                    }
                    (lat, errors)
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut phase = Phase {
        latencies: Vec::new(),
        errors: 0,
        failures: Default::default(),
        seconds: start.elapsed().as_secs_f64().max(1e-9),
    };
    for (lat, errors) in results {
        phase.latencies.extend(lat);
        phase.errors += errors.len();
        for status in errors {
            *phase.failures.entry(status).or_insert(0) += 1;
        }
    }
    phase
}

pub fn serve(args: ServeBenchArgs) -> Result<()> {
    let (store, ids, texts) = prepare(&args)?;
    let ingest_dir = args.data.join(format!("ingest-{}", args.ingest_images));
    let store = if args.ingest_images > 0 {
        render(&ingest_dir, args.ingest_images, 13)?;
        // The ingest adds rows: it runs on a copy, so the prepared store stays reusable.
        let scratch = args.data.join("scratch-store");
        copy_store(&store, &scratch)?;
        scratch
    } else {
        store
    };
    let server = start_server(&args, &store, &args.data)?;
    let addr = server.addr.clone();
    let plain = |i: usize| body(&texts, &ids, i, 0);
    // Warm-up: model caches, allocator, connections.
    let _ = drive(&addr, 2, 2.0, None, &plain);
    let rss_start = server.rss();
    let mut rows = Vec::new();
    let mut sustained = None;
    outln!(
        "{:<22} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "phase",
        "target",
        "achieved",
        "errors",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    let print = |p: &Phase, name: &str, target: &str| -> Result<()> {
        outln!(
            "{:<22} {:>9} {:>9.1} {:>8} {:>9.2} {:>9.2} {:>9.2}{}",
            name,
            target,
            p.qps(),
            p.errors,
            p.quantile(0.5),
            p.quantile(0.99),
            p.quantile(1.0),
            if p.failures.is_empty() {
                String::new()
            } else {
                format!("  failures by status (0 = connection): {:?}", p.failures)
            }
        );
        Ok(())
    };
    for &rate in &args.rates {
        let p = drive(&addr, args.connections, args.seconds, Some(rate), &plain);
        print(&p, "search (no rerank)", &format!("{rate} qps"))?;
        rows.push(p.row("search", &format!("{rate} qps")));
        let ok = p.errors == 0 && p.quantile(0.99) <= args.p99_ms;
        if ok {
            sustained = Some(rate);
        } else {
            break;
        }
    }
    let mut soak = json!(null);
    if args.soak_seconds > 0.0 {
        let rss_before = server.rss();
        let samples = std::sync::Mutex::new(Vec::new());
        let done = std::sync::atomic::AtomicBool::new(false);
        let p = std::thread::scope(|s| {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    if let (Some(r), Ok(mut v)) = (server.rss(), samples.lock()) {
                        v.push(r);
                    }
                    std::thread::sleep(Duration::from_secs(5));
                }
            });
            let p = drive(
                &addr,
                args.connections,
                args.soak_seconds,
                Some(args.soak_rate),
                &plain,
            );
            done.store(true, Ordering::Relaxed);
            p
        });
        let rss_after = server.rss();
        let samples = samples.into_inner().unwrap_or_default();
        let peak = samples.iter().copied().max();
        print(&p, "soak", &format!("{} qps", args.soak_rate))?;
        let mib = |b: Option<u64>| b.map(|b| b as f64 / (1 << 20) as f64);
        let change = match (rss_before, rss_after) {
            (Some(a), Some(b)) if a > 0 => Some((b as f64 / a as f64 - 1.0) * 100.0),
            _ => None,
        };
        outln!(
            "soak RSS: before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB, change {:+.1}% over {:.0} s",
            mib(rss_before).unwrap_or(f64::NAN),
            mib(rss_after).unwrap_or(f64::NAN),
            mib(peak).unwrap_or(f64::NAN),
            change.unwrap_or(f64::NAN),
            args.soak_seconds
        );
        soak = json!({
            "row": p.row("soak", &format!("{} qps", args.soak_rate)),
            "rss_before_mib": mib(rss_before),
            "rss_after_mib": mib(rss_after),
            "rss_peak_mib": mib(peak),
            "rss_change_percent": change,
        });
    }
    if args.rerank_k > 0 && args.reranker_model != "none" {
        let k = args.rerank_k;
        let rerank = |i: usize| body(&texts, &ids, i, k);
        let p = drive(
            &addr,
            args.rerank_clients,
            args.rerank_seconds,
            None,
            &rerank,
        );
        let name = format!("search + rerank K={k}");
        print(&p, &name, &format!("{} clients", args.rerank_clients))?;
        rows.push(p.row(
            &name,
            &format!("{} clients (closed loop)", args.rerank_clients),
        ));
    }
    let ingest = match args.ingest_images {
        0 => json!(null),
        _ => ingest_phase(
            &args,
            &addr,
            &ingest_dir.join("images"),
            &plain,
            &print,
            &mut rows,
        )?,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    outln!(
        "max sustained QPS with p99 <= {} ms: {} (gallery {} images, {} cores shared by server and client; RSS at start {:.1} MiB)",
        args.p99_ms,
        sustained.map_or("none of the rates".into(), |r| format!("{r}")),
        args.images,
        threads,
        rss_start.unwrap_or(0) as f64 / (1 << 20) as f64
    );
    if let Some(path) = &args.json {
        let out = json!({
            "gallery": args.images,
            "cores": threads,
            "p99_target_ms": args.p99_ms,
            "max_sustained_qps": sustained,
            "rows": rows,
            "soak": soak,
            "ingest": ingest,
            "random_rows": args.random_rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(())
}

/// Search p99 at `ingest_rate` alone, then while the server indexes `dir`: the second
/// phase lasts as long as the ingest does.
fn ingest_phase(
    args: &ServeBenchArgs,
    addr: &str,
    dir: &std::path::Path,
    plain: &(dyn Fn(usize) -> Vec<u8> + Sync),
    print: &dyn Fn(&Phase, &str, &str) -> Result<()>,
    rows: &mut Vec<serde_json::Value>,
) -> Result<serde_json::Value> {
    let target = format!("{} qps", args.ingest_rate);
    let alone = drive(
        addr,
        args.connections,
        args.seconds,
        Some(args.ingest_rate),
        plain,
    );
    print(&alone, "search, no ingest", &target)?;
    let started = Instant::now();
    let job = crate::bench_gallery::start_ingest(addr, dir)?;
    let (during, ingested) = std::thread::scope(|s| {
        let ingest = s.spawn(|| crate::bench_gallery::wait_ingest(addr, job, started));
        // Searches until the ingest ends, in slices, so the phase covers all of it.
        let mut during: Option<Phase> = None;
        while !ingest.is_finished() {
            let slice = drive(addr, args.connections, 5.0, Some(args.ingest_rate), plain);
            during = Some(match during.take() {
                Some(mut p) => {
                    p.merge(slice);
                    p
                }
                None => slice,
            });
        }
        let done = ingest
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("ingest poller panicked")));
        (during, done)
    });
    let (images, seconds) = ingested?;
    let during = during.context("the ingest ended before any search ran")?;
    print(&during, "search during ingest", &target)?;
    outln!(
        "ingest: {images} images in {seconds:.1} s ({:.1} images/s); search p99 {:.2} ms alone, {:.2} ms during ({:.2}x)",
        images as f64 / seconds.max(1e-9),
        alone.quantile(0.99),
        during.quantile(0.99),
        during.quantile(0.99) / alone.quantile(0.99).max(1e-9)
    );
    rows.push(alone.row("search, no ingest", &target));
    rows.push(during.row("search during ingest", &target));
    Ok(json!({
        "images": images,
        "seconds": seconds,
        "p99_alone_ms": alone.quantile(0.99),
        "p99_during_ms": during.quantile(0.99),
    }))
}

/// Renders `images` synthetic scenes into `dir` once.
fn render(dir: &std::path::Path, images: usize, seed: u64) -> Result<()> {
    if !dir.join("scenes.jsonl").is_file() {
        eprintln!("rendering {images} synthetic scenes into {}", dir.display());
        setr_synth::generate(
            dir,
            &setr_synth::SynthOptions {
                images,
                seed,
                ..Default::default()
            },
        )?;
    }
    Ok(())
}

/// Replaces `to` with a copy of the store at `from` (its files are flat).
fn copy_store(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to)?;
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let copy = to.join(entry.file_name());
            std::fs::copy(entry.path(), &copy)?;
            // Written back now, not by the kernel during the measured phases (a million
            // rows are 256 MB of dirty pages).
            std::fs::File::open(&copy)?.sync_all()?;
        }
    }
    Ok(())
}
