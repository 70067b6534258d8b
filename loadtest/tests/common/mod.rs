//! What the harness's end-to-end tests share.

use std::path::PathBuf;
use std::process::Command;

/// `$HOLDFAST_BIN`, else the holdfast binary next to holdfast-load: `cargo nextest run
/// --workspace` builds it for the holdfast crate's own tests; built here when missing.
pub fn holdfast_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HOLDFAST_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(bin);
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_holdfast-load")).with_file_name("holdfast");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "holdfast"])
            .status()
            .expect("running cargo build -p holdfast");
        assert!(status.success(), "cargo build -p holdfast failed");
    }
    assert!(bin.exists(), "no holdfast binary at {}", bin.display());
    bin
}
