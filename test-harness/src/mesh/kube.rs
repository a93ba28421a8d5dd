//! A real Kubernetes API for istiod, without kubelet, scheduler or pods: etcd and kube-apiserver
//! on loopback, and kubectl (all three built by `make istio-tools`) to create objects in it.
//!
//! Authentication is one static bearer token (`--token-auth-file`) and authorisation is
//! AlwaysAllow: this API lives for one test run inside the test's own network namespace, and
//! istiod's use of it (watching CRDs, Services, writing its CA secret) is what is under test,
//! not Kubernetes RBAC.

use crate::process::Daemon;
use crate::process::{self, ports};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long kube-apiserver may take to report `/readyz` ok (it takes 5–15 s here).
const API_READY: Duration = Duration::from_secs(120);
/// One kubectl call (applying Istio's CRDs takes a few seconds).
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(120);
/// The static token of the run's only user (a member of `system:masters`).
const TOKEN: &str = "meshtrace-e2e-token";

/// The binaries `make istio-tools` builds into `.tools/bin`.
#[derive(Debug, Clone)]
pub struct KubeBins {
    pub etcd: PathBuf,
    pub apiserver: PathBuf,
    pub kubectl: PathBuf,
}

pub struct Kube {
    pub kubeconfig: PathBuf,
    pub server: String,
    kubectl: PathBuf,
    // Field order is drop order: the API server stops before its store.
    apiserver: Daemon,
    etcd: Daemon,
}

impl Kube {
    /// Starts etcd and kube-apiserver under `dir` and waits until the API is ready.
    pub fn start(bins: &KubeBins, dir: &Path) -> Result<Kube, String> {
        let [client, peer, api] = ports::free_ports([None, None, None])?;
        let etcd = start_etcd(&bins.etcd, dir, client, peer)?;
        let key = dir.join("sa.key");
        generate_key(&key)?;
        let tokens = dir.join("tokens.csv");
        write(
            &tokens,
            &format!("{TOKEN},meshtrace-e2e,1,\"system:masters\"\n"),
        )?;
        let mut cmd = Command::new(&bins.apiserver);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={api}"))
            .arg(format!("--cert-dir={}", dir.join("pki").display()))
            .arg(format!("--token-auth-file={}", tokens.display()))
            .arg("--authorization-mode=AlwaysAllow")
            .arg(format!("--service-account-key-file={}", key.display()))
            .arg(format!(
                "--service-account-signing-key-file={}",
                key.display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            // One client and a few hundred objects: no flow control, no profiling endpoints.
            .args(["--enable-priority-and-fairness=false", "--profiling=false"])
            // The `kubernetes` Service's endpoint would be 127.0.0.1, which Kubernetes refuses.
            .arg("--endpoint-reconciler-type=none")
            .current_dir(dir);
        let apiserver = Daemon::spawn("kube-apiserver", &mut cmd, dir)?;
        let server = format!("https://127.0.0.1:{api}");
        let kubeconfig = dir.join("kubeconfig");
        write(&kubeconfig, &kubeconfig_text(&server))?;
        let mut kube = Kube {
            kubeconfig,
            server,
            kubectl: bins.kubectl.clone(),
            apiserver,
            etcd,
        };
        let h = Kube::handle(&kube);
        kube.apiserver.wait_ready(API_READY, || {
            h.run(&["get", "--raw", "/readyz"], None).map(|_| ())
        })?;
        Ok(kube)
    }

    /// A second handle for probing (kubectl only, owns no process).
    fn handle(k: &Kube) -> KubectlHandle {
        KubectlHandle {
            kubectl: k.kubectl.clone(),
            kubeconfig: k.kubeconfig.clone(),
        }
    }

    /// Runs kubectl with this API's kubeconfig; `stdin` is written to a file passed as `-f`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        Kube::handle(self).run(args, stdin)
    }

    /// `kubectl apply --server-side` of a multi-document YAML (server-side: Istio's CRDs are
    /// larger than client-side apply's annotation limit).
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        self.kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            Some(yaml),
        )
    }

    pub fn logs(&self) -> String {
        format!(
            "etcd:\n{}\nkube-apiserver:\n{}",
            self.etcd.log_tail(10),
            self.apiserver.log_tail(20)
        )
    }
}

/// kubectl bound to one kubeconfig.
pub struct KubectlHandle {
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl KubectlHandle {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg("--request-timeout=60s");
        let input = match stdin {
            Some(text) => {
                let dir = self.kubeconfig.parent().unwrap_or(Path::new("."));
                let f = dir.join(format!("kubectl-input-{}.yaml", next_input()));
                write(&f, text)?;
                Some(f)
            }
            None => None,
        };
        for a in args {
            match (*a, &input) {
                ("-", Some(f)) => cmd.arg(f),
                _ => cmd.arg(a),
            };
        }
        let out = process::output(&mut cmd, KUBECTL_TIMEOUT)
            .map_err(|e| format!("kubectl {}: {e}", args.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "kubectl {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                text,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

fn next_input() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn start_etcd(bin: &Path, dir: &Path, client: u16, peer: u16) -> Result<Daemon, String> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--data-dir={}", dir.join("etcd").display()))
        .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer}"))
        // A throwaway store: durability costs seconds of fsync per test and buys nothing.
        .arg("--unsafe-no-fsync")
        .current_dir(dir);
    let mut etcd = Daemon::spawn("etcd", &mut cmd, dir)?;
    let addr = format!("127.0.0.1:{client}");
    etcd.wait_ready(Duration::from_secs(30), || {
        match crate::run::http::get(&addr, "/health", Duration::from_secs(2)) {
            Ok((200, b)) if b.contains("true") => Ok(()),
            Ok((s, b)) => Err(format!("GET /health: {s} {b}")),
            Err(e) => Err(e),
        }
    })?;
    Ok(etcd)
}

/// The service-account signing key kube-apiserver requires (RSA, generated by openssl).
fn generate_key(path: &Path) -> Result<(), String> {
    let mut cmd = Command::new("openssl");
    cmd.args(["genrsa", "-out"]).arg(path).arg("2048");
    let out = process::output(&mut cmd, Duration::from_secs(60))
        .map_err(|e| format!("openssl genrsa: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl genrsa failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The serving certificate is self-signed by kube-apiserver at start (`--cert-dir`), so clients
/// skip verification: the connection never leaves the test's network namespace.
fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: {server}
    insecure-skip-tls-verify: true
users:
- name: e2e
  user:
    token: {TOKEN}
contexts:
- name: e2e
  context:
    cluster: e2e
    user: e2e
current-context: e2e
"
    )
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
