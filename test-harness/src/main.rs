//! test-harness CLI: `replay`, `validate`, `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use test_harness::deploy::validate;
use test_harness::{report, run_many, Tools};

const USAGE: &str = "usage:
  test-harness replay [OPTIONS] FILE|DIR...   replay scenario files (a DIR means its *.yaml)
  test-harness validate [OPTIONS] FILE...     envoy --mode validate on Envoy configs
  test-harness demo [--topology a|b|basic] [--hold]   run a demo topology and print its traces
                                              (a: Istio + Jaeger, b: Linkerd-style + Zipkin; default a)
  test-harness image|push|image-test ...      OCI image of the module (`test-harness image --help`)
  test-harness istio-validate [--crds FILE] [--no-envoy] FILE...   Istio manifests (CRD schema, CEL, Envoy)
  test-harness tracing-check DUMP.json...     native tracing next to meshtrace in a config dump?
  test-harness config-dump [--native-tracing] [--out FILE] CONFIG   a real Envoy's /config_dump

options:
  --wasm PATH     wasm module (default <repo>/dist/meshtrace.wasm)
  --envoy PATH    Envoy binary (default $ENVOY_PATH, else the one in <repo>/.tools/venv)
  --func-e PATH   func-e binary (default <repo>/.tools/bin/func-e)
  --keep-logs     keep every run directory under <repo>/.harness-runs/ (failed runs are always kept)
  --jobs N        replay: scenarios run in parallel (default 1)
  --hold          demo: keep everything running until Ctrl-C
  --topology T    demo: a (default), b or basic";

struct Args {
    cmd: String,
    files: Vec<PathBuf>,
    wasm: Option<PathBuf>,
    envoy: Option<PathBuf>,
    func_e: Option<PathBuf>,
    keep_logs: bool,
    jobs: usize,
    hold: bool,
    topology: String,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().ok_or("missing command")?;
    let mut a = Args {
        cmd,
        files: Vec::new(),
        wasm: None,
        envoy: None,
        func_e: None,
        keep_logs: false,
        jobs: 1,
        hold: false,
        topology: "a".to_string(),
    };
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .filter(|v| !v.is_empty())
                .ok_or(format!("{name} needs a non-empty value"))
        };
        match arg.as_str() {
            "--wasm" => a.wasm = Some(value("--wasm")?.into()),
            "--envoy" => a.envoy = Some(value("--envoy")?.into()),
            "--func-e" => a.func_e = Some(value("--func-e")?.into()),
            "--jobs" => {
                a.jobs = value("--jobs")?
                    .parse()
                    .map_err(|_| "--jobs needs a number".to_string())?
            }
            "--keep-logs" => a.keep_logs = true,
            "--hold" => a.hold = true,
            "--topology" => a.topology = value("--topology")?,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => a.files.push(arg.into()),
        }
    }
    Ok(a)
}

fn expand(files: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for f in files {
        if f.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| format!("{}: {e}", f.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(f.clone());
        }
    }
    Ok(out)
}

/// Envoy and func-e run in per-run directories, so relative paths are made absolute.
fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some((cmd, rest)) = argv.split_first() {
        if let Some(code) = test_harness::deploy::oci_cli::dispatch(cmd, rest) {
            return code;
        }
    }
    if let Some(code) = test_harness::deploy::istio::cli(&argv) {
        return code;
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut tools = match Tools::discover() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(w) = args.wasm {
        tools.wasm = absolute(w);
    }
    if let Some(e) = args.envoy {
        tools.envoy = Some(absolute(e));
    }
    if let Some(f) = args.func_e {
        tools.func_e = absolute(f);
    }
    tools.keep_logs = args.keep_logs;
    match args.cmd.as_str() {
        "replay" => {
            let files = match expand(&args.files) {
                Ok(f) if !f.is_empty() => f,
                Ok(_) => {
                    eprintln!("error: replay needs at least one scenario file\n\n{USAGE}");
                    return ExitCode::from(2);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = tools.require(true) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let outcomes = run_many(&files, &tools, args.jobs, &|o| {
                println!("{}", report::render(o))
            });
            print!("{}", report::summary(&outcomes));
            if outcomes.iter().all(|o| o.passed()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "validate" => {
            if args.files.is_empty() {
                eprintln!("error: validate needs at least one Envoy config\n\n{USAGE}");
                return ExitCode::from(2);
            }
            if let Err(e) = tools.require(false) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            let mut failed = 0;
            for f in &args.files {
                let v = validate::validate_file(f, &tools);
                println!(
                    "{} {}: {}",
                    if v.ok { "PASS" } else { "FAIL" },
                    f.display(),
                    v.message
                );
                if !v.ok {
                    failed += 1;
                }
            }
            println!("{} passed, {failed} failed", args.files.len() - failed);
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        "demo" => match test_harness::report::demo::run_topology(&tools, &args.topology, args.hold)
        {
            Ok(o) if o.passed() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        other => {
            eprintln!("error: unknown command {other}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
