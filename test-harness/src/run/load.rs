//! Sending a scenario's requests: each entry's `repeat` requests one after another or over
//! `concurrency` client threads, a client that gives up (`abort_after_ms`), a wait for the fake
//! collector's faults (`after_collector_faults`) and a listener reload part-way (`reload`).

use crate::model::expect::Check;
use crate::model::scenario::{ReloadSpec, RequestSpec, Scenario};
use crate::run::http;
use crate::run::upstream::{RouteTable, UpstreamServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Replaces an Envoy's listener (the runner knows how); `Ok` describes what was observed.
pub type Reloader<'a> = dyn Fn(&ReloadSpec) -> Result<String, String> + Sync + 'a;

/// What sending needs from the running scenario.
pub struct SendContext<'a> {
    pub routes: &'a RouteTable,
    pub upstreams: &'a BTreeMap<String, UpstreamServer>,
    /// How many times the fake collector has misbehaved so far.
    pub faults: &'a AtomicU64,
    pub reload: &'a Reloader<'a>,
}

/// How long `after_collector_faults` waits.
const FAULT_WAIT: Duration = Duration::from_secs(10);

fn request_headers(r: &RequestSpec) -> Vec<(String, String)> {
    let mut hs = r.headers.0.clone();
    if !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        hs.insert(0, ("Host".to_string(), "example.com".to_string()));
    }
    hs
}

fn label_of(i: usize, r: &RequestSpec) -> String {
    let mut label = format!("request[{i}] {} {} via {}", r.method, r.path, r.via);
    if r.repeat != 1 {
        label.push_str(&format!(" ×{}", r.repeat));
    }
    if let Some(c) = r.concurrency.filter(|c| *c > 1) {
        label.push_str(&format!(" ({c} at a time)"));
    }
    if let Some(n) = &r.note {
        label.push_str(&format!(" ({n})"));
    }
    if let Some(s) = r.expect_status {
        label.push_str(&format!(" → {s}"));
    }
    label
}

/// Sends every request entry in order, one check each (plus one per wait and reload).
pub fn send_requests(sc: &Scenario, ctx: &SendContext, checks: &mut Vec<Check>) {
    for (i, r) in sc.requests.iter().enumerate() {
        let mut label = label_of(i, r);
        if sc.envoy(&r.via).is_some_and(|e| e.expect_start_failure) {
            checks.push(Check::pass(
                format!("{label} skipped"),
                "envoy is expected not to start",
            ));
            continue;
        }
        let addr = ctx
            .routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r.via)
            .copied();
        let Some(addr) = addr else {
            checks.push(Check::fail(label, "no listener address for this envoy"));
            continue;
        };
        if let Some(ms) = r.wait_ms {
            std::thread::sleep(Duration::from_millis(ms));
            label.push_str(&format!(" after {ms} ms"));
        }
        if let Some(n) = r.after_collector_faults {
            checks.push(wait_for_faults(i, n, ctx.faults));
        }
        if let Some(ms) = r.max_ms {
            label.push_str(&format!(" within {ms} ms"));
        }
        if r.abort_after_ms.is_some() {
            // The app behind this Envoy: an aborted request is cut off once it has arrived there.
            let app = sc
                .envoy(&r.via)
                .and_then(|e| sc.upstream_of(e))
                .and_then(|u| ctx.upstreams.get(&u));
            label.push_str(match app {
                Some(_) => " (client gives up once the upstream has it)",
                None => " (client gives up)",
            });
            checks.push(send_aborted(addr, r, app, label));
            continue;
        }
        let res = send_group(addr, r, ctx.reload);
        checks.push(Check::new(res.failed == 0, label, res.describe(r)));
        if let (Some(rl), Some((at, outcome))) = (&r.reload, res.reload) {
            let label = format!(
                "request[{i}]: reload of envoy {} (new plugin config) after {} of {} requests",
                rl.envoy, rl.after_requests, r.repeat
            );
            checks.push(match outcome {
                Ok(d) => Check::pass(label, format!("at #{at}, {d}")),
                Err(e) => Check::fail(label, e),
            });
        }
    }
}

fn wait_for_faults(i: usize, n: u64, faults: &AtomicU64) -> Check {
    let t0 = Instant::now();
    let label = format!("request[{i}]: wait until the collector has misbehaved {n} time(s)");
    loop {
        let seen = faults.load(Ordering::SeqCst);
        if seen >= n {
            return Check::pass(
                label,
                format!("{seen} after {} ms", t0.elapsed().as_millis()),
            );
        }
        if t0.elapsed() >= FAULT_WAIT {
            return Check::fail(
                label,
                format!("only {seen} within {} s", FAULT_WAIT.as_secs()),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The `abort_after_ms` requests, one after another.
fn send_aborted(
    addr: SocketAddr,
    r: &RequestSpec,
    app: Option<&UpstreamServer>,
    label: String,
) -> Check {
    let hs = request_headers(r);
    let body = r.body.clone().unwrap_or_default();
    let ms = r.abort_after_ms.unwrap_or_default();
    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    let mut ok = true;
    for _ in 0..r.repeat {
        let before = app.map(UpstreamServer::count);
        let reached = || match (app, before) {
            (Some(a), Some(n)) => a.count() > n,
            _ => false,
        };
        let key = match http::send_then_abort(
            &addr.to_string(),
            &r.method,
            &r.path,
            &hs,
            body.as_bytes(),
            Duration::from_millis(ms),
            app.map(|_| &reached as &dyn Fn() -> bool),
        ) {
            Ok(()) => "aborted without a response".to_string(),
            Err(e) => {
                ok = false;
                e
            }
        };
        *tally.entry(key).or_default() += 1;
    }
    Check::new(ok, label, join_tally(&tally))
}

fn join_tally(tally: &BTreeMap<String, u32>) -> String {
    tally
        .iter()
        .map(|(k, n)| {
            if *n == 1 {
                k.clone()
            } else {
                format!("{k} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one request entry's requests got.
#[derive(Debug, Default)]
pub struct GroupResult {
    /// Status (or transport error) → how many requests got it.
    pub tally: BTreeMap<String, u32>,
    /// Requests with a transport error, another status than `expect_status`, or over `max_ms`.
    pub failed: u32,
    /// Requests sent a second time after an unanswered close (`retry_unanswered`).
    pub retried: u32,
    pub slowest: Duration,
    pub elapsed: Duration,
    /// (completed requests when the reload started, its outcome), if the entry has a `reload`.
    pub reload: Option<(u32, Result<String, String>)>,
}

impl GroupResult {
    fn add(&mut self, other: GroupResult) {
        for (k, n) in other.tally {
            *self.tally.entry(k).or_default() += n;
        }
        self.failed += other.failed;
        self.retried += other.retried;
        self.slowest = self.slowest.max(other.slowest);
    }

    fn describe(&self, r: &RequestSpec) -> String {
        let statuses = join_tally(&self.tally);
        let mut d = if self.failed > 0 && r.repeat > 1 {
            format!(
                "{} of {} failed: statuses {{{statuses}}}",
                self.failed, r.repeat
            )
        } else {
            statuses
        };
        if r.retry_unanswered {
            d.push_str(&format!(
                "; {} sent again after the proxy closed them unanswered",
                self.retried
            ));
        }
        if r.max_ms.is_some() {
            d.push_str(&format!("; slowest {} ms", self.slowest.as_millis()));
        }
        if r.concurrency.is_some_and(|c| c > 1) {
            let secs = self.elapsed.as_secs_f64().max(1e-3);
            d.push_str(&format!(
                "; {} requests in {secs:.1} s ({:.0}/s)",
                r.repeat,
                f64::from(r.repeat) / secs
            ));
        }
        d
    }
}

/// Sends `r.repeat` requests over `r.concurrency` threads (each request on its own connection),
/// and runs the entry's reload, if any, once enough of them have completed.
pub fn send_group(addr: SocketAddr, r: &RequestSpec, reload: &Reloader) -> GroupResult {
    let hs = request_headers(r);
    let body = r.body.clone().unwrap_or_default();
    let threads = r.concurrency.unwrap_or(1).clamp(1, r.repeat.max(1));
    let next = AtomicU32::new(0);
    let done = AtomicU32::new(0);
    let total = Mutex::new(GroupResult::default());
    let reloaded = Mutex::new(None);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = GroupResult::default();
                while next.fetch_add(1, Ordering::SeqCst) < r.repeat {
                    send_one(addr, r, &hs, body.as_bytes(), &mut mine);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                total.lock().unwrap_or_else(|p| p.into_inner()).add(mine);
            });
        }
        if let Some(rl) = &r.reload {
            s.spawn(|| {
                // Requests take about a millisecond: polling at that rate starts the reload
                // within a few requests of the asked point.
                while done.load(Ordering::SeqCst) < rl.after_requests {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let at = done.load(Ordering::SeqCst);
                *reloaded.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, reload(rl)));
            });
        }
    });
    let mut res = total.into_inner().unwrap_or_else(|p| p.into_inner());
    res.elapsed = t0.elapsed();
    res.reload = reloaded.into_inner().unwrap_or_else(|p| p.into_inner());
    res
}

fn send_one(
    addr: SocketAddr,
    r: &RequestSpec,
    hs: &[(String, String)],
    body: &[u8],
    out: &mut GroupResult,
) {
    let t0 = Instant::now();
    let send = || {
        http::send(
            &addr.to_string(),
            &r.method,
            &r.path,
            hs,
            body,
            Duration::from_secs(15),
        )
    };
    let idempotent = r.method.eq_ignore_ascii_case("GET") || r.method.eq_ignore_ascii_case("HEAD");
    let res = match send() {
        Err(e) if r.retry_unanswered && idempotent && e.contains(http::UNANSWERED) => {
            out.retried += 1;
            send()
        }
        res => res,
    };
    let took = t0.elapsed();
    out.slowest = out.slowest.max(took);
    let key = match res {
        Ok(resp) => {
            let late = r.max_ms.is_some_and(|ms| took > Duration::from_millis(ms));
            if late || r.expect_status.is_some_and(|s| s != resp.status) {
                out.failed += 1;
            }
            resp.status.to_string()
        }
        Err(e) => {
            out.failed += 1;
            format!("transport error: {e}")
        }
    };
    *out.tally.entry(key).or_default() += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RequestSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn failures_are_counted_and_described() {
        let r = spec("{via: gw, repeat: 5, expect_status: 200, concurrency: 2}");
        let mut res = GroupResult::default();
        res.tally.insert("200".into(), 3);
        res.tally.insert("503".into(), 2);
        res.failed = 2;
        res.elapsed = Duration::from_millis(500);
        let d = res.describe(&r);
        assert!(
            d.starts_with("2 of 5 failed: statuses {200 ×3, 503 ×2}; 5 requests in 0.5 s"),
            "{d}"
        );
        let one = spec("{via: gw}");
        let res = GroupResult {
            tally: [("200".to_string(), 1)].into(),
            ..Default::default()
        };
        assert_eq!(res.describe(&one), "200");
    }

    #[test]
    fn concurrent_group_sends_every_request_and_reloads_once() {
        // A tiny server that answers every request 200 (one request per connection).
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 1024];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                });
            }
        });
        let r = spec(
            "{via: gw, repeat: 40, concurrency: 4, expect_status: 200, \
             reload: {envoy: gw, after_requests: 20, plugin_config: {}}}",
        );
        let calls = AtomicU32::new(0);
        let reload = |_: &ReloadSpec| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok("done".to_string())
        };
        let res = send_group(addr, &r, &reload);
        assert_eq!(res.failed, 0, "{:?}", res.tally);
        assert_eq!(res.tally.get("200"), Some(&40));
        let (at, outcome) = res.reload.unwrap();
        assert!((20..=40).contains(&at) && outcome.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
