//! End-to-end check of the OCI images against a real local registry (`crane registry serve`):
//! build twice (reproducible), push with the harness's own distribution-API client and with
//! `crane push`, pull back with crane and with the system `tar`, and check media types, digests and
//! that `plugin.wasm` is byte-identical to the module.

use crate::deploy::oci::{self, Manifest, Reference, Variant};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `crane registry serve` process, killed (and its storage removed) on drop, also on failure.
pub struct Registry {
    child: Child,
    pub addr: String,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl Registry {
    /// Starts an in-memory registry on a free loopback port and waits until `/v2/` answers.
    pub fn start(crane: &Path) -> Result<Registry, String> {
        let mut last = String::new();
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let child = Command::new(crane)
                .args(["registry", "serve", "--address", &addr])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {} registry serve: {e}", crane.display()))?;
            let mut reg = Registry { child, addr };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(st)) = reg.child.try_wait() {
                    last = format!("crane registry serve on {} exited: {st}", reg.addr);
                    break;
                }
                match crate::run::http::get(&reg.addr, "/v2/", Duration::from_secs(2)) {
                    Ok((200, _)) => return Ok(reg),
                    Ok((s, b)) => last = format!("GET /v2/ answered {s}: {b}"),
                    Err(e) => last = e,
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err(format!("the registry did not come up: {last}"))
    }
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

/// What `crane` reports for one pushed reference, checked against the local image.
fn verify_pulled(
    crane: &Path,
    reference: &str,
    img: &oci::Image,
    wasm: &[u8],
    work: &Path,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let crane_cmd = || {
        let mut c = Command::new(crane);
        c.arg("--insecure");
        c
    };
    // The registry's digest is the local manifest digest (what WasmPlugin.sha256 carries).
    let digest = String::from_utf8_lossy(&run(crane_cmd().args(["digest", reference]))?)
        .trim()
        .to_string();
    check(digest == img.manifest_digest, || {
        format!(
            "{reference}: registry digest {digest} != local {}",
            img.manifest_digest
        )
    })?;
    let manifest = run(crane_cmd().args(["manifest", reference]))?;
    check(manifest == img.manifest, || {
        format!("{reference}: pulled manifest differs from the local one")
    })?;
    check(oci::digest_of(&manifest) == digest, || {
        format!("{reference}: sha256 of the pulled manifest is not its digest")
    })?;
    let m: Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| format!("{reference}: manifest is not JSON: {e}"))?;
    check(m.media_type == oci::MANIFEST_MEDIA_TYPE, || {
        format!("{reference}: manifest media type {}", m.media_type)
    })?;
    // `crane blob` takes `registry/repository@digest` (no tag).
    let blob_for = |d: &str| {
        let r = Reference::parse(reference).map_err(|e| e.to_string())?;
        let base = format!("{}/{}", r.registry, r.repository);
        run(crane_cmd().args(["blob", &format!("{base}@{d}")]))
    };
    match img.variant {
        Variant::Image => {
            check(m.config.media_type == oci::CONFIG_MEDIA_TYPE, || {
                format!("{reference}: config media type {}", m.config.media_type)
            })?;
            let last = m.layers.last().ok_or("manifest has no layers")?;
            check(last.media_type == oci::LAYER_MEDIA_TYPE, || {
                format!("{reference}: last layer media type {}", last.media_type)
            })?;
            let config: serde_json::Value =
                serde_json::from_slice(&run(crane_cmd().args(["config", reference]))?)
                    .map_err(|e| format!("{reference}: config is not JSON: {e}"))?;
            check(
                config["architecture"] == "wasm" && config["os"] == "wasip1",
                || format!("{reference}: config platform {config}"),
            )?;
            let layer = blob_for(&last.digest)?;
            check(oci::digest_of(&layer) == last.digest, || {
                format!("{reference}: pulled layer does not match its digest")
            })?;
            // Read the layer with the system tar (an implementation independent of ours).
            let tgz = work.join("layer.tar.gz");
            std::fs::write(&tgz, &layer).map_err(|e| e.to_string())?;
            let list = run(Command::new("tar").arg("-tzvf").arg(&tgz))?;
            let list = String::from_utf8_lossy(&list);
            let lines: Vec<&str> = list.lines().collect();
            check(
                lines.len() == 1 && lines[0].ends_with(" plugin.wasm") && lines[0].starts_with('-'),
                || {
                    format!("{reference}: layer must hold exactly the regular file plugin.wasm, tar lists:\n{list}")
                },
            )?;
            log(format!("  layer listing: {}", lines[0]));
            let extracted = run(Command::new("tar")
                .arg("-xzOf")
                .arg(&tgz)
                .arg("plugin.wasm"))?;
            check(extracted == wasm, || {
                format!("{reference}: plugin.wasm in the layer differs from the module")
            })?;
            // And crane's own view of the image filesystem.
            let fs = run(crane_cmd().args(["export", reference, "-"]))?;
            let members = oci::tar_members(&fs)?;
            check(
                members.len() == 1 && members[0].0 == oci::PLUGIN_FILE && members[0].2 == wasm,
                || {
                    format!(
                        "{reference}: crane export gives {:?}",
                        members.iter().map(|m| &m.0).collect::<Vec<_>>()
                    )
                },
            )?;
        }
        Variant::Artifact => {
            let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
            check(
                types == [oci::WASM_LAYER_MEDIA_TYPE, oci::WASM_CONFIG_MEDIA_TYPE],
                || format!("{reference}: artifact layer media types {types:?}"),
            )?;
            let module = blob_for(&m.layers[0].digest)?;
            check(module == wasm, || {
                format!("{reference}: the Wasm content layer differs from the module")
            })?;
        }
    }
    log(format!(
        "  {reference}: {} (crane digest/manifest/blob agree)",
        img.manifest_digest
    ));
    Ok(())
}

/// Runs every check; `log` receives progress lines. `wasm_path` is the module, `crane` the crane
/// binary, `work` a scratch directory (created; removed on success).
pub fn run_image_test(
    wasm_path: &Path,
    crane: &Path,
    work: &Path,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let wasm = std::fs::read(wasm_path).map_err(|e| format!("{}: {e}", wasm_path.display()))?;
    check(wasm.starts_with(b"\0asm"), || {
        format!("{} is not a Wasm module", wasm_path.display())
    })?;
    check(crane.is_file(), || {
        format!("{} not found (make installs crane)", crane.display())
    })?;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| format!("{}: {e}", work.display()))?;

    // Reproducibility: two independent builds give byte-identical layouts.
    let mut digests = Vec::new();
    for variant in [Variant::Image, Variant::Artifact] {
        let dirs: Vec<PathBuf> = (0..2)
            .map(|i| work.join(format!("{}-{i}", variant.name())))
            .collect();
        let mut built = Vec::new();
        for d in &dirs {
            let img = oci::build(&wasm, variant)?;
            oci::write_layout(&img, d, "latest")?;
            built.push(oci::read_layout(d)?);
        }
        check(
            built[0].manifest_digest == built[1].manifest_digest
                && built[0].blobs == built[1].blobs,
            || format!("{} builds are not reproducible", variant.name()),
        )?;
        for f in ["oci-layout", "index.json"] {
            let a = std::fs::read(dirs[0].join(f)).map_err(|e| e.to_string())?;
            let b = std::fs::read(dirs[1].join(f)).map_err(|e| e.to_string())?;
            check(a == b, || format!("{f} differs between two builds"))?;
        }
        let mut changed = wasm.clone();
        changed.extend_from_slice(b"\0\x07changed"); // a trailing custom section
        let other = oci::build(&changed, variant)?;
        check(other.manifest_digest != built[0].manifest_digest, || {
            "a changed module kept the same digest".into()
        })?;
        log(format!(
            "PASS {} reproducible: {} (changed module -> {})",
            variant.name(),
            built[0].manifest_digest,
            other.manifest_digest
        ));
        digests.push(built.remove(0));
    }

    let reg = Registry::start(crane)?;
    log(format!("registry: crane registry serve on {}", reg.addr));
    let image = &digests[0];
    let artifact = &digests[1];
    let image_dir = work.join("image-0");

    // 1. Our own distribution-API client.
    let r = Reference::parse(&format!("{}/meshtrace:http", reg.addr))?;
    let got = oci::push_http(image, &r)?;
    check(got == image.manifest_digest, || {
        format!("registry answered digest {got} for {r}")
    })?;
    verify_pulled(crane, &r.to_string(), image, &wasm, work, log)?;
    log(format!(
        "PASS image pushed over HTTP and pulled with crane: {r}"
    ));

    // 2. crane push of the on-disk layout (what `make push` does).
    let r2 = format!("{}/meshtrace:crane", reg.addr);
    run(Command::new(crane)
        .arg("--insecure")
        .arg("push")
        .arg(&image_dir)
        .arg(&r2))?;
    verify_pulled(crane, &r2, image, &wasm, work, log)?;
    log(format!("PASS image layout pushed with crane push: {r2}"));

    // 3. The two-layer Wasm artifact variant.
    let r3 = Reference::parse(&format!("{}/meshtrace:artifact", reg.addr))?;
    let got = oci::push_http(artifact, &r3)?;
    check(got == artifact.manifest_digest, || {
        format!("registry answered digest {got} for {r3}")
    })?;
    verify_pulled(crane, &r3.to_string(), artifact, &wasm, work, log)?;
    log(format!("PASS two-layer Wasm artifact: {r3}"));

    // 4. Pull by digest, the way an oci://...@sha256 WasmPlugin url would.
    let by_digest = format!("{}/meshtrace@{}", reg.addr, image.manifest_digest);
    verify_pulled(crane, &by_digest, image, &wasm, work, log)?;
    log("PASS pull by digest".to_string());

    drop(reg);
    let _ = std::fs::remove_dir_all(work);
    log(format!(
        "WasmPlugin sha256 for {}: {} (image), {} (artifact)",
        wasm_path.display(),
        image.wasmplugin_sha256(),
        artifact.wasmplugin_sha256()
    ));
    Ok(())
}
