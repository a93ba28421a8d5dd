//! Running a scenario: the runner, the Envoy launcher (func-e) and its generated configs, the
//! recording upstream apps, the fake collector and its fault modes, the real collectors, the
//! request load and listener reloads, the HTTP client and server they share, and the run
//! directories under `.harness-runs/`.

pub mod collectors;
pub mod config;
pub mod envoy;
pub mod fault;
pub mod http;
pub mod httpd;
pub mod lds;
pub mod load;
pub mod rundir;
pub mod runner;
pub mod tier;
pub mod ui;
pub mod upstream;

pub use rundir::{run_dir, RUNS_DIR};
