//! istio-agent (`pilot-agent proxy router|sidecar`) driving the PyPI Envoy 1.40: it writes
//! Envoy's bootstrap from Istio's template, proxies XDS to istiod, fetches Wasm modules from
//! OCI registries into its cache and rewrites the extension configs to local files.
//!
//! Each proxy runs in a working directory of its own (the agent's paths are relative:
//! `./etc/istio/proxy`, `./var/lib/istio/data`, ...), with every port of its own.

use crate::process::ports;
use crate::process::Daemon;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Envoy reports `/healthz/ready` once it has listeners and clusters from istiod.
const READY: Duration = Duration::from_secs(90);

/// What the agent runs as: Istio's two proxy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An ingress gateway (`pilot-agent proxy router`).
    Router,
    /// A sidecar (`pilot-agent proxy sidecar`), interception mode NONE: no iptables, the
    /// listeners are the ones its `Sidecar` resource binds explicitly.
    Sidecar,
}

/// One proxy: its identity as istiod sees it.
#[derive(Debug, Clone)]
pub struct ProxySpec {
    pub role: Role,
    pub name: String,
    pub namespace: String,
    /// Workload labels (what `selector.matchLabels` match).
    pub labels: Vec<(String, String)>,
}

pub struct Agent {
    pub spec: ProxySpec,
    pub dir: PathBuf,
    /// Envoy's admin interface.
    pub admin: String,
    /// Envoy's readiness listener (`/healthz/ready`).
    pub health: String,
    pub daemon: Daemon,
}

/// The binaries and files an agent needs.
#[derive(Debug, Clone)]
pub struct AgentBins {
    pub agent: PathBuf,
    pub envoy: PathBuf,
    pub bootstrap_template: PathBuf,
    /// The module, for istio/envoyfilter.yaml: it reads /var/local/lib/wasm/meshtrace.wasm.
    pub module: PathBuf,
}

impl ProxySpec {
    /// The id istiod knows the proxy by (`/debug/config_dump?proxyID=`).
    pub fn proxy_id(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl Agent {
    /// Starts the agent (and through it Envoy) in `<dir>/<name>` and waits until Envoy is ready.
    pub fn start(
        bins: &AgentBins,
        spec: &ProxySpec,
        xds: &str,
        dir: &Path,
    ) -> Result<Agent, String> {
        let wd = dir.join(&spec.name);
        for sub in [
            "etc/istio/proxy",
            "var/lib/istio/envoy",
            "var/lib/istio/data",
            "var/run/secrets/istio",
        ] {
            std::fs::create_dir_all(wd.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        let tmpl = wd.join("var/lib/istio/envoy/envoy_bootstrap_tmpl.json");
        std::fs::copy(&bins.bootstrap_template, &tmpl).map_err(|e| {
            format!(
                "copy {}: {e} (run make istio-tools)",
                bins.bootstrap_template.display()
            )
        })?;
        placeholder_root_cert(&wd.join("var/run/secrets/istio"))?;
        let [admin, status, health, prom] = ports::free_ports([None, None, None, None])?;
        let proxy_config = json!({
            "discoveryAddress": xds,
            "controlPlaneAuthPolicy": "NONE",
            "binaryPath": bins.envoy,
            "configPath": wd.join("etc/istio/proxy"),
            "proxyAdminPort": admin,
            "statusPort": status,
            "concurrency": 1,
            "tracing": super::istiod::native_tracing_proxy_config(),
            "drainDuration": "1s",
            "terminationDrainDuration": "1s",
        });
        let labels: serde_json::Map<String, serde_json::Value> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        // The agent's module cache is a fixed path (/var/lib/istio/data, as in Istio's image). Two
        // proxies sharing it race on the same file when a push reaches both at once (one Envoy read
        // a module the other agent was still writing): each agent gets the cache of its own in a
        // mount namespace of its own, as each pod has its own filesystem. The same namespace
        // holds the file istio/envoyfilter.yaml loads, where a user would mount it.
        let data = wd.join("var/lib/istio/data");
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount --bind \"$0\" /var/lib/istio/data && mount -t tmpfs meshtrace-e2e /var/local && \
                 mkdir -p /var/local/lib/wasm && cp \"$1\" /var/local/lib/wasm/meshtrace.wasm && \
                 shift && exec \"$@\"",
            )
            .arg(&data)
            .arg(&bins.module)
            .arg(&bins.agent);
        cmd.arg("proxy")
            .arg(match spec.role {
                Role::Router => "router",
                Role::Sidecar => "sidecar",
            })
            .arg(format!("--domain={}.svc.cluster.local", spec.namespace))
            .args([
                "--proxyLogLevel=warning,wasm:debug",
                "--log_output_level=default:info",
            ])
            .current_dir(&wd)
            .env("PROXY_CONFIG", proxy_config.to_string())
            .env("CLOUD_PLATFORM", "none")
            .env("POD_NAME", &spec.name)
            .env("POD_NAMESPACE", &spec.namespace)
            .env("INSTANCE_IP", "127.0.0.1")
            .env("SERVICE_ACCOUNT", "default")
            .env("ISTIO_META_CLUSTER_ID", "Kubernetes")
            .env(
                "ISTIO_METAJSON_LABELS",
                serde_json::Value::Object(labels).to_string(),
            )
            .env("ISTIO_META_WORKLOAD_NAME", &spec.name)
            .env("ISTIO_META_INTERCEPTION_MODE", "NONE")
            .env("ENVOY_STATUS_PORT", health.to_string())
            .env("ENVOY_PROMETHEUS_PORT", prom.to_string())
            .env("ISTIO_META_METRICS_LOCALHOST_ACCESS_ONLY", "true");
        let mut daemon = Daemon::spawn(&spec.name, &mut cmd, dir)?;
        let health = format!("127.0.0.1:{health}");
        daemon.wait_ready(READY, || {
            match crate::run::http::get(&health, "/healthz/ready", Duration::from_secs(2)) {
                Ok((200, _)) => Ok(()),
                Ok((s, b)) => Err(format!("GET /healthz/ready: {s} {b}")),
                Err(e) => Err(e),
            }
        })?;
        Ok(Agent {
            spec: spec.clone(),
            dir: wd,
            admin: format!("127.0.0.1:{admin}"),
            health,
            daemon,
        })
    }

    /// `GET` from Envoy's admin interface (`/config_dump`, `/stats?filter=...`).
    pub fn admin_get(&self, path: &str) -> Result<String, String> {
        match crate::run::http::get(&self.admin, path, Duration::from_secs(10)) {
            Ok((200, b)) => Ok(b),
            Ok((s, b)) => Err(format!("{} admin {path}: {s} {b}", self.spec.name)),
            Err(e) => Err(format!("{} admin {path}: {e}", self.spec.name)),
        }
    }
}

/// The agent's SDS server refuses to start without a root certificate for istiod's CA, even when
/// no workload certificate is ever asked for (mTLS is off here, and istiod runs without its CA):
/// a self-signed certificate nothing is verified against fills the place.
fn placeholder_root_cert(dir: &Path) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/O=meshtrace-e2e placeholder root",
    ])
    .arg("-keyout")
    .arg(dir.join("root-key.pem"))
    .arg("-out")
    .arg(dir.join("root-cert.pem"));
    let out = crate::process::output(&mut cmd, Duration::from_secs(60))
        .map_err(|e| format!("openssl req: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl req failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
