//! Generates the gRPC messages of `proto/spindle/demo/users/v1/users.proto`
//! with prost, for the service (`users`) and its callers (`orders`) alike,
//! and the descriptor set server reflection serves, compiled by protox (a
//! protobuf compiler in Rust, so no `protoc` needs installing).

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = proto_root.join("spindle/demo/users/v1/users.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let descriptors = protox::compile([&file], [&proto_root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("descriptors.bin"), descriptors.encode_to_vec())?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
