//! Load and measurement: wrk at saturation (pinned to the load core), a paced client at a fixed
//! moderate rate for latency, and Envoy's CPU time from `/proc/<pid>/stat`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may hold spaces: fields are counted after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("no ')' in /proc/pid/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat field {}", i + 3))
    };
    // utime and stime are fields 14 and 15: indexes 11 and 12 after the ')'.
    Ok((ticks(11)? + ticks(12)?) / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`; Linux has reported 100 on every platform this runs on.
fn clock_ticks() -> f64 {
    100.0
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no VmRSS for {pid}"))
}

/// What one wrk run reported.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx answers and socket errors (must be 0).
    pub errors: u64,
}

/// Runs wrk on `core` against `url` for `secs` seconds with `conns` connections.
pub fn wrk(wrk: &Path, core: usize, url: &str, secs: u32, conns: u32) -> Result<WrkResult, String> {
    let out = crate::process::output(
        Command::new("taskset")
            .arg("-c")
            .arg(core.to_string())
            .arg(wrk)
            .args([
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--latency",
                url,
            ]),
        Duration::from_secs(u64::from(secs) + 30),
    )
    .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("wrk failed ({}): {text}", out.status));
    }
    parse_wrk(&text)
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.01s`) in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

pub fn parse_wrk(text: &str) -> Result<WrkResult, String> {
    let mut r = WrkResult::default();
    for l in text.lines().map(str::trim) {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => r.p50_ms = wrk_ms(v).unwrap_or(0.0),
            ["99%", v] => r.p99_ms = wrk_ms(v).unwrap_or(0.0),
            ["Requests/sec:", v] => r.rps = v.parse().unwrap_or(0.0),
            [n, "requests", "in", ..] => r.requests = n.parse().unwrap_or(0),
            ["Non-2xx", "or", "3xx", "responses:", n] => r.errors += n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                r.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>()
            }
            _ => {}
        }
    }
    if r.requests == 0 {
        return Err(format!("wrk served no requests:\n{text}"));
    }
    Ok(r)
}

/// Latency at a fixed rate: one keep-alive connection, a request every `1/rate` s for `secs`,
/// each latency measured from its scheduled start (a late send counts, as wrk2 does). p50, p99 ms.
pub fn paced(addr: &str, path: &str, rate: f64, secs: f64) -> Result<(f64, f64), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n");
    let n = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let mut lat = Vec::with_capacity(n);
    let mut buf = [0u8; 4096];
    for i in 0..n {
        let due = t0 + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        read_response(&mut s, &mut buf)?;
        lat.push(due.elapsed().as_secs_f64() * 1000.0);
    }
    if lat.is_empty() {
        return Err("no paced request".into());
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Ok((q(0.5), q(0.99)))
}

/// Reads one response with a `content-length` body; errors on anything else than 200.
fn read_response(s: &mut TcpStream, buf: &mut [u8]) -> Result<(), String> {
    let mut got = Vec::new();
    loop {
        let k = s.read(buf).map_err(|e| format!("read: {e}"))?;
        if k == 0 {
            return Err("connection closed".into());
        }
        got.extend_from_slice(&buf[..k]);
        let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
        if !head.starts_with("http/1.1 200") {
            return Err(format!(
                "paced request answered {}",
                head.lines().next().unwrap_or("")
            ));
        }
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if got.len() >= end + 4 + len {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/direct
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.00us  100.00us   2.01ms   90.00%
  Latency Distribution
     50%  790.00us
     75%  850.00us
     90%    1.01ms
     99%    1.50ms
  20000 requests in 1.00s, 1.50MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 3
Requests/sec:  19990.12
Transfer/sec:      1.50MB
";
        let r = parse_wrk(text).unwrap();
        assert_eq!(r.requests, 20000);
        assert!((r.p50_ms - 0.79).abs() < 1e-9 && (r.p99_ms - 1.5).abs() < 1e-9);
        assert!((r.rps - 19990.12).abs() < 1e-9);
        assert_eq!(r.errors, 6);
        assert!(parse_wrk("nothing").is_err());
        assert!((wrk_ms("2.01s").unwrap() - 2010.0).abs() < 1e-9);
    }

    #[test]
    fn reads_own_cpu_and_rss() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(rss_kib(pid).unwrap() > 0);
    }
}
