//! The device-resident gallery: f16 rows padded to a multiple of 8 values and their ids,
//! appended incrementally, tombstoned on delete, compacted on demand; and the search over it
//! (scan_topk.cu then merge_topk.cu).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use half::f16;
use setr_core::{CoreError, GalleryView, Hit, ImageId, PreparedBatch, Vectors};

use crate::device::{driver, median, to_i32};
use crate::kernels::{
    cap_for, chunks_for, merge_smem, pack_queries, plan_words, scan_smem, stride_for, MERGE,
    THREADS,
};
use crate::{CudaDevice, CudaError, Result, SearchTimes};

/// Rows staged on the host per upload (64 MiB of f16 at dim 512).
const UPLOAD_ROWS: usize = 65_536;
/// Marks a store slot whose row was compacted away.
const NO_ROW: u32 = u32::MAX;
/// Poison of the id outputs before a checked launch (scores are poisoned with NaN).
const POISON_ID: u64 = 0xa5a5_a5a5_a5a5_a5a5;

/// A gallery mirrored on one device. Rows are addressed by the store's slots (the row index
/// of the [`GalleryView`]s it is given); compaction moves rows, so a slot-to-row map is kept.
pub struct DeviceGallery {
    dev: Arc<CudaDevice>,
    dim: usize,
    stride: usize,
    vectors: Option<CudaSlice<f16>>,
    ids: Option<CudaSlice<u64>>,
    capacity: usize,
    rows: usize,
    live: usize,
    slot_rows: Vec<u32>,
    poison: bool,
}

impl std::fmt::Debug for DeviceGallery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceGallery")
            .field("dim", &self.dim)
            .field("rows", &self.rows)
            .field("live", &self.live)
            .field("slots", &self.slot_rows.len())
            .finish()
    }
}

/// Device buffers of one search.
struct Run {
    plans: usize,
    k: usize,
    chunks: usize,
    rows_per_chunk: usize,
    cap: usize,
    queries: CudaSlice<f32>,
    words: CudaSlice<u32>,
    list_scores: CudaSlice<f32>,
    list_ids: CudaSlice<u64>,
    out_scores: CudaSlice<f32>,
    out_ids: CudaSlice<u64>,
}

impl DeviceGallery {
    /// An empty gallery of `dim`-dimensional rows on `dev`.
    pub fn new(dev: Arc<CudaDevice>, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(CoreError::RaggedMatrix { len: 0, dim }.into());
        }
        Ok(DeviceGallery {
            dev,
            dim,
            stride: stride_for(dim),
            vectors: None,
            ids: None,
            capacity: 0,
            rows: 0,
            live: 0,
            slot_rows: Vec::new(),
            poison: false,
        })
    }

    /// A mirror of every slot of `view` (deleted ones included, as tombstones).
    pub fn from_view(dev: Arc<CudaDevice>, view: &GalleryView<'_>) -> Result<Self> {
        let mut g = Self::new(dev, view.dim)?;
        g.append(view, 0..view.rows())?;
        Ok(g)
    }

    /// Row dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Store slots mirrored (the next append starts here).
    pub fn slots(&self) -> usize {
        self.slot_rows.len()
    }

    /// Rows on the device, deleted ones included.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Rows not deleted.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Fills every output buffer with poison (NaN scores) before each search, so that a slot
    /// a kernel failed to write is caught. For tests and the device check.
    pub fn set_poison(&mut self, on: bool) {
        self.poison = on;
    }

    /// Uploads slots `slots` of `view`, which must continue the mirrored ones.
    pub fn append(&mut self, view: &GalleryView<'_>, slots: std::ops::Range<usize>) -> Result<()> {
        if view.dim != self.dim {
            return Err(CoreError::DimensionMismatch {
                what: "gallery".into(),
                expected: self.dim,
                found: view.dim,
            }
            .into());
        }
        if slots.start != self.slots() || slots.end > view.rows() {
            return Err(CudaError::Kernel {
                kernel: "append",
                why: format!(
                    "slots {slots:?} do not continue the {} mirrored slots of a {}-row view",
                    self.slots(),
                    view.rows()
                ),
            });
        }
        let first_row = self.rows;
        self.upload(view, slots.clone())?;
        self.slot_rows
            .extend((first_row..first_row + slots.len()).map(|r| r as u32));
        Ok(())
    }

    /// Marks these slots deleted (their rows become tombstones the scan skips).
    pub fn remove(&mut self, slots: &[usize]) -> Result<()> {
        let Some(ids) = self.ids.as_mut() else {
            return Ok(());
        };
        for &slot in slots {
            let Some(row) = self.slot_rows.get(slot).copied() else {
                continue;
            };
            if row == NO_ROW {
                continue;
            }
            let row = row as usize;
            self.dev
                .stream
                .memcpy_htod(&[ImageId::TOMBSTONE.0], &mut ids.slice_mut(row..row + 1))
                .map_err(driver("writing a tombstone"))?;
            self.slot_rows[slot] = NO_ROW;
            self.live = self.live.saturating_sub(1);
        }
        Ok(())
    }

    /// Fraction of device rows that are deleted.
    pub fn dead_fraction(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            (self.rows - self.live) as f64 / self.rows as f64
        }
    }

    /// Rebuilds the mirror from `view` with its live rows only (`view` must be the state
    /// the mirror follows).
    pub fn compact(&mut self, view: &GalleryView<'_>) -> Result<()> {
        let mut fresh = Self::new(self.dev.clone(), view.dim)?;
        fresh.poison = self.poison;
        let mut slot_rows = Vec::with_capacity(view.rows());
        let mut row = 0u32;
        for id in view.ids {
            if *id == ImageId::TOMBSTONE {
                slot_rows.push(NO_ROW);
            } else {
                slot_rows.push(row);
                row += 1;
            }
        }
        fresh.upload_live(view)?;
        fresh.slot_rows = slot_rows;
        tracing::debug!(
            before = self.rows,
            after = fresh.rows,
            "compacted the device gallery"
        );
        *self = fresh;
        Ok(())
    }

    fn upload_live(&mut self, view: &GalleryView<'_>) -> Result<()> {
        let mut start = 0;
        let n = view.rows();
        // Upload maximal runs of live slots.
        while start < n {
            while start < n && view.ids[start] == ImageId::TOMBSTONE {
                start += 1;
            }
            let mut end = start;
            while end < n && view.ids[end] != ImageId::TOMBSTONE {
                end += 1;
            }
            if end > start {
                self.upload(view, start..end)?;
            }
            start = end;
        }
        Ok(())
    }

    fn ensure_capacity(&mut self, rows: usize) -> Result<()> {
        if rows <= self.capacity {
            return Ok(());
        }
        let cap = rows.max(self.capacity + self.capacity / 2).max(1024);
        to_i32(cap)?;
        let s = &self.dev.stream;
        // SAFETY: rows past `self.rows` are written before any kernel reads them.
        let mut vectors: CudaSlice<f16> =
            unsafe { s.alloc(cap * self.stride) }.map_err(driver("allocating the gallery"))?;
        let mut ids: CudaSlice<u64> =
            unsafe { s.alloc(cap) }.map_err(driver("allocating the gallery ids"))?;
        if let (Some(old_v), Some(old_i)) = (&self.vectors, &self.ids) {
            if self.rows > 0 {
                let n = self.rows * self.stride;
                s.memcpy_dtod(&old_v.slice(0..n), &mut vectors.slice_mut(0..n))
                    .map_err(driver("growing the gallery"))?;
                s.memcpy_dtod(&old_i.slice(0..self.rows), &mut ids.slice_mut(0..self.rows))
                    .map_err(driver("growing the gallery ids"))?;
            }
        }
        self.vectors = Some(vectors);
        self.ids = Some(ids);
        self.capacity = cap;
        Ok(())
    }

    /// Appends the rows of `slots` at the end of the device rows.
    fn upload(&mut self, view: &GalleryView<'_>, slots: std::ops::Range<usize>) -> Result<()> {
        self.ensure_capacity(self.rows + slots.len())?;
        let (d, stride) = (self.dim, self.stride);
        let dev = self.dev.clone();
        let s = &dev.stream;
        let mut at = slots.start;
        while at < slots.end {
            let end = slots.end.min(at + UPLOAD_ROWS);
            let n = end - at;
            let r0 = self.rows;
            let ids: Vec<u64> = view.ids[at..end].iter().map(|id| id.0).collect();
            let (Some(vectors), Some(dev_ids)) = (self.vectors.as_mut(), self.ids.as_mut()) else {
                return Err(CudaError::Kernel {
                    kernel: "upload",
                    why: "gallery buffers missing after allocation".into(),
                });
            };
            let mut target = vectors.slice_mut(r0 * stride..(r0 + n) * stride);
            match view.vectors {
                Vectors::F16(v) if d == stride => s
                    .memcpy_htod(&v[at * d..end * d], &mut target)
                    .map_err(driver("uploading rows"))?,
                Vectors::F16(v) => {
                    let mut staged = vec![f16::ZERO; n * stride];
                    for (i, row) in v[at * d..end * d].chunks_exact(d).enumerate() {
                        staged[i * stride..i * stride + d].copy_from_slice(row);
                    }
                    s.memcpy_htod(&staged, &mut target)
                        .map_err(driver("uploading rows"))?
                }
                // f32 galleries are rounded to f16 on the device (not renormalised: the
                // store's rows are normalised already).
                Vectors::F32(v) => {
                    let input = s
                        .clone_htod(&v[at * d..end * d])
                        .map_err(driver("uploading rows"))?;
                    dev.launch_normalize(&input, n, d, false, &mut target)?;
                }
            }
            s.memcpy_htod(&ids, &mut dev_ids.slice_mut(r0..r0 + n))
                .map_err(driver("uploading ids"))?;
            self.live += ids.iter().filter(|&&id| id != ImageId::TOMBSTONE.0).count();
            self.rows += n;
            at = end;
        }
        Ok(())
    }

    fn check(&self, batch: &PreparedBatch, k: usize) -> Result<()> {
        if batch.dim != self.dim {
            return Err(CoreError::DimensionMismatch {
                what: "query batch".into(),
                expected: self.dim,
                found: batch.dim,
            }
            .into());
        }
        if k == 0 || k > self.live {
            return Err(CoreError::InvalidK {
                k,
                available: self.live,
            }
            .into());
        }
        let max = self.dev.max_k(self.dim);
        if k > max {
            return Err(CudaError::KTooLarge { k, max });
        }
        Ok(())
    }

    fn prepare(&self, batch: &PreparedBatch, k: usize) -> Result<Run> {
        let s = &self.dev.stream;
        let plans = batch.plans.len();
        let chunks = chunks_for(self.rows, plans, k, self.dev.info().multiprocessors);
        let rows_per_chunk = self.rows.div_ceil(chunks);
        let words: Vec<u32> = batch.plans.iter().flat_map(plan_words).collect();
        let lists = plans * chunks * k;
        let alloc_f32 = |n: usize| -> Result<CudaSlice<f32>> {
            if self.poison {
                s.clone_htod(&vec![f32::NAN; n])
            } else {
                // SAFETY: the kernels write every slot (checked when poisoned).
                unsafe { s.alloc(n) }
            }
            .map_err(driver("allocating search buffers"))
        };
        let alloc_u64 = |n: usize| -> Result<CudaSlice<u64>> {
            if self.poison {
                s.clone_htod(&vec![POISON_ID; n])
            } else {
                // SAFETY: as above.
                unsafe { s.alloc(n) }
            }
            .map_err(driver("allocating search buffers"))
        };
        Ok(Run {
            plans,
            k,
            chunks,
            rows_per_chunk,
            cap: cap_for(k),
            queries: s
                .clone_htod(&pack_queries(batch, self.stride))
                .map_err(driver("uploading queries"))?,
            words: s.clone_htod(&words).map_err(driver("uploading plans"))?,
            list_scores: alloc_f32(lists)?,
            list_ids: alloc_u64(lists)?,
            out_scores: alloc_f32(plans * k)?,
            out_ids: alloc_u64(plans * k)?,
        })
    }

    /// Launches scan then merge; returns the events around each when `timed`.
    fn launch(&self, run: &mut Run, timed: bool) -> Result<Option<SearchTimes>> {
        let (Some(vectors), Some(ids)) = (&self.vectors, &self.ids) else {
            return Err(CoreError::InvalidK {
                k: run.k,
                available: 0,
            }
            .into());
        };
        let dev = &self.dev;
        let s = &dev.stream;
        let (rows, stride, k, cap, rpc, lists) = (
            to_i32(self.rows)?,
            to_i32(self.stride)?,
            to_i32(run.k)?,
            to_i32(run.cap)?,
            to_i32(run.rows_per_chunk)?,
            to_i32(run.chunks)?,
        );
        let t0 = if timed { Some(dev.event()?) } else { None };
        let scan_cfg = LaunchConfig {
            grid_dim: (run.plans as u32, run.chunks as u32, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: scan_smem(run.k, self.stride) as u32,
        };
        let mut b = s.launch_builder(&dev.scan);
        b.arg(vectors)
            .arg(ids)
            .arg(&rows)
            .arg(&stride)
            .arg(&run.queries)
            .arg(&run.words)
            .arg(&k)
            .arg(&cap)
            .arg(&rpc)
            .arg(&mut run.list_scores)
            .arg(&mut run.list_ids);
        // SAFETY: arguments match setr_scan_topk; the gallery holds rows*stride values and
        // rows ids, queries every vector a plan names (PreparedBatch guarantees it), the
        // lists plans*chunks*k slots; shared memory as scan_smem sizes it (<= max_k's budget).
        unsafe { b.launch(scan_cfg) }.map_err(driver("launching setr_scan_topk"))?;
        let t1 = if timed { Some(dev.event()?) } else { None };
        let merge_cfg = LaunchConfig {
            grid_dim: (run.plans as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: merge_smem(run.k) as u32,
        };
        let mut b = s.launch_builder(&dev.merge);
        b.arg(&run.list_scores)
            .arg(&run.list_ids)
            .arg(&lists)
            .arg(&k)
            .arg(&cap)
            .arg(&mut run.out_scores)
            .arg(&mut run.out_ids);
        // SAFETY: arguments match setr_merge_topk; sizes as allocated by prepare.
        unsafe { b.launch(merge_cfg) }.map_err(driver("launching setr_merge_topk"))?;
        let Some((t0, t1)) = t0.zip(t1) else {
            return Ok(None);
        };
        let t2 = dev.event()?;
        t2.synchronize().map_err(driver("running the search"))?;
        let ms =
            |a: &cudarc::driver::CudaEvent, b| a.elapsed_ms(b).map_err(driver("reading events"));
        Ok(Some(SearchTimes {
            scan_ms: ms(&t0, &t1)?,
            merge_ms: ms(&t1, &t2)?,
        }))
    }

    fn finish(&self, run: &Run) -> Result<Vec<Vec<Hit>>> {
        let s = &self.dev.stream;
        let scores = s
            .clone_dtoh(&run.out_scores)
            .map_err(driver("running the search"))?;
        let ids = s
            .clone_dtoh(&run.out_ids)
            .map_err(driver("reading results"))?;
        let mut out = Vec::with_capacity(run.plans);
        for p in 0..run.plans {
            let mut hits = Vec::with_capacity(run.k);
            for i in p * run.k..(p + 1) * run.k {
                if !scores[i].is_finite() || ids[i] == ImageId::TOMBSTONE.0 {
                    return Err(CudaError::Kernel {
                        kernel: MERGE,
                        why: format!(
                            "query {p} slot {}: score {} id {:#x} (k = {}, live = {})",
                            i - p * run.k,
                            scores[i],
                            ids[i],
                            run.k,
                            self.live
                        ),
                    });
                }
                hits.push(Hit {
                    id: ImageId(ids[i]),
                    score: scores[i],
                });
            }
            out.push(hits);
        }
        Ok(out)
    }

    /// Exact top-`k` of every query of `batch`, best first, ties broken by the smaller id:
    /// the same function as `setr_core::search` (f32 dot products, the plans' scores), up
    /// to the order of the f32 sums. Fails with [`CudaError::KTooLarge`] above
    /// [`CudaDevice::max_k`].
    pub fn search(&self, batch: &PreparedBatch, k: usize) -> Result<Vec<Vec<Hit>>> {
        self.check(batch, k)?;
        if batch.plans.is_empty() {
            return Ok(Vec::new());
        }
        let mut run = self.prepare(batch, k)?;
        self.launch(&mut run, false)?;
        self.finish(&run)
    }

    /// Times `reps` searches of `batch` (after `warmup` untimed ones) with CUDA events;
    /// queries are uploaded once. Returns the median times and the last results.
    pub fn time_search(
        &self,
        batch: &PreparedBatch,
        k: usize,
        warmup: usize,
        reps: usize,
    ) -> Result<(SearchTimes, Vec<Vec<Hit>>)> {
        self.check(batch, k)?;
        if batch.plans.is_empty() {
            return Ok((
                SearchTimes {
                    scan_ms: 0.0,
                    merge_ms: 0.0,
                },
                Vec::new(),
            ));
        }
        let mut run = self.prepare(batch, k)?;
        for _ in 0..warmup {
            self.launch(&mut run, false)?;
        }
        let (mut scan, mut merge) = (Vec::new(), Vec::new());
        for _ in 0..reps.max(1) {
            if let Some(t) = self.launch(&mut run, true)? {
                scan.push(t.scan_ms);
                merge.push(t.merge_ms);
            }
        }
        let times = SearchTimes {
            scan_ms: median(&mut scan),
            merge_ms: median(&mut merge),
        };
        Ok((times, self.finish(&run)?))
    }
}
