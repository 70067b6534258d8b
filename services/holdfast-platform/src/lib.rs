//! What every holdfast service shares: configuration, telemetry, the gRPC server and its
//! tower stack, metrics, rich errors, Redis scripts, embedded engines and the event bus.

pub mod config;
pub mod events;
pub mod metrics;
pub mod process;
pub mod redact;
pub mod redis;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod validate;

pub use config::{CommonArgs, RedisUrl, StoreUrl};
pub use server::{GrpcServer, Health, ServerOptions};
