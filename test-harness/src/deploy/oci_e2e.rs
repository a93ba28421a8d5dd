//! End-to-end check of the OCI images against a real local registry (`crane registry serve`):
//! build twice (reproducible), push with the harness's own distribution-API client and with
//! `crane push`, pull back with crane and with the system `tar`, and check media types, digests and
//! that `plugin.wasm` is byte-identical to the module.

use crate::deploy::oci::{self, Manifest, Reference, Variant};
use crate::process::{self, ports, Supervised};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one crane or tar command may take (they take well under a second here).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// A `crane registry serve` process (in-memory storage), stopped on drop, also on failure.
pub struct Registry {
    _child: Supervised,
    pub addr: String,
}

impl Registry {
    /// Starts an in-memory registry on a free loopback port and waits until `/v2/` answers.
    pub fn start(crane: &Path) -> Result<Registry, String> {
        let mut last = String::new();
        // A port from the allocator is not one the kernel hands out meanwhile; another process
        // on the machine may still take it, hence the retries.
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", ports::free_port()?);
            let mut cmd = Command::new(crane);
            cmd.args(["registry", "serve", "--address", &addr])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = Supervised::spawn(&mut cmd)
                .map_err(|e| format!("starting {} registry serve: {e}", crane.display()))?;
            match wait_serving(&mut child, &addr) {
                Ok(()) => {
                    return Ok(Registry {
                        _child: child,
                        addr,
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(format!("the registry did not come up: {last}"))
    }
}

/// Waits (15 s at most) until the registry at `addr` answers `GET /v2/` with 200.
fn wait_serving(child: &mut Supervised, addr: &str) -> Result<(), String> {
    let mut last = String::from("no answer");
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait() {
            return Err(format!("crane registry serve on {addr} exited: {st}"));
        }
        match crate::run::http::get(addr, "/v2/", Duration::from_secs(2)) {
            Ok((200, _)) => return Ok(()),
            Ok((s, b)) => last = format!("GET /v2/ answered {s}: {b}"),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = process::output(cmd, COMMAND_TIMEOUT).map_err(|e| format!("{cmd:?}: {e}"))?;
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

/// One pushed reference and what it must hold.
struct Pulled<'a> {
    crane: &'a Path,
    reference: &'a str,
    img: &'a oci::Image,
    wasm: &'a [u8],
}

impl Pulled<'_> {
    /// `crane --insecure ARGS...`.
    fn crane(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        run(Command::new(self.crane).arg("--insecure").args(args))
    }

    /// A blob of this reference's repository (`crane blob` takes `registry/repository@digest`).
    fn blob(&self, digest: &str) -> Result<Vec<u8>, String> {
        let r = Reference::parse(self.reference).map_err(|e| e.to_string())?;
        self.crane(&["blob", &format!("{}/{}@{digest}", r.registry, r.repository)])
    }

    /// The registry's digest and manifest are the local ones (what WasmPlugin.sha256 carries).
    fn verify_manifest(&self) -> Result<Manifest, String> {
        let reference = self.reference;
        let digest = String::from_utf8_lossy(&self.crane(&["digest", reference])?)
            .trim()
            .to_string();
        check(digest == self.img.manifest_digest, || {
            format!(
                "{reference}: registry digest {digest} != local {}",
                self.img.manifest_digest
            )
        })?;
        let manifest = self.crane(&["manifest", reference])?;
        check(manifest == self.img.manifest, || {
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
        Ok(m)
    }

    /// The image variant: config platform, and a single-file layer holding the module.
    fn verify_image(
        &self,
        m: &Manifest,
        work: &Path,
        log: &mut dyn FnMut(String),
    ) -> Result<(), String> {
        let reference = self.reference;
        check(m.config.media_type == oci::CONFIG_MEDIA_TYPE, || {
            format!("{reference}: config media type {}", m.config.media_type)
        })?;
        let last = m.layers.last().ok_or("manifest has no layers")?;
        check(last.media_type == oci::LAYER_MEDIA_TYPE, || {
            format!("{reference}: last layer media type {}", last.media_type)
        })?;
        let config: serde_json::Value =
            serde_json::from_slice(&self.crane(&["config", reference])?)
                .map_err(|e| format!("{reference}: config is not JSON: {e}"))?;
        check(
            config["architecture"] == "wasm" && config["os"] == "wasip1",
            || format!("{reference}: config platform {config}"),
        )?;
        let layer = self.blob(&last.digest)?;
        check(oci::digest_of(&layer) == last.digest, || {
            format!("{reference}: pulled layer does not match its digest")
        })?;
        self.verify_layer_with_tar(&layer, work, log)?;
        // And crane's own view of the image filesystem.
        let fs = self.crane(&["export", reference, "-"])?;
        let members = oci::tar_members(&fs)?;
        check(
            members.len() == 1 && members[0].0 == oci::PLUGIN_FILE && members[0].2 == self.wasm,
            || {
                format!(
                    "{reference}: crane export gives {:?}",
                    members.iter().map(|m| &m.0).collect::<Vec<_>>()
                )
            },
        )
    }

    /// Reads the layer with the system tar (an implementation independent of ours).
    fn verify_layer_with_tar(
        &self,
        layer: &[u8],
        work: &Path,
        log: &mut dyn FnMut(String),
    ) -> Result<(), String> {
        let reference = self.reference;
        let tgz = work.join("layer.tar.gz");
        std::fs::write(&tgz, layer).map_err(|e| e.to_string())?;
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
        check(extracted == self.wasm, || {
            format!("{reference}: plugin.wasm in the layer differs from the module")
        })
    }

    /// The two-layer artifact variant: Wasm content layer first, then the Wasm config.
    fn verify_artifact(&self, m: &Manifest) -> Result<(), String> {
        let reference = self.reference;
        let types: Vec<&str> = m.layers.iter().map(|l| l.media_type.as_str()).collect();
        check(
            types == [oci::WASM_LAYER_MEDIA_TYPE, oci::WASM_CONFIG_MEDIA_TYPE],
            || format!("{reference}: artifact layer media types {types:?}"),
        )?;
        let module = self.blob(&m.layers[0].digest)?;
        check(module == self.wasm, || {
            format!("{reference}: the Wasm content layer differs from the module")
        })
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
    let p = Pulled {
        crane,
        reference,
        img,
        wasm,
    };
    let m = p.verify_manifest()?;
    match img.variant {
        Variant::Image => p.verify_image(&m, work, log)?,
        Variant::Artifact => p.verify_artifact(&m)?,
    }
    log(format!(
        "  {reference}: {} (crane digest/manifest/blob agree)",
        img.manifest_digest
    ));
    Ok(())
}

/// Two independent builds of `variant` give byte-identical layouts, and a changed module a new
/// digest; returns the first build.
fn check_reproducible(
    wasm: &[u8],
    variant: Variant,
    work: &Path,
    log: &mut dyn FnMut(String),
) -> Result<oci::Image, String> {
    let dirs: Vec<PathBuf> = (0..2)
        .map(|i| work.join(format!("{}-{i}", variant.name())))
        .collect();
    let mut built = Vec::new();
    for d in &dirs {
        let img = oci::build(wasm, variant)?;
        oci::write_layout(&img, d, "latest")?;
        built.push(oci::read_layout(d)?);
    }
    check(
        built[0].manifest_digest == built[1].manifest_digest && built[0].blobs == built[1].blobs,
        || format!("{} builds are not reproducible", variant.name()),
    )?;
    for f in ["oci-layout", "index.json"] {
        let a = std::fs::read(dirs[0].join(f)).map_err(|e| e.to_string())?;
        let b = std::fs::read(dirs[1].join(f)).map_err(|e| e.to_string())?;
        check(a == b, || format!("{f} differs between two builds"))?;
    }
    let mut changed = wasm.to_vec();
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
    Ok(built.remove(0))
}

/// Pushes both variants to a fresh local registry in every supported way and pulls each back.
fn round_trips(
    crane: &Path,
    image: &oci::Image,
    artifact: &oci::Image,
    wasm: &[u8],
    work: &Path,
    log: &mut dyn FnMut(String),
) -> Result<(), String> {
    let reg = Registry::start(crane)?;
    log(format!("registry: crane registry serve on {}", reg.addr));
    let image_dir = work.join("image-0");

    // 1. Our own distribution-API client.
    let r = Reference::parse(&format!("{}/meshtrace:http", reg.addr))?;
    let got = oci::push_http(image, &r)?;
    check(got == image.manifest_digest, || {
        format!("registry answered digest {got} for {r}")
    })?;
    verify_pulled(crane, &r.to_string(), image, wasm, work, log)?;
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
    verify_pulled(crane, &r2, image, wasm, work, log)?;
    log(format!("PASS image layout pushed with crane push: {r2}"));

    // 3. The two-layer Wasm artifact variant.
    let r3 = Reference::parse(&format!("{}/meshtrace:artifact", reg.addr))?;
    let got = oci::push_http(artifact, &r3)?;
    check(got == artifact.manifest_digest, || {
        format!("registry answered digest {got} for {r3}")
    })?;
    verify_pulled(crane, &r3.to_string(), artifact, wasm, work, log)?;
    log(format!("PASS two-layer Wasm artifact: {r3}"));

    // 4. Pull by digest, the way an oci://...@sha256 WasmPlugin url would.
    let by_digest = format!("{}/meshtrace@{}", reg.addr, image.manifest_digest);
    verify_pulled(crane, &by_digest, image, wasm, work, log)?;
    log("PASS pull by digest".to_string());
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

    let image = check_reproducible(&wasm, Variant::Image, work, log)?;
    let artifact = check_reproducible(&wasm, Variant::Artifact, work, log)?;
    round_trips(crane, &image, &artifact, &wasm, work, log)?;

    let _ = std::fs::remove_dir_all(work);
    log(format!(
        "WasmPlugin sha256 for {}: {} (image), {} (artifact)",
        wasm_path.display(),
        image.wasmplugin_sha256(),
        artifact.wasmplugin_sha256()
    ));
    Ok(())
}
