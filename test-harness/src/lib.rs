//! meshtrace test harness: replays YAML scenarios against real Envoy processes (started through
//! func-e) running the meshtrace wasm filter, with recording upstream apps and a fake Zipkin
//! collector, and checks headers, spans, metrics and logs.
//!
//! Modules are split so the pure parts (matchers, config patching, expectation evaluation, trace
//! rendering) are unit-tested without Envoy.

pub mod bench;
pub mod deploy;
pub mod mesh;
pub mod model;
pub mod process;
pub mod report;
pub mod run;
pub mod tools;

pub use model::scenario::Scenario;
pub use run::runner::{run_file, run_many, run_scenario, Outcome};
pub use tools::Tools;
