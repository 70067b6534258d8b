//! What every holdfast service shares: configuration, telemetry, the gRPC server and its
//! tower stack (TLS, CORS), metrics, rich errors, Redis scripts, embedded engines, the event bus, and the
//! one shape every service starts in ([`service`]); and the small helpers every crate would
//! otherwise copy: the clock ([`clock`]), the task-aborting guard ([`task`]), field checks
//! ([`validate`]) and the Tokio runtime every binary runs on ([`runtime`]).

pub mod admission;
pub mod auth;
pub mod clock;
pub mod config;
pub mod cors;
pub mod drain;
pub mod duration;
pub mod events;
pub mod metrics;
pub mod peer;
pub mod process;
pub mod redact;
pub mod redis;
pub mod runtime;
pub mod server;
pub mod service;
pub mod status;
pub mod task;
pub mod telemetry;
pub mod tls;
pub mod validate;

pub use config::{CommonArgs, PeerArgs, RedisUrl};
pub use peer::{LocalServices, PeerChannel};
pub use server::{GrpcServer, Health, ServerOptions};
pub use service::{Context, Needs, Peer, Service, ServiceParts};
