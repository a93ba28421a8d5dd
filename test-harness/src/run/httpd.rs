//! A minimal HTTP/1.1 server for the upstream apps and the fake collector: one thread per
//! connection, requests on a connection handled one after another (keep-alive), every request
//! read whole (`content-length` or chunked body) before the handler sees it.
//!
//! Not tiny_http: its worker pool can leave a new connection unread until some other connection
//! closes. Envoy keeps its upstream connections open, so under load (16 concurrent clients on two
//! busy cores) a few requests waited for Envoy's 5 s route timeout and came back 504.

use crate::model::observed::RecordedRequest;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request body read (the filter's export batches and the apps' requests are far smaller).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// Handles one request on `stream` (it writes the answer itself); returns whether to keep the
/// connection open for the next request.
pub type Handler = dyn Fn(RecordedRequest, &mut TcpStream) -> bool + Send + Sync;

/// A listening server; dropping it stops accepting (open connections end with their peers).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on a kernel-chosen loopback port.
    pub fn start(what: &str, handler: Arc<Handler>) -> Result<Server, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("{what}: cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else { continue };
                let handler = handler.clone();
                // Not joined: each ends when its peer closes the connection (Envoy is stopped
                // before the servers) or its read times out.
                std::thread::spawn(move || serve_connection(stream, &*handler));
            }
        });
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // accept() has no timeout: a connection of our own wakes it up to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_nodelay(true);
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    while let Ok(Some(req)) = read_request(&mut reader) {
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if !handler(req, &mut stream) || close {
            return;
        }
    }
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Writes a complete response with a `content-length` (no body for HEAD requests or statuses
/// that have none).
pub fn write_reply(
    stream: &mut TcpStream,
    method: &str,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let bodiless = method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if status != 204 && status != 304 {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    if !bodiless {
        wire.extend_from_slice(body);
    }
    stream.write_all(&wire)
}

/// Reads one request: `Ok(None)` when the peer closed the connection before sending one.
pub fn read_request(r: &mut impl BufRead) -> Result<Option<RecordedRequest>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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

    #[test]
    fn serves_keep_alive_requests_in_order() {
        let handler: Arc<Handler> = Arc::new(|req, stream| {
            let body = format!("{} {}", req.method, req.path);
            write_reply(stream, &req.method, 200, &[], body.as_bytes()).is_ok()
        });
        let server = Server::start("test", handler).unwrap();
        let addr = server.addr().to_string();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nHEAD /b HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        s.write_all(b"GET /c HTTP/1.1\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        assert_eq!(
            got,
            "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nGET /a\
             HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n\
             HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nGET /c"
        );
        let r =
            crate::run::http::send(&addr, "GET", "/d", &[], &[], Duration::from_secs(5)).unwrap();
        assert_eq!((r.status, r.body_text().as_str()), (200, "GET /d"));
        drop(server);
    }
}
