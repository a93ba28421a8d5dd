//! The fake collector's fault modes (`collector.fault`). A raw TCP server, because tiny_http
//! cannot reset a connection or stop in the middle of a response. It reads each export request
//! whole (headers, then a `content-length` or chunked body), records it like the tiny_http
//! collector does, and then either answers `status` with an empty body (the connection stays open
//! for the next request) or misbehaves and ends the connection.
//!
//! Also holds the pure checks that only make sense with a fault mode.

use crate::expect::{metric_value, Check, Observations};
use crate::scenario::{CollectorExpect, CollectorFault, CollectorSpec};
use crate::upstream::{parse_spans, ExportPost, RecordedRequest};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Body size of `oversized_body`: above the ~32 MiB Envoy buffers for an async call's response.
pub const OVERSIZED_BODY: usize = 40 << 20;
/// Bytes of the announced 200-byte body sent before `headers_then_reset`/`close_mid_body` fail.
const PARTIAL_BODY: usize = 64;
/// Longest request body read (the filter's batches are far smaller).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// State every endpoint of one collector shares with the tiny_http collector.
#[derive(Clone, Default)]
pub struct Shared {
    pub posts: Arc<Mutex<Vec<ExportPost>>>,
    /// (requests received and not yet answered, the most there ever were).
    pub open: Arc<Mutex<(u64, u64)>>,
    /// Export requests received so far, over all endpoints (numbers them for `fault_every`).
    pub seen: Arc<AtomicU64>,
    /// Faults completed so far.
    pub faults: Arc<AtomicU64>,
}

/// One listening endpoint (one per Envoy).
pub struct FaultServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone)]
struct Endpoint {
    envoy: String,
    fault: CollectorFault,
    every: u64,
    status: u16,
    delay: Duration,
    shared: Shared,
}

impl FaultServer {
    pub fn start(
        envoy: &str,
        spec: &CollectorSpec,
        fault: CollectorFault,
        shared: Shared,
    ) -> Result<FaultServer, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("collector ({}): cannot listen: {e}", fault.name()))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let ep = Endpoint {
            envoy: envoy.to_string(),
            fault,
            every: spec.fault_every.max(1),
            status: spec.status,
            delay: Duration::from_millis(spec.delay_ms),
            shared,
        };
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let ep = ep.clone();
                // Connection threads are not joined: each ends when Envoy closes the connection
                // (Envoy is stopped before the collector) or its read times out.
                std::thread::spawn(move || serve_connection(stream, &ep));
            }
        });
        Ok(FaultServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it up to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(stream: TcpStream, ep: &Endpoint) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    loop {
        let rec = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        let n = ep.shared.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = n.is_multiple_of(ep.every).then_some(ep.fault);
        {
            let mut o = ep.shared.open.lock().unwrap_or_else(|p| p.into_inner());
            o.0 += 1;
            o.1 = o.1.max(o.0);
        }
        let close = rec
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let spans = parse_spans(&rec.body);
        ep.shared
            .posts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ExportPost {
                envoy: ep.envoy.clone(),
                request: rec,
                spans,
                fault,
                status: ep.status,
            });
        if !ep.delay.is_zero() {
            std::thread::sleep(ep.delay);
        }
        // As in the tiny_http collector: no longer open once the answer starts.
        {
            let mut o = ep.shared.open.lock().unwrap_or_else(|p| p.into_inner());
            o.0 = o.0.saturating_sub(1);
        }
        if let Some(f) = fault {
            misbehave(stream, f);
            ep.shared.faults.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let head = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: 0\r\n\r\n",
            ep.status,
            reason(ep.status)
        );
        if stream.write_all(head.as_bytes()).is_err() || close {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Reads one request: `Ok(None)` when the peer closed the connection before sending one.
fn read_request(r: &mut impl BufRead) -> Result<Option<RecordedRequest>, String> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Ok(None);
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed inside the request head".to_string());
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let mut rec = RecordedRequest {
        method,
        path,
        headers,
        ..Default::default()
    };
    let chunked = rec
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    rec.body = if chunked {
        read_chunked(r)?
    } else {
        let len: usize = rec
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_REQUEST_BODY {
            return Err(format!("request body of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
        body
    };
    Ok(Some(rec))
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let size_text = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 || line.trim().is_empty()
                {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_REQUEST_BODY {
            return Err("chunked request body too large".to_string());
        }
        let start = body.len();
        body.resize(start + size, 0);
        r.read_exact(&mut body[start..])
            .map_err(|e| e.to_string())?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|e| e.to_string())?;
    }
}

fn misbehave(mut stream: TcpStream, fault: CollectorFault) {
    let partial = [b' '; PARTIAL_BODY];
    match fault {
        CollectorFault::HeadersThenReset => {
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n";
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&partial);
            settle();
            reset(stream);
        }
        CollectorFault::CloseMidBody => {
            let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 200\r\n\r\n");
            let _ = stream.write_all(&partial);
            settle();
            close_with_fin(stream);
        }
        CollectorFault::ResetAfterHeaders => {
            let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\n");
            settle();
            reset(stream);
        }
        CollectorFault::OversizedBody => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {OVERSIZED_BODY}\r\n\r\n"
            );
            let chunk = vec![b' '; 64 << 10];
            let mut sent = 0;
            let mut ok = stream.write_all(head.as_bytes()).is_ok();
            // Until Envoy resets the connection (a write error) or the body is complete.
            while ok && sent < OVERSIZED_BODY {
                let n = chunk.len().min(OVERSIZED_BODY - sent);
                ok = stream.write_all(&chunk[..n]).is_ok();
                sent += n;
            }
            close_with_fin(stream);
        }
    }
}

/// Gives Envoy time to parse what was written before the connection fails, so the failure hits
/// a call that has its response headers (a reset that overtook them would be a plain connection
/// failure, which Envoy answers with a local 503 reply, with headers).
fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}

/// Closes with a TCP reset: SO_LINGER with a zero timeout makes close() send RST.
fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this function owns, with a pointer to a live `linger` and
    // its exact size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast::<libc::c_void>(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// Closes with a FIN. Unread input at close() would turn it into a RST, so read until Envoy
/// closes its side (it does once it sees the response end early), at most 2 s.
fn close_with_fin(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

/// Checks for a collector with a fault mode: the number of export requests it failed, and the
/// built-in one that every span it accepted, and no other, counts as exported.
pub fn fault_checks(expect: Option<&CollectorExpect>, obs: &Observations) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(mode) = obs.collector_fault else {
        return out;
    };
    let faulted: Vec<&ExportPost> = obs.posts.iter().filter(|p| p.fault.is_some()).collect();
    let span_count = |p: &&ExportPost| p.spans.as_ref().map_or(0, Vec::len) as u64;
    let accepted: Vec<&ExportPost> = obs
        .posts
        .iter()
        .filter(|p| p.fault.is_none() && (200..300).contains(&p.status))
        .collect();
    let accepted_spans: u64 = accepted.iter().map(span_count).sum();
    let faulted_spans: u64 = faulted.iter().map(span_count).sum();
    let exported: u64 = obs
        .metrics
        .values()
        .map(|st| metric_value(st, "spans_exported"))
        .sum();
    out.push(Check::new(
        accepted_spans == exported,
        format!(
            "built-in: spans the collector accepted == spans_exported ({})",
            mode.name()
        ),
        format!(
            "accepted {accepted_spans} spans in {} export requests, failed {} requests \
             ({faulted_spans} spans); spans_exported {exported}",
            accepted.len(),
            faulted.len()
        ),
    ));
    if let Some(want) = expect.and_then(|e| e.faulted) {
        let n = faulted.len() as u64;
        out.push(Check::new(
            want.accepts(n),
            format!(
                "collector misbehaved ({}) on {want} export requests",
                mode.name()
            ),
            format!("{n} of {} export requests", obs.posts.len()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_length_and_chunked_requests() {
        let wire = b"POST /api/v2/spans HTTP/1.1\r\nHost: zipkin\r\nContent-Length: 4\r\n\r\n[{}]\
POST /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n2\r\n[{\r\n2;ext\r\n}]\r\n0\r\n\r\n";
        let mut r = BufReader::new(&wire[..]);
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!(
            (a.method.as_str(), a.path.as_str()),
            ("POST", "/api/v2/spans")
        );
        assert_eq!(a.header("host").as_deref(), Some("zipkin"));
        assert_eq!(a.body, b"[{}]");
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!(b.body, b"[{}]");
        assert!(read_request(&mut r).unwrap().is_none());
    }

    fn post(fault: Option<CollectorFault>, status: u16, spans: usize) -> ExportPost {
        ExportPost {
            envoy: "gw".into(),
            request: RecordedRequest::default(),
            spans: Ok(vec![serde_json::json!({}); spans]),
            fault,
            status,
        }
    }

    #[test]
    fn accepted_spans_must_match_exported() {
        let mut obs = Observations {
            collector_fault: Some(CollectorFault::CloseMidBody),
            posts: vec![
                post(None, 202, 3),
                post(Some(CollectorFault::CloseMidBody), 202, 5),
            ],
            ..Default::default()
        };
        obs.metrics.insert(
            "gw".into(),
            [("wasmcustom.meshtrace_spans_exported".to_string(), 3)].into(),
        );
        let want = CollectorExpect {
            faulted: Some(crate::scenario::CountSpec::Exact(1)),
            ..Default::default()
        };
        let checks = fault_checks(Some(&want), &obs);
        assert!(checks.iter().all(|c| c.pass), "{checks:?}");
        obs.posts[0].status = 500;
        let checks = fault_checks(None, &obs);
        assert!(!checks[0].pass && checks[0].detail.contains("accepted 0 spans"));
        obs.collector_fault = None;
        assert!(fault_checks(Some(&want), &obs).is_empty());
    }

    #[test]
    fn reset_and_fin_as_the_peer_sees_them() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for (fault, want_reset) in [
            (CollectorFault::ResetAfterHeaders, true),
            (CollectorFault::CloseMidBody, false),
        ] {
            let mut client = TcpStream::connect(addr).unwrap();
            let (server, _) = l.accept().unwrap();
            let t = std::thread::spawn(move || misbehave(server, fault));
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut got = Vec::new();
            let res = client.read_to_end(&mut got);
            drop(client);
            t.join().unwrap();
            assert!(got.starts_with(b"HTTP/1.1 202 Accepted\r\n"), "{got:?}");
            match res {
                Err(e) => assert!(want_reset, "{fault:?}: {e}"),
                Ok(_) => assert!(!want_reset, "{fault:?}: clean EOF"),
            }
        }
    }
}
