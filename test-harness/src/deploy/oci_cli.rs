//! CLI for the OCI image commands: `image`, `push`, `image-test` (parsed here so `main.rs` only
//! dispatches to it).

use crate::deploy::oci::{self, Reference, Variant};
use crate::tools;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub const USAGE: &str = "  test-harness image [--wasm PATH] [--out DIR] [--tag TAG]
                                              write reproducible OCI image layouts of the module:
                                              DIR (default <repo>/dist/oci, tar+gzip layer with
                                              plugin.wasm) and DIR-artifact (two-layer Wasm
                                              artifact); prints the digest for WasmPlugin sha256
  test-harness push REF [--layout DIR] [--crane PATH] [--http]
                                              push a layout (default <repo>/dist/oci) to REF
                                              (host[:port]/repo[:tag]) with crane (--insecure for
                                              loopback registries), or with the built-in plain-HTTP
                                              client (--http, or no crane; loopback only)
  test-harness image-test [--wasm PATH] [--crane PATH]
                                              push/pull round trip through a real local registry
                                              (crane registry serve), reproducibility, media types";

struct Opts {
    positional: Vec<String>,
    wasm: Option<PathBuf>,
    out: Option<PathBuf>,
    layout: Option<PathBuf>,
    crane: Option<PathBuf>,
    tag: String,
    http: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        positional: Vec::new(),
        wasm: None,
        out: None,
        layout: None,
        crane: None,
        tag: "latest".into(),
        http: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or(format!("{name} needs a non-empty value"))
        };
        match a.as_str() {
            "--wasm" => o.wasm = Some(value("--wasm")?.into()),
            "--out" => o.out = Some(value("--out")?.into()),
            "--layout" => o.layout = Some(value("--layout")?.into()),
            "--crane" => o.crane = Some(value("--crane")?.into()),
            "--tag" => o.tag = value("--tag")?,
            "--http" => o.http = true,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => o.positional.push(a.clone()),
        }
    }
    Ok(o)
}

/// `<DIR>-artifact` next to the image layout `DIR`.
pub fn artifact_dir(image_dir: &Path) -> PathBuf {
    let mut s = image_dir.as_os_str().to_owned();
    s.push("-artifact");
    PathBuf::from(s)
}

fn image(o: &Opts, root: &Path) -> Result<(), String> {
    let wasm_path = o.wasm.clone().unwrap_or_else(|| tools::default_wasm(root));
    let wasm = std::fs::read(&wasm_path).map_err(|e| format!("{}: {e}", wasm_path.display()))?;
    if !wasm.starts_with(b"\0asm") {
        return Err(format!("{} is not a Wasm module", wasm_path.display()));
    }
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| root.join("dist").join("oci"));
    for (variant, dir) in [
        (Variant::Image, out.clone()),
        (Variant::Artifact, artifact_dir(&out)),
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

fn push(o: &Opts, root: &Path) -> Result<(), String> {
    let [reference] = o.positional.as_slice() else {
        return Err("push needs exactly one REF (host[:port]/repository[:tag])".into());
    };
    let r = Reference::parse(reference)?;
    let layout = o
        .layout
        .clone()
        .unwrap_or_else(|| root.join("dist").join("oci"));
    let img = oci::read_layout(&layout)?;
    let crane = o
        .crane
        .clone()
        .unwrap_or_else(|| root.join(".tools").join("bin").join("crane"));
    let digest = if o.http || !crane.is_file() {
        if !r.is_loopback() {
            return Err(format!(
                "the built-in client speaks plain HTTP without auth and only to loopback registries; \
                 use crane ({}, without --http) to push to {}",
                crane.display(),
                r.registry
            ));
        }
        oci::push_http(&img, &r)?
    } else {
        let mut c = Command::new(&crane);
        if r.is_loopback() {
            c.arg("--insecure");
        }
        let out = c
            .arg("push")
            .arg(&layout)
            .arg(r.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
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
            .ok_or_else(|| format!("crane push printed no digest: {printed:?}"))?
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

fn image_test(o: &Opts, root: &Path) -> Result<(), String> {
    let wasm = o.wasm.clone().unwrap_or_else(|| tools::default_wasm(root));
    let crane = o
        .crane
        .clone()
        .unwrap_or_else(|| root.join(".tools").join("bin").join("crane"));
    let work = root
        .join(".harness-runs")
        .join(format!("image-test-{}", std::process::id()));
    crate::deploy::oci_e2e::run_image_test(&wasm, &crane, &work, &mut |l| println!("{l}"))
}

/// Runs `cmd` if it is one of this module's commands; `None` otherwise.
pub fn dispatch(cmd: &str, args: &[String]) -> Option<ExitCode> {
    let f: fn(&Opts, &Path) -> Result<(), String> = match cmd {
        "image" => image,
        "push" => push,
        "image-test" => image_test,
        _ => return None,
    };
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("usage:\n{USAGE}");
            return Some(ExitCode::from(2));
        }
    };
    if cmd != "push" && !o.positional.is_empty() {
        eprintln!("error: {cmd} takes no positional arguments\n\nusage:\n{USAGE}");
        return Some(ExitCode::from(2));
    }
    let root = match tools::find_repo_root() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Some(ExitCode::from(2));
        }
    };
    Some(match f(&o, &root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {cmd}: {e}");
            ExitCode::FAILURE
        }
    })
}
