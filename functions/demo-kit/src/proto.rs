//! The gRPC contracts of the demo's services, generated from `proto/` by
//! the build script: one module per package, shared by a service and its
//! callers so that both sides read the same `.proto`.

/// `spindle.demo.users.v1`: the users service's messages.
pub mod users {
    include!(concat!(env!("OUT_DIR"), "/spindle.demo.users.v1.rs"));
}

/// The descriptor set of the files in `proto/`, for server reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
