//! The command line: one clap parser for every subcommand. Defaults that are paths are resolved
//! in `test_harness::tools`, not here, so `--help` names them and `main.rs` fills them in.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use test_harness::report::demo::TOPOLOGIES;

#[derive(Debug, Parser)]
#[command(
    name = "test-harness",
    about = "meshtrace's test harness: scenarios through real Envoy, release images, Istio checks",
    version
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay scenario files through real Envoy (a DIR means its *.yaml)
    Replay(ReplayArgs),
    /// `envoy --mode validate` on Envoy configs
    Validate(ValidateArgs),
    /// Run a demo topology and print its traces (a: Istio + Jaeger, b: Linkerd-style + Zipkin)
    Demo(DemoArgs),
    /// Write reproducible OCI image layouts of the module; prints the WasmPlugin sha256
    ///
    /// Writes DIR (tar+gzip layer holding plugin.wasm) and DIR-artifact (the two-layer Wasm
    /// artifact) and prints the manifest digest a WasmPlugin's sha256 must carry.
    Image(ImageArgs),
    /// Push an image layout to a registry (crane, or the built-in client for loopback)
    ///
    /// With crane (--insecure for loopback registries), or with the built-in plain-HTTP client
    /// (--http, or when crane is missing; loopback registries only).
    Push(PushArgs),
    /// Push/pull round trip of the image through a real local registry (crane registry serve)
    ImageTest(ImageTestArgs),
    /// Istio manifests: CRD schema, CEL rules, and Envoy checks of pluginConfig / EnvoyFilter
    IstioValidate(IstioValidateArgs),
    /// Report HCMs of config dumps with native tracing next to meshtrace
    ///
    /// Exit code: 0 ok, 1 native tracing reported, 2 error, 3 no meshtrace found.
    TracingCheck(TracingCheckArgs),
    /// Print a real Envoy's /config_dump for a shipped config (envoy/CONFIG)
    ConfigDump(ConfigDumpArgs),
    /// meshtrace through a real Istio control plane (kube-apiserver, istiod, istio-agent)
    ///
    /// Needs `make istio-tools`. Run it in a network namespace of its own (`make istio-e2e`
    /// does): the proxies Istio configures bind their listeners on every address.
    IstioE2e(IstioE2eArgs),
    /// meshtrace's cost side by side with no filter, an empty filter, the propagation floor and
    /// Envoy's own tracers (`make bench`; results in bench/results/). Needs 2 cores and wrk.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// The empty proxy-wasm filter (bench/empty, built for wasm32-wasip1)
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub empty: PathBuf,
    /// The propagation floor (bench/floor)
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub floor: PathBuf,
    #[arg(long, value_name = "PATH", default_value = "wrk", value_parser = non_empty_path)]
    pub wrk: PathBuf,
    /// Another meshtrace build, compared with --wasm at 1% and 100% in the same run (repeatable)
    #[arg(long, value_name = "NAME=PATH", value_parser = name_path)]
    pub alt: Vec<(String, PathBuf)>,
    /// Only configurations whose name contains this (repeatable; `none` always runs): a quick
    /// side-by-side comparison, results in the run directory, no completeness check
    #[arg(long, value_name = "SUBSTRING")]
    pub only: Vec<String>,
    /// Seconds long, one round: proves the bench works (results in the run directory)
    #[arg(long)]
    pub smoke: bool,
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds of each measured window
    #[arg(long, default_value_t = 5)]
    pub window: u32,
    /// Results directory
    #[arg(long, value_name = "DIR", default_value = "bench/results", value_parser = non_empty_path)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct IstioE2eArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Run only the cases whose name contains one of these (e.g. `--case shared`); all by default.
    #[arg(long = "case")]
    pub cases: Vec<String>,
}

fn name_path(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), PathBuf::from(p))),
        _ => Err("needs NAME=PATH".into()),
    }
}

/// An option value that is a path must not be empty (`--envoy ""` is a typo, not a choice).
fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("needs a non-empty value".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

/// Where the module, Envoy and func-e are, for the commands that start Envoy.
#[derive(Debug, Args)]
pub struct ToolArgs {
    /// Wasm module [default: $MESHTRACE_WASM, else the Makefile's WASM]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub wasm: Option<PathBuf>,
    /// Envoy binary [default: $ENVOY_PATH, else the one in the Makefile's VENV]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub envoy: Option<PathBuf>,
    /// func-e binary [default: $MESHTRACE_FUNC_E, else the Makefile's FUNC_E]
    #[arg(long = "func-e", value_name = "PATH", value_parser = non_empty_path)]
    pub func_e: Option<PathBuf>,
    /// Keep every run directory under <repo>/.harness-runs/ (failed runs are always kept)
    #[arg(long)]
    pub keep_logs: bool,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Scenarios run in parallel
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    #[arg(value_name = "FILE|DIR", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// a: Istio + Jaeger, b: Linkerd-style + Zipkin, basic: the fake collector
    #[arg(long, value_name = "T", default_value = "a", value_parser = TOPOLOGIES)]
    pub topology: String,
    /// Keep everything running until Ctrl-C
    #[arg(long)]
    pub hold: bool,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Wasm module [default: the Makefile's WASM]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub wasm: Option<PathBuf>,
    /// Image layout directory [default: the Makefile's OCI_DIR]
    #[arg(long, value_name = "DIR", value_parser = non_empty_path)]
    pub out: Option<PathBuf>,
    /// Tag written into the layouts' index.json
    #[arg(long, value_name = "TAG", default_value = "latest", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub tag: String,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// host[:port]/repository[:tag]
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Image layout directory [default: the Makefile's OCI_DIR]
    #[arg(long, value_name = "DIR", value_parser = non_empty_path)]
    pub layout: Option<PathBuf>,
    /// crane binary [default: the Makefile's CRANE]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub crane: Option<PathBuf>,
    /// Use the built-in plain-HTTP client (loopback registries only)
    #[arg(long)]
    pub http: bool,
}

#[derive(Debug, Args)]
pub struct ImageTestArgs {
    /// Wasm module [default: the Makefile's WASM]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub wasm: Option<PathBuf>,
    /// crane binary [default: the Makefile's CRANE]
    #[arg(long, value_name = "PATH", value_parser = non_empty_path)]
    pub crane: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct IstioValidateArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Istio's customresourcedefinitions.gen.yaml [default: the Makefile's ISTIO_CRDS]
    #[arg(long, value_name = "FILE", value_parser = non_empty_path)]
    pub crds: Option<PathBuf>,
    /// Schema and CEL checks only (no Envoy needed)
    #[arg(long)]
    pub no_envoy: bool,
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TracingCheckArgs {
    /// Config dumps (admin /config_dump, or istioctl proxy-config ... -o json)
    #[arg(value_name = "DUMP.json", required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigDumpArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// Add a Zipkin native tracer to every HttpConnectionManager
    #[arg(long)]
    pub native_tracing: bool,
    /// Write the dump here instead of stdout
    #[arg(long, value_name = "FILE", value_parser = non_empty_path)]
    pub out: Option<PathBuf>,
    /// A shipped config: a path or a file name in envoy/
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_parser_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every invocation the Makefile makes still parses.
    #[test]
    fn makefile_invocations_parse() {
        let rows: &[&[&str]] = &[
            &["replay", "--envoy", "e", "a.yaml"],
            &["validate", "--envoy", "e", "envoy/a.yaml", "envoy/b.yaml"],
            &[
                "image",
                "--wasm",
                "dist/meshtrace.wasm",
                "--out",
                "dist/oci",
            ],
            &[
                "push",
                "localhost:5000/m:v1",
                "--layout",
                "dist/oci",
                "--crane",
                "c",
            ],
            &["image-test", "--wasm", "w", "--crane", "c"],
            &[
                "istio-validate",
                "--envoy",
                "e",
                "--crds",
                "c.yaml",
                "istio/a.yaml",
            ],
            &[
                "config-dump",
                "--envoy",
                "e",
                "--out",
                "o.json",
                "envoy/sidecar-inbound.yaml",
            ],
            &[
                "config-dump",
                "--envoy",
                "e",
                "--native-tracing",
                "--out",
                "o",
                "x.yaml",
            ],
            &["tracing-check", "dump.json"],
            &["demo", "--envoy", "e", "--topology", "b", "--hold"],
            &["demo", "--envoy", "e", "--topology", "a"],
        ];
        for args in rows {
            let argv = std::iter::once("test-harness").chain(args.iter().copied());
            assert!(Cli::try_parse_from(argv).is_ok(), "{args:?}");
        }
        for bad in [
            &["replay"][..],
            &["validate", "--envoy", "", "x"],
            &["demo", "--topology", "c"],
        ] {
            let argv = std::iter::once("test-harness").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
