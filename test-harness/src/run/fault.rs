//! The fake collector's endpoints and their fault modes (`collector.fault`, `fault_status`). Each
//! endpoint reads an export request whole, records it, and then either answers a status with an
//! empty body (the connection stays open for the next request; `retry_after` adds a
//! `Retry-After`), or misbehaves in a way an HTTP library would not let it: it resets the
//! connection, stops in the middle of the response, or never answers (`black_hole`). Each post
//! records whether the collector acknowledged it: a complete 2xx answer written while Envoy still
//! waited for it. An endpoint can go down and come back (`set_up`, driven by `collector.outages` /
//! `flap` in `upstream::Collector`).
//!
//! What a fault mode must cause is checked in `model::expect` (`fault_checks`).

use crate::model::observed::{ExportPost, Timeline};
use crate::model::scenario::{CollectorFault, CollectorSpec};
use crate::run::httpd::{write_reply, Handler, Server};
use crate::run::upstream::parse_spans;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Body size of `oversized_body`: above the ~32 MiB Envoy buffers for an async call's response.
pub const OVERSIZED_BODY: usize = 40 << 20;
/// Bytes of the announced 200-byte body sent before `headers_then_reset`/`close_mid_body` fail.
const PARTIAL_BODY: usize = 64;

/// State every endpoint of one collector shares.
#[derive(Clone)]
pub struct Shared {
    pub posts: Arc<Mutex<Vec<ExportPost>>>,
    /// (requests received and not yet answered, the most there ever were).
    pub open: Arc<Mutex<(u64, u64)>>,
    /// Export requests received so far, over all endpoints (numbers them for `fault_every`).
    pub seen: Arc<AtomicU64>,
    /// Faults completed so far.
    pub faults: Arc<AtomicU64>,
    /// The collector is stopping: a black hole lets go of its connection.
    pub stopping: Arc<AtomicBool>,
    /// The collector's clock: post times are ms since this instant.
    pub epoch: Instant,
    /// When the collector went down and came up, and when the requests were sent.
    pub timeline: Arc<Mutex<Timeline>>,
    /// Requests a black hole holds unanswered: still open until their connection closes.
    holes: Arc<Mutex<Vec<Hole>>>,
}

/// A request held by a black hole (see [`Shared::reap_holes`]).
struct Hole {
    stream: TcpStream,
    /// No longer counted open.
    released: Arc<AtomicBool>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            posts: Arc::default(),
            open: Arc::default(),
            seen: Arc::default(),
            faults: Arc::default(),
            stopping: Arc::default(),
            epoch: Instant::now(),
            timeline: Arc::default(),
            holes: Arc::default(),
        }
    }
}

impl Shared {
    /// Milliseconds on the collector's clock.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts the held requests whose connection Envoy has closed as no longer open. Called as each
    /// request arrives: Envoy closes a timed-out call's connection before it sends the next call,
    /// and the close is in the socket by then, though the holding thread may not have woken up to
    /// it yet (measured under load: 3 "open at once" with max_in_flight 2).
    fn reap_holes(&self) {
        let mut holes = lock(&self.holes);
        holes.retain(|h| {
            if !peer_closed(&h.stream) {
                return true;
            }
            self.release(&h.released);
            false
        });
    }

    /// Counts a held request as no longer open, once.
    fn release(&self, released: &AtomicBool) {
        if !released.swap(true, Ordering::SeqCst) {
            self.open_delta(false);
        }
    }

    fn open_delta(&self, opened: bool) {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if opened {
            o.0 += 1;
            o.1 = o.1.max(o.0);
        } else {
            o.0 = o.0.saturating_sub(1);
        }
    }
}

/// One listening endpoint (one per Envoy).
pub struct CollectorServer {
    server: Server,
}

struct Endpoint {
    envoy: String,
    spec: CollectorSpec,
    delay: Duration,
    shared: Shared,
}

/// What the collector does with one export request, decided when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A complete answer with an empty body.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    Fault(CollectorFault),
}

impl CollectorServer {
    pub fn start(envoy: &str, spec: &CollectorSpec, shared: Shared) -> Result<Self, String> {
        let ep = Endpoint {
            envoy: envoy.to_string(),
            spec: spec.clone(),
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

    /// Goes down (refuses connections, closes the open ones) or comes back up, same port.
    pub fn set_up(&self, up: bool) -> Result<(), String> {
        if up {
            self.server.come_up()
        } else {
            self.server.go_down()
        }
    }
}

/// Drives `collector.outages` / `flap` from the moment the requests start: takes every endpoint
/// down and back up on schedule, recording each change as applied in the timeline. Dropping it
/// stops the schedule where it is.
pub struct Schedule {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Schedule {
    pub fn start(spec: &CollectorSpec, servers: Vec<Arc<CollectorServer>>, shared: Shared) -> Self {
        let stop: Arc<(Mutex<bool>, Condvar)> = Arc::default();
        let (spec, stop2) = (spec.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = shared.now_ms();
            let apply = |up: bool| {
                for s in &servers {
                    if let Err(e) = s.set_up(up) {
                        lock(&shared.timeline).problems.push(e);
                    }
                }
                let at = shared.now_ms();
                lock(&shared.timeline).changes.push((at, up));
            };
            if !spec.up_at(0) {
                apply(false);
            }
            let mut at = 0;
            while let Some((next, up)) = spec.next_change(at) {
                let due = shared.epoch + Duration::from_millis(t0.saturating_add(next));
                let (flag, cv) = &*stop2;
                let mut stopped = lock(flag);
                while !*stopped {
                    let left = due.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    stopped = cv
                        .wait_timeout(stopped, left)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                if *stopped {
                    return;
                }
                drop(stopped);
                apply(up);
                at = next;
            }
        });
        Schedule {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Schedule {
    fn drop(&mut self) {
        let (flag, cv) = &*self.stop;
        *lock(flag) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The answer to export request number `n` (1-based, over all endpoints), and whether that is
/// one the collector fails on purpose.
fn answer_for(spec: &CollectorSpec, n: u64) -> (Answer, bool) {
    let faulted = spec.faults_request(n);
    let status = match (faulted, spec.fault, spec.fault_status) {
        (true, Some(f), _) => return (Answer::Fault(f), true),
        (true, None, Some(s)) => s,
        _ => spec.status,
    };
    // Retry-After rides on the failing answers (validated: fault_status, or a failing status).
    let retry_after = spec
        .retry_after
        .clone()
        .filter(|_| faulted || spec.fault_status.is_none());
    (
        Answer::Status {
            status,
            retry_after,
        },
        faulted,
    )
}

impl Endpoint {
    /// Records one export request, then answers it or fails it; false ends the connection.
    fn handle(&self, rec: crate::model::observed::RecordedRequest, stream: &mut TcpStream) -> bool {
        let n = self.shared.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let (answer, faulted) = answer_for(&self.spec, n);
        self.shared.reap_holes();
        self.shared.open_delta(true);
        let spans = parse_spans(&rec.body);
        let method = rec.method.clone();
        let (status, retry_after, fault) = match &answer {
            Answer::Status {
                status,
                retry_after,
            } => (*status, retry_after.clone(), None),
            Answer::Fault(f) => (fault_status_line(*f), None, Some(*f)),
        };
        let index = {
            let mut posts = self.shared.posts.lock().unwrap_or_else(|p| p.into_inner());
            posts.push(ExportPost {
                envoy: self.envoy.clone(),
                request: rec,
                spans,
                fault,
                status,
                retry_after: retry_after.clone(),
                faulted,
                received_ms: self.shared.now_ms(),
                answered_ms: None,
            });
            posts.len() - 1
        };
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        match answer {
            Answer::Fault(CollectorFault::BlackHole) => {
                let released = Arc::new(AtomicBool::new(false));
                if let Ok(s) = stream.try_clone() {
                    let hole = Hole {
                        stream: s,
                        released: released.clone(),
                    };
                    lock(&self.shared.holes).push(hole);
                }
                self.shared.faults.fetch_add(1, Ordering::SeqCst);
                hold_unanswered(stream, &self.shared.stopping);
                lock(&self.shared.holes).retain(|h| !Arc::ptr_eq(&h.released, &released));
                self.shared.release(&released);
                false
            }
            Answer::Fault(f) => {
                // Counted as answered just before the answer is written, so the proxy cannot see
                // the answer (and send the next request) while it still counts as open.
                self.shared.open_delta(false);
                misbehave(stream, f);
                self.shared.faults.fetch_add(1, Ordering::SeqCst);
                false
            }
            Answer::Status { .. } => {
                let headers: Vec<(String, String)> = retry_after
                    .map(|v| ("retry-after".to_string(), v))
                    .into_iter()
                    .collect();
                self.shared.open_delta(false);
                // An answer to a call Envoy gave up on (its timeout closed the connection) is
                // written into the void: not an answer Envoy got.
                let written = !peer_closed(stream)
                    && write_reply(stream, &method, status, &headers, &[]).is_ok();
                if written {
                    let at = self.shared.now_ms();
                    let mut posts = self.shared.posts.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(p) = posts.get_mut(index) {
                        p.answered_ms = Some(at);
                    }
                }
                if faulted {
                    self.shared.faults.fetch_add(1, Ordering::SeqCst);
                }
                written
            }
        }
    }
}

/// The status line a fault mode's broken answer starts with (none for a black hole: 0).
fn fault_status_line(f: CollectorFault) -> u16 {
    match f {
        CollectorFault::HeadersThenReset | CollectorFault::OversizedBody => 200,
        CollectorFault::CloseMidBody | CollectorFault::ResetAfterHeaders => 202,
        CollectorFault::BlackHole => 0,
    }
}

/// Whether the peer has closed (FIN or reset) its side of `stream`, without consuming input or
/// changing the socket's flags (another thread may be reading it).
fn peer_closed(stream: &TcpStream) -> bool {
    let mut b = [0u8; 1];
    // SAFETY: recv(2) into a live one-byte buffer, on a descriptor `stream` owns.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            b.as_mut_ptr().cast::<libc::c_void>(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// A black hole: never answers; waits until Envoy closes the connection (or it breaks) or the
/// collector stops, reading and discarding whatever arrives.
fn hold_unanswered(stream: &mut TcpStream, stopping: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while !stopping.load(Ordering::SeqCst) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
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
        CollectorFault::BlackHole => {}
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

    #[test]
    fn answers_by_request_number() {
        let spec = |yaml: &str| serde_yaml::from_str::<CollectorSpec>(yaml).unwrap();
        let status = |s: u16, ra: Option<&str>| Answer::Status {
            status: s,
            retry_after: ra.map(str::to_string),
        };
        // (collector, request number, answer, faulted)
        let rows = [
            ("{}", 1, status(202, None), false),
            (
                "{status: 429, retry_after: '3'}",
                1,
                status(429, Some("3")),
                false,
            ),
            (
                "{fault_status: 503, fault_every: 2, retry_after: '1'}",
                1,
                status(202, None),
                false,
            ),
            (
                "{fault_status: 503, fault_every: 2, retry_after: '1'}",
                2,
                status(503, Some("1")),
                true,
            ),
            (
                "{fault: black_hole, fault_every: 3}",
                2,
                status(202, None),
                false,
            ),
            (
                "{fault: black_hole, fault_every: 3}",
                3,
                Answer::Fault(CollectorFault::BlackHole),
                true,
            ),
        ];
        for (yaml, n, want, faulted) in rows {
            assert_eq!(answer_for(&spec(yaml), n), (want, faulted), "{yaml} #{n}");
        }
    }

    #[test]
    fn sees_a_peer_that_closed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        assert!(!peer_closed(&server));
        client.shutdown(Shutdown::Write).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(peer_closed(&server));
        // Still a blocking socket afterwards.
        let mut b = [0u8; 1];
        assert_eq!((&server).read(&mut b).unwrap(), 0);
    }

    #[test]
    fn a_black_hole_holds_until_the_peer_or_the_collector_lets_go() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stopping = Arc::new(AtomicBool::new(false));
        for by_peer in [true, false] {
            let mut client = TcpStream::connect(addr).unwrap();
            let (mut server, _) = l.accept().unwrap();
            let stop = stopping.clone();
            let t = std::thread::spawn(move || hold_unanswered(&mut server, &stop));
            std::thread::sleep(Duration::from_millis(150));
            assert!(!t.is_finished(), "holds the connection");
            if by_peer {
                client.shutdown(Shutdown::Write).unwrap();
            } else {
                stopping.store(true, Ordering::SeqCst);
            }
            t.join().unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got);
            assert!(got.is_empty(), "never answered: {got:?}");
        }
    }
}
