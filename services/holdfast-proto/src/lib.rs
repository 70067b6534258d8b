//! Generated protobuf messages and tonic stubs for holdfast.
//!
//! Packages follow `proto/holdfast/<service>/v1/*.proto`: `holdfast_proto::holdfast::inventory::v1`
//! and so on. [`FILE_DESCRIPTOR_SET`] feeds gRPC server reflection.

#![allow(missing_docs, clippy::all, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

#[warn(missing_docs, clippy::all)]
pub mod codec;

/// Encoded `FileDescriptorSet` of every holdfast proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/holdfast_descriptor.bin"));

pub use holdfast::{cart, catalog, common, events, inventory, notifications, orders, payments, warehouse};
