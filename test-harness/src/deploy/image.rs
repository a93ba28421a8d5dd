//! The OCI image commands: `image` writes the two layouts of the module, `push` sends one to a
//! registry (crane, or the built-in loopback client), `image-test` runs the registry round trip.
//! Each takes resolved paths; defaults are the CLI's business (`main.rs` via `crate::tools`).

use crate::deploy::oci::{self, Reference, Variant};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `image` writes.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    pub wasm: PathBuf,
    /// The image layout; the artifact layout goes next to it (see [`artifact_dir`]).
    pub out: PathBuf,
    pub tag: String,
}

/// What `push` sends where.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `host[:port]/repository[:tag]`.
    pub reference: String,
    pub layout: PathBuf,
    pub crane: PathBuf,
    /// Use the built-in plain-HTTP client even when crane is there.
    pub http: bool,
}

/// `<DIR>-artifact` next to the image layout `DIR`.
pub fn artifact_dir(image_dir: &Path) -> PathBuf {
    let mut s = image_dir.as_os_str().to_owned();
    s.push("-artifact");
    PathBuf::from(s)
}

/// Writes both layouts and prints their digests and the WasmPlugin `sha256`.
pub fn image(o: &ImageOptions) -> Result<(), String> {
    let wasm = std::fs::read(&o.wasm).map_err(|e| format!("{}: {e}", o.wasm.display()))?;
    if !wasm.starts_with(b"\0asm") {
        return Err(format!("{} is not a Wasm module", o.wasm.display()));
    }
    for (variant, dir) in [
        (Variant::Image, o.out.clone()),
        (Variant::Artifact, artifact_dir(&o.out)),
    ] {
        let img = oci::build(&wasm, variant)?;
        oci::write_layout(&img, &dir, &o.tag)?;
        println!(
            "{:<8} {}  {}",
            variant.name(),
            img.manifest_digest,
            dir.display()
        );
    }
    let img = oci::build(&wasm, Variant::Image)?;
    println!("WasmPlugin sha256 (image): {}", img.wasmplugin_sha256());
    Ok(())
}

/// Pushes the layout and checks the registry reports the layout's manifest digest.
pub fn push(o: &PushOptions) -> Result<(), String> {
    let r = Reference::parse(&o.reference)?;
    let img = oci::read_layout(&o.layout)?;
    let digest = if o.http || !o.crane.is_file() {
        if !r.is_loopback() {
            return Err(format!(
                "the built-in client speaks plain HTTP without auth and only to loopback registries; \
                 use crane ({}, without --http) to push to {}",
                o.crane.display(),
                r.registry
            ));
        }
        oci::push_http(&img, &r)?
    } else {
        crane_push(&o.crane, &o.layout, &r)?
    };
    if digest != img.manifest_digest {
        return Err(format!(
            "the registry reports {digest}, the layout has {}",
            img.manifest_digest
        ));
    }
    println!("pushed {r} {digest}");
    println!(
        "WasmPlugin: url: oci://{r}  sha256: {}",
        img.wasmplugin_sha256()
    );
    Ok(())
}

/// `crane push`; returns the manifest digest crane reports.
fn crane_push(crane: &Path, layout: &Path, r: &Reference) -> Result<String, String> {
    let mut c = Command::new(crane);
    if r.is_loopback() {
        c.arg("--insecure");
    }
    c.arg("push").arg(layout).arg(r.to_string());
    // Pushing to a remote registry can be slow; the bound only matters for a hung crane.
    let out = crate::process::output_showing_stderr(&mut c, Duration::from_secs(600))
        .map_err(|e| format!("{}: {e}", crane.display()))?;
    if !out.status.success() {
        return Err(format!("crane push failed ({})", out.status));
    }
    // crane prints the pushed reference as `registry/repository@sha256:...`.
    let printed = String::from_utf8_lossy(&out.stdout);
    printed
        .trim()
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .ok_or_else(|| format!("crane push printed no digest: {printed:?}"))
}

/// The push/pull round trip through a real local registry, in a scratch directory under
/// `<repo>/.harness-runs/`.
pub fn image_test(repo: &Path, wasm: &Path, crane: &Path) -> Result<(), String> {
    let work = crate::run::run_dir(repo, "image-test")?;
    crate::deploy::oci_e2e::run_image_test(wasm, crane, &work, &mut |l| println!("{l}"))
}
