//! Cross-request batching of the coarse scan, like the encoder's: searches arriving
//! together are gathered (up to `max_batch`, waiting at most `max_wait` for company; with
//! no wait, whatever queued while the previous scan ran) into one multi-query scan per
//! strategy. The CPU scan reads the gallery once per batch, so a batch of 64 costs far
//! less than 64 scans; the CUDA backend needs batches to be fast at all.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use setr_core::{ComposedQuery, Strategy};
use tokio::sync::oneshot;

use setr_index::{CoarseList, GalleryStore};

use crate::{EngineError, Metrics, Result};

type Reply = oneshot::Sender<Result<CoarseList>>;

struct Job {
    query: ComposedQuery,
    strategy: Strategy,
    k: usize,
    reply: Reply,
}

/// A handle to the scan thread (cheap to clone).
#[derive(Clone)]
pub struct ScanBatcher {
    sender: SyncSender<Job>,
}

impl ScanBatcher {
    /// Starts the scan thread over `gallery`. `queue` bounds the waiting searches
    /// (beyond it: overloaded).
    pub fn start(
        gallery: Arc<dyn GalleryStore>,
        max_batch: usize,
        max_wait: Duration,
        queue: usize,
        metrics: Metrics,
    ) -> ScanBatcher {
        let (sender, receiver) = sync_channel::<Job>(queue.max(1));
        let spawned = std::thread::Builder::new()
            .name("setr-scan".into())
            .spawn(move || {
                run(
                    gallery.as_ref(),
                    &receiver,
                    max_batch.max(1),
                    max_wait,
                    &metrics,
                )
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start the scan thread");
        }
        ScanBatcher { sender }
    }

    /// The top `k` hits of `query` under `strategy` (batched with concurrent searches),
    /// with whether they are exact.
    pub async fn search(
        &self,
        query: ComposedQuery,
        strategy: Strategy,
        k: usize,
    ) -> Result<CoarseList> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            query,
            strategy,
            k,
            reply,
        };
        crate::batch::enqueue(&self.sender, job, "scan")?;
        answer
            .await
            .map_err(|_| EngineError::Storage("the scan thread dropped a search".into()))?
    }
}

fn run(
    gallery: &dyn GalleryStore,
    receiver: &Receiver<Job>,
    max_batch: usize,
    max_wait: Duration,
    metrics: &Metrics,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = crate::batch::gather(receiver, first, max_batch, max_wait);
        // Searches whose request has gone (timed out) are not run.
        jobs.retain(|j| !j.reply.is_closed());
        for group in by_strategy(jobs) {
            metrics.scan_batch(group.len());
            scan(gallery, group);
        }
    }
}

/// Jobs grouped by strategy, in arrival order within each group.
fn by_strategy(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match groups.iter_mut().find(|g| g[0].strategy == job.strategy) {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

/// One scan for a group of the same strategy at the largest k asked, each answer cut to
/// its own k (the top k of a longer exact list is the exact top k). A batch that fails
/// (one query of a wrong shape) is rerun query by query, so one bad query fails alone.
fn scan(gallery: &dyn GalleryStore, jobs: Vec<Job>) {
    let store = gallery;
    let strategy = jobs[0].strategy;
    let limit = store.search_limit();
    let k = jobs.iter().map(|j| j.k).max().unwrap_or(1).min(limit);
    if k == 0 {
        for job in jobs {
            let _ = job.reply.send(Ok(CoarseList {
                exact: true,
                ..CoarseList::default()
            }));
        }
        return;
    }
    let (queries, jobs): (Vec<ComposedQuery>, Vec<(usize, Reply)>) =
        jobs.into_iter().map(|j| (j.query, (j.k, j.reply))).unzip();
    match store.search_lists(&queries, strategy, k) {
        Ok(lists) => {
            for ((k, reply), mut list) in jobs.into_iter().zip(lists) {
                list.hits.truncate(k);
                let _ = reply.send(Ok(list));
            }
        }
        Err(_) if jobs.len() > 1 => {
            for (query, (k, reply)) in queries.iter().zip(jobs) {
                let one = store
                    .search_lists(std::slice::from_ref(query), strategy, k.min(limit))
                    .map(|mut lists| lists.pop().unwrap_or_default())
                    .map_err(EngineError::from);
                let _ = reply.send(one);
            }
        }
        Err(e) => {
            if let Some((_, reply)) = jobs.into_iter().next() {
                let _ = reply.send(Err(e.into()));
            }
        }
    }
}
