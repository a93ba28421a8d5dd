//! meshtrace test harness: replays YAML scenarios against real Envoy processes (started through
//! func-e) running the meshtrace wasm filter, with recording upstream apps and a fake Zipkin
//! collector, and checks headers, spans, metrics and logs.
//!
//! Modules are split so the pure parts (matchers, config patching, expectation evaluation, trace
//! rendering) are unit-tested without Envoy.

pub mod collectors;
pub mod config;
pub mod demo;
pub mod envoy;
pub mod expect;
pub mod fault;
pub mod http;
pub mod httpd;
pub mod istio;
pub mod lds;
pub mod load;
pub mod matcher;
pub mod normalize;
pub mod oci;
pub mod oci_cli;
pub mod oci_e2e;
pub mod repo;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod spans;
pub mod ui;
pub mod upstream;
pub mod validate;

pub use runner::{run_file, run_many, run_scenario, Outcome, Tools};
pub use scenario::Scenario;
