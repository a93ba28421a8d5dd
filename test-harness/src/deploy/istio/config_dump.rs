//! `config-dump`: a real Envoy (through func-e) started with a shipped config, optionally with
//! native tracing added, and its `/config_dump` (the fixture of the `tracing-check` tests).

use super::render::{to_json, yaml};
use super::tracing_check::HCM_TYPE;
use crate::run::config::{load_shipped, patch_config, Patch, PluginConfig};
use crate::run::envoy::{EnvoyProcess, Launch, StartOutcome};
use crate::tools::Tools;
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `config-dump` does.
#[derive(Debug, Clone)]
pub struct ConfigDumpOptions {
    /// A shipped config: a path or a file name in envoy/ (only the name is used).
    pub config: PathBuf,
    /// Add a Zipkin native tracer to every HttpConnectionManager.
    pub native_tracing: bool,
    /// Where to write the dump; stdout when None.
    pub out: Option<PathBuf>,
}

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

/// Writes the dump `opts` asks for, to `opts.out` or stdout.
pub fn config_dump(tools: &Tools, opts: &ConfigDumpOptions) -> Result<(), String> {
    let dump = live_config_dump(tools, &opts.config, opts.native_tracing)?;
    let text = serde_json::to_string_pretty(&dump).map_err(|e| e.to_string())?;
    let Some(p) = &opts.out else {
        println!("{text}");
        return Ok(());
    };
    if let Some(d) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    eprintln!("wrote {}", p.display());
    Ok(())
}

/// The shipped config `fname` as Envoy is started with it: the module path set, ports left to
/// the kernel, optionally native tracing in every HCM.
fn dump_config(
    tools: &Tools,
    fname: &str,
    native_tracing: bool,
) -> Result<serde_yaml::Value, String> {
    let mut doc = load_shipped(&tools.repo, fname)?;
    // The dump is read before any request, so the app and collector addresses are never used.
    let unused = SocketAddr::from(([127, 0, 0, 1], 9));
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
    if !native_tracing {
        return Ok(doc);
    }
    let mut j = to_json(&doc)?;
    if add_native_tracing(&mut j) == 0 {
        return Err(format!("envoy/{fname} has no HttpConnectionManager"));
    }
    yaml(&j)
}

/// Starts Envoy (through func-e) with the shipped config `file` (a path or a name in envoy/),
/// optionally with native tracing added to every HCM, and returns its `/config_dump`.
pub fn live_config_dump(tools: &Tools, file: &Path, native_tracing: bool) -> Result<Json, String> {
    let fname = file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .ok_or("config-dump needs a config file")?;
    let doc = dump_config(tools, &fname, native_tracing)?;
    let stem = fname.trim_end_matches(".yaml");
    let dir = crate::run::run_dir(&tools.repo, &format!("config-dump-{stem}"))?;
    let cfg = dir.join("envoy.yaml");
    let text = serde_yaml::to_string(&doc).map_err(|e| e.to_string())?;
    std::fs::write(&cfg, text).map_err(|e| e.to_string())?;
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
    let result = fetch_dump(&mut p);
    p.stop();
    if result.is_ok() && !tools.keep_logs {
        drop(p);
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn fetch_dump(p: &mut EnvoyProcess) -> Result<Json, String> {
    match p.wait_ready(Duration::from_secs(30)) {
        StartOutcome::Ready => {}
        other => {
            return Err(format!(
                "Envoy did not become ready ({other:?}): {}",
                p.log_excerpt(12)
            ))
        }
    }
    let admin = p.admin.clone().ok_or("admin address unknown")?;
    match crate::run::http::get(&admin, "/config_dump", Duration::from_secs(5))? {
        (200, body) => serde_json::from_str(&body).map_err(|e| format!("/config_dump: {e}")),
        (s, body) => Err(format!("/config_dump: HTTP {s}: {}", body.trim())),
    }
}
