//! What the CRD schemas cannot see, rendered into the shipped Envoy configs so a real Envoy can
//! judge it: a WasmPlugin `pluginConfig` as the filter configuration, an EnvoyFilter patch
//! applied to the listener of its context.

use crate::run::config::{load_shipped, set_plugin_config};
use crate::tools::Tools;
use serde_json::{json, Value as Json};
use std::path::Path;

pub(super) fn yaml(v: &Json) -> Result<serde_yaml::Value, String> {
    serde_yaml::to_value(v).map_err(|e| e.to_string())
}

pub(super) fn to_json(v: &serde_yaml::Value) -> Result<Json, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// The shipped Envoy config a WasmPlugin / EnvoyFilter patch corresponds to.
pub(super) fn base_file_for(context: &str) -> &'static str {
    match context {
        "GATEWAY" => "gateway.yaml",
        "SIDECAR_OUTBOUND" | "CLIENT" => "sidecar-outbound.yaml",
        _ => "sidecar-inbound.yaml",
    }
}

/// The `http_filters` list of the first HttpConnectionManager of the first listener.
fn http_filters(doc: &mut Json) -> Result<&mut Vec<Json>, String> {
    doc.pointer_mut(
        "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
    )
    .and_then(Json::as_array_mut)
    .ok_or_else(|| "shipped config has no http_filters list in its first listener".to_string())
}

/// Adds a copy of the `zipkin` cluster under `name` (Istio's collector cluster name), so the
/// rendered config has the cluster the plugin configuration points at.
fn add_collector_cluster(doc: &mut Json, name: &str) -> Result<(), String> {
    let clusters = doc
        .pointer_mut("/static_resources/clusters")
        .and_then(Json::as_array_mut)
        .ok_or("shipped config has no clusters")?;
    if clusters.iter().any(|c| c["name"] == name) {
        return Ok(());
    }
    let mut c = clusters
        .iter()
        .find(|c| c["name"] == "zipkin")
        .cloned()
        .ok_or("shipped config has no zipkin cluster")?;
    c["name"] = json!(name);
    c["load_assignment"]["cluster_name"] = json!(name);
    clusters.push(c);
    Ok(())
}

/// A shipped config whose meshtrace filter gets `plugin_config` (a WasmPlugin `pluginConfig`) as its
/// configuration string, exactly as Istio delivers it to `on_configure`.
pub fn shipped_with_plugin_config(
    repo: &Path,
    base: &str,
    plugin_config: &Json,
) -> Result<serde_yaml::Value, String> {
    let mut shipped = load_shipped(repo, base)?;
    let text = serde_json::to_string(plugin_config).map_err(|e| e.to_string())?;
    if set_plugin_config(&mut shipped, &text)? == 0 {
        return Err(format!(
            "envoy/{base} has no envoy.filters.http.wasm filter"
        ));
    }
    let mut doc = to_json(&shipped)?;
    if let Some(c) = plugin_config["collector"]["cluster"].as_str() {
        add_collector_cluster(&mut doc, c)?;
    }
    yaml(&doc)
}

/// Applies an EnvoyFilter `HTTP_FILTER` / `INSERT_BEFORE` patch to the shipped config of its
/// context: the shipped wasm filter is removed and `patch.value` inserted before the sub-filter
/// (the router). Returns the base file name and the rendered config.
pub fn render_envoyfilter_patch(
    repo: &Path,
    patch: &Json,
) -> Result<(&'static str, serde_yaml::Value), String> {
    if patch["applyTo"] != "HTTP_FILTER" {
        return Err(format!(
            "only applyTo HTTP_FILTER is rendered, got {}",
            patch["applyTo"]
        ));
    }
    if patch["patch"]["operation"] != "INSERT_BEFORE" {
        return Err(format!(
            "only operation INSERT_BEFORE is rendered, got {}",
            patch["patch"]["operation"]
        ));
    }
    let ctx = patch["match"]["context"].as_str().unwrap_or("ANY");
    let fc = &patch["match"]["listener"]["filterChain"]["filter"];
    if fc["name"] != "envoy.filters.network.http_connection_manager" {
        return Err("match.listener.filterChain.filter.name must be envoy.filters.network.http_connection_manager".into());
    }
    let before = fc["subFilter"]["name"]
        .as_str()
        .ok_or("match.listener.filterChain.filter.subFilter.name missing")?;
    let base = base_file_for(ctx);
    let mut doc = to_json(&load_shipped(repo, base)?)?;
    let value = patch["patch"]["value"].clone();
    let cluster = value
        .pointer("/typed_config/config/configuration/value")
        .and_then(Json::as_str)
        .and_then(|s| serde_json::from_str::<Json>(s).ok())
        .and_then(|c| c["collector"]["cluster"].as_str().map(str::to_string));
    let filters = http_filters(&mut doc)?;
    filters.retain(|f| f["name"] != "envoy.filters.http.wasm");
    let idx = filters
        .iter()
        .position(|f| f["name"] == before)
        .ok_or_else(|| format!("envoy/{base} has no http filter {before}"))?;
    filters.insert(idx, value);
    if let Some(c) = cluster {
        add_collector_cluster(&mut doc, &c)?;
    }
    Ok((base, yaml(&doc)?))
}

/// Writes `doc` to a scratch file and runs `envoy --mode validate` on it (wasm path rewritten).
pub(super) fn envoy_validate(
    tools: &Tools,
    name: &str,
    doc: &serde_yaml::Value,
    expect_fail: bool,
) -> Result<String, String> {
    let dir = crate::run::run_dir(&tools.repo, "istio")?;
    let path = dir.join(format!("{name}.yaml"));
    let text = serde_yaml::to_string(doc).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let v = crate::deploy::validate::validate_file(&path, tools);
    if v.ok || expect_fail {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
    }
    if v.ok {
        Ok(v.message)
    } else if expect_fail {
        Err(v.message)
    } else {
        Err(format!(
            "{} (rendered config kept: {})",
            v.message,
            path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::crds::yaml_docs;
    use super::*;

    #[test]
    fn renders_envoyfilter_patch_before_router() {
        let repo = crate::tools::find_repo_root().unwrap();
        let text = std::fs::read_to_string(repo.join("istio/envoyfilter.yaml")).unwrap();
        let docs = yaml_docs(&text).unwrap();
        let mut contexts = Vec::new();
        for d in &docs {
            for p in d["spec"]["configPatches"].as_array().unwrap() {
                let (base, doc) = render_envoyfilter_patch(&repo, p).unwrap();
                let j = to_json(&doc).unwrap();
                let names: Vec<&str> = j.pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters")
                    .unwrap().as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
                assert_eq!(
                    names,
                    ["envoy.filters.http.wasm", "envoy.filters.http.router"],
                    "{base}"
                );
                let clusters = j["static_resources"]["clusters"].to_string();
                assert!(clusters.contains("outbound|9411||zipkin.istio-system.svc.cluster.local"));
                contexts.push((p["match"]["context"].as_str().unwrap().to_string(), base));
            }
        }
        assert_eq!(
            contexts,
            [
                ("GATEWAY".to_string(), "gateway.yaml"),
                ("SIDECAR_INBOUND".to_string(), "sidecar-inbound.yaml"),
                ("SIDECAR_OUTBOUND".to_string(), "sidecar-outbound.yaml"),
            ]
        );
    }
}
