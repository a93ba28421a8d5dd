//! The mesh: meshtrace deployed the way Istio users deploy it, through a real control plane.
//! etcd + kube-apiserver (a real Kubernetes API, no kubelet and no pods), istiod on it, and
//! istio-agent driving the PyPI Envoy for an ingress gateway and an app's sidecar; the module is
//! pulled by the agents from a loopback OCI registry. `istio-e2e` runs the cases of
//! istio/README.md ("Proven in a real control plane") on it.
//!
//! Data flows one way: `kube` (the API) ← `objects` (what is applied) → `istiod` (reads it) →
//! `agent` (proxies, configured by istiod) → the cases in `e2e` (traffic and read-back).

mod admission;
pub mod agent;
mod cases;
pub mod e2e;
pub mod istiod;
pub mod kube;
pub mod objects;
mod shapes;
