//! Recording upstream HTTP servers (the "apps" behind each Envoy) and the fake Zipkin collector.

use crate::http;
use crate::scenario::{CollectorSpec, UpstreamSpec};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Envoy name → listener address, filled in once the Envoys are up.
pub type RouteTable = Arc<Mutex<HashMap<String, SocketAddr>>>;

/// One request as an upstream or the collector saw it.
#[derive(Debug, Clone, Default)]
pub struct RecordedRequest {
    pub method: String,
    /// Path including the query string.
    pub path: String,
    /// Lower-cased header names, arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Result of the call to the next hop (`next:`), if any.
    pub next_result: Option<String>,
}

impl RecordedRequest {
    /// The header's value; several occurrences are joined with ",". The pseudo-headers `:path`
    /// (path and query) and `:method` read the request line.
    pub fn header(&self, name: &str) -> Option<String> {
        match name {
            ":path" => return Some(self.path.clone()),
            ":method" => return Some(self.method.clone()),
            _ => {}
        }
        let name = name.to_ascii_lowercase();
        let vals: Vec<&str> = self
            .headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if vals.is_empty() {
            None
        } else {
            Some(vals.join(","))
        }
    }

    /// True when the request carries a sampled (or debug) B3 decision.
    pub fn sampled(&self) -> bool {
        self.header("x-b3-sampled").as_deref() == Some("1")
            || self.header("x-b3-flags").as_deref() == Some("1")
    }
}

/// A port nothing listens on, reserved for as long as the value lives: the socket is bound but
/// never listens, so connections to it are refused, and no other socket (an Envoy listener, an
/// upstream) can be given the port in the meantime, as could happen to a port that was merely
/// bound and closed again.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _fd: std::os::fd::OwnedFd,
}

pub fn closed_port() -> std::io::Result<ClosedPort> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket(2)/bind(2)/getsockname(2) calls on a descriptor owned right away by an
    // OwnedFd; the sockaddr structs are fully initialised and passed with their exact sizes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        sa.sin_port = 0;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let mut out: libc::sockaddr_in = std::mem::zeroed();
        let mut out_len = len;
        if libc::getsockname(
            fd,
            &mut out as *mut libc::sockaddr_in as *mut libc::sockaddr,
            &mut out_len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(ClosedPort {
            addr: SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, u16::from_be(out.sin_port))),
            _fd: owned,
        })
    }
}

fn record(req: &mut tiny_http::Request) -> RecordedRequest {
    let headers = req
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let mut body = Vec::new();
    let _ = req.as_reader().read_to_end(&mut body);
    RecordedRequest {
        method: req.method().to_string(),
        path: req.url().to_string(),
        headers,
        body,
        next_result: None,
    }
}

fn respond(req: tiny_http::Request, status: u16, body: String) {
    respond_with(
        req,
        status,
        &[("content-type".to_string(), "text/plain".to_string())],
        body,
    );
}

fn respond_with(req: tiny_http::Request, status: u16, headers: &[(String, String)], body: String) {
    let mut resp =
        tiny_http::Response::from_string(body).with_status_code(tiny_http::StatusCode(status));
    for (k, v) in headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    }
    let _ = req.respond(resp);
}

/// Headers an instrumented app propagates to its own outgoing calls.
fn propagated(h: &str) -> bool {
    h.starts_with("x-b3-") || h == "b3" || h == "x-request-id"
}

pub struct UpstreamServer {
    pub name: String,
    pub addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    records: Arc<Mutex<Vec<RecordedRequest>>>,
    thread: Option<JoinHandle<()>>,
}

impl UpstreamServer {
    pub fn start(spec: &UpstreamSpec, routes: RouteTable) -> Result<UpstreamServer, String> {
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0")
                .map_err(|e| format!("upstream {}: cannot listen: {e}", spec.name))?,
        );
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or("upstream: no IP listen address")?;
        let records: Arc<Mutex<Vec<RecordedRequest>>> = Arc::default();
        let (srv, recs, spec2) = (server.clone(), records.clone(), spec.clone());
        let thread = std::thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                let rec = record(&mut req);
                let idx = {
                    let mut g = recs.lock().unwrap_or_else(|p| p.into_inner());
                    g.push(rec.clone());
                    g.len() - 1
                };
                let (recs, spec, routes) = (recs.clone(), spec2.clone(), routes.clone());
                std::thread::spawn(move || handle(req, rec, idx, &spec, &recs, &routes));
            }
        });
        Ok(UpstreamServer {
            name: spec.name.clone(),
            addr,
            server,
            records,
            thread: Some(thread),
        })
    }

    /// How many requests this upstream has received so far.
    pub fn count(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn records(&self) -> Vec<RecordedRequest> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn handle(
    req: tiny_http::Request,
    rec: RecordedRequest,
    idx: usize,
    spec: &UpstreamSpec,
    recs: &Mutex<Vec<RecordedRequest>>,
    routes: &RouteTable,
) {
    let path_only = rec.path.split('?').next().unwrap_or("/").to_string();
    if let Some(next) = &spec.next {
        let applies = next
            .when_path_prefix
            .as_ref()
            .is_none_or(|p| path_only.starts_with(p.as_str()));
        if applies {
            let target = routes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&next.envoy)
                .copied();
            let result = match target {
                None => format!("error: envoy {} has no listener address", next.envoy),
                Some(addr) => {
                    let mut hs: Vec<(String, String)> = rec
                        .headers
                        .iter()
                        .filter(|(k, _)| propagated(k))
                        .cloned()
                        .collect();
                    hs.push((
                        "host".into(),
                        rec.header("host").unwrap_or_else(|| "example.com".into()),
                    ));
                    match http::send(
                        &addr.to_string(),
                        "GET",
                        &next.path,
                        &hs,
                        &[],
                        Duration::from_secs(10),
                    ) {
                        Ok(r) => format!("{} from {} {}", r.status, next.envoy, next.path),
                        Err(e) => format!("error: {e}"),
                    }
                }
            };
            if let Some(r) = recs.lock().unwrap_or_else(|p| p.into_inner()).get_mut(idx) {
                r.next_result = Some(result);
            }
        }
    }
    if let Some(c) = spec
        .responses
        .iter()
        .find(|c| path_only.starts_with(c.when_path_prefix.as_str()))
    {
        respond_with(req, c.status, &c.headers.0, c.body.clone());
        return;
    }
    let mut status = 200u16;
    let mut body = spec
        .body
        .clone()
        .unwrap_or_else(|| format!("ok from {}\n", spec.name));
    let segs: Vec<&str> = path_only.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["status", code, ..] => {
            if let Ok(c) = code.parse::<u16>() {
                if (100..1000).contains(&c) {
                    status = c;
                    body = format!("status {c} from {}\n", spec.name);
                }
            }
        }
        ["delay", ms, ..] => {
            if let Ok(ms) = ms.parse::<u64>() {
                std::thread::sleep(Duration::from_millis(ms.min(30_000)));
            }
        }
        _ => {}
    }
    respond(req, status, body);
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One POST (or other request) the collector received.
#[derive(Debug, Clone)]
pub struct ExportPost {
    /// The Envoy whose `zipkin` cluster points at the endpoint that received it.
    pub envoy: String,
    pub request: RecordedRequest,
    /// The parsed span array, or why it could not be parsed.
    pub spans: Result<Vec<serde_json::Value>, String>,
}

/// The fake Zipkin collector: one listening endpoint per Envoy (so every span can be attributed to
/// the Envoy that exported it), one shared record.
pub struct Collector {
    spec: CollectorSpec,
    posts: Arc<Mutex<Vec<ExportPost>>>,
    /// (requests received and not yet answered, the most there ever were).
    open: Arc<Mutex<(u64, u64)>>,
    /// The refused endpoints of a collector that is down, reserved until the collector is dropped.
    closed: Vec<ClosedPort>,
    servers: Vec<(Arc<tiny_http::Server>, JoinHandle<()>)>,
}

impl Collector {
    pub fn new(spec: &CollectorSpec) -> Collector {
        Collector {
            spec: spec.clone(),
            posts: Arc::default(),
            open: Arc::default(),
            closed: Vec::new(),
            servers: Vec::new(),
        }
    }

    /// A new endpoint for `envoy`, or a closed port when the collector is down.
    pub fn endpoint_for(&mut self, envoy: &str) -> Result<SocketAddr, String> {
        if self.spec.mode == crate::scenario::CollectorMode::Down {
            let port = closed_port().map_err(|e| e.to_string())?;
            let addr = port.addr;
            self.closed.push(port);
            return Ok(addr);
        }
        let server = Arc::new(
            tiny_http::Server::http("127.0.0.1:0")
                .map_err(|e| format!("collector: cannot listen: {e}"))?,
        );
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or("collector: no IP listen address")?;
        let (srv, posts, envoy) = (server.clone(), self.posts.clone(), envoy.to_string());
        let open = self.open.clone();
        let (status, delay) = (self.spec.status, self.spec.delay_ms);
        let t = std::thread::spawn(move || {
            for mut req in srv.incoming_requests() {
                {
                    let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                    o.0 += 1;
                    o.1 = o.1.max(o.0);
                }
                let rec = record(&mut req);
                let spans = parse_spans(&rec.body);
                posts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(ExportPost {
                        envoy: envoy.clone(),
                        request: rec,
                        spans,
                    });
                let open = open.clone();
                std::thread::spawn(move || {
                    if delay > 0 {
                        std::thread::sleep(Duration::from_millis(delay));
                    }
                    // Counted as answered just before the answer is written, so the proxy cannot
                    // see the answer (and send the next request) while it still counts as open.
                    {
                        let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                        o.0 = o.0.saturating_sub(1);
                    }
                    respond(req, status, String::new());
                });
            }
        });
        self.servers.push((server, t));
        Ok(addr)
    }

    /// The most export requests that were open (received, not yet answered) at one time.
    pub fn max_concurrent(&self) -> u64 {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1
    }

    pub fn posts(&self) -> Vec<ExportPost> {
        self.posts.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub fn parse_spans(body: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match v {
        serde_json::Value::Array(a) => Ok(a),
        other => Err(format!(
            "body is not a JSON array: {}",
            crate::spans::truncate(&other.to_string(), 120)
        )),
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        for (s, _) in &self.servers {
            s.unblock();
        }
        for (_, t) in self.servers.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_port_refuses_and_stays_reserved() {
        let p = closed_port().unwrap();
        let e = std::net::TcpStream::connect(p.addr).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        assert!(
            std::net::TcpListener::bind(p.addr).is_err(),
            "port still reserved"
        );
        let addr = p.addr;
        drop(p);
        assert!(
            std::net::TcpListener::bind(addr).is_ok(),
            "released when dropped"
        );
    }
}
