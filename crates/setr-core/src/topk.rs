//! Bounded top-k: a binary heap whose root is the worst kept hit, so a candidate that
//! does not beat the root is rejected with one comparison (the common case in a scan).

use crate::{Hit, ImageId};

/// Keeps the `k` best hits in setr's order ([`Hit::ranks_before`]).
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: Vec<Hit>,
}

impl TopK {
    /// An empty collector for `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: Vec::with_capacity(k.min(1 << 16)),
        }
    }

    /// Offers one hit.
    #[inline(always)]
    pub fn push(&mut self, score: f32, id: ImageId) {
        let hit = Hit { id, score };
        if self.heap.len() < self.k {
            self.heap.push(hit);
            self.sift_up(self.heap.len() - 1);
        } else if self.k > 0 && hit.ranks_before(&self.heap[0]) {
            self.heap[0] = hit;
            self.sift_down(0);
        }
    }

    /// The score a new hit must reach to be considered (`-inf` until full).
    #[inline(always)]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].score
        }
    }

    /// Adds every hit of `other`.
    pub fn merge(&mut self, other: TopK) {
        for h in other.heap {
            self.push(h.score, h.id);
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted(mut self) -> Vec<Hit> {
        self.heap.sort_by(Hit::rank_cmp);
        self.heap
    }

    // The heap is ordered so that each parent ranks *after* its children (the worst at 0).
    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.heap[p].ranks_before(&self.heap[i]) {
                self.heap.swap(p, i);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let worst = if r < n && self.heap[l].ranks_before(&self.heap[r]) {
                r
            } else {
                l
            };
            if self.heap[i].ranks_before(&self.heap[worst]) {
                self.heap.swap(i, worst);
                i = worst;
            } else {
                break;
            }
        }
    }
}
