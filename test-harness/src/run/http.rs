//! A deliberately small HTTP/1.1 client.
//!
//! The harness needs full control over what goes on the wire (exact header names and values,
//! duplicate headers, the `Host` header), so it writes requests itself instead of using a client
//! library that normalises them. One request per connection (`Connection: close`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("bad address {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("address {addr} resolves to nothing"))
}

/// How `send` says the server closed the connection before sending a single response byte.
pub const UNANSWERED: &str = "closed before any response byte";

/// Sends one request and reads the whole response.
///
/// `addr` is `host:port`. A `Host` header is added (`addr`) unless `headers` has one;
/// `Connection: close` is always added unless present; `Content-Length` is added when a body is
/// given.
pub fn send(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let mut stream = connect_and_write(addr, method, path, headers, body, timeout)?;
    let is_head = method.eq_ignore_ascii_case("HEAD");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(resp) = parse_response(&buf, false, is_head)? {
            return Ok(resp);
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                let got = buf.len();
                return parse_response(&buf, true, is_head)?.ok_or_else(|| match got {
                    0 => format!("connection to {addr} {UNANSWERED}"),
                    n => {
                        format!("connection to {addr} closed after {n} bytes, response incomplete")
                    }
                });
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
}

/// Sends one request and closes the connection without a response, as a client that gives up.
/// The connection is closed as soon as `reached()` says the request got where it was going (the
/// upstream app has it), or after `limit` when there is no such barrier. A response, or the proxy
/// closing the connection, before that is an error, and so is a barrier that is not reached within
/// `limit`.
pub fn send_then_abort(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    limit: Duration,
    reached: Option<&dyn Fn() -> bool>,
) -> Result<(), String> {
    let mut stream = connect_and_write(addr, method, path, headers, body, limit)?;
    let deadline = std::time::Instant::now() + limit;
    let mut chunk = [0u8; 512];
    loop {
        if reached.is_some_and(|r| r()) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return match reached {
                None => Ok(()),
                Some(_) => Err(format!(
                    "the request did not reach the upstream within {} ms",
                    limit.as_millis()
                )),
            };
        }
        // Wait for a response byte, but look at the barrier again at least every 2 ms.
        let wait = (deadline - now).min(Duration::from_millis(2));
        stream
            .set_read_timeout(Some(wait))
            .map_err(|e| format!("socket options: {e}"))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "{addr} closed the connection before the client gave up"
                ))
            }
            Ok(n) => {
                return Err(format!(
                    "a response arrived before the client gave up: {:?}",
                    String::from_utf8_lossy(&chunk[..n])
                        .lines()
                        .next()
                        .unwrap_or_default()
                ))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
}

/// Connects and writes the request. `Host` is added (`addr`) unless `headers` has one,
/// `Connection: close` unless present, `Content-Length` when a body is given.
fn connect_and_write(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<TcpStream, String> {
    let sock = resolve(addr)?;
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("socket options: {e}"))?;
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has("connection") {
        req.push_str("Connection: close\r\n");
    }
    if (!body.is_empty() || method == "POST" || method == "PUT") && !has("content-length") {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut wire = req.into_bytes();
    wire.extend_from_slice(body);
    stream
        .write_all(&wire)
        .map_err(|e| format!("write to {addr}: {e}"))?;
    Ok(stream)
}

/// Convenience GET returning (status, body text).
pub fn get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let r = send(addr, "GET", path, &[], &[], timeout)?;
    Ok((r.status, r.body_text()))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Tries to parse a complete response from `buf`. `Ok(None)` means "need more bytes".
pub fn parse_response(buf: &[u8], eof: bool, is_head: bool) -> Result<Option<Response>, String> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x response: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let rest = &buf[head_end + 4..];
    if (100..200).contains(&status) {
        // Interim response: parse what follows it.
        return parse_response(rest, eof, is_head);
    }
    let hv = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.to_ascii_lowercase())
    };
    let done = |body: Vec<u8>| {
        Ok(Some(Response {
            status,
            headers: headers.clone(),
            body,
        }))
    };
    if is_head || status == 204 || status == 304 {
        return done(Vec::new());
    }
    if hv("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        return match decode_chunked(rest)? {
            Some(body) => done(body),
            None if eof => Err("connection closed inside a chunked body".into()),
            None => Ok(None),
        };
    }
    if let Some(len) = hv("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| format!("bad content-length {len:?}"))?;
        if rest.len() >= len {
            return done(rest[..len].to_vec());
        }
        if eof {
            return Err(format!(
                "connection closed after {} of {len} body bytes",
                rest.len()
            ));
        }
        return Ok(None);
    }
    if eof {
        done(rest.to_vec())
    } else {
        Ok(None)
    }
}

/// Decodes a chunked body; `Ok(None)` when incomplete.
fn decode_chunked(mut data: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = find(data, b"\r\n") else {
            return Ok(None);
        };
        let size_str = String::from_utf8_lossy(&data[..line_end]);
        let size_hex = size_str.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_hex:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers (if any) end with an empty line; accept either form.
            return Ok(Some(out));
        }
        if data.len() < size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that reads one request, reports it, then answers (or not).
    fn one_shot_server(answer: bool) -> (String, std::sync::mpsc::Receiver<()>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = tx.send(());
            if answer {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            }
            std::thread::sleep(Duration::from_millis(300));
        });
        (addr, rx)
    }

    #[test]
    fn abort_waits_for_the_barrier_and_refuses_responses() {
        let (addr, rx) = one_shot_server(false);
        let got = std::cell::Cell::new(false);
        let reached = || got.get() || rx.try_recv().map(|_| got.set(true)).is_ok();
        send_then_abort(
            &addr,
            "GET",
            "/",
            &[],
            &[],
            Duration::from_secs(5),
            Some(&reached),
        )
        .unwrap();
        let (addr, _rx) = one_shot_server(true);
        let never = || false;
        let e = send_then_abort(
            &addr,
            "GET",
            "/",
            &[],
            &[],
            Duration::from_secs(5),
            Some(&never),
        )
        .unwrap_err();
        assert!(e.contains("a response arrived"), "{e}");
        let (addr, _rx) = one_shot_server(false);
        let e = send_then_abort(
            &addr,
            "GET",
            "/",
            &[],
            &[],
            Duration::from_millis(50),
            Some(&never),
        )
        .unwrap_err();
        assert!(e.contains("did not reach"), "{e}");
        let (addr, _rx) = one_shot_server(false);
        send_then_abort(&addr, "GET", "/", &[], &[], Duration::from_millis(50), None).unwrap();
    }

    #[test]
    fn parses_content_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello";
        let r = parse_response(raw, false, false).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body_text(), "hello");
        assert!(parse_response(&raw[..raw.len() - 1], false, false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn parses_chunked_and_eof() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = parse_response(raw, false, false).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body_text(), "abcde");
        let raw = b"HTTP/1.0 200 OK\r\n\r\nuntil-eof";
        assert!(parse_response(raw, false, false).unwrap().is_none());
        assert_eq!(
            parse_response(raw, true, false)
                .unwrap()
                .unwrap()
                .body_text(),
            "until-eof"
        );
    }
}
