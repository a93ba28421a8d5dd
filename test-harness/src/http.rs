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

    let is_head = method.eq_ignore_ascii_case("HEAD");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(resp) = parse_response(&buf, false, is_head)? {
            return Ok(resp);
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true, is_head)?.ok_or_else(|| {
                    format!(
                        "connection to {addr} closed after {} bytes without a complete response",
                        buf.len()
                    )
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read from {addr}: {e}")),
        }
    }
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
