//! The collector tier as Jaeger is deployed, with one collector killed mid-run: two Jaeger v2
//! collectors (Zipkin receiver → `otlp` exporter) in front of one Jaeger storage+query instance,
//! and one Envoy running meshtrace at 100 % sampling whose collector cluster lists both
//! collectors (round robin, active health checks, outlier detection). After a third of the
//! requests one collector is SIGKILLed; exports must move to the other, and the accounting must
//! close: every span recorded is counted exported or dropped, storage holds at least as many
//! distinct span ids as were counted exported and none that meshtrace did not record, and spans
//! of requests sent after the kill reach storage.
//!
//! Needs dist/meshtrace.wasm, Envoy ($ENVOY_PATH or .tools/venv), func-e and Jaeger
//! (`make tools build`). Run: `cargo test -p test-harness --test collector_tier -- --nocapture`.

// A test: its helpers fail it by panicking, as `assert!` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use test_harness::run::envoy::{EnvoyProcess, Launch, StartOutcome};
use test_harness::run::tier::{envoy_config, meshtrace_counters, Tier, SERVICE};
use test_harness::run::{http, run_dir};
use test_harness::Tools;

const REQUESTS: usize = 3000;
const CONCURRENCY: usize = 12;
/// Requests started per second: ~6 s of load, so ~30 export rounds (200 ms each) straddle the
/// kill instead of the 3000 requests finishing within a few rounds.
const RATE: f64 = 500.0;
/// Requests answered before collector 0 is killed.
const KILL_AFTER: usize = REQUESTS / 3;

/// The span ids (`x-b3-spanid`) the upstream received, each with whether it arrived after the
/// kill.
type Seen = Arc<Mutex<BTreeMap<String, bool>>>;

/// A keep-alive HTTP/1.1 upstream answering 200 to everything, recording each request's
/// `x-b3-spanid`.
fn start_app(killed: Arc<AtomicBool>) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (record, killed) = (record.clone(), killed.clone());
            std::thread::spawn(move || serve(conn, &record, &killed));
        }
    });
    (addr, seen)
}

fn serve(conn: TcpStream, seen: &Seen, killed: &AtomicBool) {
    let mut out = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    loop {
        let mut span_id = None;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("x-b3-spanid") {
                    span_id = Some(v.trim().to_string());
                }
            }
        }
        if let Some(id) = span_id {
            let after = killed.load(Ordering::SeqCst);
            seen.lock().unwrap().insert(id, after);
        }
        if out
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .is_err()
        {
            return;
        }
    }
}

fn counters(envoy: &EnvoyProcess) -> BTreeMap<String, u64> {
    meshtrace_counters(&envoy.stats("meshtrace").unwrap())
}

fn get(c: &BTreeMap<String, u64>, name: &str) -> u64 {
    c.get(&format!("meshtrace_{name}")).copied().unwrap_or(0)
}

/// Waits until meshtrace's counters stop moving (published once per second: unchanged over
/// 2.5 s) with every recorded span counted exported or dropped.
fn wait_quiet(envoy: &EnvoyProcess, timeout: Duration) -> BTreeMap<String, u64> {
    let t0 = Instant::now();
    let mut last = counters(envoy);
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = counters(envoy);
        if now != last {
            last = now;
            since = Instant::now();
            continue;
        }
        let settled = get(&last, "spans_recorded")
            == get(&last, "spans_exported") + get(&last, "spans_dropped");
        if settled && since.elapsed() >= Duration::from_millis(2500) {
            return last;
        }
        assert!(
            t0.elapsed() < timeout,
            "meshtrace's counters never settled within {timeout:?}: {last:?}"
        );
    }
}

/// Waits until storage holds at least `want` distinct span ids and the count is stable.
fn wait_stored(tier: &Tier, want: u64, timeout: Duration) -> (BTreeSet<String>, usize) {
    let t0 = Instant::now();
    let mut last = tier.stored_span_ids(SERVICE).unwrap_or_default();
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = tier.stored_span_ids(SERVICE).unwrap();
        let stable = now.0.len() == last.0.len();
        last = now;
        if (stable && last.0.len() as u64 >= want) || t0.elapsed() >= timeout {
            return last;
        }
    }
}

/// The `zipkin` cluster's lines of `/clusters` that say how each host stands.
fn collector_health(envoy: &EnvoyProcess) -> String {
    let admin = envoy.admin.clone().unwrap();
    let (_, text) = http::get(&admin, "/clusters", Duration::from_secs(5)).unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("zipkin::127.")
                && (l.contains("health_flags")
                    || l.contains("::rq_success")
                    || l.contains("::rq_error"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_collector_killed_mid_run_loses_no_acknowledged_span() {
    let t_start = Instant::now();
    let tools = Tools::discover().unwrap();
    if let Err(e) = tools.require(true) {
        panic!("the collector tier test cannot run:\n{e}");
    }
    let dir = run_dir(&tools.repo, "collector-tier").unwrap();

    let mut tier = Tier::start(&tools.collectors.jaeger, &dir, 2).unwrap();
    let killed = Arc::new(AtomicBool::new(false));
    let (app, seen) = start_app(killed.clone());

    let plugin = serde_json::json!({
        "sampling": {"rate": 1.0},
        "collector": {"format": "zipkin_json", "flush_interval_ms": 200, "max_batch": 50}
    });
    let wasm = tools.wasm_abs().display().to_string();
    let doc = envoy_config(&tools.repo, &wasm, app, &tier.endpoints(), plugin).unwrap();
    let cfg = dir.join("envoy.yaml");
    std::fs::write(&cfg, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let v = test_harness::deploy::validate::validate_file(&cfg, &tools);
    assert!(
        v.ok,
        "envoy --mode validate {}: {}",
        cfg.display(),
        v.message
    );

    let mut envoy = EnvoyProcess::spawn(&Launch {
        name: "gateway".into(),
        config_path: cfg.clone(),
        work_dir: dir.join("gateway"),
        envoy_bin: tools.envoy_bin(),
        func_e_bin: tools.func_e.clone(),
        concurrency: 2,
        component_log_level: "wasm:info".into(),
        extra_args: vec![],
        service_node: Some("gateway".into()),
    })
    .unwrap();
    match envoy.wait_ready(Duration::from_secs(30)) {
        StartOutcome::Ready => {}
        other => panic!(
            "Envoy did not start ({other:?}):\n{}",
            envoy.log_excerpt(20)
        ),
    }
    let listener = envoy.listener_addr().unwrap().to_string();

    // The load: CONCURRENCY clients at RATE requests/s, one request per connection, every answer
    // must be 200.
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let t_load = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, done, failures) = (next.clone(), done.clone(), failures.clone());
            let listener = listener.clone();
            std::thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    return;
                }
                let due = t_load + Duration::from_secs_f64(i as f64 / RATE);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                let path = format!("/r/{i}");
                match http::send(&listener, "GET", &path, &[], &[], Duration::from_secs(10)) {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{path}: {}", r.status)),
                    Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                }
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    while done.load(Ordering::SeqCst) < KILL_AFTER {
        std::thread::sleep(Duration::from_millis(2));
    }
    let accepted_before_kill = tier.collectors[0]
        .metric("otelcol_receiver_accepted_spans")
        .unwrap();
    let survivor_before_kill = tier.collectors[1]
        .metric("otelcol_receiver_accepted_spans")
        .unwrap();
    tier.collectors[0].kill();
    killed.store(true, Ordering::SeqCst);
    let killed_at = t_load.elapsed();
    for w in workers {
        w.join().unwrap();
    }
    let load_time = t_load.elapsed();

    let c = wait_quiet(&envoy, Duration::from_secs(25));
    let (recorded, exported, dropped) = (
        get(&c, "spans_recorded"),
        get(&c, "spans_exported"),
        get(&c, "spans_dropped"),
    );
    let (stored, stored_spans) = wait_stored(&tier, exported, Duration::from_secs(10));
    let survivor_after = tier.collectors[1]
        .metric("otelcol_receiver_accepted_spans")
        .unwrap();
    let storage_accepted = tier
        .storage
        .metric("otelcol_receiver_accepted_spans")
        .unwrap();
    let health = collector_health(&envoy);
    assert!(
        tier.collectors[0].exited(),
        "collector-0 was SIGKILLed but runs on"
    );

    let seen = seen.lock().unwrap().clone();
    let unknown: Vec<&String> = stored.iter().filter(|id| !seen.contains_key(*id)).collect();
    let after_kill: BTreeSet<&String> =
        seen.iter().filter(|(_, a)| **a).map(|(id, _)| id).collect();
    let stored_after_kill = stored.iter().filter(|id| after_kill.contains(id)).count();
    let failures = failures.lock().unwrap().clone();

    println!(
        "collector tier: {REQUESTS} requests ({CONCURRENCY} concurrent) in {:.1} s, collector-0 \
         SIGKILLed at {:.1} s (after {KILL_AFTER} answers; it had accepted {accepted_before_kill} spans)\n\
         meshtrace: recorded {recorded}, exported {exported}, dropped {dropped} \
         (export_failed {}, queue_full {}), export requests ok {} failed {} \
         (no response {}, status {}, not sent {}), retries {}, gave up {}\n\
         storage: {} distinct span ids ({stored_spans} spans returned, {storage_accepted} accepted \
         over OTLP), {stored_after_kill} of the {} requests after the kill; collector-1 accepted \
         {survivor_before_kill} before the kill, {survivor_after} at the end\n\
         stored although counted dropped (at least): {}\n\
         Envoy's view of the collectors:\n{health}\n\
         whole test {:.1} s",
        load_time.as_secs_f64(),
        killed_at.as_secs_f64(),
        get(&c, "spans_dropped_export_failed"),
        get(&c, "spans_dropped_queue_full"),
        get(&c, "export_requests_ok"),
        get(&c, "export_requests_failed"),
        get(&c, "export_failed_no_response"),
        get(&c, "export_failed_status"),
        get(&c, "export_failed_not_sent"),
        get(&c, "export_retries"),
        get(&c, "export_gave_up"),
        stored.len(),
        after_kill.len(),
        (stored.len() as u64).saturating_sub(exported),
        t_start.elapsed().as_secs_f64(),
    );

    assert!(
        failures.is_empty(),
        "{} requests were not answered 200: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert_eq!(
        seen.len(),
        REQUESTS,
        "one span id per request at the upstream"
    );
    assert_eq!(recorded, REQUESTS as u64, "one span per request: {c:?}");
    assert_eq!(recorded, exported + dropped, "{c:?}");
    assert!(
        unknown.is_empty(),
        "storage holds {} span ids meshtrace never forwarded: {:?}",
        unknown.len(),
        &unknown[..unknown.len().min(5)]
    );
    assert!(
        stored.len() as u64 >= exported,
        "{} spans counted exported (acknowledged by a collector) are not in storage: \
         {exported} exported, {} stored",
        exported - stored.len() as u64,
        stored.len()
    );
    assert!(stored.len() as u64 <= recorded);
    assert!(
        stored_after_kill > 0 && survivor_after > survivor_before_kill,
        "exports did not move to collector-1: {stored_after_kill} spans of requests after the \
         kill stored, collector-1 accepted {survivor_before_kill} -> {survivor_after}"
    );
    assert!(
        t_start.elapsed() < Duration::from_secs(60),
        "the run took {:?}",
        t_start.elapsed()
    );

    envoy.stop();
    tier.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// What makes the figures above exact: a collector answers 202 only once storage took the
/// spans. With storage gone, a collector holds the POST while its exporter retries (3 s) and
/// then answers 500, never 202; so a killed collector cannot take acknowledged spans with it.
#[test]
fn a_collector_acknowledges_only_what_storage_took() {
    let tools = Tools::discover().unwrap();
    let dir = run_dir(&tools.repo, "collector-tier-ack").unwrap();
    let mut tier = Tier::start(&tools.collectors.jaeger, &dir, 1).unwrap();
    // Now: the query below looks back one hour.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let post = |id: &str| {
        let body = format!(
            r#"[{{"traceId":"00000000000000{id}","id":"00000000000000{id}","name":"probe","timestamp":{now_us},"duration":5,"localEndpoint":{{"serviceName":"{SERVICE}"}}}}]"#
        );
        let headers = [("content-type".to_string(), "application/json".to_string())];
        let t0 = Instant::now();
        let r = http::send(
            &tier.zipkin_in[0].to_string(),
            "POST",
            "/api/v2/spans",
            &headers,
            body.as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        (r.status, t0.elapsed())
    };
    let (status, _) = post("01");
    assert_eq!(status, 202);
    let (ids, _) = tier.stored_span_ids(SERVICE).unwrap();
    assert!(
        ids.contains("0000000000000001"),
        "a 202 means stored: {ids:?}"
    );
    tier.storage.kill();
    std::thread::sleep(Duration::from_millis(200));
    let (status, took) = post("02");
    println!("with storage killed the collector answered {status} after {took:?}");
    assert_eq!(status, 500, "storage is gone: no 202");
    assert!(
        took >= Duration::from_secs(2),
        "the exporter retried first: {took:?}"
    );
    tier.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
