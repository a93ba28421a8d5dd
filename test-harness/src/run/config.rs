//! Structural patching of the shipped Envoy configs (`envoy/*.yaml`).
//!
//! The harness never keeps its own copy of the Envoy configuration: it loads the shipped file and
//! rewrites only ports, cluster endpoints, the wasm file path and the plugin configuration.

use serde_json::Value as Json;
use serde_yaml::{Mapping, Value};
use std::net::SocketAddr;
use std::path::Path;

/// How the plugin configuration string is produced.
#[derive(Debug, Clone)]
pub enum PluginConfig {
    /// The shipped JSON deep-merged with this object (None = unchanged).
    Merge(Option<Json>),
    /// This exact string.
    Raw(String),
}

#[derive(Debug, Clone)]
pub struct Patch {
    pub admin_port: u16,
    pub listener_port: u16,
    pub app: SocketAddr,
    pub zipkin: SocketAddr,
    pub wasm_path: String,
    pub plugin: PluginConfig,
    /// Replaces the bootstrap `node:` block (id, cluster, metadata).
    pub node: Option<Json>,
}

/// Objects merge recursively, a `null` in `patch` removes the key (as in JSON merge patch,
/// RFC 7386), anything else in `patch` replaces the value in `base`.
pub fn deep_merge(base: &mut Json, patch: &Json) {
    match (base, patch) {
        (Json::Object(b), Json::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                    continue;
                }
                match b.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

fn get_mut<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Value, String> {
    let mut cur = v;
    for (i, p) in path.iter().enumerate() {
        cur = match cur {
            Value::Mapping(m) => m
                .get_mut(key(p))
                .ok_or_else(|| format!("config has no `{}`", path[..=i].join(".")))?,
            Value::Sequence(s) => {
                let idx: usize = p.parse().map_err(|_| {
                    format!("`{}` is a list, expected an index", path[..i].join("."))
                })?;
                s.get_mut(idx)
                    .ok_or_else(|| format!("config has no `{}`", path[..=i].join(".")))?
            }
            _ => return Err(format!("`{}` is not a map or list", path[..i].join("."))),
        };
    }
    Ok(cur)
}

fn set_socket_address(sa: &mut Value, addr: &str, port: u16) -> Result<(), String> {
    let m = sa.as_mapping_mut().ok_or("socket_address is not a map")?;
    m.insert(key("address"), key(addr));
    m.insert(key("port_value"), Value::Number(port.into()));
    Ok(())
}

fn clusters_mut(doc: &mut Value) -> Result<&mut Vec<Value>, String> {
    get_mut(doc, &["static_resources", "clusters"])?
        .as_sequence_mut()
        .ok_or_else(|| "static_resources.clusters is not a list".to_string())
}

/// Points every endpoint of cluster `name` at `addr`.
pub fn set_cluster_endpoint(doc: &mut Value, name: &str, addr: SocketAddr) -> Result<(), String> {
    let clusters = clusters_mut(doc)?;
    let cluster = clusters
        .iter_mut()
        .find(|c| c.get("name").and_then(Value::as_str) == Some(name))
        .ok_or_else(|| format!("config has no cluster `{name}`"))?;
    let groups = get_mut(cluster, &["load_assignment", "endpoints"])?
        .as_sequence_mut()
        .ok_or_else(|| format!("cluster {name}: endpoints is not a list"))?;
    let mut n = 0;
    for g in groups {
        if let Some(lbs) = g.get_mut("lb_endpoints").and_then(Value::as_sequence_mut) {
            for lb in lbs {
                let sa = get_mut(lb, &["endpoint", "address", "socket_address"])?;
                set_socket_address(sa, &addr.ip().to_string(), addr.port())?;
                n += 1;
            }
        }
    }
    if n == 0 {
        return Err(format!("cluster {name} has no endpoints"));
    }
    Ok(())
}

/// Visits every `envoy.filters.http.wasm` filter's `typed_config.config` map.
fn for_each_wasm_config(
    v: &mut Value,
    f: &mut dyn FnMut(&mut Mapping) -> Result<(), String>,
) -> Result<usize, String> {
    let mut n = 0;
    match v {
        Value::Mapping(m) => {
            let is_wasm = m.get("name").and_then(Value::as_str) == Some("envoy.filters.http.wasm");
            if is_wasm {
                if let Some(cfg) = m
                    .get_mut("typed_config")
                    .and_then(|t| t.get_mut("config"))
                    .and_then(Value::as_mapping_mut)
                {
                    f(cfg)?;
                    n += 1;
                }
            } else {
                for (_, child) in m.iter_mut() {
                    n += for_each_wasm_config(child, f)?;
                }
            }
        }
        Value::Sequence(s) => {
            for child in s {
                n += for_each_wasm_config(child, f)?;
            }
        }
        _ => {}
    }
    Ok(n)
}

/// Sets `vm_config.code.local.filename` of every wasm filter; returns how many were found.
pub fn set_wasm_path(doc: &mut Value, wasm_path: &str) -> Result<usize, String> {
    for_each_wasm_config(doc, &mut |cfg| {
        let vm = cfg
            .get_mut("vm_config")
            .ok_or("wasm filter has no vm_config")?;
        let local = get_mut(vm, &["code", "local"])?
            .as_mapping_mut()
            .ok_or("vm_config.code.local is not a map")?;
        local.insert(key("filename"), key(wasm_path));
        Ok(())
    })
}

/// Sets `failure_policy` of every wasm filter (Envoy's enum name; `envoy --mode validate` and the
/// start itself check the value).
pub fn set_failure_policy(doc: &mut Value, policy: &str) -> Result<usize, String> {
    for_each_wasm_config(doc, &mut |cfg| {
        cfg.insert(key("failure_policy"), key(policy));
        Ok(())
    })
}

/// The plugin configuration string of the (first) wasm filter.
pub fn plugin_config_string(doc: &Value) -> Result<String, String> {
    let mut doc = doc.clone();
    let mut found = None;
    for_each_wasm_config(&mut doc, &mut |cfg| {
        if found.is_none() {
            found = cfg
                .get("configuration")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        Ok(())
    })?;
    found.ok_or_else(|| "wasm filter has no configuration.value string".to_string())
}

/// Computes the plugin configuration string for `plugin` from the shipped `template` string.
pub fn render_plugin_config(template: &str, plugin: &PluginConfig) -> Result<String, String> {
    match plugin {
        PluginConfig::Raw(s) => Ok(s.clone()),
        PluginConfig::Merge(patch) => {
            let mut base: Json = if template.trim().is_empty() {
                Json::Object(Default::default())
            } else {
                serde_json::from_str(template)
                    .map_err(|e| format!("shipped plugin configuration is not JSON: {e}"))?
            };
            if let Some(p) = patch {
                deep_merge(&mut base, p);
            }
            serde_json::to_string_pretty(&base).map_err(|e| e.to_string())
        }
    }
}

/// Applies the whole patch to a loaded shipped config.
pub fn patch_config(doc: &mut Value, p: &Patch) -> Result<(), String> {
    set_socket_address(
        get_mut(doc, &["admin", "address", "socket_address"])?,
        "127.0.0.1",
        p.admin_port,
    )?;
    set_socket_address(
        get_mut(
            doc,
            &[
                "static_resources",
                "listeners",
                "0",
                "address",
                "socket_address",
            ],
        )?,
        "127.0.0.1",
        p.listener_port,
    )?;
    set_cluster_endpoint(doc, "app", p.app)?;
    set_cluster_endpoint(doc, "zipkin", p.zipkin)?;
    if set_wasm_path(doc, &p.wasm_path)? == 0 {
        return Err("config has no envoy.filters.http.wasm filter".to_string());
    }
    if let Some(node) = &p.node {
        let node: Value = serde_yaml::to_value(node).map_err(|e| format!("node: {e}"))?;
        doc.as_mapping_mut()
            .ok_or("the config is not a map")?
            .insert(key("node"), node);
    }
    let template = plugin_config_string(doc)?;
    let rendered = render_plugin_config(&template, &p.plugin)?;
    set_plugin_config(doc, &rendered)?;
    Ok(())
}

/// Sets `configuration.value` (the string `on_configure` reads) of every wasm filter; returns how
/// many were found.
pub fn set_plugin_config(doc: &mut Value, text: &str) -> Result<usize, String> {
    for_each_wasm_config(doc, &mut |cfg| {
        let conf = cfg
            .get_mut("configuration")
            .and_then(Value::as_mapping_mut)
            .ok_or("wasm filter has no configuration map")?;
        conf.insert(key("value"), key(text));
        Ok(())
    })
}

/// Loads `envoy/<file>` from the repository.
pub fn load_shipped(repo: &Path, file: &str) -> Result<Value, String> {
    let path = repo.join("envoy").join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shipped(file: &str) -> Value {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let repo = if repo.join("envoy/gateway.yaml").exists() {
            repo
        } else {
            crate::tools::find_repo_root().unwrap()
        };
        load_shipped(&repo, file).unwrap()
    }

    #[test]
    fn deep_merge_objects_replace_others() {
        let mut base = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x", "h": 1});
        deep_merge(
            &mut base,
            &json!({"a": {"c": [3], "e": {"f": true}, "b": null}, "d": {"g": 1}, "h": null, "i": null}),
        );
        assert_eq!(
            base,
            json!({"a": {"c": [3], "e": {"f": true}}, "d": {"g": 1}})
        );
    }

    #[test]
    fn patches_all_three_shipped_configs() {
        for file in [
            "gateway.yaml",
            "sidecar-inbound.yaml",
            "sidecar-outbound.yaml",
        ] {
            let mut doc = shipped(file);
            let p = Patch {
                admin_port: 0,
                listener_port: 0,
                app: "127.0.0.1:4001".parse().unwrap(),
                zipkin: "127.0.0.1:4002".parse().unwrap(),
                wasm_path: "/abs/meshtrace.wasm".into(),
                plugin: PluginConfig::Merge(Some(json!({
                    "collector": {"flush_interval_ms": 100},
                    "sampling": {"rate": 0.5},
                    "service_name": null
                }))),
                node: None,
            };
            patch_config(&mut doc, &p).unwrap();
            let text = serde_yaml::to_string(&doc).unwrap();
            let back: Value = serde_yaml::from_str(&text).unwrap();
            let port = |v: &Value, path: &[&str]| {
                let mut v = v.clone();
                get_mut(&mut v, path).unwrap().as_u64().unwrap()
            };
            assert_eq!(
                port(&back, &["admin", "address", "socket_address", "port_value"]),
                0
            );
            let clusters = back["static_resources"]["clusters"].as_sequence().unwrap();
            let ep = |name: &str| {
                let c = clusters.iter().find(|c| c["name"] == name).unwrap();
                c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                    ["socket_address"]["port_value"]
                    .as_u64()
                    .unwrap()
            };
            assert_eq!(ep("app"), 4001, "{file}");
            assert_eq!(ep("zipkin"), 4002, "{file}");
            assert!(text.contains("/abs/meshtrace.wasm"));
            let conf: Json = serde_json::from_str(&plugin_config_string(&back).unwrap()).unwrap();
            assert_eq!(conf["collector"]["flush_interval_ms"], 100);
            assert_eq!(
                conf["collector"]["cluster"], "zipkin",
                "template keys survive"
            );
            assert_eq!(conf["sampling"]["rate"], 0.5);
            assert_eq!(conf["sampling"]["override_header"], "l5d-sample");
            assert!(
                conf.get("service_name").is_none(),
                "null removes a key: {conf}"
            );
            assert!(back.get("node").is_none(), "{file}");
        }
    }

    #[test]
    fn raw_plugin_config_is_verbatim() {
        let mut doc = shipped("gateway.yaml");
        let p = Patch {
            admin_port: 1,
            listener_port: 2,
            app: "127.0.0.1:3".parse().unwrap(),
            zipkin: "127.0.0.1:4".parse().unwrap(),
            wasm_path: "/x.wasm".into(),
            plugin: PluginConfig::Raw("{not json".into()),
            node: Some(json!({"id": "n1", "cluster": "c1", "metadata": {"NAMESPACE": "ns"}})),
        };
        patch_config(&mut doc, &p).unwrap();
        assert_eq!(plugin_config_string(&doc).unwrap(), "{not json");
        assert_eq!(doc["node"]["id"].as_str(), Some("n1"));
        assert_eq!(doc["node"]["cluster"].as_str(), Some("c1"));
        assert_eq!(doc["node"]["metadata"]["NAMESPACE"].as_str(), Some("ns"));
        assert_eq!(
            doc["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
                .as_u64(),
            Some(2)
        );
    }

    #[test]
    fn missing_structure_is_an_error() {
        let mut doc: Value = serde_yaml::from_str("admin: {}\n").unwrap();
        let p = Patch {
            admin_port: 1,
            listener_port: 2,
            app: "127.0.0.1:3".parse().unwrap(),
            zipkin: "127.0.0.1:4".parse().unwrap(),
            wasm_path: "/x.wasm".into(),
            plugin: PluginConfig::Merge(None),
            node: None,
        };
        let e = patch_config(&mut doc, &p).unwrap_err();
        assert!(e.contains("admin.address"), "{e}");
    }
}
