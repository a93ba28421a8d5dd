//! Listeners from a file (`lds: true`) and their replacement under traffic (`reload`).
//!
//! The generated bootstrap keeps its clusters static; its listeners move into an LDS discovery
//! response on disk that `dynamic_resources.lds_config.path_config_source` names, with the
//! file's directory as `watched_directory`. Envoy re-reads the file whenever a file is moved into
//! that directory, so a reload writes the new response next to it and renames it into place: Envoy
//! never sees a half-written file.

use crate::run::envoy::EnvoyProcess;
use serde_yaml::{Mapping, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const FILE: &str = "listeners.yaml";
/// How long a reload waits for Envoy to accept the new listeners.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The watched directory of an Envoy whose run directory is `envoy_dir`.
pub fn watched_dir(envoy_dir: &Path) -> PathBuf {
    envoy_dir.join("lds")
}

fn key(s: &str) -> Value {
    Value::String(s.to_string())
}

/// Moves `static_resources.listeners` of a patched config into an LDS discovery response and
/// points `dynamic_resources.lds_config` at `<dir>/listeners.yaml`, watching `dir` (which must be
/// absolute: Envoy resolves it against its own working directory). Returns the response.
pub fn split_listeners(doc: &mut Value, dir: &Path) -> Result<Value, String> {
    let root = doc.as_mapping_mut().ok_or("the config is not a map")?;
    let listeners = root
        .get_mut("static_resources")
        .and_then(Value::as_mapping_mut)
        .and_then(|s| s.remove("listeners"))
        .ok_or("config has no static_resources.listeners")?;
    let Value::Sequence(list) = listeners else {
        return Err("static_resources.listeners is not a list".to_string());
    };
    let resources = list
        .into_iter()
        .map(|l| {
            let Value::Mapping(m) = l else {
                return Err("a listener is not a map".to_string());
            };
            let mut typed = Mapping::new();
            typed.insert(key("@type"), key(LISTENER_TYPE));
            typed.extend(m);
            Ok(Value::Mapping(typed))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let path = dir.join(FILE).display().to_string();
    let lds: Value = serde_yaml::from_str(&format!(
        "lds_config:\n  resource_api_version: V3\n  path_config_source:\n    path: {path:?}\n    watched_directory: {{path: {:?}}}\n",
        dir.display().to_string()
    ))
    .map_err(|e| format!("lds_config: {e}"))?;
    root.insert(key("dynamic_resources"), lds);
    let mut resp = Mapping::new();
    resp.insert(key("resources"), Value::Sequence(resources));
    Ok(Value::Mapping(resp))
}

/// Writes the discovery response to a staging directory next to `dir`, then renames it into
/// `dir` (same file system, so the rename is atomic and is the move Envoy watches for).
pub fn write_listeners(dir: &Path, resp: &Value) -> Result<(), String> {
    let staging = dir.with_file_name("lds-staging");
    for d in [dir, staging.as_path()] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let text = serde_yaml::to_string(resp).map_err(|e| e.to_string())?;
    let tmp = staging.join(FILE);
    std::fs::write(&tmp, text).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    let dest = dir.join(FILE);
    std::fs::rename(&tmp, &dest).map_err(|e| format!("rename to {}: {e}", dest.display()))
}

/// The listener manager's counters that show whether an update was applied.
fn lds_stats(proc: &EnvoyProcess) -> Result<BTreeMap<String, u64>, String> {
    proc.stats("listener_manager.")
}

fn stat(st: &BTreeMap<String, u64>, name: &str) -> u64 {
    st.get(&format!("listener_manager.{name}"))
        .copied()
        .unwrap_or(0)
}

/// Installs `resp` as `proc`'s new listeners and waits until Envoy has applied it (its
/// `lds.update_success` grows), failing if it rejects it or the listener moves.
pub fn apply(proc: &EnvoyProcess, dir: &Path, resp: &Value) -> Result<String, String> {
    let before = lds_stats(proc)?;
    let addr_before = proc.listener_addr()?;
    let t0 = Instant::now();
    write_listeners(dir, resp)?;
    loop {
        let now = lds_stats(proc)?;
        if stat(&now, "lds.update_rejected") > stat(&before, "lds.update_rejected") {
            return Err(format!(
                "Envoy rejected the new listeners (lds.update_rejected {}); see its log",
                stat(&now, "lds.update_rejected")
            ));
        }
        if stat(&now, "lds.update_success") > stat(&before, "lds.update_success") {
            let addr = proc.listener_addr()?;
            if addr != addr_before {
                return Err(format!("the listener moved from {addr_before} to {addr}"));
            }
            let delta = |n: &str| stat(&now, n).saturating_sub(stat(&before, n));
            return Ok(format!(
                "applied in {} ms: lds.update_success {}→{}, in place +{}, address kept",
                t0.elapsed().as_millis(),
                stat(&before, "lds.update_success"),
                stat(&now, "lds.update_success"),
                delta("listener_in_place_updated"),
            ));
        }
        if t0.elapsed() >= APPLY_TIMEOUT {
            return Err(format!(
                "lds.update_success still {} after {} s",
                stat(&now, "lds.update_success"),
                APPLY_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_move_into_a_discovery_response() {
        let mut doc: Value = serde_yaml::from_str(
            "admin: {}\nstatic_resources:\n  listeners: [{name: l1, address: {}}]\n  clusters: []\n",
        )
        .unwrap();
        let dir = Path::new("/abs/run/gw/lds");
        let resp = split_listeners(&mut doc, dir).unwrap();
        assert!(doc["static_resources"].get("listeners").is_none());
        assert!(doc["static_resources"].get("clusters").is_some());
        let src = &doc["dynamic_resources"]["lds_config"]["path_config_source"];
        assert_eq!(src["path"].as_str(), Some("/abs/run/gw/lds/listeners.yaml"));
        assert_eq!(
            src["watched_directory"]["path"].as_str(),
            Some("/abs/run/gw/lds")
        );
        assert_eq!(resp["resources"][0]["@type"].as_str(), Some(LISTENER_TYPE));
        assert_eq!(resp["resources"][0]["name"].as_str(), Some("l1"));
        let mut bad: Value = serde_yaml::from_str("static_resources: {clusters: []}\n").unwrap();
        assert!(split_listeners(&mut bad, dir).is_err());
    }

    #[test]
    fn write_replaces_the_file_by_rename() {
        let base = std::env::temp_dir().join(format!("lds-test-{}", std::process::id()));
        let dir = base.join("lds");
        let v = |n: &str| {
            serde_yaml::from_str::<Value>(&format!("resources: [{{name: {n}}}]")).unwrap()
        };
        write_listeners(&dir, &v("a")).unwrap();
        write_listeners(&dir, &v("b")).unwrap();
        let back: Value =
            serde_yaml::from_str(&std::fs::read_to_string(dir.join(FILE)).unwrap()).unwrap();
        assert_eq!(back["resources"][0]["name"].as_str(), Some("b"));
        assert!(!base.join("lds-staging").join(FILE).exists());
        let _ = std::fs::remove_dir_all(base);
    }
}
