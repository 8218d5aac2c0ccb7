//! Each kernel against its CPU twin on a real device, fresh random inputs, poisoned outputs.
//! Ignored without a device: benches/gpu/run.sh runs the same checks (through the
//! gpu_bench example) on the GPU machine; `cargo test --features cuda -- --ignored` runs
//! these where cargo and a GPU meet. They compile in both builds (the API is the same) so
//! that they show as ignored, never silently absent.

mod common;

use common::{compare, strategies, truth, twin, Fixture, Rng};
use half::f16;
use setr_core::{GalleryView, ImageId, SearchBackend, Vectors};
use setr_cuda::{CudaBackend, CudaDevice, CudaError, DeviceGallery};

const NEEDS: &str = "needs a CUDA device: run benches/gpu/run.sh";

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

#[test]
#[ignore = "needs a CUDA device: run benches/gpu/run.sh"]
fn scan_and_merge_match_the_cpu_twin() {
    let dev = CudaDevice::open(0).expect(NEEDS);
    let s = seed();
    eprintln!("seed {s}");
    let mut rng = Rng(s);
    for (rows, dim, dead) in [
        (1, 8, 0.0),
        (300, 3, 0.1),
        (5_000, 64, 0.2),
        (20_000, 512, 0.05),
    ] {
        let fx = Fixture::random(&mut rng, rows, dim, dead);
        let mut g = DeviceGallery::from_view(dev.clone(), &fx.view()).expect("upload");
        g.set_poison(true);
        for strategy in strategies() {
            for queries in [1, 64] {
                let batch = fx.batch(&mut rng, queries, strategy);
                let t = (rows <= 5_000).then(|| truth(&fx.view(), &batch));
                for k in [1, 10, 100, 1000, 4096]
                    .into_iter()
                    .filter(|&k| k <= fx.live())
                {
                    let gpu = g.search(&batch, k).expect("device search");
                    let cpu = twin(&fx.view(), &batch, k);
                    compare(&gpu, &cpu, &batch, k, t.as_deref()).unwrap_or_else(|e| {
                        panic!("rows {rows} dim {dim} {strategy} batch {queries} k {k}: {e}")
                    });
                }
            }
        }
    }
}

#[test]
#[ignore = "needs a CUDA device: run benches/gpu/run.sh"]
fn normalise_and_convert_match_the_twin() {
    let dev = CudaDevice::open(0).expect(NEEDS);
    let mut rng = Rng(seed());
    for dim in [3, 512, 1152] {
        let rows = 257;
        let data: Vec<f32> = (0..rows * dim).map(|_| 3.0 * rng.value()).collect();
        for normalize in [true, false] {
            let gpu = dev.to_f16(&data, dim, normalize).expect("conversion");
            for (r, row) in data.chunks_exact(dim).enumerate() {
                let mut want = row.to_vec();
                if normalize {
                    setr_core::l2_normalize("row", &mut want).expect("non-zero");
                }
                for (j, w) in want.iter().enumerate() {
                    let (a, b) = (gpu[r * dim + j], f16::from_f32(*w));
                    // f64 norms summed in another order: at most one f16 ulp apart.
                    assert!(
                        a.to_bits().abs_diff(b.to_bits()) <= 1,
                        "dim {dim} row {r} [{j}]: {a} vs {b}"
                    );
                }
            }
        }
    }
    let mut zero = vec![1.0f32; 16];
    zero[8..].fill(0.0);
    assert!(matches!(
        dev.to_f16(&zero, 8, true),
        Err(CudaError::BadRows { count: 1 })
    ));
    assert!(matches!(
        dev.to_f16(&[f32::NAN, 1.0], 2, false),
        Err(CudaError::BadRows { count: 1 })
    ));
}

#[test]
#[ignore = "needs a CUDA device: run benches/gpu/run.sh"]
fn the_mirror_follows_appends_deletes_and_compaction() {
    let dev = CudaDevice::open(0).expect(NEEDS);
    let mut rng = Rng(seed());
    let mut fx = Fixture::random(&mut rng, 9_000, 40, 0.0);
    let mut g = DeviceGallery::new(dev.clone(), 40).expect("gallery");
    g.set_poison(true);
    for part in [0..1, 1..4_000, 4_000..9_000] {
        g.append(&fx.view(), part).expect("append");
    }
    let doomed: Vec<usize> = (0..9_000).filter(|i| i % 3 == 0).collect();
    g.remove(&doomed).expect("remove");
    for &s in &doomed {
        fx.ids[s] = ImageId::TOMBSTONE;
    }
    fx.restat();
    let check = |g: &DeviceGallery, fx: &Fixture, rng: &mut Rng| {
        for strategy in strategies() {
            let batch = fx.batch(rng, 8, strategy);
            let gpu = g.search(&batch, 100).expect("search");
            compare(&gpu, &twin(&fx.view(), &batch, 100), &batch, 100, None)
                .unwrap_or_else(|e| panic!("{strategy}: {e}"));
        }
    };
    assert_eq!(g.live(), fx.live());
    check(&g, &fx, &mut rng);
    g.compact(&fx.view()).expect("compact");
    assert_eq!((g.rows(), g.slots()), (fx.live(), 9_000));
    check(&g, &fx, &mut rng);
    // Deleting after compaction goes through the slot map.
    g.remove(&[1, 2]).expect("remove");
    fx.ids[1] = ImageId::TOMBSTONE;
    fx.ids[2] = ImageId::TOMBSTONE;
    fx.restat();
    check(&g, &fx, &mut rng);
    // f32 galleries are rounded on the device.
    let wide: Vec<f32> = fx.vectors.iter().map(|x| x.to_f32()).collect();
    let view = GalleryView::new(Vectors::F32(&wide), 40, &fx.ids).expect("view");
    let g32 = DeviceGallery::from_view(dev, &view).expect("f32 upload");
    let batch = fx.batch(&mut rng, 4, strategies()[2]);
    compare(
        &g32.search(&batch, 10).expect("search"),
        &twin(&view, &batch, 10),
        &batch,
        10,
        None,
    )
    .expect("f32 gallery");
}

#[test]
#[ignore = "needs a CUDA device: run benches/gpu/run.sh"]
fn the_backend_stays_in_sync_and_takes_any_k() {
    let mut backend = CudaBackend::new(0).expect(NEEDS);
    let mut rng = Rng(seed());
    let mut fx = Fixture::random(&mut rng, 20_000, 16, 0.0);
    backend.added(&fx.view(), 0..10_000);
    backend.added(&fx.view(), 10_000..20_000);
    backend.removed(&[5, 6, 7]);
    for s in [5, 6, 7] {
        fx.ids[s] = ImageId::TOMBSTONE;
    }
    fx.restat();
    let batch = fx.batch(&mut rng, 3, strategies()[2]);
    let max = backend.device().max_k(16);
    for k in [1, 77, max, max + 1] {
        let got = backend.search(&fx.view(), &batch, k).expect("search");
        compare(&got, &twin(&fx.view(), &batch, k), &batch, k, None)
            .unwrap_or_else(|e| panic!("k {k}: {e}"));
    }
    // A view the mirror has not seen (slots it was never told about) triggers a rebuild.
    let more = Fixture::random(&mut rng, 20_500, 16, 0.1);
    let batch = more.batch(&mut rng, 2, strategies()[0]);
    let got = backend.search(&more.view(), &batch, 50).expect("search");
    compare(&got, &twin(&more.view(), &batch, 50), &batch, 50, None).expect("rebuilt");
    assert!(backend.search(&more.view(), &batch, 0).is_err());
}
