//! Istio deployment support (`istio/*.yaml`):
//!
//! - `istio-validate`: every manifest against Istio's own CRD schemas (`openAPIV3Schema` of the
//!   served CRD version, Kubernetes structural-schema semantics: unknown fields are refused except
//!   under `x-kubernetes-preserve-unknown-fields: true`), plus the CEL-only rules re-implemented by
//!   hand, plus the parts the schema cannot see checked by a real Envoy: every WasmPlugin
//!   `pluginConfig` loaded as the filter configuration and every EnvoyFilter patch rendered into a
//!   shipped Envoy config, both through `envoy --mode validate` (which runs `on_configure`).
//! - `tracing-check`: reads an Envoy config dump (admin `/config_dump` or `istioctl proxy-config
//!   ... -o json`) and reports every HttpConnectionManager that has a native `tracing` block next to
//!   the meshtrace filter (the router would overwrite meshtrace's x-b3-* headers).
//! - `config-dump`: starts a real Envoy (func-e) with a shipped config, optionally with native
//!   tracing added, and prints its `/config_dump` (the fixture of the `tracing-check` tests).

use crate::run::config::{load_shipped, patch_config, Patch, PluginConfig};
use crate::run::envoy::{EnvoyProcess, Launch, StartOutcome};
use crate::tools::Tools;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// The `istio.io/api` module version whose CRDs the manifests are validated against.
pub const ISTIO_API_VERSION: &str = "v1.30.3";
/// Where `make istio-crds` puts `kubernetes/customresourcedefinitions.gen.yaml` of that module.
pub const DEFAULT_CRDS: &str = ".tools/istio-api-v1.30.3/customresourcedefinitions.gen.yaml";

// ---------------------------------------------------------------------------------------------
// CRDs

/// One served version of one CRD.
#[derive(Debug, Clone)]
pub struct CrdVersion {
    pub group: String,
    pub kind: String,
    pub version: String,
    /// `schema.openAPIV3Schema`.
    pub schema: Json,
}

#[derive(Debug, Clone, Default)]
pub struct Crds {
    pub versions: Vec<CrdVersion>,
}

/// Every document of a multi-document YAML text, as JSON values (empty documents skipped).
pub fn yaml_docs(text: &str) -> Result<Vec<Json>, String> {
    let mut out = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Json::deserialize(d).map_err(|e| format!("YAML document {}: {e}", i + 1))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

impl Crds {
    pub fn parse(text: &str) -> Result<Crds, String> {
        let mut c = Crds::default();
        for d in yaml_docs(text)? {
            if d["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let spec = &d["spec"];
            let group = spec["group"].as_str().unwrap_or_default().to_string();
            let kind = spec["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            for v in spec["versions"].as_array().into_iter().flatten() {
                if v["served"] != true {
                    continue;
                }
                c.versions.push(CrdVersion {
                    group: group.clone(),
                    kind: kind.clone(),
                    version: v["name"].as_str().unwrap_or_default().to_string(),
                    schema: v["schema"]["openAPIV3Schema"].clone(),
                });
            }
        }
        if c.versions.is_empty() {
            return Err("no CustomResourceDefinition with a served version found".into());
        }
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Crds, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read Istio CRDs {}: {e} (run `make istio-crds`, which runs `go mod download -json istio.io/api@{ISTIO_API_VERSION}` and copies kubernetes/customresourcedefinitions.gen.yaml, or pass --crds FILE)",
                path.display()
            )
        })?;
        Crds::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn find(&self, api_version: &str, kind: &str) -> Option<&CrdVersion> {
        let (group, version) = api_version.split_once('/')?;
        self.versions
            .iter()
            .find(|v| v.group == group && v.version == version && v.kind == kind)
    }
}

// ---------------------------------------------------------------------------------------------
// Structural OpenAPI v3 schema validation (the subset Kubernetes CRDs use)

fn type_name(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

fn type_matches(t: &str, v: &Json) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        _ => true,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn short(v: &Json) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!("{}…", &s[..s.floor_char_boundary(60)])
    } else {
        s
    }
}

/// Validates `v` against `schema`; returns one message per violation (`path: reason`), empty when
/// valid. Unknown object fields are refused unless the schema node has
/// `x-kubernetes-preserve-unknown-fields: true` or `additionalProperties` (Kubernetes structural
/// schemas are closed); `format`, `description` and `x-kubernetes-validations` (CEL) are ignored.
pub fn validate_schema(schema: &Json, v: &Json, path: &str) -> Vec<String> {
    let mut errs = Vec::new();
    check(schema, v, path, true, &mut errs);
    errs
}

fn check(s: &Json, v: &Json, path: &str, structural: bool, errs: &mut Vec<String>) {
    let at = if path.is_empty() { "(root)" } else { path };
    if v.is_null() {
        if s["nullable"] == true || s.get("type").is_none() {
            return;
        }
        errs.push(format!("{at}: must not be null"));
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"] == true;
    if int_or_string {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            errs.push(format!(
                "{at}: must be an integer or a string, got {}",
                type_name(v)
            ));
            return;
        }
    } else if let Some(t) = s["type"].as_str() {
        if !type_matches(t, v) {
            errs.push(format!(
                "{at}: must be {t}, got {} {}",
                type_name(v),
                short(v)
            ));
            return;
        }
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.contains(v) {
            let allowed: Vec<String> = e.iter().map(short).collect();
            errs.push(format!(
                "{at}: must be one of [{}], got {}",
                allowed.join(", "),
                short(v)
            ));
        }
    }
    match v {
        Json::String(st) => {
            let n = st.chars().count() as u64;
            if let Some(m) = s["maxLength"].as_u64() {
                if n > m {
                    errs.push(format!("{at}: longer than {m} characters"));
                }
            }
            if let Some(m) = s["minLength"].as_u64() {
                if n < m {
                    errs.push(format!("{at}: shorter than {m} characters"));
                }
            }
            if let Some(p) = s["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if re.is_match(st) => {}
                    Ok(_) => errs.push(format!("{at}: {} does not match pattern {p}", short(v))),
                    Err(e) => errs.push(format!("{at}: schema pattern {p} does not compile: {e}")),
                }
            }
        }
        Json::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(m) = s["maximum"].as_f64() {
                if x > m || (s["exclusiveMaximum"] == true && x == m) {
                    errs.push(format!("{at}: {x} is above the maximum {m}"));
                }
            }
            if let Some(m) = s["minimum"].as_f64() {
                if x < m || (s["exclusiveMinimum"] == true && x == m) {
                    errs.push(format!("{at}: {x} is below the minimum {m}"));
                }
            }
        }
        Json::Array(items) => {
            if let Some(m) = s["maxItems"].as_u64() {
                if items.len() as u64 > m {
                    errs.push(format!("{at}: more than {m} items"));
                }
            }
            if let Some(m) = s["minItems"].as_u64() {
                if (items.len() as u64) < m {
                    errs.push(format!("{at}: fewer than {m} items"));
                }
            }
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(is, item, &format!("{path}[{i}]"), structural, errs);
                }
            }
        }
        Json::Object(obj) => {
            let props = s["properties"].as_object();
            let additional = s.get("additionalProperties");
            let preserve = s["x-kubernetes-preserve-unknown-fields"] == true;
            for (k, child) in obj {
                let p = join(path, k);
                if let Some(ps) = props.and_then(|m| m.get(k)) {
                    check(ps, child, &p, structural, errs);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    check(a, child, &p, structural, errs);
                } else if additional == Some(&Json::Bool(false))
                    || (structural && !preserve && additional != Some(&Json::Bool(true)))
                {
                    let known: Vec<&str> = props
                        .map(|m| m.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    errs.push(format!(
                        "{p}: unknown field `{k}` (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ));
                }
            }
            for r in s["required"].as_array().into_iter().flatten() {
                if let Some(r) = r.as_str() {
                    if !obj.contains_key(r) {
                        errs.push(format!("{}: required field missing", join(path, r)));
                    }
                }
            }
            if let Some(m) = s["maxProperties"].as_u64() {
                if obj.len() as u64 > m {
                    errs.push(format!("{at}: more than {m} properties"));
                }
            }
            if let Some(m) = s["minProperties"].as_u64() {
                if (obj.len() as u64) < m {
                    errs.push(format!("{at}: fewer than {m} properties"));
                }
            }
        }
        _ => {}
    }
    // Logical junctors: in structural schemas they only add value validations, so their branches
    // are evaluated without closing objects (pruning is decided by the structural part above).
    let passes = |sub: &Json| {
        let mut e = Vec::new();
        check(sub, v, path, false, &mut e);
        e.is_empty()
    };
    if !int_or_string {
        if let Some(all) = s["allOf"].as_array() {
            for sub in all {
                check(sub, v, path, false, errs);
            }
        }
        if let Some(any) = s["anyOf"].as_array() {
            if !any.iter().any(passes) {
                errs.push(format!("{at}: matches none of the anyOf alternatives"));
            }
        }
    }
    if let Some(one) = s["oneOf"].as_array() {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            errs.push(format!(
                "{at}: must match exactly one oneOf alternative, matches {n}"
            ));
        }
    }
    if let Some(not) = s.get("not") {
        if passes(not) {
            errs.push(format!("{at}: matches a `not` schema"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifests

/// Kubernetes object name: DNS-1123 subdomain.
fn valid_name(s: &str) -> bool {
    let re =
        regex::Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
            .expect("static regex");
    !s.is_empty() && s.len() <= 253 && re.is_match(s)
}

fn check_metadata(doc: &Json, errs: &mut Vec<String>) {
    let Some(md) = doc["metadata"].as_object() else {
        errs.push("metadata: required object missing".into());
        return;
    };
    for (k, v) in md {
        match k.as_str() {
            "name" | "namespace" => match v.as_str() {
                Some(s) if valid_name(s) => {}
                _ => errs.push(format!(
                    "metadata.{k}: must be a DNS-1123 name, got {}",
                    short(v)
                )),
            },
            "labels" | "annotations" => {
                if !v.as_object().is_some_and(|m| m.values().all(Json::is_string)) {
                    errs.push(format!("metadata.{k}: must map strings to strings"));
                }
            }
            other => errs.push(format!(
                "metadata.{other}: unknown or server-managed field (known: name, namespace, labels, annotations)"
            )),
        }
    }
    if md.get("name").is_none() {
        errs.push("metadata.name: required field missing".into());
    }
}

/// The x-kubernetes-validations (CEL) rules of the three CRDs meshtrace ships, re-implemented,
/// plus meshtrace's own policy (pinned digest, FAIL_OPEN). JSON Schema cannot express these.
pub fn cel_checks(kind: &str, spec: &Json) -> Vec<String> {
    let mut e = Vec::new();
    let has = |k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    let selector_key = if kind == "EnvoyFilter" {
        "workloadSelector"
    } else {
        "selector"
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
    let labels = if kind == "EnvoyFilter" {
        &spec[selector_key]["labels"]
    } else {
        &spec[selector_key]["matchLabels"]
    };
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
    let refs = spec["targetRefs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(spec.get("targetRef").cloned());
    for r in refs {
        if r["namespace"].as_str().is_some_and(|s| !s.is_empty()) {
            e.push("spec.targetRef(s).namespace: cross namespace referencing is not supported (CEL rule)".into());
        }
    }
    match kind {
        "WasmPlugin" => {
            let url = spec["url"].as_str().unwrap_or_default();
            if let Some((scheme, rest)) = url.split_once("://") {
                if !["oci", "file", "http", "https"].contains(&scheme) {
                    e.push(format!(
                        "spec.url: scheme {scheme:?} is not one of oci, file, http, https (CEL rule)"
                    ));
                } else if rest.is_empty() {
                    e.push("spec.url: nothing after the scheme".into());
                }
            }
            let sha = regex::Regex::new("^[a-f0-9]{64}$").expect("static regex");
            let is_file = url.starts_with("file://");
            match spec["sha256"].as_str() {
                Some(s) if sha.is_match(s) => {}
                _ if is_file => {}
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
            for (i, env) in spec["vmConfig"]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if env["valueFrom"] == "HOST" && env.get("value").is_some() {
                    e.push(format!("spec.vmConfig.env[{i}]: value may only be set when valueFrom is INLINE (CEL rule)"));
                }
            }
            if !spec["pluginConfig"].is_object() {
                e.push("spec.pluginConfig: meshtrace policy: the configuration must be given (collector.cluster at least)".into());
            }
        }
        "EnvoyFilter" => {
            for (i, p) in spec["configPatches"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let m = &p["match"];
                let waypoint_ctx = m["context"] == "WAYPOINT";
                if m.get("waypoint").is_some() != waypoint_ctx && m.get("waypoint").is_some() {
                    e.push(format!("spec.configPatches[{i}].match: only support waypointMatch when context is WAYPOINT (CEL rule)"));
                }
                if let Some(port) = m["listener"]["portNumber"].as_u64() {
                    if port == 0 || port > 65535 {
                        e.push(format!("spec.configPatches[{i}].match.listener.portNumber: port must be between 1-65535 (CEL rule)"));
                    }
                }
            }
        }
        _ => {}
    }
    e
}

/// All problems of one manifest document (empty = valid).
pub fn validate_manifest(crds: &Crds, doc: &Json) -> Vec<String> {
    let mut errs = Vec::new();
    let (Some(api), Some(kind)) = (doc["apiVersion"].as_str(), doc["kind"].as_str()) else {
        return vec!["apiVersion and kind must be strings".into()];
    };
    let Some(crd) = crds.find(api, kind) else {
        let known: Vec<String> = crds
            .versions
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| format!("{}/{}", v.group, v.version))
            .collect();
        return vec![format!(
            "{api} {kind}: no served CRD version (served for {kind}: {})",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        )];
    };
    for k in doc.as_object().into_iter().flatten().map(|(k, _)| k) {
        if !["apiVersion", "kind", "metadata", "spec"].contains(&k.as_str()) {
            errs.push(format!(
                "{k}: unknown top-level field (known: apiVersion, kind, metadata, spec)"
            ));
        }
    }
    check_metadata(doc, &mut errs);
    for r in crd.schema["required"].as_array().into_iter().flatten() {
        if let Some(r) = r.as_str() {
            if doc.get(r).is_none() {
                errs.push(format!("{r}: required field missing"));
            }
        }
    }
    if let Some(spec) = doc.get("spec") {
        errs.extend(validate_schema(
            &crd.schema["properties"]["spec"],
            spec,
            "spec",
        ));
        errs.extend(cel_checks(kind, spec));
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// Rendering into Envoy configs

fn yaml(v: &Json) -> Result<serde_yaml::Value, String> {
    serde_yaml::to_value(v).map_err(|e| e.to_string())
}

fn to_json(v: &serde_yaml::Value) -> Result<Json, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

/// The shipped Envoy config a WasmPlugin / EnvoyFilter patch corresponds to.
fn base_file_for(context: &str) -> &'static str {
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
pub fn render_plugin_config(
    repo: &Path,
    base: &str,
    plugin_config: &Json,
) -> Result<serde_yaml::Value, String> {
    let mut doc = to_json(&load_shipped(repo, base)?)?;
    let text = serde_json::to_string(plugin_config).map_err(|e| e.to_string())?;
    let mut n = 0;
    for f in http_filters(&mut doc)?.iter_mut() {
        if f["name"] == "envoy.filters.http.wasm" {
            f["typed_config"]["config"]["configuration"]["value"] = json!(text);
            n += 1;
        }
    }
    if n == 0 {
        return Err(format!(
            "envoy/{base} has no envoy.filters.http.wasm filter"
        ));
    }
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
fn envoy_validate(
    tools: &Tools,
    name: &str,
    doc: &serde_yaml::Value,
    expect_fail: bool,
) -> Result<String, String> {
    let dir = tools
        .repo
        .join(".harness-runs")
        .join(format!("istio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
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

// ---------------------------------------------------------------------------------------------
// tracing-check

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

const HCM_TYPE: &str =
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

// ---------------------------------------------------------------------------------------------
// config-dump: a real Envoy's /config_dump

/// The Zipkin native tracer block `config-dump --native-tracing` adds to every HCM.
pub fn native_tracing_block() -> Json {
    json!({
        "provider": {
            "name": "envoy.tracers.zipkin",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
                "collector_cluster": "zipkin",
                "collector_endpoint": "/api/v2/spans",
                "collector_endpoint_version": "HTTP_JSON"
            }
        }
    })
}

fn add_native_tracing(v: &mut Json) -> usize {
    let mut n = 0;
    match v {
        Json::Object(m) => {
            if m.get("@type").and_then(Json::as_str) == Some(HCM_TYPE) {
                m.insert("tracing".into(), native_tracing_block());
                n += 1;
            }
            for c in m.values_mut() {
                n += add_native_tracing(c);
            }
        }
        Json::Array(a) => {
            for c in a {
                n += add_native_tracing(c);
            }
        }
        _ => {}
    }
    n
}

/// Starts Envoy (through func-e) with the shipped config `file` (a path or a name in envoy/),
/// optionally with native tracing added to every HCM, and returns its `/config_dump`.
pub fn live_config_dump(tools: &Tools, file: &Path, native_tracing: bool) -> Result<Json, String> {
    let fname = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or("config-dump needs a config file")?;
    let mut doc = load_shipped(&tools.repo, &fname)?;
    let unused: std::net::SocketAddr = "127.0.0.1:9".parse().expect("static addr");
    patch_config(
        &mut doc,
        &Patch {
            admin_port: 0,
            listener_port: 0,
            app: unused,
            zipkin: unused,
            wasm_path: tools.wasm_abs().display().to_string(),
            plugin: PluginConfig::Merge(None),
            node: None,
        },
    )?;
    if native_tracing {
        let mut j = to_json(&doc)?;
        if add_native_tracing(&mut j) == 0 {
            return Err(format!("envoy/{fname} has no HttpConnectionManager"));
        }
        doc = yaml(&j)?;
    }
    let stem = fname.trim_end_matches(".yaml");
    let dir = tools.repo.join(".harness-runs").join(format!(
        "config-dump-{stem}-{}-{}",
        std::process::id(),
        crate::run::envoy::next_base_id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let cfg = dir.join("envoy.yaml");
    std::fs::write(
        &cfg,
        serde_yaml::to_string(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let mut p = EnvoyProcess::spawn(&Launch {
        name: format!("dump-{stem}"),
        config_path: cfg,
        work_dir: dir.clone(),
        envoy_bin: tools.envoy.clone().ok_or("no Envoy binary")?,
        func_e_bin: tools.func_e.clone(),
        concurrency: 1,
        component_log_level: "wasm:info".into(),
        extra_args: vec![],
        service_node: Some(format!("dump-{stem}")),
    })?;
    let result = match p.wait_ready(Duration::from_secs(30)) {
        StartOutcome::Ready => {
            let admin = p.admin.clone().ok_or("admin address unknown")?;
            match crate::run::http::get(&admin, "/config_dump", Duration::from_secs(5)) {
                Ok((200, body)) => {
                    serde_json::from_str(&body).map_err(|e| format!("/config_dump: {e}"))
                }
                Ok((s, body)) => Err(format!("/config_dump: HTTP {s}: {}", body.trim())),
                Err(e) => Err(e),
            }
        }
        other => Err(format!(
            "Envoy did not become ready ({other:?}): {}",
            p.log_excerpt(12)
        )),
    };
    p.stop();
    if result.is_ok() && !tools.keep_logs {
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

// ---------------------------------------------------------------------------------------------
// istio-validate driver

/// One line of the `istio-validate` report.
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

/// Sabotage controls: the validator must refuse an unknown field and a wrong type in a real
/// manifest (otherwise a passing run would prove nothing).
fn schema_controls(crds: &Crds, doc: &Json) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let mut unknown = doc.clone();
    unknown["spec"]["bogusField"] = json!(true);
    let e = validate_manifest(crds, &unknown);
    out.push((
        "control: an unknown spec field is refused".to_string(),
        e.iter().any(|m| m.contains("bogusField")),
        e.join("; "),
    ));
    let mut wrong = doc.clone();
    wrong["spec"]["priority"] = json!("high");
    let e = validate_manifest(crds, &wrong);
    out.push((
        "control: a wrong type (priority: \"high\") is refused".to_string(),
        e.iter().any(|m| m.contains("spec.priority")),
        e.join("; "),
    ));
    let mut nested = doc.clone();
    nested["spec"]["match"] = json!([{"mode": "SERVER", "portz": [1]}]);
    let e = validate_manifest(crds, &nested);
    out.push((
        "control: an unknown nested field (match[0].portz) is refused".to_string(),
        e.iter().any(|m| m.contains("portz")),
        e.join("; "),
    ));
    out
}

pub struct ValidateOptions {
    pub crds: PathBuf,
    pub envoy_checks: bool,
}

/// Runs every check on `files`; prints one line per check; returns true when all passed.
pub fn istio_validate(
    files: &[PathBuf],
    opts: &ValidateOptions,
    tools: &Tools,
) -> Result<bool, String> {
    let crds = Crds::load(&opts.crds)?;
    println!(
        "Istio CRDs: {} ({} served versions)",
        opts.crds.display(),
        crds.versions.len()
    );
    let mut all_ok = true;
    let mut first_wasmplugin = None;
    let mut first_plugin_config = None;
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let docs = yaml_docs(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in &docs {
            let kind = doc["kind"].as_str().unwrap_or("?");
            let name = doc["metadata"]["name"].as_str().unwrap_or("?");
            let what = format!("{} {kind}/{name}", f.display());
            let errs = validate_manifest(&crds, doc);
            all_ok &= line(
                errs.is_empty(),
                &format!(
                    "{what} schema+CEL ({})",
                    doc["apiVersion"].as_str().unwrap_or("?")
                ),
                &errs.join("\n    "),
            );
            if kind == "WasmPlugin" && first_wasmplugin.is_none() {
                first_wasmplugin = Some(doc.clone());
            }
            if !opts.envoy_checks {
                continue;
            }
            match kind {
                "WasmPlugin" => {
                    let pc = &doc["spec"]["pluginConfig"];
                    let base = if doc["spec"]["selector"]["matchLabels"]["istio"].is_string() {
                        "gateway.yaml"
                    } else {
                        base_file_for(doc["spec"]["match"][0]["mode"].as_str().unwrap_or("SERVER"))
                    };
                    let r = render_plugin_config(&tools.repo, base, pc).and_then(|d| {
                        envoy_validate(tools, &format!("wasmplugin-{name}"), &d, false)
                    });
                    all_ok &= line(r.is_ok(), &format!("{what} pluginConfig accepted by meshtrace in Envoy (envoy/{base}, envoy --mode validate)"), &r.unwrap_or_else(|e| e));
                    first_plugin_config.get_or_insert((base, pc.clone()));
                }
                "EnvoyFilter" => {
                    for (i, p) in doc["spec"]["configPatches"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                    {
                        let r = render_envoyfilter_patch(&tools.repo, p).and_then(|(base, d)| {
                            envoy_validate(tools, &format!("envoyfilter-{name}-{i}"), &d, false)
                                .map(|m| format!("into envoy/{base}: {m}"))
                        });
                        all_ok &= line(
                            r.is_ok(),
                            &format!(
                                "{what} configPatches[{i}] ({}) rendered and validated by Envoy",
                                p["match"]["context"].as_str().unwrap_or("ANY")
                            ),
                            &r.unwrap_or_else(|e| e),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    match &first_wasmplugin {
        Some(doc) => {
            for (what, ok, msg) in schema_controls(&crds, doc) {
                all_ok &= line(ok, &what, if ok { "" } else { &msg });
            }
        }
        None => all_ok &= line(false, "control: no WasmPlugin manifest to sabotage", ""),
    }
    if let Some((base, mut pc)) = first_plugin_config {
        pc["sampling"]["rate"] = json!(1.5);
        let r = render_plugin_config(&tools.repo, base, &pc)
            .and_then(|d| envoy_validate(tools, "control-bad-plugin-config", &d, true));
        all_ok &= line(
            r.is_err(),
            "control: a pluginConfig with sampling.rate 1.5 is refused by Envoy",
            match &r {
                Ok(m) => m.as_str(),
                Err(_) => "",
            },
        );
    }
    Ok(all_ok)
}

// ---------------------------------------------------------------------------------------------
// CLI

pub const USAGE: &str = "  test-harness istio-validate [--crds FILE] [--no-envoy] FILE...
                                              Istio manifests: CRD schema, CEL rules, and Envoy
                                              checks of pluginConfig / EnvoyFilter patches
  test-harness tracing-check DUMP.json...     report HCMs with native tracing next to meshtrace
                                              (exit 0 ok, 1 reported, 2 error, 3 no meshtrace)
  test-harness config-dump [--native-tracing] [--out FILE] CONFIG
                                              a real Envoy's /config_dump for envoy/CONFIG";

/// Handles the Istio subcommands; None when `args[0]` is not one of them.
pub fn cli(args: &[String]) -> Option<ExitCode> {
    let cmd = args.first()?.as_str();
    if !["istio-validate", "tracing-check", "config-dump"].contains(&cmd) {
        return None;
    }
    Some(match cli_inner(cmd, &args[1..]) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(TRACING_ERROR)
        }
    })
}

fn cli_inner(cmd: &str, args: &[String]) -> Result<u8, String> {
    let mut files = Vec::new();
    let mut crds = None;
    let mut out = None;
    let mut no_envoy = false;
    let mut native = false;
    let mut envoy = None;
    let mut wasm = None;
    let mut func_e = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |n: &str| {
            it.next()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .ok_or(format!("{n} needs a value"))
        };
        match a.as_str() {
            "--crds" => crds = Some(val("--crds")?),
            "--out" => out = Some(val("--out")?),
            "--envoy" => envoy = Some(val("--envoy")?),
            "--wasm" => wasm = Some(val("--wasm")?),
            "--func-e" => func_e = Some(val("--func-e")?),
            "--no-envoy" => no_envoy = true,
            "--native-tracing" => native = true,
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        return Err(format!("{cmd} needs at least one file\n{USAGE}"));
    }
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let tools = || -> Result<Tools, String> {
        let mut t = Tools::discover()?;
        if let Some(e) = envoy.clone() {
            t.envoy = Some(abs(e));
        }
        if let Some(w) = wasm.clone() {
            t.wasm = abs(w);
        }
        if let Some(f) = func_e.clone() {
            t.func_e = abs(f);
        }
        Ok(t)
    };
    match cmd {
        "tracing-check" => {
            let mut codes = Vec::new();
            for f in &files {
                let text =
                    std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
                let dump: Json = serde_json::from_str(&text)
                    .map_err(|e| format!("{}: not JSON: {e}", f.display()))?;
                let (report, code) = tracing_check_report(&f.display().to_string(), &dump);
                print!("{report}");
                codes.push(code);
            }
            let worst = if codes.contains(&TRACING_CONFLICT) {
                TRACING_CONFLICT
            } else if codes.contains(&TRACING_NO_MESHTRACE) {
                TRACING_NO_MESHTRACE
            } else {
                TRACING_OK
            };
            Ok(worst)
        }
        "config-dump" => {
            let t = tools()?;
            t.require(true)?;
            let dump = live_config_dump(&t, &files[0], native)?;
            let text = serde_json::to_string_pretty(&dump).map_err(|e| e.to_string())?;
            match out {
                Some(p) => {
                    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
                    eprintln!("wrote {}", p.display());
                }
                None => println!("{text}"),
            }
            Ok(0)
        }
        _ => {
            let t = tools()?;
            if !no_envoy {
                t.require(false)?;
            }
            let opts = ValidateOptions {
                crds: crds.unwrap_or_else(|| t.repo.join(DEFAULT_CRDS)),
                envoy_checks: !no_envoy,
            };
            Ok(if istio_validate(&files, &opts, &t)? {
                0
            } else {
                1
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Json {
        serde_yaml::from_str(
            r#"
type: object
required: [url]
properties:
  url: {type: string, minLength: 1}
  sha256: {type: string, pattern: "(^$|^[a-f0-9]{64}$)"}
  mode: {type: string, enum: [CLIENT, SERVER]}
  priority: {type: integer, format: int32, nullable: true}
  rate: {type: number, minimum: 0, maximum: 100}
  name: {type: string, maxLength: 3}
  ports:
    type: array
    maxItems: 2
    items: {type: object, required: [number], properties: {number: {type: integer, minimum: 1, maximum: 65535}}}
  pluginConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
  labels: {type: object, additionalProperties: {type: string, maxLength: 5}}
  port: {anyOf: [{type: integer}, {type: string}], x-kubernetes-int-or-string: true}
  one:
    type: object
    properties: {a: {type: string}, b: {type: string}}
    oneOf:
    - not: {anyOf: [{required: [a]}, {required: [b]}]}
    - required: [a]
    - required: [b]
  empty: {type: object}
"#,
        )
        .unwrap()
    }

    #[test]
    fn structural_schema_table() {
        let s = schema();
        // (document, expected error substring or "" for valid)
        let rows: &[(&str, &str)] = &[
            (r#"{"url": "oci://x"}"#, ""),
            (r#"{}"#, "url: required field missing"),
            (r#"{"url": "oci://x", "bogus": 1}"#, "unknown field `bogus`"),
            (r#"{"url": 5}"#, "url: must be string, got integer"),
            (r#"{"url": ""}"#, "shorter than 1"),
            (r#"{"url": "x", "sha256": ""}"#, ""),
            (r#"{"url": "x", "sha256": "abc"}"#, "does not match pattern"),
            (
                r#"{"url": "x", "sha256": "ABCDEF0000000000000000000000000000000000000000000000000000000000"}"#,
                "does not match pattern",
            ),
            (r#"{"url": "x", "mode": "SERVER"}"#, ""),
            (r#"{"url": "x", "mode": "BOTH"}"#, "must be one of"),
            (r#"{"url": "x", "priority": null}"#, ""),
            (
                r#"{"url": "x", "priority": "high"}"#,
                "priority: must be integer",
            ),
            (
                r#"{"url": "x", "priority": 1.5}"#,
                "priority: must be integer",
            ),
            (r#"{"url": "x", "rate": 100}"#, ""),
            (r#"{"url": "x", "rate": 100.5}"#, "above the maximum"),
            (r#"{"url": "x", "rate": -1}"#, "below the minimum"),
            (r#"{"url": "x", "name": "abcd"}"#, "longer than 3"),
            (r#"{"url": "x", "ports": [{"number": 80}]}"#, ""),
            (
                r#"{"url": "x", "ports": [{"number": 0}]}"#,
                "ports[0].number: 0 is below",
            ),
            (
                r#"{"url": "x", "ports": [{"numbr": 80}]}"#,
                "ports[0].numbr: unknown field",
            ),
            (
                r#"{"url": "x", "ports": [{"number": 1}, {"number": 2}, {"number": 3}]}"#,
                "more than 2 items",
            ),
            (
                r#"{"url": "x", "ports": {"number": 1}}"#,
                "ports: must be array",
            ),
            (
                r#"{"url": "x", "pluginConfig": {"any": {"deep": [1, "x"]}}}"#,
                "",
            ),
            (
                r#"{"url": "x", "pluginConfig": "text"}"#,
                "pluginConfig: must be object",
            ),
            (r#"{"url": "x", "labels": {"app": "web"}}"#, ""),
            (
                r#"{"url": "x", "labels": {"app": 1}}"#,
                "labels.app: must be string",
            ),
            (
                r#"{"url": "x", "labels": {"app": "toolong"}}"#,
                "longer than 5",
            ),
            (r#"{"url": "x", "port": 8080}"#, ""),
            (r#"{"url": "x", "port": "http"}"#, ""),
            (r#"{"url": "x", "port": true}"#, "integer or a string"),
            (r#"{"url": "x", "one": {}}"#, ""),
            (r#"{"url": "x", "one": {"a": "1"}}"#, ""),
            (
                r#"{"url": "x", "one": {"a": "1", "b": "2"}}"#,
                "exactly one oneOf",
            ),
            (r#"{"url": "x", "one": {"c": "1"}}"#, "one.c: unknown field"),
            (r#"{"url": "x", "empty": {}}"#, ""),
            (
                r#"{"url": "x", "empty": {"k": 1}}"#,
                "empty.k: unknown field",
            ),
        ];
        for (doc, want) in rows {
            let v: Json = serde_json::from_str(doc).unwrap();
            let errs = validate_schema(&s, &v, "");
            if want.is_empty() {
                assert!(errs.is_empty(), "{doc}: unexpected errors {errs:?}");
            } else {
                assert!(
                    errs.iter().any(|e| e.contains(want)),
                    "{doc}: expected an error containing {want:?}, got {errs:?}"
                );
            }
        }
    }

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

    fn mini_crds() -> Crds {
        Crds::parse(
            r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: extensions.istio.io
  names: {kind: WasmPlugin}
  versions:
  - name: v1alpha1
    served: true
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [url]
            properties:
              url: {type: string}
              sha256: {type: string}
              failStrategy: {type: string}
              pluginConfig: {type: object, x-kubernetes-preserve-unknown-fields: true}
  - name: v1beta9
    served: false
"#,
        )
        .unwrap()
    }

    #[test]
    fn manifest_envelope_table() {
        let crds = mini_crds();
        let ok_spec = json!({"url": "oci://r/m:1", "sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {"x": 1}});
        let base = json!({"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
                          "metadata": {"name": "m", "namespace": "default"}, "spec": ok_spec});
        let with = |k: &str, v: Json| {
            let mut d = base.clone();
            d[k] = v;
            d
        };
        let rows: Vec<(Json, &str)> = vec![
            (base.clone(), ""),
            (
                with("apiVersion", json!("extensions.istio.io/v1beta9")),
                "no served CRD version",
            ),
            (with("kind", json!("WasmPlugins")), "no served CRD version"),
            (
                with("metadata", json!({"namespace": "default"})),
                "metadata.name: required",
            ),
            (with("metadata", json!({"name": "Bad_Name"})), "DNS-1123"),
            (
                with("metadata", json!({"name": "m", "uid": "x"})),
                "metadata.uid",
            ),
            (with("status", json!({})), "status: unknown top-level"),
            (
                with(
                    "spec",
                    json!({"sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {}}),
                ),
                "spec.url: required",
            ),
            (
                with(
                    "spec",
                    json!({"url": "oci://r/m:1", "sha256": "b".repeat(64), "failStrategy": "FAIL_OPEN", "pluginConfig": {}, "bogus": 1}),
                ),
                "unknown field `bogus`",
            ),
        ];
        let mut no_spec = base.clone();
        no_spec.as_object_mut().unwrap().remove("spec");
        let rows = rows.into_iter().chain([(no_spec, "spec: required")]);
        for (doc, want) in rows {
            let errs = validate_manifest(&crds, &doc);
            if want.is_empty() {
                assert!(errs.is_empty(), "{doc}: unexpected {errs:?}");
            } else {
                assert!(
                    errs.iter().any(|e| e.contains(want)),
                    "{doc}: expected {want:?}, got {errs:?}"
                );
            }
        }
    }

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
