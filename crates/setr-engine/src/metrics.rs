//! Metrics through the `prometheus` crate: one registry per engine, shared with the front
//! end (the server adds its request metrics to it and renders it at `/metrics`).

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Upper bounds of the duration buckets, seconds.
const SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Upper bounds of the batch-size buckets.
const SIZES: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Every metric setr exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    stage_seconds: HistogramVec,
    encoder_batch: Histogram,
    encoder_queue: IntGauge,
    scan_batch: Histogram,
    /// Requests whose work is running (their in-flight permit is held).
    pub in_flight: IntGauge,
    /// Live images in the gallery.
    pub gallery_images: IntGauge,
    /// Second-stage rerankers available, by name.
    pub reranker_loaded: IntGaugeVec,
    /// Plugins refused at start.
    pub plugins_refused: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &[f64]| {
            let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
            let h = HistogramVec::new(opts, labels).unwrap_or_else(|e| unreachable(e));
            register(&registry, Box::new(h.clone()));
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).unwrap_or_else(|e| unreachable(e));
            register(&registry, Box::new(g.clone()));
            g
        };
        let requests = IntCounterVec::new(
            Opts::new("setr_requests_total", "HTTP responses by route and status."),
            &["route", "status"],
        )
        .unwrap_or_else(|e| unreachable(e));
        register(&registry, Box::new(requests.clone()));
        let reranker_loaded = IntGaugeVec::new(
            Opts::new(
                "setr_reranker_loaded",
                "Second-stage rerankers available, by name.",
            ),
            &["name"],
        )
        .unwrap_or_else(|e| unreachable(e));
        register(&registry, Box::new(reranker_loaded.clone()));
        Metrics {
            request_seconds: histogram(
                "setr_request_duration_seconds",
                "Time to answer, by route.",
                &["route"],
                &SECONDS,
            ),
            stage_seconds: histogram(
                "setr_stage_duration_seconds",
                "Time per stage of a request.",
                &["stage"],
                &SECONDS,
            ),
            encoder_batch: histogram(
                "setr_encoder_batch_size",
                "Inputs per encoder batch.",
                &[],
                &SIZES,
            )
            .with_label_values(&[] as &[&str]),
            scan_batch: histogram(
                "setr_scan_batch_size",
                "Queries per coarse scan (cross-request batching).",
                &[],
                &SIZES,
            )
            .with_label_values(&[] as &[&str]),
            encoder_queue: gauge("setr_encoder_queue", "Encoder jobs waiting."),
            in_flight: gauge("setr_in_flight", "Requests whose work is running."),
            gallery_images: gauge("setr_gallery_images", "Images in the gallery."),
            plugins_refused: gauge("setr_plugins_refused", "Plugins refused at start."),
            requests,
            reranker_loaded,
            registry,
        }
    }

    /// The registry, for front ends that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One response of `route` with `status` that took `seconds`.
    pub fn request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// One request's stage (`decode`, `encode_text`, `search`, `rerank_qwen3-vl`, ...).
    pub fn stage(&self, stage: &str, seconds: f64) {
        self.stage_seconds
            .with_label_values(&[stage])
            .observe(seconds);
    }

    /// The encoder ran a batch of `n` inputs.
    pub fn encoder_batch(&self, n: usize) {
        self.encoder_batch.observe(n as f64);
    }

    /// `delta` jobs entered (positive) or left (negative) the encoder queue.
    pub fn encoder_queue(&self, delta: i64) {
        self.encoder_queue.add(delta);
    }

    /// One coarse scan served `n` queries.
    pub fn scan_batch(&self, n: usize) {
        self.scan_batch.observe(n as f64);
    }

    /// Count of responses so far by `(route, status)` (for tests and logs).
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.requests
            .get_metric_with_label_values(&[route, &status.to_string()])
            .map_or(0, |c| c.get())
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// Metric names and labels here are constants: a failure to build one is a bug caught by
/// the first test, never a request-time condition.
fn unreachable(e: prometheus::Error) -> ! {
    panic!("invalid metric definition: {e}")
}

fn register(registry: &Registry, collector: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = registry.register(collector) {
        tracing::error!(error = %e, "metric registered twice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let m = Metrics::new();
        m.request("/v1/search", 200, 0.003);
        m.request("/v1/search", 200, 0.2);
        m.request("/v1/search", 422, 20.0);
        m.encoder_batch(3);
        m.encoder_queue(2);
        m.encoder_queue(-1);
        let out = m.render();
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
        assert!(out.contains("setr_encoder_batch_size_bucket{le=\"4\"} 1"));
        assert!(out.contains("setr_encoder_queue 1"));
        assert_eq!(m.count("/v1/search", 422), 1);
        assert_eq!(m.count("/v1/search", 500), 0);
    }
}
