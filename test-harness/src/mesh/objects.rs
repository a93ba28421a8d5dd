//! The Kubernetes objects of the e2e mesh: the namespaces and Istio resources that describe seed
//! topology a (client → ingress gateway → app's sidecar → app) to istiod, and the shipped
//! `istio/*.yaml` manifests with only what a user edits before applying them replaced.
//!
//! Services are ServiceEntries, not Kubernetes Services: Kubernetes refuses loopback addresses in
//! Endpoints and EndpointSlices, and every workload here listens on 127.0.0.1.

use serde_yaml::Value as Yaml;
use std::path::Path;

/// The ports the topology's workloads listen on.
#[derive(Debug, Clone, Copy)]
pub struct TopologyPorts {
    /// The gateway's HTTP listener (what the client calls).
    pub gateway: u16,
    /// The sidecar's inbound listener (the gateway's upstream endpoint for the app).
    pub sidecar_inbound: u16,
    /// The app itself (the sidecar's `defaultEndpoint`).
    pub app: u16,
    /// The collector's Zipkin receiver (behind the `zipkin.istio-system` ServiceEntry).
    pub zipkin: u16,
}

/// Namespaces, mTLS off, the services, the gateway routing and the sidecar's listeners.
pub fn topology(p: &TopologyPorts) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
# mTLS off mesh-wide: workload certificates come from istiod's CA, authenticated by a pod's
# service-account token, and there are no pods here (istio/README.md, \"What runs in the harness\").
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: DISABLE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: zipkin
  namespace: istio-system
spec:
  hosts: [zipkin.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 9411, name: http-zipkin, protocol: HTTP, targetPort: {zipkin}}}
  endpoints:
  - address: 127.0.0.1
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: app
  namespace: default
spec:
  hosts: [app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 8080, name: http, protocol: HTTP, targetPort: {sidecar_inbound}}}
  endpoints:
  - address: 127.0.0.1
    labels: {{app: app}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: istio-system
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: {gateway}, name: http, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: istio-system
spec:
  hosts: ['*']
  gateways: [ingress]
  http:
  - route:
    - destination:
        host: app.default.svc.cluster.local
        port: {{number: 8080}}
---
# Interception mode NONE (no iptables): the sidecar's listeners are the ones bound here.
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: app
  namespace: default
spec:
  workloadSelector:
    labels: {{app: app}}
  ingress:
  - port: {{number: {sidecar_inbound}, protocol: HTTP, name: http}}
    bind: 127.0.0.1
    defaultEndpoint: 127.0.0.1:{app}
  # Catch-all egress: a cluster (and a 0.0.0.0:<service port> listener, which only this test's
  # network namespace sees) for every service of both namespaces, the collector's included.
  egress:
  - hosts: ['./*', 'istio-system/*']
",
        zipkin = p.zipkin,
        sidecar_inbound = p.sidecar_inbound,
        gateway = p.gateway,
        app = p.app,
    )
}

/// What the e2e replaces in a shipped plugin manifest: the module's location and digest (as the
/// manifests' own comments tell a user to), and optionally the sampling rate / fail strategy.
#[derive(Debug, Clone, Default)]
pub struct PluginEdits {
    pub url: String,
    pub sha256: String,
    pub rate: Option<f64>,
    pub fail_strategy: Option<String>,
    /// Replaces the whole `pluginConfig` (for a configuration meshtrace must refuse).
    pub plugin_config: Option<serde_json::Value>,
    /// Top-level `pluginConfig` keys set after the above (e.g. `span_shape`).
    pub set: Vec<(String, serde_json::Value)>,
}

/// The documents of a shipped manifest file with `edits` applied to each WasmPlugin /
/// TrafficExtension (`wasm:` block) in it.
pub fn shipped(path: &Path, edits: &PluginEdits) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for de in serde_yaml::Deserializer::from_str(&text) {
        let mut doc = Yaml::deserialize(de).map_err(|e| format!("{}: {e}", path.display()))?;
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let plugin = match kind.as_str() {
            "WasmPlugin" => doc.get_mut("spec"),
            "TrafficExtension" => doc.get_mut("spec").and_then(|s| s.get_mut("wasm")),
            _ => None,
        };
        if let Some(p) = plugin {
            apply_edits(p, edits)?;
        }
        out.push(serde_yaml::to_string(&doc).map_err(|e| e.to_string())?);
    }
    Ok(out.join("---\n"))
}

use serde::Deserialize;

fn apply_edits(p: &mut Yaml, e: &PluginEdits) -> Result<(), String> {
    let Yaml::Mapping(m) = p else {
        return Err("plugin spec is not a mapping".into());
    };
    m.insert("url".into(), e.url.clone().into());
    m.insert("sha256".into(), e.sha256.clone().into());
    if let Some(fs) = &e.fail_strategy {
        m.insert("failStrategy".into(), fs.clone().into());
    }
    if let Some(pc) = &e.plugin_config {
        let y = serde_yaml::to_value(pc).map_err(|e| e.to_string())?;
        m.insert("pluginConfig".into(), y);
    }
    if let Some(Yaml::Mapping(c)) = m.get_mut("pluginConfig") {
        for (k, v) in &e.set {
            let y = serde_yaml::to_value(v).map_err(|e| e.to_string())?;
            c.insert(k.as_str().into(), y);
        }
    }
    if let Some(rate) = e.rate {
        if let Some(Yaml::Mapping(s)) = m
            .get_mut("pluginConfig")
            .and_then(|c| c.get_mut("sampling"))
        {
            s.insert("rate".into(), rate.into());
        }
    }
    Ok(())
}
