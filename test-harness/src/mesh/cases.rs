//! The istio-e2e cases. Each returns true when every check passed; each check prints one line.

use super::e2e::{traces_of, wait_for, Mesh};
use super::objects::PluginEdits;
use crate::deploy::istio::tracing_check_report;
use serde_json::Value;
use std::time::Duration;

pub(super) fn line(ok: bool, what: &str, msg: &str) -> bool {
    println!(
        "{} {what}{}",
        if ok { "PASS" } else { "FAIL" },
        if msg.is_empty() {
            String::new()
        } else {
            format!(": {msg}")
        }
    );
    ok
}

/// One extension config Envoy got over ECDS: its name, the type of its filter (Wasm, or the
/// RBAC filter the agent puts in place of a module it could not fetch), the local module file
/// and the plugin configuration string.
#[derive(Debug, Clone, Default)]
pub struct Ecds {
    pub name: String,
    pub filter_type: String,
    pub filename: Option<String>,
    pub configuration: String,
}

/// The `ecds_filters` of an Envoy config dump.
pub fn ecds_entries(dump: &str) -> Vec<Ecds> {
    let v: Value = serde_json::from_str(dump).unwrap_or_default();
    let mut out = Vec::new();
    for c in v["configs"].as_array().into_iter().flatten() {
        for f in c["ecds_filters"].as_array().into_iter().flatten() {
            let tc = &f["ecds_filter"]["typed_config"];
            let cfg = &tc["config"];
            out.push(Ecds {
                name: f["ecds_filter"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                filter_type: tc["@type"]
                    .as_str()
                    .unwrap_or_default()
                    .rsplit('.')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
                filename: cfg["vm_config"]["code"]["local"]["filename"]
                    .as_str()
                    .map(str::to_string),
                configuration: cfg["configuration"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            });
        }
    }
    out
}

/// Waits until `pred` holds for the ECDS entries of both proxies (gateway, sidecar).
pub(super) fn wait_ecds(
    mesh: &Mesh,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&[Ecds]) -> bool,
) -> Result<(Vec<Ecds>, Vec<Ecds>), String> {
    let mut last = (Vec::new(), Vec::new());
    let r = wait_for(timeout, || {
        let g = ecds_entries(&mesh.gateway.admin_get("/config_dump")?);
        let s = ecds_entries(&mesh.sidecar.admin_get("/config_dump")?);
        let ok = pred(&g) && pred(&s);
        last = (g, s);
        Ok(ok)
    });
    r.map(|()| last.clone())
        .map_err(|e| format!("{what}: {e}; gateway {:?}; sidecar {:?}", last.0, last.1))
}

/// Every meshtrace extension there runs the module from the agent's cache; a sidecar (namespace
/// `default`) has both of its extensions, inbound and outbound (they may arrive in two pushes).
fn loaded(kind: &str) -> impl Fn(&[Ecds]) -> bool + '_ {
    move |es: &[Ecds]| {
        let ours: Vec<&Ecds> = es
            .iter()
            .filter(|e| e.name.contains(kind) && e.name.contains("meshtrace"))
            .collect();
        let sidecar = ours.iter().any(|e| e.name.contains("/default."));
        let both = ["meshtrace-inbound", "meshtrace-outbound"]
            .iter()
            .all(|d| ours.iter().any(|e| e.name.contains(d)));
        !ours.is_empty()
            && (!sidecar || both)
            && ours.iter().all(|e| {
                e.filter_type == "Wasm"
                    && e.filename
                        .as_deref()
                        .is_some_and(|f| f.starts_with("/var/lib/istio/data/"))
            })
    }
}

/// Removes every meshtrace resource (TrafficExtension, WasmPlugin, EnvoyFilter) of a case.
fn delete_plugins(mesh: &Mesh) -> Result<(), String> {
    mesh.kube
        .kubectl(&["delete", "--all-namespaces", "--all", "--wait=true", "trafficextensions.extensions.istio.io,wasmplugins.extensions.istio.io,envoyfilters.networking.istio.io"], None)
        .map(|_| ())
}

pub(super) fn apply_shipped(
    mesh: &Mesh,
    files: &[&str],
    edits: &PluginEdits,
) -> Result<(), String> {
    for f in files {
        mesh.kube.apply(&mesh.shipped(f, edits.clone())?)?;
    }
    Ok(())
}

pub(super) const TE_FILES: [&str; 2] = [
    "trafficextension-gateway.yaml",
    "trafficextension-sidecar.yaml",
];
const WP_FILES: [&str; 2] = ["wasmplugin-gateway.yaml", "wasmplugin-sidecar.yaml"];
/// The three services of one trace, root first: gateway, sidecar (both meshtrace), the app.
const CHAIN: [&str; 3] = ["istio-ingressgateway.istio-system", "app.default", "app"];

pub(super) fn rate_one() -> PluginEdits {
    PluginEdits {
        rate: Some(1.0),
        ..Default::default()
    }
}

/// Waits until neither proxy's listeners nor extension configs changed for 2 s: istiod may push
/// a resource in more than one step, and each step replaces meshtrace's VM (its buffered spans
/// are then counted dropped, not exported: a trace sent meanwhile would miss them).
fn settled(mesh: &Mesh) -> Result<(), String> {
    let version = || -> Result<String, String> {
        let mut v = String::new();
        for a in [&mesh.gateway, &mesh.sidecar] {
            for r in ["dynamic_listeners", "ecds_filters"] {
                v.push_str(&a.admin_get(&format!("/config_dump?resource={r}"))?);
            }
        }
        Ok(v)
    };
    let mut last = version()?;
    let mut stable_since = std::time::Instant::now();
    wait_for(Duration::from_secs(30), || {
        let now = version()?;
        if now != last {
            last = now;
            stable_since = std::time::Instant::now();
        }
        Ok(stable_since.elapsed() >= Duration::from_secs(2))
    })
}

/// `n` requests of `case` through the gateway, all 200, then one trace per request in Jaeger,
/// each the chain of [`CHAIN`].
fn traced_requests(mesh: &Mesh, case: &str, n: usize) -> bool {
    if let Err(e) = settled(mesh) {
        return line(false, "both proxies' configuration settled", &e);
    }
    let statuses = mesh.send(case, n);
    let good = statuses.iter().filter(|s| **s == 200).count();
    let mut ok = line(
        good == n,
        &format!("{n} requests through the gateway answered 200"),
        &format!("{good} did"),
    );
    let mut traces = Traces::default();
    let r = wait_for(Duration::from_secs(30), || {
        traces = traces_of(&mesh.jaeger, case)?;
        Ok(traces.len() >= n && traces.values().all(|t| t.len() >= CHAIN.len()))
    });
    ok &= line(
        r.is_ok(),
        &format!("{n} traces of {} spans in Jaeger", CHAIN.len()),
        &shapes(&traces),
    );
    ok & check_tree(&traces, &CHAIN)
}

/// Case 1: seed topology a configured by istiod through the shipped TrafficExtensions.
pub fn trafficextension(mesh: &Mesh) -> bool {
    println!("== case 1: TrafficExtension (istio/trafficextension-*.yaml) + telemetry.yaml, module from the OCI registry");
    let apply = || -> Result<(), String> {
        apply_shipped(mesh, &TE_FILES, &rate_one())?;
        mesh.kube.apply(
            &std::fs::read_to_string(mesh.repo.join("istio/telemetry.yaml"))
                .map_err(|e| e.to_string())?,
        )?;
        Ok(())
    };
    if let Err(e) = apply() {
        return line(false, "apply the shipped manifests", &e);
    }
    let mut ok = match wait_ecds(
        mesh,
        Duration::from_secs(60),
        "meshtrace loaded",
        loaded("trafficextension"),
    ) {
        Ok((g, s)) => line(
            true,
            "both Envoys run meshtrace (ECDS) from a file in the agent's cache",
            &format!(
                "gateway {:?}, sidecar {:?}",
                g.iter().map(|e| (&e.name, &e.filename)).collect::<Vec<_>>(),
                s.iter().map(|e| &e.name).collect::<Vec<_>>()
            ),
        ),
        Err(e) => return line(false, "meshtrace loaded", &e),
    };
    let registry = mesh
        .image
        .0
        .trim_start_matches("oci://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    for a in [&mesh.gateway, &mesh.sidecar] {
        let fetched = a
            .daemon
            .log_text()
            .lines()
            .any(|l| l.contains("fetching image meshtrace") && l.contains(&registry));
        ok &= line(
            fetched,
            &format!("{}'s agent log shows the pull from {registry}", a.spec.name),
            "",
        );
    }
    ok &= traced_requests(mesh, "te", 20);
    mesh.save_dumps("te");
    ok
}

/// `service:kind` of each span of the first few traces, for a failure message.
pub fn shapes(traces: &Traces) -> String {
    let mut s = format!("{} traces; ", traces.len());
    for spans in traces.values().take(3) {
        let parts: Vec<String> = spans
            .iter()
            .map(|x| {
                format!(
                    "{}:{}",
                    x["localEndpoint"]["serviceName"].as_str().unwrap_or("?"),
                    x["kind"].as_str().unwrap_or("?")
                )
            })
            .collect();
        s.push_str(&format!("[{}] ", parts.join(", ")));
    }
    s
}

pub type Traces = std::collections::BTreeMap<String, Vec<Value>>;

/// Every trace is one chain: the first service's span is the root, each next service's span a
/// child of the one before, all SERVER spans.
pub fn check_tree(traces: &Traces, chain: &[&str]) -> bool {
    let mut bad = Vec::new();
    for (id, spans) in traces {
        let by = |svc: &str| {
            spans
                .iter()
                .find(|s| s["localEndpoint"]["serviceName"] == svc)
        };
        let mut parent: Option<&Value> = None;
        for svc in chain {
            let Some(span) = by(svc) else {
                bad.push(format!("{id}: no span of {svc}"));
                break;
            };
            let want_parent = parent.map(|p| p["id"].clone()).unwrap_or(Value::Null);
            let got_parent = span.get("parentId").cloned().unwrap_or(Value::Null);
            if got_parent != want_parent {
                bad.push(format!(
                    "{id}: {svc}'s parent is {got_parent}, want {want_parent}"
                ));
            }
            if span["kind"] != "SERVER" {
                bad.push(format!("{id}: {svc}'s span kind is {}", span["kind"]));
            }
            parent = Some(span);
        }
        if spans.len() != chain.len() {
            bad.push(format!("{id}: {} spans, want {}", spans.len(), chain.len()));
        }
    }
    line(
        bad.is_empty() && !traces.is_empty(),
        &format!(
            "each trace is one chain {} (root first), SERVER spans, parents linked",
            chain.join(" → ")
        ),
        &bad.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
    )
}

/// Envoy's meshtrace counters (`wasmcustom.meshtrace_<name>`) of one proxy.
fn counters(a: &super::agent::Agent) -> Result<std::collections::BTreeMap<String, u64>, String> {
    let text = a.admin_get("/stats?filter=meshtrace_")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter_map(|(k, v)| {
            Some((
                k.rsplit("meshtrace_").next()?.to_string(),
                v.trim().parse().ok()?,
            ))
        })
        .collect())
}

/// Spans stored in Jaeger that meshtrace recorded (only meshtrace sets `sampling.reason`).
fn is_meshtrace(span: &Value) -> bool {
    span["tags"]["sampling.reason"].is_string()
}

/// Case 5: Istio's own tracer. With telemetry.yaml the connection managers istiod generates carry
/// no tracer and the app receives meshtrace's context; without it, tracing-check reports the real
/// dumps and the app receives the context Envoy's router wrote over meshtrace's.
pub fn native_tracing(mesh: &Mesh) -> bool {
    println!("== case 5: Istio's own tracing (istio/telemetry.yaml on, then off)");
    let codes = |case: &str| -> Vec<u8> {
        mesh.save_dumps(case)
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
            .map(|d| tracing_check_report(case, &d).1)
            .collect()
    };
    let on = codes("telemetry-on");
    let mut ok = line(
        on.len() == 2 && on.iter().all(|c| *c == 0),
        "with telemetry.yaml: tracing-check passes istiod's config in both proxies (exit 0)",
        &format!("exit codes {on:?}"),
    );
    if let Err(e) = mesh.kube.kubectl(
        &[
            "delete",
            "--all-namespaces",
            "--all",
            "telemetries.telemetry.istio.io",
        ],
        None,
    ) {
        return line(false, "delete the Telemetry resources", &e);
    }
    let mut off = Vec::new();
    let r = wait_for(Duration::from_secs(30), || {
        off = codes("telemetry-off");
        Ok(off.len() == 2 && off.iter().all(|c| *c == 1))
    });
    ok &= line(r.is_ok(), "without it: istiod generates a native Zipkin tracer next to meshtrace; tracing-check reports it in both proxies (exit 1)", &format!("exit codes {off:?}"));
    // Connections opened before the push are served by the draining listeners (drain time 1 s).
    std::thread::sleep(Duration::from_secs(2));
    let statuses = mesh.send("native", 10);
    ok &= line(
        statuses.iter().all(|s| *s == 200),
        "10 requests answered 200",
        &format!("{statuses:?}"),
    );
    let mut traces = Traces::default();
    let _ = wait_for(Duration::from_secs(20), || {
        traces = traces_of(&mesh.jaeger, "native")?;
        Ok(traces.len() >= 10 && traces.values().all(|t| t.len() >= 5))
    });
    let recs: Vec<_> = mesh
        .app
        .records()
        .into_iter()
        .filter(|r| r.path.contains("/e2e/native/"))
        .collect();
    let (mut overwritten, mut kept) = (0, 0);
    for r in &recs {
        let got = r.header("x-b3-spanid").unwrap_or_default();
        let ours = traces.values().flatten().any(|s| {
            is_meshtrace(s)
                && s["localEndpoint"]["serviceName"] == "app.default"
                && s["id"] == got.as_str()
        });
        if ours {
            kept += 1
        } else {
            overwritten += 1
        }
    }
    let native = traces
        .values()
        .flatten()
        .filter(|s| !is_meshtrace(s) && s["localEndpoint"]["serviceName"] != "app")
        .count();
    ok &= line(recs.len() == 10 && overwritten == 10, "the app received the router's x-b3-spanid, not the one meshtrace's sidecar span wrote (native tracing overwrites it)", &format!("{overwritten} overwritten, {kept} meshtrace's, of {}; {native} native Envoy spans in Jaeger next to meshtrace's; {}", recs.len(), shapes(&traces)));
    match std::fs::read_to_string(mesh.repo.join("istio/telemetry.yaml"))
        .map_err(|e| e.to_string())
        .and_then(|t| mesh.kube.apply(&t))
    {
        Ok(_) => {}
        Err(e) => return line(false, "re-apply telemetry.yaml", &e),
    }
    let r = wait_for(Duration::from_secs(30), || {
        Ok(codes("telemetry-again").iter().all(|c| *c == 0))
    });
    ok & line(
        r.is_ok(),
        "telemetry.yaml re-applied: no native tracer again",
        "",
    )
}

/// A digest that is not the image's.
const WRONG_SHA256: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// Case 3: a module that fails its digest check, with each fail strategy, and a configuration
/// meshtrace refuses.
pub fn fail_strategies(mesh: &Mesh) -> bool {
    println!("== case 3: fail strategies (wrong sha256 with FAIL_OPEN / FAIL_CLOSE, pluginConfig rate 1.5)");
    let mut ok = true;
    let open = PluginEdits {
        sha256: WRONG_SHA256.into(),
        ..rate_one()
    };
    if let Err(e) = apply_shipped(mesh, &TE_FILES, &open) {
        return line(false, "apply the wrong digest", &e);
    }
    let rbac = |es: &[Ecds]| {
        let ours: Vec<&Ecds> = es.iter().filter(|e| e.name.contains("meshtrace")).collect();
        !ours.is_empty() && ours.iter().all(|e| e.filter_type == "RBAC")
    };
    ok &= line_r(
        wait_ecds(mesh, Duration::from_secs(60), "wrong digest", rbac),
        "wrong sha256: both agents refuse the module and hand Envoy an RBAC filter in its place",
    );
    for a in [&mesh.gateway, &mesh.sidecar] {
        let reason = a
            .daemon
            .log_text()
            .lines()
            .rev()
            .find(|l| l.contains("does not match"))
            .map(str::to_string);
        ok &= line(
            reason.is_some(),
            &format!("{}'s agent log names the reason", a.spec.name),
            reason
                .as_deref()
                .unwrap_or("no digest-mismatch line")
                .trim(),
        );
    }
    let statuses = mesh.send("badsha-open", 10);
    ok &= line(
        statuses.iter().all(|s| *s == 200),
        "FAIL_OPEN: requests pass (200)",
        &format!("{statuses:?}"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let n = traces_of(&mesh.jaeger, "badsha-open")
        .map(|t| t.len())
        .unwrap_or(usize::MAX);
    ok &= line(
        n == 0,
        "FAIL_OPEN: untraced (no span in Jaeger)",
        &format!("{n} traces"),
    );
    let close = PluginEdits {
        fail_strategy: Some("FAIL_CLOSE".into()),
        ..open
    };
    if let Err(e) = apply_shipped(mesh, &TE_FILES, &close) {
        return line(false, "apply FAIL_CLOSE", &e);
    }
    let mut statuses = Vec::new();
    let r = wait_for(Duration::from_secs(30), || {
        statuses = mesh.send("badsha-close", 5);
        Ok(statuses.iter().all(|s| *s == 403))
    });
    ok &= line(
        r.is_ok(),
        "FAIL_CLOSE: requests are denied (403 from the RBAC filter the agent put in place)",
        &format!("{statuses:?}"),
    );
    ok & bad_config(mesh)
}

fn line_r<T>(r: Result<T, String>, what: &str) -> bool {
    match r {
        Ok(_) => line(true, what, ""),
        Err(e) => line(false, what, &e),
    }
}

/// The module loads but refuses its configuration (sampling.rate 1.5).
fn bad_config(mesh: &Mesh) -> bool {
    let mut ok = true;
    if let Err(e) = apply_shipped(mesh, &TE_FILES, &rate_one()) {
        return line(false, "restore the good TrafficExtensions", &e);
    }
    ok &= line_r(
        wait_ecds(
            mesh,
            Duration::from_secs(60),
            "restored",
            loaded("trafficextension"),
        ),
        "good TrafficExtensions restored: meshtrace loaded again",
    );
    let pc = serde_json::json!({"sampling": {"rate": 1.5}, "collector": {"cluster": "outbound|9411||zipkin.istio-system.svc.cluster.local"}});
    let bad = PluginEdits {
        plugin_config: Some(pc),
        ..Default::default()
    };
    if let Err(e) = apply_shipped(mesh, &TE_FILES[..1], &bad) {
        return line(false, "apply rate 1.5", &e);
    }
    let mut refusal = None;
    let _ = wait_for(Duration::from_secs(30), || {
        refusal = mesh
            .gateway
            .daemon
            .log_text()
            .lines()
            .find(|l| l.contains("sampling.rate") && l.contains("meshtrace"))
            .map(str::to_string);
        Ok(refusal.is_some())
    });
    ok &= line(
        refusal.is_some(),
        "sampling.rate 1.5: meshtrace refuses, its log line names the field",
        refusal.as_deref().unwrap_or("no such line").trim(),
    );
    let statuses = mesh.send("badconfig", 10);
    ok &= line(
        statuses.iter().all(|s| *s == 200),
        "FAIL_OPEN: traffic passes",
        &format!("{statuses:?}"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let traces = traces_of(&mesh.jaeger, "badconfig").unwrap_or_default();
    let gw_spans = traces
        .values()
        .flatten()
        .filter(|s| s["localEndpoint"]["serviceName"] == CHAIN[0])
        .count();
    let nack = mesh.gateway.daemon.log_text().lines().any(|l| {
        l.contains("rejected: Unable to create Wasm plugin istio-system.meshtrace-gateway")
    });
    ok &= line(
        nack && gw_spans == 10,
        "Envoy rejects the update (NACK) and keeps the last good meshtrace configuration: every request still traced",
        &format!("NACK logged: {nack}; {gw_spans} gateway spans for 10 requests"),
    );
    // FAIL_CLOSE: the refused extension config leaves the filter with no configuration at all
    // (istiod gives a fail-closed extension no default), and Envoy answers 500, not the agent's
    // 403 of an unfetchable module.
    for (strategy, want) in [("FAIL_OPEN", 200), ("FAIL_CLOSE", 500)] {
        ok &= bad_config_fresh(mesh, strategy, want);
    }
    ok
}

/// A refused configuration on a proxy that never had a good one: no last good config to keep,
/// so the fail strategy decides (`want`: the status every request gets).
fn bad_config_fresh(mesh: &Mesh, strategy: &str, want: u16) -> bool {
    let what = format!("rate 1.5 on a gateway that never ran meshtrace, {strategy}");
    let none_left = |es: &[Ecds]| !es.iter().any(|e| e.name.contains("meshtrace"));
    if let Err(e) = delete_plugins(mesh).and_then(|()| {
        wait_ecds(mesh, Duration::from_secs(60), "plugins gone", none_left).map(|_| ())
    }) {
        return line(false, &format!("{what}: previous extensions removed"), &e);
    }
    let bad = PluginEdits {
        plugin_config: Some(serde_json::json!({"sampling": {"rate": 1.5}})),
        fail_strategy: Some(strategy.into()),
        ..Default::default()
    };
    if let Err(e) = apply_shipped(mesh, &TE_FILES[..1], &bad) {
        return line(false, &format!("{what}: applied"), &e);
    }
    let case = format!("fresh-{}", strategy.to_ascii_lowercase().replace('_', ""));
    let mut statuses = Vec::new();
    // istiod's push takes a moment: the answer settles once the gateway's listener has the filter.
    let settled = wait_for(Duration::from_secs(30), || {
        statuses = mesh.send(&case, 5);
        Ok(statuses.iter().all(|s| *s == want))
    });
    mesh.save_dumps(&case);
    let body = crate::run::http::send(
        &format!("127.0.0.1:{}", mesh.ports.gateway),
        "GET",
        &format!("/e2e/{case}/body"),
        &[("host".to_string(), "app.example.com".to_string())],
        &[],
        Duration::from_secs(10),
    )
    .map(|r| String::from_utf8_lossy(&r.body).to_string())
    .unwrap_or_else(|e| e);
    std::thread::sleep(Duration::from_secs(2));
    let gw_spans = traces_of(&mesh.jaeger, &case)
        .unwrap_or_default()
        .values()
        .flatten()
        .filter(|s| s["localEndpoint"]["serviceName"] == CHAIN[0])
        .count();
    let result = line(
        settled.is_ok() && gw_spans == 0,
        &format!("{what}: every request answered {want}, none traced"),
        &format!("last statuses {statuses:?}, body {body:?}; {gw_spans} gateway spans"),
    );
    let _ = delete_plugins(mesh);
    result
}

/// Case 4: the TrafficExtensions' sampling rate changes 1.0 → 0.0 while a client sends steady
/// traffic: istiod pushes it, no request fails, the new rate applies, and every span recorded
/// under the old configuration is exported or counted dropped.
pub fn live_update(mesh: &Mesh) -> bool {
    println!("== case 4: live update of pluginConfig (rate 1.0 → 0.0) under steady traffic");
    if let Err(e) = apply_shipped(mesh, &TE_FILES, &rate_one()) {
        return line(false, "apply rate 1.0", &e);
    }
    let rate_is = |r: &'static str| {
        // Every extension there (and at least the expected ones: `all` of none is true).
        move |es: &[Ecds]| {
            loaded("trafficextension")(es)
                && es.iter().filter(|e| e.name.contains("meshtrace")).all(|e| {
                    e.filter_type == "Wasm" && e.configuration.replace(' ', "").contains(r)
                })
        }
    };
    let mut ok = line_r(
        wait_ecds(
            mesh,
            Duration::from_secs(60),
            "rate 1.0",
            rate_is("\"rate\":1"),
        ),
        "rate 1.0 running in both proxies",
    );
    ok &= line_r(
        settled(mesh),
        "both proxies' configuration settled before the traffic",
    );
    let before = [
        counters(&mesh.gateway).unwrap_or_default(),
        counters(&mesh.sidecar).unwrap_or_default(),
    ];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let switched_at = std::sync::Mutex::new(None::<usize>);
    let sent = std::sync::Mutex::new(Vec::<u16>::new());
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let st = mesh.send_one("live", i);
                sent.lock().unwrap_or_else(|p| p.into_inner()).push(st);
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        let zero = PluginEdits {
            rate: Some(0.0),
            ..Default::default()
        };
        let r = apply_shipped(mesh, &TE_FILES, &zero).and_then(|()| {
            wait_ecds(
                mesh,
                Duration::from_secs(60),
                "rate 0.0",
                rate_is("\"rate\":0"),
            )
        });
        ok &= line_r(
            r,
            "rate 0.0 pushed by istiod to both proxies during the traffic",
        );
        *switched_at.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(sent.lock().unwrap_or_else(|p| p.into_inner()).len());
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let sent = sent.into_inner().unwrap_or_else(|p| p.into_inner());
    let after = switched_at
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or(sent.len());
    let failed = sent.iter().filter(|s| **s != 200).count();
    ok &= line(
        failed == 0 && sent.len() > 50,
        "no request failed during the switch",
        &format!("{failed} of {} failed", sent.len()),
    );
    std::thread::sleep(Duration::from_secs(2));
    let traces = traces_of(&mesh.jaeger, "live").unwrap_or_default();
    let index = |u: &str| u.rsplit('/').next().and_then(|i| i.parse::<usize>().ok());
    let late: Vec<&str> = traces
        .values()
        .flatten()
        .filter_map(|s| s["tags"]["http.url"].as_str())
        .filter(|u| index(u).is_some_and(|i| i >= after))
        .collect();
    ok &= line(
        late.is_empty() && !traces.is_empty(),
        "the new rate applies: no request sent after the push was traced",
        &format!(
            "{} traces before the switch, {} spans after it (of {} requests after)",
            traces.len(),
            late.len(),
            sent.len() - after
        ),
    );
    ok & buffered_accounted(mesh, &before)
}

/// After the switch, in each proxy the spans recorded during the case were exported or counted
/// dropped, and Jaeger holds exactly the exported ones.
fn buffered_accounted(mesh: &Mesh, before: &[std::collections::BTreeMap<String, u64>; 2]) -> bool {
    let mut ok = true;
    let mut exported = 0;
    for (a, b) in [&mesh.gateway, &mesh.sidecar].into_iter().zip(before) {
        let mut d = std::collections::BTreeMap::new();
        let r = wait_for(Duration::from_secs(20), || {
            let now = counters(a)?;
            d = now
                .iter()
                .map(|(k, v)| (k.clone(), v.saturating_sub(b.get(k).copied().unwrap_or(0))))
                .collect();
            let get = |k: &str| d.get(k).copied().unwrap_or(0);
            Ok(get("spans_recorded") > 0
                && get("spans_recorded") == get("spans_exported") + get("spans_dropped"))
        });
        let get = |k: &str| d.get(k).copied().unwrap_or(0);
        exported += get("spans_exported");
        ok &= line(
            r.is_ok(),
            &format!(
                "{}: every span recorded in the case exported or counted dropped",
                a.spec.name
            ),
            &format!(
                "recorded {}, exported {}, dropped {} (shutdown {}, export failed {})",
                get("spans_recorded"),
                get("spans_exported"),
                get("spans_dropped"),
                get("spans_dropped_shutdown"),
                get("spans_dropped_export_failed")
            ),
        );
    }
    let stored = traces_of(&mesh.jaeger, "live")
        .map(|t| t.values().flatten().filter(|s| is_meshtrace(s)).count() as u64)
        .unwrap_or(0);
    ok & line(
        stored == exported,
        "Jaeger stored exactly the spans the proxies counted exported",
        &format!("exported {exported}, stored {stored}"),
    )
}

/// Case 2: the same topology through the shipped WasmPlugins (istiod converts them to
/// TrafficExtensions) and through the shipped EnvoyFilters (module from a file in the proxy).
pub fn wasmplugin_and_envoyfilter(mesh: &Mesh) -> bool {
    println!("== case 2: WasmPlugin (istio/wasmplugin-*.yaml), then EnvoyFilter (istio/envoyfilter.yaml)");
    if let Err(e) = delete_plugins(mesh).and_then(|()| apply_shipped(mesh, &WP_FILES, &rate_one()))
    {
        return line(
            false,
            "replace the TrafficExtensions by the WasmPlugins",
            &e,
        );
    }
    let mut ok = match wait_ecds(
        mesh,
        Duration::from_secs(60),
        "WasmPlugins",
        loaded("wasmplugin"),
    ) {
        Ok((g, s)) => {
            let names: Vec<&String> = g
                .iter()
                .chain(&s)
                .map(|e| &e.name)
                .filter(|n| n.contains("wasmplugin"))
                .collect();
            line(names.iter().all(|n| n.ends_with("~istio-translated-wasmplugin")), "both Envoys run meshtrace from the WasmPlugins, which istiod translated into TrafficExtensions", &format!("{names:?}"))
        }
        Err(e) => line(false, "WasmPlugins loaded", &e),
    };
    ok &= traced_requests(mesh, "wp", 10);
    mesh.save_dumps("wp");
    let ef = std::fs::read_to_string(mesh.repo.join("istio/envoyfilter.yaml"))
        .map(|t| t.replace("\"rate\": 0.01", "\"rate\": 1.0"));
    if let Err(e) = delete_plugins(mesh)
        .and_then(|()| ef.map_err(|e| e.to_string()))
        .and_then(|t| mesh.kube.apply(&t))
    {
        return line(false, "replace the WasmPlugins by the EnvoyFilters", &e);
    }
    let file = "/var/local/lib/wasm/meshtrace.wasm";
    let r = wait_for(Duration::from_secs(60), || {
        let g = mesh
            .gateway
            .admin_get("/config_dump?resource=dynamic_listeners")?;
        let s = mesh
            .sidecar
            .admin_get("/config_dump?resource=dynamic_listeners")?;
        let no_ecds = |d: &str| {
            !ecds_entries(d)
                .iter()
                .any(|e| e.name.contains("meshtrace") && e.filter_type == "Wasm")
        };
        Ok(g.contains(file)
            && s.contains(file)
            && no_ecds(&mesh.gateway.admin_get("/config_dump")?)
            && no_ecds(&mesh.sidecar.admin_get("/config_dump")?))
    });
    ok &= line_r(r, &format!("both Envoys' listeners carry the EnvoyFilter's wasm filter ({file}), no ECDS meshtrace left"));
    ok & traced_requests(mesh, "ef", 10)
}

/// Nothing lost silently, over every case: in each proxy every recorded span was exported or
/// counted dropped. (Jaeger's count is compared per case in case 4: Envoy drops a plugin's
/// counters with the last filter that uses them, so whole-run totals do not add up.)
pub fn accounting(mesh: &Mesh) -> bool {
    println!("== accounting over all cases");
    let mut ok = true;
    for a in [&mesh.gateway, &mesh.sidecar] {
        let mut c = Default::default();
        let r = wait_for(Duration::from_secs(20), || {
            c = counters(a)?;
            let get = |k: &str| c.get(k).copied().unwrap_or(0);
            Ok(get("spans_recorded") > 0
                && get("spans_recorded") == get("spans_exported") + get("spans_dropped"))
        });
        let get = |k: &str| c.get(k).copied().unwrap_or(0);
        ok &= line(r.is_ok(), &format!("{}: recorded = exported + dropped", a.spec.name), &format!("recorded {}, exported {}, dropped {} (shutdown {}, export failed {}, queue full {})", get("spans_recorded"), get("spans_exported"), get("spans_dropped"), get("spans_dropped_shutdown"), get("spans_dropped_export_failed"), get("spans_dropped_queue_full")));
    }
    ok
}
