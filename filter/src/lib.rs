//! meshtrace: B3 tracing for Envoy as a proxy-wasm filter.
//!
//! Data flows one way: request headers → [`propagation`] (extract) → [`sampling`] (decide) →
//! [`tracer`] (header edits, open span) → [`span`] (finished at stream end) → [`buffer`] (per VM) →
//! [`export`] (encode) → collector call from the root context. Everything but `adapter` (the only code that talks to the
//! host, through its own ABI layer) is plain Rust.

pub mod buffer;
pub mod config;
pub mod export;
pub mod ids;
pub mod metrics;
pub mod pairs;
pub mod propagation;
pub mod sampling;
pub mod span;
pub mod tracer;

#[cfg(feature = "proxy")]
mod adapter;
