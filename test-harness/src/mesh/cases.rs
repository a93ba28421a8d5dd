//! The istio-e2e cases. Each returns true when every check passed; each check prints one line.

use super::e2e::{traces_of, wait_for, Mesh};
use super::objects::PluginEdits;
use serde_json::Value;
use std::time::Duration;

fn line(ok: bool, what: &str, msg: &str) -> bool {
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

/// The local files of the Wasm extensions Envoy got over ECDS (`ecds_filters` of the
/// EcdsConfigDump): where the agent put the module it fetched.
pub fn ecds_filenames(dump: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(dump).unwrap_or_default();
    let mut out = Vec::new();
    for c in v["configs"].as_array().into_iter().flatten() {
        for f in c["ecds_filters"].as_array().into_iter().flatten() {
            let cfg = &f["ecds_filter"]["typed_config"]["config"];
            if let Some(name) = cfg["vm_config"]["code"]["local"]["filename"].as_str() {
                out.push(name.to_string());
            }
        }
    }
    out
}

fn ecds_filename(dump: &str) -> Option<String> {
    ecds_filenames(dump).into_iter().next()
}

/// Waits until both proxies run a meshtrace extension from a local file (the agent's cache).
fn wait_loaded(mesh: &Mesh, timeout: Duration) -> Result<(String, String), String> {
    let mut found = (String::new(), String::new());
    wait_for(timeout, || {
        let g = mesh.gateway.admin_get("/config_dump")?;
        let s = mesh.sidecar.admin_get("/config_dump")?;
        match (ecds_filename(&g), ecds_filename(&s)) {
            (Some(a), Some(b)) => {
                found = (a, b);
                Ok(true)
            }
            _ => Ok(false),
        }
    })
    .map_err(|e| format!("meshtrace not loaded in both proxies: {e}"))?;
    Ok(found)
}

/// Case 1: seed topology a configured by istiod through the shipped TrafficExtensions.
pub fn trafficextension(mesh: &Mesh) -> bool {
    println!("== case 1: TrafficExtension (istio/trafficextension-*.yaml) + telemetry.yaml");
    let apply = || -> Result<(), String> {
        let rate = PluginEdits {
            rate: Some(1.0),
            ..Default::default()
        };
        mesh.kube
            .apply(&mesh.shipped("trafficextension-gateway.yaml", rate.clone())?)?;
        mesh.kube
            .apply(&mesh.shipped("trafficextension-sidecar.yaml", rate)?)?;
        mesh.kube.apply(
            &std::fs::read_to_string(mesh.repo.join("istio/telemetry.yaml"))
                .map_err(|e| e.to_string())?,
        )?;
        Ok(())
    };
    if let Err(e) = apply() {
        return line(false, "apply the shipped manifests", &e);
    }
    let mut ok = true;
    match wait_loaded(mesh, Duration::from_secs(60)) {
        Ok((g, s)) => {
            ok &= line(
                true,
                "both Envoys run meshtrace from the agent's cache",
                &format!("gateway {g}, sidecar {s}"),
            )
        }
        Err(e) => return line(false, "meshtrace loaded", &e),
    }
    let statuses = mesh.send("te", 20);
    let good = statuses.iter().filter(|s| **s == 200).count();
    ok &= line(
        good == 20,
        "20 requests through the gateway answered 200",
        &format!("{statuses:?}"),
    );
    let mut traces = Default::default();
    let r = wait_for(Duration::from_secs(30), || {
        traces = traces_of(&mesh.jaeger, "te")?;
        Ok(traces.len() >= 20 && traces.values().all(|t| t.len() >= 3))
    });
    mesh.save_dumps("te");
    ok &= line(
        r.is_ok(),
        "20 traces of 3 spans in Jaeger",
        &shapes(&traces),
    );
    ok &= check_tree(
        &traces,
        &["istio-ingressgateway.istio-system", "app.default", "app"],
    );
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
