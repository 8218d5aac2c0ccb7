//! One CUDA device: its context, a stream, and the kernels compiled for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    sys, CudaContext, CudaFunction, CudaSlice, CudaStream, CudaViewMut, DriverError, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use half::f16;

use crate::kernels::{stride_for, KernelSource, KERNELS, MERGE, NORMALIZE, SCAN};
use crate::{CudaError, DeviceInfo, Result};

/// Maps a driver error to [`CudaError::Driver`] with what was being done.
pub(crate) fn driver(what: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |e| CudaError::Driver {
        what,
        message: e.to_string(),
    }
}

/// Compiles one kernel file to PTX for `arch` (`compute_90`, ...) with NVRTC. Needs libnvrtc,
/// not a device. Results are cached for the life of the process.
pub fn compile_ptx(kernel: &KernelSource, arch: &str) -> Result<String> {
    static CACHE: OnceLock<Mutex<HashMap<(&'static str, String), String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (kernel.file, arch.to_string());
    if let Some(ptx) = lock(cache).get(&key) {
        return Ok(ptx.clone());
    }
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".into(),
            // Plan::score is evaluated without contraction in the kernel (explicit _rn
            // intrinsics); the dot products are FMAs like the twin's SIMD path.
            "--fmad=true".into(),
        ],
        name: Some(kernel.file.to_string()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let ptx = compile_ptx_with_opts(kernel.source(), opts)
        .map_err(|e| CudaError::Compile {
            file: kernel.file,
            arch: arch.to_string(),
            log: compile_log(&e),
        })?
        .to_src();
    tracing::debug!(
        file = kernel.file,
        arch,
        ms = started.elapsed().as_millis() as u64,
        "NVRTC compiled"
    );
    lock(cache).insert(key, ptx.clone());
    Ok(ptx)
}

fn compile_log(e: &cudarc::nvrtc::CompileError) -> String {
    match e {
        cudarc::nvrtc::CompileError::CompileError { nvrtc, log, .. } => {
            format!("{nvrtc:?}: {}", log.to_string_lossy())
        }
        other => format!("{other:?}"),
    }
}

/// A mutex guard even if a panicking thread poisoned it: the guarded maps stay valid.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A CUDA device with setr's kernels loaded. Shared (one per ordinal per process): open it
/// with [`CudaDevice::open`].
pub struct CudaDevice {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) scan: CudaFunction,
    pub(crate) merge: CudaFunction,
    pub(crate) normalize: CudaFunction,
    info: DeviceInfo,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish()
    }
}

impl CudaDevice {
    /// Device `ordinal`, its kernels compiled by NVRTC for its compute capability. The first
    /// call per ordinal does the work; later calls return the same device.
    pub fn open(ordinal: usize) -> Result<Arc<CudaDevice>> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
        let devices = DEVICES.get_or_init(Default::default);
        let mut devices = lock(devices);
        if let Some(d) = devices.get(&ordinal) {
            return Ok(d.clone());
        }
        let d = Arc::new(Self::load(ordinal)?);
        devices.insert(ordinal, d.clone());
        Ok(d)
    }

    fn load(ordinal: usize) -> Result<CudaDevice> {
        let count = CudaContext::device_count().map_err(driver("counting devices"))?;
        if ordinal >= count.max(0) as usize {
            return Err(CudaError::NoDevice {
                ordinal,
                count: count.max(0) as usize,
            });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("creating the context"))?;
        // One stream per device, so the per-slice event tracking cudarc does for
        // multi-stream use is pure overhead.
        // SAFETY: every setr-cuda operation runs on `stream`, which orders them all.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) = ctx
            .compute_capability()
            .map_err(driver("reading the compute capability"))?;
        let attr = |a, what| {
            ctx.attribute(a)
                .map(|v| v.max(0) as usize)
                .map_err(driver(what))
        };
        let info = DeviceInfo {
            ordinal,
            name: ctx.name().map_err(driver("reading the device name"))?,
            compute_capability: (major as u32, minor as u32),
            multiprocessors: attr(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                "reading the multiprocessor count",
            )?,
            memory: ctx.total_mem().map_err(driver("reading the memory size"))?,
            shared_memory_per_block: attr(
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "reading the shared memory limit",
            )?,
        };
        let arch = format!("compute_{major}{minor}");
        let mut functions = HashMap::new();
        for kernel in KERNELS {
            let ptx = compile_ptx(kernel, &arch)?;
            let module = ctx
                .load_module(Ptx::from_src(ptx))
                .map_err(driver("loading a kernel module"))?;
            for entry in kernel.entries {
                let f = module
                    .load_function(entry)
                    .map_err(driver("loading a kernel"))?;
                functions.insert(*entry, f);
            }
        }
        let mut take = |name: &str| {
            functions.remove(name).ok_or_else(|| CudaError::Kernel {
                kernel: SCAN,
                why: format!("entry point {name} missing from the compiled module"),
            })
        };
        let (scan, merge, normalize) = (take(SCAN)?, take(MERGE)?, take(NORMALIZE)?);
        // Blocks may use all the shared memory the device grants one block (static part
        // excluded); the launch sizes what it asks for.
        for f in [&scan, &merge] {
            let fixed = f
                .shared_size_bytes()
                .map_err(driver("reading a kernel's shared memory"))?
                .max(0) as usize;
            let dynamic = info.shared_memory_per_block.saturating_sub(fixed);
            f.set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                dynamic as i32,
            )
            .map_err(driver("raising a kernel's shared memory limit"))?;
        }
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        tracing::info!(
            ordinal,
            name = %info.name,
            cc = %format!("{major}.{minor}"),
            sms = info.multiprocessors,
            "CUDA device ready"
        );
        Ok(CudaDevice {
            stream,
            scan,
            merge,
            normalize,
            info,
        })
    }

    /// What the driver reports about the device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Shared memory one block of the top-k kernels may use for its buffers.
    pub(crate) fn smem_budget(&self) -> usize {
        // Room for the kernels' static variables.
        self.info.shared_memory_per_block.saturating_sub(64)
    }

    /// Largest k the device top-k handles for `dim`-dimensional rows.
    pub fn max_k(&self, dim: usize) -> usize {
        crate::max_k_for(self.smem_budget(), dim)
    }

    /// Device-to-device copy bandwidth in GB/s (bytes read plus bytes written), the median
    /// of `reps` copies of `bytes` bytes of non-zero data, timed with CUDA events.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64> {
        let n = bytes / 4;
        let pattern: Vec<u32> = (0..n as u32)
            .map(|i| i.wrapping_mul(2_654_435_761) | 1)
            .collect();
        let s = &self.stream;
        let src = s.clone_htod(&pattern).map_err(driver("uploading"))?;
        let mut dst: CudaSlice<u32> = s.alloc_zeros(n).map_err(driver("allocating"))?;
        let mut times = Vec::with_capacity(reps);
        for _ in 0..reps.max(1) + 2 {
            let start = self.event()?;
            s.memcpy_dtod(&src, &mut dst)
                .map_err(driver("copying on the device"))?;
            let end = self.event()?;
            end.synchronize().map_err(driver("waiting for a copy"))?;
            times.push(start.elapsed_ms(&end).map_err(driver("reading events"))?);
        }
        let mut times = times.split_off(2); // the first two warm up
        let ms = median(&mut times) as f64;
        Ok(2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9)
    }

    /// A timing event recorded on the stream now.
    pub(crate) fn event(&self) -> Result<cudarc::driver::CudaEvent> {
        self.stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver("recording an event"))
    }

    /// Converts `data` (rows of `dim` f32) to f16 on the device with
    /// `setr_l2_normalize_f16`, normalising each row when `normalize`; returns rows of `dim`.
    pub fn to_f16(&self, data: &[f32], dim: usize, normalize: bool) -> Result<Vec<f16>> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(setr_core::CoreError::RaggedMatrix {
                len: data.len(),
                dim,
            }
            .into());
        }
        let rows = data.len() / dim;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let stride = stride_for(dim);
        let s = &self.stream;
        let input = s.clone_htod(data).map_err(driver("uploading rows"))?;
        // Poisoned (NaN) so that a row the kernel skipped cannot pass for converted.
        let mut out = s
            .clone_htod(&vec![f16::NAN; rows * stride])
            .map_err(driver("allocating rows"))?;
        self.launch_normalize(&input, rows, dim, normalize, &mut out.slice_mut(..))?;
        let host = s.clone_dtoh(&out).map_err(driver("downloading rows"))?;
        Ok(host
            .chunks_exact(stride)
            .flat_map(|r| r[..dim].iter().copied())
            .collect())
    }

    /// Launches the conversion of `rows` rows of `input` into `out` (rows of the padded
    /// stride) and fails if any row was zero or non-finite.
    pub(crate) fn launch_normalize(
        &self,
        input: &CudaSlice<f32>,
        rows: usize,
        dim: usize,
        normalize: bool,
        out: &mut CudaViewMut<'_, f16>,
    ) -> Result<()> {
        let s = &self.stream;
        let mut bad: CudaSlice<i32> = s.alloc_zeros(1).map_err(driver("allocating"))?;
        let (rows_i, dim_i, stride_i, norm_i) = (
            to_i32(rows)?,
            to_i32(dim)?,
            to_i32(stride_for(dim))?,
            normalize as i32,
        );
        let cfg = LaunchConfig {
            grid_dim: (rows.div_ceil(8) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = s.launch_builder(&self.normalize);
        b.arg(input)
            .arg(&rows_i)
            .arg(&dim_i)
            .arg(&stride_i)
            .arg(&norm_i)
            .arg(out)
            .arg(&mut bad);
        // SAFETY: the arguments match the kernel's signature; input holds rows*dim values,
        // out rows*stride (checked by the callers), bad one int.
        unsafe { b.launch(cfg) }.map_err(driver("launching setr_l2_normalize_f16"))?;
        let bad = s
            .clone_dtoh(&bad)
            .map_err(driver("reading the row check"))?;
        match bad.first().copied().unwrap_or(0) {
            0 => Ok(()),
            n => Err(CudaError::BadRows { count: n as usize }),
        }
    }
}

pub(crate) fn to_i32(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| CudaError::Kernel {
        kernel: SCAN,
        why: format!("{n} does not fit the kernels' 32-bit sizes"),
    })
}

pub(crate) fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(f32::total_cmp);
    v[v.len() / 2]
}
