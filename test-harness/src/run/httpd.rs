//! A minimal HTTP/1.1 server for the upstream apps and the fake collector: one thread per
//! connection, requests on a connection handled one after another (keep-alive), every request
//! read whole (`content-length` or chunked body) before the handler sees it.
//!
//! Not tiny_http: its worker pool can leave a new connection unread until some other connection
//! closes. Envoy keeps its upstream connections open, so under load (16 concurrent clients on two
//! busy cores) a few requests waited for Envoy's 5 s route timeout and came back 504.

use crate::model::observed::RecordedRequest;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request body read (the filter's export batches and the apps' requests are far smaller).
const MAX_REQUEST_BODY: usize = 64 << 20;

/// Handles one request on `stream` (it writes the answer itself); returns whether to keep the
/// connection open for the next request.
pub type Handler = dyn Fn(RecordedRequest, &mut TcpStream) -> bool + Send + Sync;

/// A listening server; dropping it stops accepting (open connections end with their peers).
/// It can stop listening and listen again on the same port ([`Server::go_down`], [`Server::come_up`]).
pub struct Server {
    addr: SocketAddr,
    listener: Arc<TcpListener>,
    gate: Arc<Gate>,
    thread: Option<JoinHandle<()>>,
}

/// Whether the server is down, and its open connections, shared with its threads.
#[derive(Default)]
struct Gate {
    stop: AtomicBool,
    /// True while down: the listening socket does not listen.
    down: Mutex<bool>,
    changed: Condvar,
    /// A handle of every open connection (by a number), to close them when going down.
    conns: Mutex<Vec<(u64, TcpStream)>>,
    next_conn: AtomicU64,
}

impl Server {
    /// Listens on a kernel-chosen loopback port.
    pub fn start(what: &str, handler: Arc<Handler>) -> Result<Server, String> {
        let listener = listen_loopback().map_err(|e| format!("{what}: cannot listen: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let listener = Arc::new(listener);
        let gate = Arc::new(Gate::default());
        let (l, g) = (listener.clone(), gate.clone());
        let thread = std::thread::spawn(move || accept_loop(&l, &g, &handler));
        Ok(Server {
            addr,
            listener,
            gate,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops listening and closes every open connection (FIN; a request being handled gets no
    /// answer). The port stays bound to this server, not listening: a connect is refused (RST), the
    /// state `upstream::closed_port` gives a collector that is down from the start.
    pub fn go_down(&self) -> Result<(), String> {
        let mut down = lock(&self.gate.down);
        if *down {
            return Ok(());
        }
        // On Linux, shutdown(SHUT_RD) of a listening socket stops it listening (connections
        // waiting in its backlog are reset, new ones refused); the socket keeps its port. An
        // accept() already blocked keeps waiting and resumes once the socket listens again.
        // SAFETY: shutdown(2) on a descriptor this server owns for its whole life.
        if unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RD) } != 0 {
            return Err(format!(
                "{}: stop listening: {}",
                self.addr,
                std::io::Error::last_os_error()
            ));
        }
        *down = true;
        for (_, c) in lock(&self.gate.conns).iter() {
            let _ = c.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// Listens again on the same port after [`Server::go_down`].
    pub fn come_up(&self) -> Result<(), String> {
        let mut down = lock(&self.gate.down);
        if !*down {
            return Ok(());
        }
        // SAFETY: listen(2) on a descriptor this server owns for its whole life.
        if unsafe { libc::listen(self.listener.as_raw_fd(), 128) } != 0 {
            return Err(format!(
                "{}: listen again: {}",
                self.addr,
                std::io::Error::last_os_error()
            ));
        }
        *down = false;
        self.gate.changed.notify_all();
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.gate.stop.store(true, Ordering::SeqCst);
        // A blocked accept() sleeps through the socket going down (measured on Linux 6.18: it is
        // not woken), so listen again: a connection of our own then wakes it up to see the flag.
        let _ = self.come_up();
        {
            let _d = lock(&self.gate.down);
            self.gate.changed.notify_all();
        }
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A listener on a kernel-chosen loopback port, bound by its number. A socket bound to port 0
/// gives its port back when it stops listening (`go_down`), and a later listen() would pick
/// another one; bound by number, it keeps it. So: a probe socket bound to port 0 learns a free
/// port and holds it while the listener binds it by number (both with SO_REUSEADDR, which the
/// kernel allows while neither listens, and which lets `come_up` listen again while connections
/// closed by going down linger in TIME_WAIT).
fn listen_loopback() -> std::io::Result<TcpListener> {
    let (probe, addr) = bound_socket(0, true)?;
    let (fd, _) = bound_socket(addr.port(), true)?;
    drop(probe);
    // SAFETY: listen(2) on a descriptor owned by `fd`.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TcpListener::from(fd))
}

/// A TCP socket bound to 127.0.0.1:`port` (0: the kernel picks), not listening, and its address.
pub fn bound_socket(port: u16, reuse_addr: bool) -> std::io::Result<(OwnedFd, SocketAddr)> {
    // SAFETY: plain socket(2)/setsockopt(2)/bind(2)/getsockname(2) calls on a descriptor owned
    // right away by an OwnedFd; the option value and sockaddr structs are fully initialised and
    // passed with their exact sizes.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        if reuse_addr {
            let on: libc::c_int = 1;
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&on as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        let mut sa: libc::sockaddr_in = std::mem::zeroed();
        sa.sin_family = libc::AF_INET as libc::sa_family_t;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
        sa.sin_port = port.to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut out: libc::sockaddr_in = std::mem::zeroed();
        let mut out_len = len;
        if libc::getsockname(
            fd,
            (&mut out as *mut libc::sockaddr_in).cast(),
            &mut out_len,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, u16::from_be(out.sin_port)));
        Ok((owned, addr))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn accept_loop(listener: &TcpListener, gate: &Arc<Gate>, handler: &Arc<Handler>) {
    loop {
        let conn = listener.accept();
        if gate.stop.load(Ordering::SeqCst) {
            return;
        }
        let down = lock(&gate.down);
        let Ok((stream, _)) = conn else {
            if *down {
                // Until the socket listens again (accept fails meanwhile) or the server stops.
                let _up = gate
                    .changed
                    .wait_while(down, |d| *d && !gate.stop.load(Ordering::SeqCst));
            } else {
                drop(down);
                // Out of descriptors or the like: try again shortly.
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        };
        if *down {
            // Accepted just before the server went down: closed like the others.
            continue;
        }
        let id = gate.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(handle) = stream.try_clone() {
            lock(&gate.conns).push((id, handle));
        }
        drop(down);
        let (gate, handler) = (gate.clone(), handler.clone());
        // Not joined: each ends when its peer closes the connection (Envoy is stopped before the
        // servers), the server goes down, or its read times out.
        std::thread::spawn(move || {
            serve_connection(stream, &*handler);
            lock(&gate.conns).retain(|(n, _)| *n != id);
        });
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

    #[test]
    fn goes_down_and_comes_back_on_the_same_port() {
        let handler: Arc<Handler> =
            Arc::new(|req, stream| write_reply(stream, &req.method, 200, &[], b"up").is_ok());
        let server = Server::start("test", handler).unwrap();
        let addr = server.addr().to_string();
        let get = || crate::run::http::send(&addr, "GET", "/", &[], &[], Duration::from_secs(5));
        assert_eq!(get().unwrap().status, 200);
        // An open keep-alive connection, closed when the server goes down.
        let mut open = TcpStream::connect(&addr).unwrap();
        open.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 40];
        open.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nup");
        for _ in 0..2 {
            server.go_down().unwrap();
            server.go_down().unwrap(); // twice is once
            let e = TcpStream::connect(&addr).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
            assert!(
                !plain_bind_succeeds(server.addr()),
                "the port stays reserved"
            );
            server.come_up().unwrap();
            server.come_up().unwrap();
            assert_eq!(get().unwrap().status, 200);
        }
        let mut rest = Vec::new();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = open.read_to_end(&mut rest).unwrap();
        assert_eq!(
            n, 0,
            "the open connection was closed (FIN) by the first down"
        );
        server.go_down().unwrap();
        drop(server); // stops while down
    }

    /// Whether a socket without SO_REUSEADDR (std's listeners set it) can bind `addr`: the only
    /// other binds that could take the port of a server that is down are explicit ones with
    /// SO_REUSEADDR, and the harness binds its servers to port 0.
    fn plain_bind_succeeds(addr: SocketAddr) -> bool {
        bound_socket(addr.port(), false).is_ok()
    }
}
