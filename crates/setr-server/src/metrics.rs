//! Prometheus metrics kept in memory: request counts and durations by route, per-stage
//! durations, encoder batch sizes and queue depth. Rendered as the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

/// Upper bounds of the duration buckets, seconds.
const SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets.
const SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A cumulative histogram with fixed buckets.
#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Everything /metrics shows that is not read from the store at scrape time.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    stages: Mutex<BTreeMap<String, Histogram>>,
    batches: Mutex<Histogram>,
    /// Encoder jobs submitted and not yet taken by the encoder thread.
    queued: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::default(),
            durations: Mutex::default(),
            stages: Mutex::default(),
            batches: Mutex::new(Histogram::new(&SIZES)),
            queued: AtomicI64::new(0),
        }
    }
}

impl Metrics {
    /// One response of `route` with `status` that took `seconds`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((route.to_owned(), status)).or_insert(0) += 1;
        }
        if let Ok(mut d) = self.durations.lock() {
            d.entry(route.to_owned())
                .or_insert_with(|| Histogram::new(&SECONDS))
                .observe(seconds);
        }
    }

    /// One request's stage (`decode`, `encode_text`, `search`, `rerank:qwen3-vl`, ...).
    pub fn stage(&self, stage: &str, seconds: f64) {
        if let Ok(mut s) = self.stages.lock() {
            s.entry(stage.to_owned())
                .or_insert_with(|| Histogram::new(&SECONDS))
                .observe(seconds);
        }
    }

    /// The encoder ran a batch of `n` inputs.
    pub fn batch(&self, n: usize) {
        if let Ok(mut b) = self.batches.lock() {
            b.observe(n as f64);
        }
    }

    /// `delta` jobs entered (positive) or left (negative) the encoder queue.
    pub fn queue(&self, delta: i64) {
        self.queued.fetch_add(delta, Ordering::Relaxed);
    }

    /// Count of responses so far by `(route, status)` (for tests and logs).
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.requests
            .lock()
            .ok()
            .and_then(|r| r.get(&(route.to_owned(), status)).copied())
            .unwrap_or(0)
    }

    /// Appends the text exposition of everything recorded here.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP setr_requests_total HTTP responses by route and status.\n# TYPE setr_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((route, status), count) in r.iter() {
                let _ = writeln!(
                    out,
                    "setr_requests_total{{route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP setr_request_duration_seconds Time to answer, by route.\n# TYPE setr_request_duration_seconds histogram\n");
        if let Ok(d) = self.durations.lock() {
            for (route, h) in d.iter() {
                h.render(
                    out,
                    "setr_request_duration_seconds",
                    &format!("route=\"{route}\""),
                );
            }
        }
        out.push_str("# HELP setr_stage_duration_seconds Time per stage of a request.\n# TYPE setr_stage_duration_seconds histogram\n");
        if let Ok(s) = self.stages.lock() {
            for (stage, h) in s.iter() {
                h.render(
                    out,
                    "setr_stage_duration_seconds",
                    &format!("stage=\"{stage}\""),
                );
            }
        }
        out.push_str("# HELP setr_encoder_batch_size Inputs per encoder batch.\n# TYPE setr_encoder_batch_size histogram\n");
        if let Ok(b) = self.batches.lock() {
            b.render(out, "setr_encoder_batch_size", "");
        }
        let _ = writeln!(
            out,
            "# HELP setr_encoder_queue Encoder jobs waiting.\n# TYPE setr_encoder_queue gauge\nsetr_encoder_queue {}",
            self.queued.load(Ordering::Relaxed).max(0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let m = Metrics::default();
        m.request("/v1/search", 200, 0.003);
        m.request("/v1/search", 200, 0.2);
        m.request("/v1/search", 422, 20.0);
        m.batch(3);
        m.queue(2);
        m.queue(-1);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("setr_requests_total{route=\"/v1/search\",status=\"200\"} 2"));
        assert!(out
            .contains("setr_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.005\"} 1"));
        assert!(out
            .contains("setr_request_duration_seconds_bucket{route=\"/v1/search\",le=\"0.25\"} 2"));
        // 20 s is over the last bound: only +Inf counts it.
        assert!(
            out.contains("setr_request_duration_seconds_bucket{route=\"/v1/search\",le=\"10\"} 2")
        );
        assert!(out
            .contains("setr_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"} 3"));
        assert!(out.contains("setr_request_duration_seconds_count{route=\"/v1/search\"} 3"));
        assert!(out.contains("setr_encoder_batch_size_bucket{le=\"4\"} 1"));
        assert!(out.contains("setr_encoder_batch_size_bucket{le=\"2\"} 0"));
        assert!(out.contains("setr_encoder_queue 1"));
        assert_eq!(m.count("/v1/search", 422), 1);
    }
}
