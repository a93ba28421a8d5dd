//! test-harness CLI (`test-harness --help`, `test-harness COMMAND --help`):
//!
//! - `replay [OPTIONS] FILE|DIR...`: scenario files through real Envoy (a DIR means its *.yaml)
//! - `validate [OPTIONS] FILE...`: `envoy --mode validate` on Envoy configs
//! - `demo [--topology a|b|basic] [--hold]`: a demo topology and its traces
//! - `image [--wasm PATH] [--out DIR] [--tag TAG]`: reproducible OCI image layouts of the module
//! - `push REF [--layout DIR] [--crane PATH] [--http]`: a layout to a registry
//! - `image-test [--wasm PATH] [--crane PATH]`: round trip through a real local registry
//! - `istio-validate [--crds FILE] [--no-envoy] FILE...`: Istio manifests (schema, CEL, Envoy)
//! - `tracing-check DUMP.json...`: native tracing next to meshtrace in a config dump?
//! - `config-dump [--native-tracing] [--out FILE] CONFIG`: a real Envoy's `/config_dump`
//! - `istio-e2e`: meshtrace through a real Istio control plane (`make istio-e2e`)
//!
//! Parsing is `cli.rs`; this file maps the parsed options to the library's typed ones, and its
//! results to exit codes (2: the command could not run; tracing-check's own codes).

mod cli;

use clap::Parser;
use cli::{Cli, Command, ToolArgs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use test_harness::deploy::image::{self, ImageOptions, PushOptions};
use test_harness::deploy::istio::{self, ConfigDumpOptions, ValidateOptions, TRACING_ERROR};
use test_harness::deploy::validate;
use test_harness::tools::{find_repo_root, Paths};
use test_harness::{report, run_many, Tools};

/// A command's failure: the message and the exit code.
type Failure = (u8, String);

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Replay(a) => replay(&a.tools, a.jobs, &a.files),
        Command::Validate(a) => validate(&a.tools, &a.files),
        Command::Demo(a) => demo(&a.tools, &a.topology, a.hold),
        Command::Image(a) => with_paths("image", |_, p| {
            image::image(&ImageOptions {
                wasm: a.wasm.unwrap_or(p.wasm),
                out: a.out.unwrap_or(p.oci_dir),
                tag: a.tag,
            })
        }),
        Command::Push(a) => with_paths("push", |_, p| {
            image::push(&PushOptions {
                reference: a.reference,
                layout: a.layout.unwrap_or(p.oci_dir),
                crane: a.crane.unwrap_or(p.crane),
                http: a.http,
            })
        }),
        Command::ImageTest(a) => with_paths("image-test", |repo, p| {
            let wasm = a.wasm.unwrap_or(p.wasm);
            image::image_test(repo, &wasm, &a.crane.unwrap_or(p.crane))
        }),
        Command::IstioValidate(a) => istio_validate(&a.tools, a.crds, a.no_envoy, &a.files),
        Command::TracingCheck(a) => istio::tracing_check(&a.files).map_err(istio_failure),
        Command::ConfigDump(a) => config_dump(&a.tools, a.native_tracing, a.out, a.config),
        Command::IstioE2e(a) => istio_e2e(&a.tools, &a.cases),
        Command::Bench(a) => bench(&a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, e)) => {
            eprintln!("error: {e}");
            ExitCode::from(code)
        }
    }
}

/// The Istio commands exit 2 on any error, as `tracing-check` documents.
fn istio_failure(e: String) -> Failure {
    (TRACING_ERROR, e)
}

fn exit_code(ok: bool) -> u8 {
    if ok {
        0
    } else {
        1
    }
}

/// Envoy and func-e run in per-run directories, so relative paths are made absolute.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// The discovered tools with the command line's overrides.
fn tools_from(a: &ToolArgs) -> Result<Tools, String> {
    let mut tools = Tools::discover()?;
    if let Some(w) = &a.wasm {
        tools.wasm = absolute(w.clone());
    }
    if let Some(e) = &a.envoy {
        tools.envoy = Some(absolute(e.clone()));
    }
    if let Some(f) = &a.func_e {
        tools.func_e = absolute(f.clone());
    }
    // The environment may ask for kept logs too (`MESHTRACE_KEEP_LOGS=1`, read by discover).
    tools.keep_logs |= a.keep_logs;
    Ok(tools)
}

/// The image commands: the Makefile's paths as defaults, `error: CMD: ...` and exit 1 on failure.
fn with_paths(
    cmd: &str,
    f: impl FnOnce(&Path, Paths) -> Result<(), String>,
) -> Result<u8, Failure> {
    let repo = find_repo_root().map_err(|e| (2, e))?;
    let paths = Paths::load(&repo).map_err(|e| (2, e))?;
    f(&repo, paths)
        .map(|()| 0)
        .map_err(|e| (1, format!("{cmd}: {e}")))
}

fn expand(files: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in files {
        if !f.is_dir() {
            out.push(f.clone());
            continue;
        }
        let mut v: Vec<PathBuf> = std::fs::read_dir(f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        v.sort();
        out.extend(v);
    }
    Ok(out)
}

fn replay(a: &ToolArgs, jobs: usize, files: &[PathBuf]) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(|e| (2, e))?;
    let files = expand(files).map_err(|e| (2, e))?;
    if files.is_empty() {
        return Err((2, "replay needs at least one scenario file".into()));
    }
    tools.require(true).map_err(|e| (1, e))?;
    let outcomes = run_many(&files, &tools, jobs, &|o| println!("{}", report::render(o)));
    print!("{}", report::summary(&outcomes));
    Ok(exit_code(outcomes.iter().all(|o| o.passed())))
}

fn validate(a: &ToolArgs, files: &[PathBuf]) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(|e| (2, e))?;
    tools.require(false).map_err(|e| (1, e))?;
    let mut failed = 0;
    for f in files {
        let v = validate::validate_file(f, &tools);
        let verdict = if v.ok { "PASS" } else { "FAIL" };
        println!("{verdict} {}: {}", f.display(), v.message);
        failed += usize::from(!v.ok);
    }
    println!("{} passed, {failed} failed", files.len() - failed);
    Ok(exit_code(failed == 0))
}

fn demo(a: &ToolArgs, topology: &str, hold: bool) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(|e| (2, e))?;
    let outcome = report::demo::run_topology(&tools, topology, hold).map_err(|e| (1, e))?;
    Ok(exit_code(outcome.passed()))
}

fn istio_validate(
    a: &ToolArgs,
    crds: Option<PathBuf>,
    no_envoy: bool,
    files: &[PathBuf],
) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(istio_failure)?;
    let opts = ValidateOptions {
        crds: crds.unwrap_or_else(|| tools.paths.istio_crds.clone()),
        envoy_checks: !no_envoy,
    };
    let ok = istio::istio_validate(files, &opts, &tools).map_err(istio_failure)?;
    Ok(exit_code(ok))
}

fn config_dump(
    a: &ToolArgs,
    native_tracing: bool,
    out: Option<PathBuf>,
    config: PathBuf,
) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(istio_failure)?;
    tools.require(true).map_err(istio_failure)?;
    let opts = ConfigDumpOptions {
        config,
        native_tracing,
        out,
    };
    istio::config_dump(&tools, &opts).map_err(istio_failure)?;
    Ok(0)
}

fn bench(a: &cli::BenchArgs) -> Result<u8, Failure> {
    let tools = tools_from(&a.tools).map_err(|e| (2, e))?;
    tools.require(false).map_err(|e| (2, e))?;
    let envoy = tools
        .envoy
        .clone()
        .ok_or((2, "no Envoy (run make tools)".to_string()))?;
    let mut o = test_harness::bench::Options::full(tools.repo.join(&a.out));
    o.envoy = envoy;
    o.meshtrace = tools.wasm.clone();
    o.empty = absolute(a.empty.clone());
    o.floor = absolute(a.floor.clone());
    o.wrk = a.wrk.clone();
    o.alt = a
        .alt
        .iter()
        .map(|(n, p)| (n.clone(), absolute(p.clone())))
        .collect();
    o.only = a.only.clone();
    o.rounds = a.rounds;
    o.window = a.window;
    if a.smoke {
        o = o.smoke();
    }
    let r = test_harness::bench::run(&o, &tools.repo).map_err(|e| (1, e))?;
    if !o.only.is_empty() {
        return Ok(0);
    }
    let problems = test_harness::bench::smoke_problems(&r);
    for p in &problems {
        eprintln!("bench: {p}");
    }
    Ok(exit_code(problems.is_empty()))
}

fn istio_e2e(a: &ToolArgs, cases: &[String]) -> Result<u8, Failure> {
    let tools = tools_from(a).map_err(|e| (2, e))?;
    tools.require(false).map_err(|e| (2, e))?;
    let bins = test_harness::mesh::e2e::MeshBins::from_paths(&tools).map_err(|e| (2, e))?;
    let ok = test_harness::mesh::e2e::run(&tools, &bins, cases).map_err(|e| (1, e))?;
    Ok(exit_code(ok))
}
