//! The per-process scratch directory of a fuzz target, on tmpfs when there is one.
//!
//! libFuzzer ends with `exit()` (nothing is dropped), so each start removes the
//! directories that runs no longer alive left behind.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `<tmpfs or temp dir>/<prefix>-<pid>`; the same path for the whole process.
pub fn dir(prefix: &str) -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let stale = format!("{prefix}-");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_prefix(&stale));
            if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        base.join(format!("{prefix}-{}", std::process::id()))
    })
}
