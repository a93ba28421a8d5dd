//! `istio-e2e`: the cases that prove meshtrace in a real Istio control plane. One mesh (API,
//! istiod, registry, Jaeger, app, gateway and sidecar proxies) serves every case; each case
//! applies its resources, waits until istiod's push reached both Envoys, sends traffic through
//! the gateway and checks what came out (responses, Jaeger's stored traces, Envoy and agent logs).

use super::agent::{Agent, AgentBins, ProxySpec, Role};
use super::istiod::Istiod;
use super::kube::{Kube, KubeBins};
use super::objects::{self, PluginEdits, TopologyPorts};
use crate::deploy::oci::{self, Variant};
use crate::deploy::oci_e2e::Registry;
use crate::deploy::registry::{push_http, Reference};
use crate::model::scenario::{RealCollectorKind, ReportSpan, UpstreamSpec};
use crate::process::ports;
use crate::run::collectors::RealCollector;
use crate::run::http;
use crate::run::upstream::UpstreamServer;
use crate::tools::Tools;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Everything `make istio-tools` builds, plus crane and Istio's CRDs of the version istiod uses.
#[derive(Debug, Clone)]
pub struct MeshBins {
    pub kube: KubeBins,
    pub istiod: PathBuf,
    pub agent: AgentBins,
    pub crane: PathBuf,
    pub crds: PathBuf,
}

impl MeshBins {
    /// The Makefile's paths; an error names what is missing and how to build it.
    pub fn from_paths(tools: &Tools) -> Result<MeshBins, String> {
        let t = &tools.paths.tools_dir;
        let bin = |n: &str| t.join("bin").join(n);
        let envoy = tools
            .envoy
            .clone()
            .ok_or("no Envoy binary (set ENVOY_PATH or run make tools)")?;
        let bins = MeshBins {
            kube: KubeBins {
                etcd: bin("etcd"),
                apiserver: bin("kube-apiserver"),
                kubectl: bin("kubectl"),
            },
            istiod: bin("pilot-discovery"),
            agent: AgentBins {
                agent: bin("pilot-agent"),
                envoy,
                bootstrap_template: super::istiod::bootstrap_template(t),
                module: tools.wasm.clone(),
            },
            crane: tools.paths.crane.clone(),
            crds: tools.paths.istio_e2e_crds.clone(),
        };
        let all = [
            &bins.kube.etcd,
            &bins.kube.apiserver,
            &bins.kube.kubectl,
            &bins.istiod,
            &bins.agent.agent,
            &bins.agent.bootstrap_template,
            &bins.crane,
            &bins.crds,
        ];
        let missing: Vec<String> = all
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            Ok(bins)
        } else {
            Err(format!(
                "missing {} (run make istio-tools)",
                missing.join(", ")
            ))
        }
    }
}

/// The running mesh (fields drop in order: proxies first, the API last).
pub struct Mesh {
    pub dir: PathBuf,
    pub gateway: Agent,
    pub sidecar: Agent,
    pub app: UpstreamServer,
    pub istiod: Istiod,
    pub kube: Kube,
    pub jaeger: RealCollector,
    pub registry: Registry,
    /// `oci://127.0.0.1:PORT/meshtrace:e2e` and its manifest digest (64 hex digits).
    pub image: (String, String),
    pub ports: TopologyPorts,
    pub repo: PathBuf,
}

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let t0 = Instant::now();
    let r = f();
    println!(
        "  {what}: {:.1} s{}",
        t0.elapsed().as_secs_f64(),
        if r.is_err() { " (failed)" } else { "" }
    );
    r
}

impl Mesh {
    pub fn start(tools: &Tools, bins: &MeshBins, dir: &Path) -> Result<Mesh, String> {
        let mut jaeger = RealCollector::spawn(
            RealCollectorKind::Jaeger,
            &tools.collectors,
            &dir.join("jaeger"),
            false,
        )?;
        let registry = Registry::start(&bins.crane)?;
        let image = timed("image pushed to the loopback registry", || {
            push_image(&tools.wasm, &registry.addr)
        })?;
        let kube = timed("etcd + kube-apiserver ready", || {
            Kube::start(&bins.kube, dir)
        })?;
        timed("Istio CRDs applied and established", || {
            apply_crds(&kube, &bins.crds)
        })?;
        jaeger.wait_ready(Duration::from_secs(60))?;
        let app =
            UpstreamServer::start(&app_spec(), Default::default(), Some(jaeger.ingest(false)))?;
        let [gateway, sidecar_inbound] = ports::free_ports([None, None])?;
        let ports = TopologyPorts {
            gateway,
            sidecar_inbound,
            app: app.addr.port(),
            zipkin: jaeger.ingest(false).port(),
        };
        kube.apply(&objects::topology(&ports))?;
        let istiod = timed("istiod ready", || Istiod::start(&bins.istiod, &kube, dir))?;
        let gw = ProxySpec {
            role: Role::Router,
            name: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            labels: vec![
                ("istio".into(), "ingressgateway".into()),
                ("app".into(), "istio-ingressgateway".into()),
            ],
        };
        let sc = ProxySpec {
            role: Role::Sidecar,
            name: "app".into(),
            namespace: "default".into(),
            labels: vec![("app".into(), "app".into())],
        };
        let gateway = timed("gateway (pilot-agent proxy router) ready", || {
            Agent::start(&bins.agent, &gw, &istiod.xds, dir)
        })?;
        let sidecar = timed("sidecar (pilot-agent proxy sidecar) ready", || {
            Agent::start(&bins.agent, &sc, &istiod.xds, dir)
        })?;
        Ok(Mesh {
            dir: dir.to_path_buf(),
            gateway,
            sidecar,
            app,
            istiod,
            kube,
            jaeger,
            registry,
            image,
            ports,
            repo: tools.repo.clone(),
        })
    }

    /// The shipped manifest `istio/<file>` with the e2e's image and `extra` edits.
    pub fn shipped(&self, file: &str, extra: PluginEdits) -> Result<String, String> {
        let or = |v: &String, d: &String| if v.is_empty() { d.clone() } else { v.clone() };
        let edits = PluginEdits {
            url: or(&extra.url, &self.image.0),
            sha256: or(&extra.sha256, &self.image.1),
            ..extra
        };
        objects::shipped(&self.repo.join("istio").join(file), &edits)
    }

    /// Saves both proxies' `/config_dump` and `/stats` and istiod's view of them into the run
    /// directory as `<case>-<proxy>-{config_dump.json,stats.txt}`; returns the dumps' paths.
    pub fn save_dumps(&self, case: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for a in [&self.gateway, &self.sidecar] {
            for (path, file) in [
                ("/config_dump", "config_dump.json"),
                ("/stats", "stats.txt"),
            ] {
                let f = self.dir.join(format!("{case}-{}-{file}", a.spec.name));
                if let Ok(body) = a.admin_get(path) {
                    if std::fs::write(&f, body).is_ok() && file.ends_with(".json") {
                        out.push(f);
                    }
                }
            }
        }
        if let Ok(s) = self.istiod.debug("/debug/syncz") {
            let _ = std::fs::write(self.dir.join(format!("{case}-istiod-syncz.json")), s);
        }
        out
    }

    /// One GET of `/e2e/<case>/<i>` through the gateway; its status (0: no answer).
    pub fn send_one(&self, case: &str, i: usize) -> u16 {
        let addr = format!("127.0.0.1:{}", self.ports.gateway);
        let hs = vec![("host".to_string(), "app.example.com".to_string())];
        http::send(
            &addr,
            "GET",
            &format!("/e2e/{case}/{i}"),
            &hs,
            &[],
            Duration::from_secs(10),
        )
        .map_or(0, |r| r.status)
    }

    /// Sends `n` GETs to the gateway under `/e2e/<case>/<i>`; the statuses.
    pub fn send(&self, case: &str, n: usize) -> Vec<u16> {
        let addr = format!("127.0.0.1:{}", self.ports.gateway);
        (0..n)
            .map(|i| {
                let hs = vec![("host".to_string(), "app.example.com".to_string())];
                http::send(
                    &addr,
                    "GET",
                    &format!("/e2e/{case}/{i}"),
                    &hs,
                    &[],
                    Duration::from_secs(10),
                )
                .map_or(0, |r| r.status)
            })
            .collect()
    }
}

fn app_spec() -> UpstreamSpec {
    UpstreamSpec {
        name: "app".into(),
        next: None,
        body: None,
        responses: Vec::new(),
        report_span: Some(ReportSpan {
            service: "app".into(),
            w3c_only: false,
            shared_rpc: false,
        }),
    }
}

/// Builds the OCI image of the module (the shape `make image` writes) and pushes it; returns the
/// `oci://` URL and the digest a manifest's `sha256` carries.
fn push_image(wasm: &Path, registry: &str) -> Result<(String, String), String> {
    let module =
        std::fs::read(wasm).map_err(|e| format!("{}: {e} (run make build)", wasm.display()))?;
    let img = oci::build(&module, Variant::Image)?;
    let r = Reference::parse(&format!("{registry}/meshtrace:e2e"))?;
    let digest = push_http(&img, &r)?;
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or(&digest)
        .to_string();
    Ok((format!("oci://{registry}/meshtrace:e2e"), hex))
}

fn apply_crds(kube: &Kube, crds: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(crds)
        .map_err(|e| format!("{}: {e} (run make istio-tools)", crds.display()))?;
    kube.apply(&text)?;
    kube.kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "--all",
        ],
        None,
    )?;
    Ok(())
}

/// Waits until `cond` holds (polling every 250 ms) or `timeout` passes.
pub fn wait_for(
    timeout: Duration,
    mut cond: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < timeout {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("not reached after {timeout:?} {last}"))
}

/// Spans stored in Jaeger whose `http.url` contains `/e2e/<case>/`, grouped by trace id.
pub fn traces_of(
    jaeger: &RealCollector,
    case: &str,
) -> Result<std::collections::BTreeMap<String, Vec<Value>>, String> {
    let needle = format!("/e2e/{case}/");
    let spans = jaeger.read_spans()?;
    let ids: std::collections::BTreeSet<String> = spans
        .iter()
        .filter(|s| {
            s["tags"]["http.url"]
                .as_str()
                .is_some_and(|u| u.contains(&needle))
        })
        .filter_map(|s| s["traceId"].as_str().map(str::to_string))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for s in spans {
        if let Some(t) = s["traceId"].as_str().filter(|t| ids.contains(*t)) {
            out.entry(t.to_string())
                .or_insert_with(Vec::new)
                .push(s.clone());
        }
    }
    Ok(out)
}

/// The cases in the order they run. The first applies the shipped manifests the others start
/// from, so `--case` always runs it.
type Case = fn(&Mesh) -> bool;

const CASES: [(&str, Case); 8] = [
    ("trafficextension", super::cases::trafficextension),
    ("shared-id-app", super::shapes::shared_id_app),
    ("crd-rules", super::admission::crd_rules),
    ("native-tracing", super::cases::native_tracing),
    ("fail-strategies", super::cases::fail_strategies),
    ("live-update", super::cases::live_update),
    (
        "wasmplugin-envoyfilter",
        super::cases::wasmplugin_and_envoyfilter,
    ),
    ("accounting", super::cases::accounting),
];

/// Runs every case (or those whose name contains one of `only`); true when all passed. The run
/// directory is kept for reading.
pub fn run(tools: &Tools, bins: &MeshBins, only: &[String]) -> Result<bool, String> {
    let matches = |o: &String, name: &str| name.contains(o.as_str());
    if let Some(o) = only
        .iter()
        .find(|o| !CASES.iter().any(|(n, _)| matches(o, n)))
    {
        let names: Vec<&str> = CASES.iter().map(|(n, _)| *n).collect();
        return Err(format!("--case {o:?} matches none of {names:?}"));
    }
    let picked: Vec<_> = CASES
        .iter()
        .enumerate()
        .filter(|(i, (name, _))| {
            *i == 0 || only.is_empty() || only.iter().any(|o| matches(o, name))
        })
        .map(|(_, c)| c)
        .collect();
    let dir = crate::run::rundir::run_dir(&tools.repo, "istio-e2e")?;
    println!("istio-e2e: run directory {}", dir.display());
    let mesh = Mesh::start(tools, bins, &dir)?;
    let mut ok = true;
    for (_, case) in picked {
        ok &= case(&mesh);
    }
    println!(
        "istio-e2e: {}",
        if ok { "all cases passed" } else { "FAILED" }
    );
    Ok(ok)
}
