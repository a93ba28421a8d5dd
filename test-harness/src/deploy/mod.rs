//! Release tooling and operator checks, not the scenario engine: the OCI image (build, push,
//! registry round trip), `envoy --mode validate` on the shipped configs, and Istio manifest
//! validation, config dumps and the tracing check. Each command is a plain function taking typed
//! options; parsing the command line is `main.rs`'s job.

pub mod image;
pub mod istio;
pub mod oci;
pub mod oci_e2e;
pub mod registry;
pub mod validate;
