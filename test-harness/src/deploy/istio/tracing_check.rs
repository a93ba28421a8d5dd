//! `tracing-check`: every HttpConnectionManager of an Envoy config dump (admin `/config_dump` or
//! `istioctl proxy-config ... -o json`) that has a native `tracing` block next to the meshtrace
//! filter is reported, because Envoy's router would overwrite meshtrace's x-b3-* headers.

use serde_json::Value as Json;
use std::path::PathBuf;

/// One HttpConnectionManager found in a config dump.
#[derive(Debug, Clone, PartialEq)]
pub struct HcmReport {
    /// The nearest enclosing listener name ("?" when unknown).
    pub listener: String,
    /// JSON pointer of the HttpConnectionManager.
    pub pointer: String,
    pub meshtrace: bool,
    /// The native `tracing` block, if any.
    pub tracing: Option<Json>,
}

pub(super) const HCM_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn looks_like_meshtrace_wasm(tc: &Json) -> bool {
    if !tc["@type"]
        .as_str()
        .is_some_and(|t| t.ends_with("envoy.extensions.filters.http.wasm.v3.Wasm"))
    {
        return false;
    }
    let c = &tc["config"];
    let code = c["vm_config"]["code"].to_string();
    c["name"].as_str().is_some_and(|s| s.contains("meshtrace"))
        || c["root_id"]
            .as_str()
            .is_some_and(|s| s.contains("meshtrace"))
        || code.contains("meshtrace")
}

/// Names of ECDS filter configs (Istio delivers WasmPlugins this way) that are meshtrace.
fn ecds_meshtrace_names(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(m) => {
            if let Some(f) = m.get("ecds_filter") {
                if looks_like_meshtrace_wasm(&f["typed_config"]) {
                    if let Some(n) = f["name"].as_str() {
                        out.push(n.to_string());
                    }
                }
            }
            for c in m.values() {
                ecds_meshtrace_names(c, out);
            }
        }
        Json::Array(a) => a.iter().for_each(|c| ecds_meshtrace_names(c, out)),
        _ => {}
    }
}

fn is_meshtrace_filter(f: &Json, ecds: &[String]) -> bool {
    let name = f["name"].as_str().unwrap_or_default();
    name.contains("meshtrace")
        || ecds.iter().any(|n| n == name)
        || looks_like_meshtrace_wasm(&f["typed_config"])
        // Istio wraps ECDS filters in a composite / config_discovery entry named after the plugin.
        || f["config_discovery"]["config_source"].is_object() && name.contains("meshtrace")
}

fn walk_hcms(v: &Json, ptr: &str, listener: &str, ecds: &[String], out: &mut Vec<HcmReport>) {
    match v {
        Json::Object(m) => {
            let listener =
                if m.contains_key("filter_chains") || m.contains_key("default_filter_chain") {
                    m.get("name").and_then(Json::as_str).unwrap_or(listener)
                } else {
                    listener
                };
            if m.get("@type").and_then(Json::as_str) == Some(HCM_TYPE) {
                let meshtrace = m
                    .get("http_filters")
                    .and_then(Json::as_array)
                    .is_some_and(|fs| fs.iter().any(|f| is_meshtrace_filter(f, ecds)));
                out.push(HcmReport {
                    listener: listener.to_string(),
                    pointer: ptr.to_string(),
                    meshtrace,
                    tracing: m.get("tracing").cloned(),
                });
            }
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                walk_hcms(c, &format!("{ptr}/{k}"), listener, ecds, out);
            }
        }
        Json::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk_hcms(c, &format!("{ptr}/{i}"), listener, ecds, out);
            }
        }
        _ => {}
    }
}

/// Every HttpConnectionManager of a config dump (any JSON containing them: `/config_dump`,
/// `istioctl proxy-config listener|all -o json`).
pub fn scan_config_dump(dump: &Json) -> Vec<HcmReport> {
    let mut ecds = Vec::new();
    ecds_meshtrace_names(dump, &mut ecds);
    let mut out = Vec::new();
    walk_hcms(dump, "", "?", &ecds, &mut out);
    // A /config_dump repeats static listeners under `bootstrap`: count each listener once.
    if out.iter().any(|h| !h.pointer.contains("/bootstrap/")) {
        out.retain(|h| !h.pointer.contains("/bootstrap/"));
    }
    out
}

/// Exit codes of `tracing-check`.
pub const TRACING_OK: u8 = 0;
pub const TRACING_CONFLICT: u8 = 1;
pub const TRACING_ERROR: u8 = 2;
pub const TRACING_NO_MESHTRACE: u8 = 3;

/// The report text and exit code for one dump.
pub fn tracing_check_report(name: &str, dump: &Json) -> (String, u8) {
    let hcms = scan_config_dump(dump);
    let mut out = String::new();
    let with = hcms.iter().filter(|h| h.meshtrace).count();
    let mut conflicts = 0;
    for h in &hcms {
        let state = match (h.meshtrace, &h.tracing) {
            (true, Some(t)) => {
                conflicts += 1;
                format!(
                    "REPORT  native tracing next to meshtrace: {} — Envoy's router will overwrite meshtrace's x-b3-* headers; apply istio/telemetry.yaml (disableSpanReporting: true) to this workload",
                    short_tracing(t)
                )
            }
            (true, None) => "ok      meshtrace, no native tracing".to_string(),
            (false, Some(t)) => {
                format!("info    native tracing, no meshtrace: {}", short_tracing(t))
            }
            (false, None) => "info    neither meshtrace nor native tracing".to_string(),
        };
        out.push_str(&format!(
            "{state}\n        listener {} at {}\n",
            h.listener, h.pointer
        ));
    }
    let code = if conflicts > 0 {
        out.push_str(&format!(
            "FAIL {name}: {conflicts} of {with} HttpConnectionManager(s) with meshtrace also have native tracing\n"
        ));
        TRACING_CONFLICT
    } else if with == 0 {
        out.push_str(&format!(
            "FAIL {name}: no HttpConnectionManager with the meshtrace filter found among {} (wrong pod, or the WasmPlugin/EnvoyFilter is not applied?)\n",
            hcms.len()
        ));
        TRACING_NO_MESHTRACE
    } else {
        out.push_str(&format!(
            "PASS {name}: {with} HttpConnectionManager(s) with meshtrace, none with native tracing\n"
        ));
        TRACING_OK
    };
    (out, code)
}

fn short_tracing(t: &Json) -> String {
    let provider = t["provider"]["name"].as_str().unwrap_or("no provider");
    format!("tracing {{provider: {provider}}}")
}

/// Prints the report of every dump in `files`; the exit code is the worst finding (a conflict
/// before a dump without meshtrace).
pub fn tracing_check(files: &[PathBuf]) -> Result<u8, String> {
    let mut codes = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let dump: Json =
            serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", f.display()))?;
        let (report, code) = tracing_check_report(&f.display().to_string(), &dump);
        print!("{report}");
        codes.push(code);
    }
    Ok(if codes.contains(&TRACING_CONFLICT) {
        TRACING_CONFLICT
    } else if codes.contains(&TRACING_NO_MESHTRACE) {
        TRACING_NO_MESHTRACE
    } else {
        TRACING_OK
    })
}

#[cfg(test)]
mod tests {
    use super::super::config_dump::native_tracing_block;
    use super::*;
    use serde_json::json;

    #[test]
    fn tracing_check_table() {
        let hcm = |filters: Json, tracing: Option<Json>| {
            let mut h = json!({"@type": HCM_TYPE, "stat_prefix": "x", "http_filters": filters});
            if let Some(t) = tracing {
                h["tracing"] = t;
            }
            json!({"configs": [{"dynamic_listeners": [{"active_state": {"listener": {
                "name": "virtualInbound", "filter_chains": [{"filters": [{"name": "hcm", "typed_config": h}]}]}}}]}]})
        };
        let wasm = json!({"name": "envoy.filters.http.wasm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "meshtrace", "vm_config": {"code": {"local": {"filename": "/x/meshtrace.wasm"}}}}}});
        let ecds_ref =
            json!({"name": "default.tracer", "config_discovery": {"config_source": {"ads": {}}}});
        let router = json!({"name": "envoy.filters.http.router"});
        let tracing = native_tracing_block();
        let rows: Vec<(Json, u8)> = vec![
            (hcm(json!([wasm, router]), None), TRACING_OK),
            (
                hcm(json!([wasm, router]), Some(tracing.clone())),
                TRACING_CONFLICT,
            ),
            (
                hcm(json!([router]), Some(tracing.clone())),
                TRACING_NO_MESHTRACE,
            ),
            (hcm(json!([router]), None), TRACING_NO_MESHTRACE),
            (
                hcm(
                    json!([{"name": "default.meshtrace-inbound", "config_discovery": {}}, router]),
                    Some(tracing.clone()),
                ),
                TRACING_CONFLICT,
            ),
        ];
        for (dump, want) in rows {
            let (report, code) = tracing_check_report("t", &dump);
            assert_eq!(code, want, "{report}");
        }
        // A WasmPlugin delivered through ECDS under another name is recognised by its config.
        let mut dump = hcm(json!([ecds_ref, router]), Some(tracing));
        dump["configs"]
            .as_array_mut()
            .unwrap()
            .push(json!({"ecds_filters": [{"ecds_filter": {
            "name": "default.tracer", "typed_config": wasm["typed_config"]}}]}));
        let (report, code) = tracing_check_report("t", &dump);
        assert_eq!(code, TRACING_CONFLICT, "{report}");
        assert!(report.contains("listener virtualInbound"), "{report}");
    }
}
