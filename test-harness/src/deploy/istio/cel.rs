//! The `x-kubernetes-validations` (CEL) rules of the three CRDs meshtrace ships, re-implemented
//! by hand (JSON Schema cannot express them), plus meshtrace's own policy: a fetched module is
//! pinned by its digest, and the plugin fails open.

use super::schema::short;
use serde_json::Value as Json;

/// Every CEL-rule and policy violation of one `spec` of `kind` (empty = none).
pub fn cel_checks(kind: &str, spec: &Json) -> Vec<String> {
    let mut e = selector_rules(kind, spec);
    e.extend(target_ref_rules(spec));
    match kind {
        "WasmPlugin" => e.extend(wasmplugin_rules(spec)),
        "TrafficExtension" => e.extend(trafficextension_rules(spec)),
        "EnvoyFilter" => e.extend(envoyfilter_rules(spec)),
        _ => {}
    }
    e
}

fn selector_rules(kind: &str, spec: &Json) -> Vec<String> {
    let mut e = Vec::new();
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let (selector_key, labels_key) = if kind == "EnvoyFilter" {
        ("workloadSelector", "labels")
    } else {
        ("selector", "matchLabels")
    };
    let n = [selector_key, "targetRef", "targetRefs"]
        .iter()
        .filter(|k| has(k))
        .count();
    if n > 1 {
        e.push(format!(
            "spec: only one of {selector_key}, targetRef, targetRefs can be set (CEL rule)"
        ));
    }
    let labels = &spec[selector_key][labels_key];
    for (k, v) in labels.as_object().into_iter().flatten() {
        if k.is_empty() || k.contains('*') {
            e.push(format!(
                "spec.{selector_key}: label key {k:?} must be non-empty without wildcard (CEL rule)"
            ));
        }
        if v.as_str().is_some_and(|s| s.contains('*')) {
            e.push(format!(
                "spec.{selector_key}: wildcard not allowed in label value {v} (CEL rule)"
            ));
        }
    }
    e
}

fn target_ref_rules(spec: &Json) -> Vec<String> {
    let refs = spec["targetRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(spec.get("targetRef"));
    refs.filter(|r| r["namespace"].as_str().is_some_and(|s| !s.is_empty()))
        .map(|_| {
            "spec.targetRef(s).namespace: cross namespace referencing is not supported (CEL rule)"
                .to_string()
        })
        .collect()
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn wasmplugin_rules(spec: &Json) -> Vec<String> {
    let url = spec["url"].as_str().unwrap_or_default();
    let mut e = url_rules(url);
    match spec["sha256"].as_str() {
        Some(s) if is_sha256_hex(s) => {}
        _ if url.starts_with("file://") => {}
        other => e.push(format!(
            "spec.sha256: meshtrace policy: a fetched module must be pinned by a digest matching ^[a-f0-9]{{64}}$, got {}",
            other.map_or("nothing".to_string(), |s| format!("{s:?}"))
        )),
    }
    if spec["failStrategy"] != "FAIL_OPEN" {
        e.push(format!(
            "spec.failStrategy: meshtrace policy: must be FAIL_OPEN (tracing must never take traffic down), got {}",
            short(&spec["failStrategy"])
        ));
    }
    let envs = spec["vmConfig"]["env"].as_array().into_iter().flatten();
    for (i, env) in envs.enumerate() {
        if env["valueFrom"] == "HOST" && env.get("value").is_some() {
            e.push(format!(
                "spec.vmConfig.env[{i}]: value may only be set when valueFrom is INLINE (CEL rule)"
            ));
        }
    }
    if !spec["pluginConfig"].is_object() {
        e.push("spec.pluginConfig: meshtrace policy: the configuration must be given (collector.cluster at least)".into());
    }
    e
}

/// A TrafficExtension carries exactly one of `wasm` or `lua` (CEL rule); its `wasm` block is a
/// WasmPlugin spec minus the selection fields, so the same rules apply, named by their new path.
fn trafficextension_rules(spec: &Json) -> Vec<String> {
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let mut e = Vec::new();
    if has("wasm") == has("lua") {
        e.push("spec: exactly one of wasm or lua must be set (CEL rule)".to_string());
    }
    if has("wasm") {
        e.extend(
            wasmplugin_rules(&spec["wasm"])
                .into_iter()
                .map(|m| m.replacen("spec.", "spec.wasm.", 1)),
        );
    } else if has("lua") {
        e.push("spec.lua: meshtrace is a Wasm module; a Lua extension is not meshtrace".into());
    }
    e
}

fn url_rules(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    if !["oci", "file", "http", "https"].contains(&scheme) {
        vec![format!(
            "spec.url: scheme {scheme:?} is not one of oci, file, http, https (CEL rule)"
        )]
    } else if rest.is_empty() {
        vec!["spec.url: nothing after the scheme".into()]
    } else {
        Vec::new()
    }
}

fn envoyfilter_rules(spec: &Json) -> Vec<String> {
    let mut e = Vec::new();
    let patches = spec["configPatches"].as_array().into_iter().flatten();
    for (i, p) in patches.enumerate() {
        let m = &p["match"];
        if m.get("waypoint").is_some() && m["context"] != "WAYPOINT" {
            e.push(format!("spec.configPatches[{i}].match: only support waypointMatch when context is WAYPOINT (CEL rule)"));
        }
        if let Some(port) = m["listener"]["portNumber"].as_u64() {
            if port == 0 || port > 65535 {
                e.push(format!("spec.configPatches[{i}].match.listener.portNumber: port must be between 1-65535 (CEL rule)"));
            }
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wasmplugin(spec: Json) -> Json {
        json!({"url": "oci://r/m:1", "sha256": "a".repeat(64), "failStrategy": "FAIL_OPEN",
               "pluginConfig": {}})
        .as_object()
        .unwrap()
        .clone()
        .into_iter()
        .chain(spec.as_object().unwrap().clone())
        .collect::<serde_json::Map<_, _>>()
        .into()
    }

    #[test]
    fn cel_rules_table() {
        let rows: &[(&str, Json, &str)] = &[
            ("WasmPlugin", wasmplugin(json!({})), ""),
            (
                "WasmPlugin",
                wasmplugin(json!({"url": "ftp://x/m.wasm"})),
                "scheme \"ftp\"",
            ),
            (
                "WasmPlugin",
                wasmplugin(json!({"url": "file:///m.wasm", "sha256": ""})),
                "",
            ),
            (
                "WasmPlugin",
                wasmplugin(json!({"url": "https://x/m.wasm", "sha256": ""})),
                "pinned by a digest",
            ),
            (
                "WasmPlugin",
                wasmplugin(json!({"sha256": "A".repeat(64)})),
                "pinned by a digest",
            ),
            (
                "WasmPlugin",
                wasmplugin(json!({"failStrategy": "FAIL_CLOSE"})),
                "must be FAIL_OPEN",
            ),
            (
                "WasmPlugin",
                wasmplugin(
                    json!({"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Gateway", "name": "g"}]}),
                ),
                "only one of",
            ),
            (
                "WasmPlugin",
                wasmplugin(json!({"selector": {"matchLabels": {"a": "b*"}}})),
                "wildcard",
            ),
            (
                "WasmPlugin",
                wasmplugin(
                    json!({"targetRefs": [{"kind": "Gateway", "name": "g", "namespace": "other"}]}),
                ),
                "cross namespace",
            ),
            (
                "WasmPlugin",
                wasmplugin(
                    json!({"vmConfig": {"env": [{"name": "A", "valueFrom": "HOST", "value": "x"}]}}),
                ),
                "valueFrom is INLINE",
            ),
            (
                "Telemetry",
                json!({"selector": {"matchLabels": {"a": "b"}}, "targetRef": {"kind": "Gateway", "name": "g"}}),
                "only one of",
            ),
            (
                "Telemetry",
                json!({"tracing": [{"disableSpanReporting": true}]}),
                "",
            ),
            (
                "EnvoyFilter",
                json!({"workloadSelector": {"labels": {"a": "b"}}, "targetRefs": [{"kind": "Gateway", "name": "g"}]}),
                "only one of",
            ),
            (
                "EnvoyFilter",
                json!({"configPatches": [{"match": {"context": "GATEWAY", "waypoint": {}}}]}),
                "WAYPOINT",
            ),
            (
                "EnvoyFilter",
                json!({"configPatches": [{"match": {"listener": {"portNumber": 70000}}}]}),
                "1-65535",
            ),
        ];
        let te = |wasm: Json| json!({"wasm": wasmplugin(wasm)});
        let te_rows: Vec<(&str, Json, &str)> = vec![
            ("TrafficExtension", te(json!({})), ""),
            ("TrafficExtension", json!({}), "exactly one of wasm or lua"),
            (
                "TrafficExtension",
                json!({"wasm": wasmplugin(json!({})), "lua": {"inlineCode": "x"}}),
                "exactly one of wasm or lua",
            ),
            (
                "TrafficExtension",
                te(json!({"failStrategy": "FAIL_CLOSE"})),
                "spec.wasm.failStrategy",
            ),
            (
                "TrafficExtension",
                te(json!({"url": "ftp://x/m.wasm"})),
                "spec.wasm.url",
            ),
            (
                "TrafficExtension",
                json!({"selector": {"matchLabels": {"a": "b"}}, "targetRefs": [{"kind": "Gateway", "name": "g"}],
                       "wasm": wasmplugin(json!({}))}),
                "only one of",
            ),
        ];
        let rows: Vec<&(&str, Json, &str)> = rows.iter().chain(te_rows.iter()).collect();
        for (kind, spec, want) in rows {
            let errs = cel_checks(kind, spec);
            if want.is_empty() {
                assert!(errs.is_empty(), "{kind} {spec}: unexpected {errs:?}");
            } else {
                assert!(
                    errs.iter().any(|e| e.contains(want)),
                    "{kind} {spec}: expected {want:?}, got {errs:?}"
                );
            }
        }
    }
}
