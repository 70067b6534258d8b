//! Generates the Rust code for every `.proto` under `proto/holdfast`, plus one encoded
//! descriptor set that the server hands to tonic-reflection.
//!
//! Needs `protoc` on PATH (Debian's `protobuf-compiler`, installed by
//! `scripts/install-deps.sh`), or `PROTOC` pointing at one.

use std::path::{Path, PathBuf};

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let mut protos = Vec::new();
    collect_protos(&proto_root.join("holdfast"), &mut protos)?;
    // Stable order keeps the generated code (and the descriptor set) reproducible.
    protos.sort();
    println!("cargo:rerun-if-changed={}", proto_root.display());
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Services whose issue has not landed can be registered as empty impls that answer
        // UNIMPLEMENTED, so reflection and health still list them.
        .generate_default_stubs(true)
        // 1 KiB codec buffers instead of tonic's 8 KiB per message (see `src/codec.rs`).
        .codec_path("crate::codec::SmallBufferCodec")
        .file_descriptor_set_path(out_dir.join("holdfast_descriptor.bin"))
        .include_file("_includes.rs")
        .compile_protos(&protos, &[proto_root])?;
    Ok(())
}
