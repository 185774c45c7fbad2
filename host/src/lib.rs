//! # Wasm MME
//!
//! A multi-model inference host: every model is a WebAssembly component,
//! loaded on demand and run in a sandbox on a fixed pool of compute threads.
//!
//! # Layout
//!
//! Dependencies point down this list only.
//!
//! - [`server`]: wires the layers together for `mme serve`.
//! - [`api`]: the HTTP routes and the gRPC service over the same functions, and authentication and tenancy at this edge; no state of their own.
//! - [`bench`]: the load generator behind `mme bench`, and its soak.
//! - [`inspect`]: `mme inspect`, checking a package without serving it.
//! - [`registry`]: name → loaded model, single-flight loads.
//! - [`store`]: where packages come from (a local folder or S3), and the package cache.
//! - [`package`]: a loadable package; its untrusted parts (safe unpacking,
//!   `serving.properties`) are the crate `mme-package`, which fuzzing builds alone.
//! - [`wlm`]: per-model queues, batching, worker scaling, and the compute threads that run every model's wasm.
//! - [`runtime`]: wasmtime: compile once, sandboxed instances, deadlines.
//! - [`config`], [`metrics`]: shared leaves.

pub mod api;
pub mod bench;
pub mod config;
pub mod inspect;
pub mod metrics;
pub mod package;
pub mod registry;
pub mod runtime;
pub mod server;
pub mod store;
pub mod wlm;
