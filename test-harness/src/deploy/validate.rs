//! `test-harness validate FILE...`: `envoy --mode validate` on Envoy configs, with the wasm path
//! rewritten to an absolute, existing file.

use crate::run::config::set_wasm_path;
use crate::tools::Tools;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[derive(Debug)]
pub struct Validation {
    pub ok: bool,
    pub message: String,
}

pub fn validate_file(path: &Path, tools: &Tools) -> Validation {
    match validate_inner(path, tools) {
        Ok(m) => Validation {
            ok: true,
            message: m,
        },
        Err(m) => Validation {
            ok: false,
            message: m,
        },
    }
}

fn validate_inner(path: &Path, tools: &Tools) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("not YAML: {e}"))?;
    let wasm = tools.wasm_abs();
    let n = set_wasm_path(&mut doc, &wasm.display().to_string())?;
    let dir = crate::run::run_dir(&tools.repo, "validate")?;
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "envoy.yaml".into());
    let tmp = dir.join(file_name);
    std::fs::write(
        &tmp,
        serde_yaml::to_string(&doc).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let envoy = tools
        .envoy
        .clone()
        .ok_or("no Envoy binary (set ENVOY_PATH or pass --envoy)")?;
    let mut cmd = Command::new(&envoy);
    cmd.arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(&tmp)
        .arg("--base-id")
        .arg(crate::run::envoy::next_base_id().to_string())
        .arg("--disable-hot-restart")
        .current_dir(&dir);
    // Validation takes a second or two; the bound only matters for a hung Envoy.
    let out = crate::process::output(&mut cmd, Duration::from_secs(120))
        .map_err(|e| format!("cannot run {}: {e}", envoy.display()))?;
    let _ = std::fs::remove_dir_all(&dir);
    let mut all = String::from_utf8_lossy(&out.stdout).into_owned();
    all.push_str(&String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = all
        .lines()
        .filter(|l| !l.contains("statically linked extensions") && !l.contains("]   envoy."))
        .collect();
    let tail = tail[tail.len().saturating_sub(8)..].join("\n");
    let wasm_note = if n == 0 {
        " (no wasm filter found; nothing substituted)".to_string()
    } else {
        format!(" (wasm: {})", wasm.display())
    };
    if out.status.success() {
        Ok(format!("OK{wasm_note}"))
    } else {
        Err(format!(
            "envoy --mode validate failed ({}){wasm_note}:\n{tail}",
            out.status
        ))
    }
}
