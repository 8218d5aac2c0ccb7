//! Helpers shared by the CLI and server tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod server;

/// tests/fixtures of the repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A fixture checkpoint directory, as a string argument.
pub fn model(name: &str) -> String {
    fixtures().join("models").join(name).display().to_string()
}

/// A plugin library built by the workspace, next to the setr binary.
pub fn plugin_lib(crate_name: &str) -> String {
    let dir = Path::new(env!("CARGO_BIN_EXE_setr"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.is_file(),
        "{} not built (run the tests with --workspace)",
        path.display()
    );
    path.display().to_string()
}
