//! Every kernels/*.cu compiles with NVRTC for sm_90 and its PTX defines the expected entry
//! points. Needs libnvrtc (scripts/check-cuda sets it up), not a GPU.
#![cfg(feature = "cuda")]

use setr_cuda::{compile_ptx, KERNELS};

#[test]
fn every_kernel_compiles_to_ptx_with_its_entry_points() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("kernels/ is readable")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = KERNELS.iter().map(|k| k.file.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every kernels/*.cu must be listed in KERNELS"
    );

    for arch in ["compute_90", "compute_80"] {
        for kernel in KERNELS {
            let ptx = compile_ptx(kernel, arch)
                .unwrap_or_else(|e| panic!("{} for {arch}: {e}", kernel.file));
            let target = format!(".target sm_{}", &arch["compute_".len()..]);
            assert!(ptx.contains(&target), "{}: no `{target}`", kernel.file);
            for entry in kernel.entries {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{}: no .entry {entry}",
                    kernel.file
                );
            }
            // Local memory means a register array spilled or was indexed at run time.
            assert!(
                !ptx.contains(".local"),
                "{}: uses local memory",
                kernel.file
            );
        }
    }
}
