//! The fake collector's endpoints and their fault modes (`collector.fault`). Each endpoint reads
//! an export request whole, records it, and then either answers `status` with an empty body (the
//! connection stays open for the next request) or misbehaves in a way an HTTP library would not
//! let it: it resets the connection, or stops in the middle of the response.
//!
//! What a fault mode must cause is checked in `model::expect` (`fault_checks`).

use crate::model::observed::ExportPost;
use crate::model::scenario::{CollectorFault, CollectorSpec};
use crate::run::httpd::{write_reply, Handler, Server};
use crate::run::upstream::parse_spans;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Body size of `oversized_body`: above the ~32 MiB Envoy buffers for an async call's response.
pub const OVERSIZED_BODY: usize = 40 << 20;
/// Bytes of the announced 200-byte body sent before `headers_then_reset`/`close_mid_body` fail.
const PARTIAL_BODY: usize = 64;

/// State every endpoint of one collector shares.
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
pub struct CollectorServer {
    server: Server,
}

struct Endpoint {
    envoy: String,
    fault: Option<CollectorFault>,
    every: u64,
    status: u16,
    delay: Duration,
    shared: Shared,
}

impl CollectorServer {
    pub fn start(envoy: &str, spec: &CollectorSpec, shared: Shared) -> Result<Self, String> {
        let ep = Endpoint {
            envoy: envoy.to_string(),
            fault: spec.fault,
            every: spec.fault_every.max(1),
            status: spec.status,
            delay: Duration::from_millis(spec.delay_ms),
            shared,
        };
        let handler: Arc<Handler> = Arc::new(move |rec, stream| ep.handle(rec, stream));
        Ok(CollectorServer {
            server: Server::start("collector", handler)?,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }
}

impl Endpoint {
    /// Records one export request, then answers it or fails it; false ends the connection.
    fn handle(&self, rec: crate::model::observed::RecordedRequest, stream: &mut TcpStream) -> bool {
        let n = self.shared.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let fault = self.fault.filter(|_| n.is_multiple_of(self.every));
        {
            let mut o = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
            o.0 += 1;
            o.1 = o.1.max(o.0);
        }
        let spans = parse_spans(&rec.body);
        let method = rec.method.clone();
        self.shared
            .posts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ExportPost {
                envoy: self.envoy.clone(),
                request: rec,
                spans,
                fault,
                status: self.status,
            });
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        // Counted as answered just before the answer is written, so the proxy cannot see the
        // answer (and send the next request) while it still counts as open.
        {
            let mut o = self.shared.open.lock().unwrap_or_else(|p| p.into_inner());
            o.0 = o.0.saturating_sub(1);
        }
        match fault {
            Some(f) => {
                misbehave(stream, f);
                self.shared.faults.fetch_add(1, Ordering::SeqCst);
                false
            }
            None => write_reply(stream, &method, self.status, &[], &[]).is_ok(),
        }
    }
}

/// Fails the export on `stream`; the caller then closes the connection.
fn misbehave(stream: &mut TcpStream, fault: CollectorFault) {
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

/// Makes the coming close() send a TCP reset: SO_LINGER with a zero timeout.
fn reset(stream: &TcpStream) {
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
}

/// Sends a FIN. Unread input at close() would turn the close into a RST, so read until Envoy
/// closes its side (it does once it sees the response end early), at most 2 s.
fn close_with_fin(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_and_fin_as_the_peer_sees_them() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        for (fault, want_reset) in [
            (CollectorFault::ResetAfterHeaders, true),
            (CollectorFault::CloseMidBody, false),
        ] {
            let mut client = TcpStream::connect(addr).unwrap();
            let (server, _) = l.accept().unwrap();
            let t = std::thread::spawn(move || {
                let mut server = server;
                misbehave(&mut server, fault);
            });
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
