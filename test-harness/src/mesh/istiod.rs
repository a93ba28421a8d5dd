//! istiod (`pilot-discovery discovery`) on the run's Kubernetes API, plaintext XDS on loopback.
//!
//! Every setting that differs from a default Istio install is here, with its reason, and listed
//! in istio/README.md ("What runs in the harness"): upstream Envoy 1.40 lacks the Istio-proxy-only
//! filters, so the features that need them are turned off instead of faked.

use super::kube::Kube;
use crate::process::ports;
use crate::process::Daemon;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// istiod reports `/ready` once its Kubernetes informers synced (3–20 s here).
const READY: Duration = Duration::from_secs(120);

/// istiod's environment: (name, value, why).
pub const ISTIOD_ENV: &[(&str, &str, &str)] = &[
    (
        "POD_NAMESPACE",
        "istio-system",
        "istiod's own namespace = the config root",
    ),
    (
        "POD_NAME",
        "istiod-e2e",
        "a pod name for leader election and logs",
    ),
    (
        "REVISION",
        "default",
        "the revision the WasmPlugins/TrafficExtensions carry no label for",
    ),
    (
        "CLOUD_PLATFORM",
        "none",
        "never probe a cloud metadata address",
    ),
    (
        "PILOT_ENABLE_ALPN_FILTER",
        "false",
        "istio.alpn is an Istio-proxy-only filter",
    ),
    (
        "PILOT_ENABLE_METADATA_EXCHANGE",
        "false",
        "istio.metadata_exchange is Istio-proxy-only",
    ),
    (
        "ENABLE_CA_SERVER",
        "false",
        "no workload certificates: mTLS is off (see README)",
    ),
    (
        "VALIDATION_WEBHOOK_CONFIG_NAME",
        "",
        "no webhook to patch: nothing calls istiod's webhooks",
    ),
    (
        "INJECTION_WEBHOOK_CONFIG_NAME",
        "",
        "no sidecar injection: the proxies are started by hand",
    ),
];

pub struct Istiod {
    /// Plaintext XDS (the agents' `discoveryAddress`).
    pub xds: String,
    /// HTTP: `/ready`, `/debug/*`.
    pub http: String,
    pub daemon: Daemon,
}

/// Istio's own tracer, as a default install has it: Zipkin at `zipkin.istio-system:9411`
/// (`meshConfig.defaultConfig.tracing`), here at 100% sampling so that its effect shows on every
/// request. Sidecar injection copies `defaultConfig` into each proxy's PROXY_CONFIG; the agents
/// here get the same block (`agent.rs`).
pub fn native_tracing_proxy_config() -> serde_json::Value {
    serde_json::json!({"sampling": 100.0, "zipkin": {"address": "zipkin.istio-system:9411"}})
}

/// The mesh configuration: Istio's defaults except no default metrics provider (its stats filter
/// is Istio-proxy-only) and no auto-mTLS.
pub fn mesh_config(xds: &str) -> String {
    format!(
        "rootNamespace: istio-system
trustDomain: cluster.local
enableTracing: true
enableAutoMtls: false
defaultProviders:
  metrics: []
defaultConfig:
  discoveryAddress: {xds}
  controlPlaneAuthPolicy: NONE
  tracing: {}
",
        native_tracing_proxy_config()
    )
}

impl Istiod {
    pub fn start(bin: &Path, kube: &Kube, dir: &Path) -> Result<Istiod, String> {
        let [grpc, http, monitoring, ctrlz] = ports::free_ports([None, None, None, None])?;
        let xds = format!("127.0.0.1:{grpc}");
        let mesh = dir.join("mesh.yaml");
        std::fs::write(&mesh, mesh_config(&xds))
            .map_err(|e| format!("write {}: {e}", mesh.display()))?;
        let mut cmd = Command::new(bin);
        cmd.arg("discovery")
            .arg(format!("--kubeconfig={}", kube.kubeconfig.display()))
            .arg(format!("--meshConfig={}", mesh.display()))
            .arg(format!(
                "--networksConfig={}",
                dir.join("meshNetworks").display()
            ))
            .arg(format!("--grpcAddr={xds}"))
            .arg(format!("--httpAddr=127.0.0.1:{http}"))
            .arg(format!("--monitoringAddr=127.0.0.1:{monitoring}"))
            .arg(format!("--ctrlz_port={ctrlz}"))
            .args([
                "--ctrlz_address=127.0.0.1",
                "--secureGRPCAddr=",
                "--httpsAddr=",
            ])
            .args(["--domain=cluster.local", "--shutdownDuration=1s"])
            .current_dir(dir);
        for (k, v, _) in ISTIOD_ENV {
            cmd.env(k, v);
        }
        let mut daemon = Daemon::spawn("istiod", &mut cmd, dir)?;
        let http = format!("127.0.0.1:{http}");
        daemon.wait_ready(READY, || {
            match crate::run::http::get(&http, "/ready", Duration::from_secs(2)) {
                Ok((200, _)) => Ok(()),
                Ok((s, b)) => Err(format!("GET /ready: {s} {b}")),
                Err(e) => Err(e),
            }
        })?;
        Ok(Istiod { xds, http, daemon })
    }

    /// `GET` a debug endpoint (`/debug/syncz`, `/debug/config_dump?proxyID=...`).
    pub fn debug(&self, path: &str) -> Result<String, String> {
        match crate::run::http::get(&self.http, path, Duration::from_secs(10)) {
            Ok((200, b)) => Ok(b),
            Ok((s, b)) => Err(format!("istiod GET {path}: {s} {b}")),
            Err(e) => Err(format!("istiod GET {path}: {e}")),
        }
    }
}

/// Where `make istio-tools` puts Istio's bootstrap template (a file of the istio.io/istio module).
pub fn bootstrap_template(tools_dir: &Path) -> PathBuf {
    tools_dir.join("istio-envoy-bootstrap.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// istio/README.md lists every setting istiod runs with ("Settings, and why").
    #[test]
    fn every_istiod_setting_is_documented() {
        let readme = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio/README.md"),
        )
        .unwrap();
        for (k, _, _) in ISTIOD_ENV {
            assert!(readme.contains(k), "{k} is not in istio/README.md");
        }
        for key in [
            "enableTracing",
            "enableAutoMtls",
            "defaultProviders.metrics",
            "controlPlaneAuthPolicy",
        ] {
            assert!(readme.contains(key), "{key} is not in istio/README.md");
        }
        let mesh = mesh_config("127.0.0.1:1");
        for key in [
            "enableTracing: true",
            "enableAutoMtls: false",
            "metrics: []",
            "controlPlaneAuthPolicy: NONE",
        ] {
            assert!(mesh.contains(key), "{key} is not in the mesh config");
        }
    }
}
