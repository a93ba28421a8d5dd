//! Running a scenario: the runner, the Envoy launcher (func-e) and its generated configs, the
//! recording upstream apps, the fake collector and its fault modes, the real collectors, the
//! request load and listener reloads, and the HTTP client and server they share.

pub mod collectors;
pub mod config;
pub mod envoy;
pub mod fault;
pub mod http;
pub mod httpd;
pub mod lds;
pub mod load;
pub mod runner;
pub mod ui;
pub mod upstream;
