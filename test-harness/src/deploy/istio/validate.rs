//! `istio-validate`: every manifest against Istio's CRD schemas and the CEL rules, every WasmPlugin
//! `pluginConfig` and EnvoyFilter patch through `envoy --mode validate`, and sabotage controls
//! that prove the checks can fail. One report line per check.

use super::crds::{yaml_docs, Crds};
use super::manifest::validate_manifest;
use super::render::{
    base_file_for, envoy_validate, render_envoyfilter_patch, shipped_with_plugin_config,
};
use crate::tools::Tools;
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};

/// What `istio-validate` checks.
#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// `customresourcedefinitions.gen.yaml` of `istio.io/api`.
    pub crds: PathBuf,
    /// Also run the Envoy checks (pluginConfig, EnvoyFilter patches); they need Envoy and the
    /// module.
    pub envoy_checks: bool,
}

/// What the per-document checks found, and the first documents the controls sabotage.
#[derive(Default)]
struct Findings {
    all_ok: bool,
    first_wasmplugin: Option<Json>,
    first_plugin_config: Option<(&'static str, Json)>,
}

/// Runs every check on `files`; prints one line per check; returns true when all passed.
pub fn istio_validate(
    files: &[PathBuf],
    opts: &ValidateOptions,
    tools: &Tools,
) -> Result<bool, String> {
    if opts.envoy_checks {
        tools.require(false)?;
    }
    let crds = Crds::load(&opts.crds)?;
    println!(
        "Istio CRDs: {} ({} served versions)",
        opts.crds.display(),
        crds.versions.len()
    );
    let mut found = Findings {
        all_ok: true,
        ..Findings::default()
    };
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let docs = yaml_docs(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in &docs {
            check_doc(&crds, f, doc, opts, tools, &mut found);
        }
    }
    let controls_ok = run_controls(&crds, tools, &found);
    Ok(found.all_ok && controls_ok)
}

/// One line of the report.
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

fn check_doc(
    crds: &Crds,
    file: &Path,
    doc: &Json,
    opts: &ValidateOptions,
    tools: &Tools,
    found: &mut Findings,
) {
    let kind = doc["kind"].as_str().unwrap_or("?");
    let name = doc["metadata"]["name"].as_str().unwrap_or("?");
    let what = format!("{} {kind}/{name}", file.display());
    let errs = validate_manifest(crds, doc);
    let api = doc["apiVersion"].as_str().unwrap_or("?");
    found.all_ok &= line(
        errs.is_empty(),
        &format!("{what} schema+CEL ({api})"),
        &errs.join("\n    "),
    );
    if kind == "WasmPlugin" && found.first_wasmplugin.is_none() {
        found.first_wasmplugin = Some(doc.clone());
    }
    if !opts.envoy_checks {
        return;
    }
    match kind {
        "WasmPlugin" | "TrafficExtension" => check_plugin_config(doc, name, &what, tools, found),
        "EnvoyFilter" => found.all_ok &= check_envoyfilter(doc, name, &what, tools),
        _ => {}
    }
}

fn check_plugin_config(doc: &Json, name: &str, what: &str, tools: &Tools, found: &mut Findings) {
    // A TrafficExtension holds the WasmPlugin's fields under `wasm`.
    let pc = match doc["kind"].as_str() {
        Some("TrafficExtension") => &doc["spec"]["wasm"]["pluginConfig"],
        _ => &doc["spec"]["pluginConfig"],
    };
    let base = if doc["spec"]["selector"]["matchLabels"]["istio"].is_string() {
        "gateway.yaml"
    } else {
        base_file_for(doc["spec"]["match"][0]["mode"].as_str().unwrap_or("SERVER"))
    };
    let r = shipped_with_plugin_config(&tools.repo, base, pc).and_then(|d| {
        envoy_validate(
            tools,
            &format!(
                "{}-{name}",
                doc["kind"].as_str().unwrap_or("plugin").to_lowercase()
            ),
            &d,
            false,
        )
    });
    found.all_ok &= line(
        r.is_ok(),
        &format!("{what} pluginConfig accepted by meshtrace in Envoy (envoy/{base}, envoy --mode validate)"),
        &r.unwrap_or_else(|e| e),
    );
    found.first_plugin_config.get_or_insert((base, pc.clone()));
}

fn check_envoyfilter(doc: &Json, name: &str, what: &str, tools: &Tools) -> bool {
    let mut ok = true;
    let patches = doc["spec"]["configPatches"]
        .as_array()
        .into_iter()
        .flatten();
    for (i, p) in patches.enumerate() {
        let r = render_envoyfilter_patch(&tools.repo, p).and_then(|(base, d)| {
            envoy_validate(tools, &format!("envoyfilter-{name}-{i}"), &d, false)
                .map(|m| format!("into envoy/{base}: {m}"))
        });
        let context = p["match"]["context"].as_str().unwrap_or("ANY");
        ok &= line(
            r.is_ok(),
            &format!("{what} configPatches[{i}] ({context}) rendered and validated by Envoy"),
            &r.unwrap_or_else(|e| e),
        );
    }
    ok
}

/// The sabotage controls: a passing run proves nothing unless the same checks refuse a broken
/// copy of a real manifest.
fn run_controls(crds: &Crds, tools: &Tools, found: &Findings) -> bool {
    let mut ok = true;
    match &found.first_wasmplugin {
        Some(doc) => {
            for (what, passed, msg) in schema_controls(crds, doc) {
                ok &= line(passed, &what, if passed { "" } else { &msg });
            }
        }
        None => ok &= line(false, "control: no WasmPlugin manifest to sabotage", ""),
    }
    if let Some((base, pc)) = &found.first_plugin_config {
        let mut pc = pc.clone();
        pc["sampling"]["rate"] = json!(1.5);
        let r = shipped_with_plugin_config(&tools.repo, base, &pc)
            .and_then(|d| envoy_validate(tools, "control-bad-plugin-config", &d, true));
        ok &= line(
            r.is_err(),
            "control: a pluginConfig with sampling.rate 1.5 is refused by Envoy",
            match &r {
                Ok(m) => m.as_str(),
                Err(_) => "",
            },
        );
    }
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
