//! Istio deployment support (`istio/*.yaml`), one module per check:
//!
//! - `istio-validate` ([`validate`]): every manifest against Istio's own CRD schemas
//!   ([`crds`], [`schema`]: the served version's `openAPIV3Schema` with Kubernetes
//!   structural-schema semantics), the envelope ([`manifest`]) and the CEL-only rules ([`cel`]);
//!   then what the schema cannot see, checked by a real Envoy ([`render`]): every WasmPlugin
//!   `pluginConfig` loaded as the filter configuration and every EnvoyFilter patch rendered into a
//!   shipped Envoy config, both through `envoy --mode validate` (which runs `on_configure`).
//! - `tracing-check` ([`tracing_check`]): reports every HttpConnectionManager of a config dump that
//!   has a native `tracing` block next to the meshtrace filter.
//! - `config-dump` ([`config_dump`]): a real Envoy's `/config_dump` for a shipped config,
//!   optionally with native tracing added (the fixture of the `tracing-check` tests).

pub mod cel;
pub mod config_dump;
pub mod crds;
pub mod manifest;
pub mod render;
pub mod schema;
pub mod tracing_check;
pub mod validate;

pub use config_dump::{config_dump, live_config_dump, native_tracing_block, ConfigDumpOptions};
pub use crds::{yaml_docs, CrdVersion, Crds};
pub use manifest::validate_manifest;
pub use render::{render_envoyfilter_patch, shipped_with_plugin_config};
pub use schema::validate_schema;
pub use tracing_check::{
    scan_config_dump, tracing_check, tracing_check_report, HcmReport, TRACING_CONFLICT,
    TRACING_ERROR, TRACING_NO_MESHTRACE, TRACING_OK,
};
pub use validate::{istio_validate, ValidateOptions};
