//! The lifecycle Envoy drives a plugin through, as a sequence of export calls: root context,
//! vm_start, configure, N streams, a tick that exports, the collector's answer, root teardown.

use super::guest::{Guest, Harness, Stop, Trapped};
use super::state::{
    HostState, Phase, BUFFER_CALL_RESPONSE_BODY, BUFFER_PLUGIN_CONFIGURATION,
    BUFFER_VM_CONFIGURATION, MAP_CALL_RESPONSE_HEADERS,
};
use super::wire::{self, Pair};

pub const ROOT: i32 = 1;
pub const CONFIG: &str = r#"{"sampling":{"rate":1.0},"collector":{"cluster":"zipkin","flush_interval_ms":1000,"max_batch":100}}"#;
const FIRST_STREAM: i32 = 2;

/// The collector's answer to an export call. `num_headers`/`body_size` override what the module
/// is told, for the cases where Envoy reports a reset (0 headers) or sizes disagree with content.
#[derive(Clone)]
pub struct Reply {
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
    pub num_headers: Option<i32>,
    pub body_size: Option<i32>,
}

#[derive(Clone)]
pub struct Scenario {
    pub streams: usize,
    pub request: Vec<Pair>,
    /// Adds a distinct `x-request-id` to each stream's request headers.
    pub request_id: bool,
    pub response: Vec<Pair>,
    pub reply: Reply,
}

impl Scenario {
    pub fn standard() -> Scenario {
        Scenario {
            streams: 5,
            request: wire::pairs(&[
                (":method", "GET"),
                (":path", "/x"),
                (":authority", "example.com"),
                (":scheme", "http"),
                ("user-agent", "abi-test"),
                // A parent without a trace: the module starts a new root and removes it, so the
                // removal call is exercised too.
                ("x-b3-parentspanid", "00f067aa0ba902b7"),
            ]),
            request_id: true,
            response: wire::pairs(&[(":status", "200"), ("content-length", "12")]),
            reply: Reply {
                headers: wire::pairs(&[(":status", "202")]),
                body: Vec::new(),
                num_headers: None,
                body_size: None,
            },
        }
    }
}

/// What happened, for the assertions.
pub struct Run {
    pub state: HostState,
    pub trap: Option<Trapped>,
    pub vm_started: Option<bool>,
    pub configured: Option<bool>,
    /// Every header callback's answer: (callback with arguments, action).
    pub actions: Vec<(String, i32)>,
    pub root_done: Option<bool>,
    pub answered: usize,
}

impl Run {
    /// Header callbacks that did not answer Continue (0): each would stall a request in Envoy.
    pub fn bad_actions(&self) -> Vec<String> {
        self.actions
            .iter()
            .filter(|(_, a)| *a != 0)
            .map(|(cb, a)| format!("{cb} returned action {a}, not Continue (0)"))
            .collect()
    }
}

pub struct Driver {
    pub guest: Guest,
    pub vm_started: Option<bool>,
    pub configured: Option<bool>,
    pub actions: Vec<(String, i32)>,
    pub root_done: Option<bool>,
    pub answered: usize,
    /// The collector's last answer: a root that waits in on_done gets the same for its last calls.
    last_reply: Option<Reply>,
}

/// The whole lifecycle; it stops at the first trap.
pub fn run(h: &Harness, sc: &Scenario, state: HostState) -> Run {
    let mut d = Driver::new(h, state);
    let _ = d.full(sc);
    d.into_run()
}

impl Driver {
    pub fn new(h: &Harness, state: HostState) -> Driver {
        Driver {
            guest: Guest::new(h, state),
            vm_started: None,
            configured: None,
            actions: Vec::new(),
            root_done: None,
            answered: 0,
            last_reply: None,
        }
    }

    pub fn into_run(self) -> Run {
        Run {
            trap: self.guest.trap.clone(),
            state: self.guest.into_state(),
            vm_started: self.vm_started,
            configured: self.configured,
            actions: self.actions,
            root_done: self.root_done,
            answered: self.answered,
        }
    }

    pub fn full(&mut self, sc: &Scenario) -> Result<(), Stop> {
        self.initialize()?;
        if self.start()? {
            self.streams(sc)?;
            self.tick_and_answer(&sc.reply)?;
        }
        self.finish()
    }

    pub fn initialize(&mut self) -> Result<(), Stop> {
        self.guest.call("_initialize", &[])?;
        self.guest.state().phase = Phase::Start;
        Ok(())
    }

    /// Envoy's order: the root context, then vm_start, then configure. True when configured.
    pub fn start(&mut self) -> Result<bool, Stop> {
        if !self.create_root()? {
            return Ok(false);
        }
        self.configure()
    }

    /// The root context and vm_start; true when the VM started.
    pub fn create_root(&mut self) -> Result<bool, Stop> {
        let state = self.guest.state();
        state.contexts.insert(ROOT as u32);
        state.effective_context = ROOT as u32;
        let vm_size = state.buffers[BUFFER_VM_CONFIGURATION].len() as i32;
        self.guest.call("proxy_on_context_create", &[ROOT, 0])?;
        let started = self.guest.call("proxy_on_vm_start", &[ROOT, vm_size])?;
        self.vm_started = Some(started.is_none_or(|v| v != 0));
        Ok(self.vm_started == Some(true))
    }

    pub fn configure(&mut self) -> Result<bool, Stop> {
        let size = self.guest.state().buffers[BUFFER_PLUGIN_CONFIGURATION].len() as i32;
        let configured = self.guest.call("proxy_on_configure", &[ROOT, size])?;
        self.configured = Some(configured.is_none_or(|v| v != 0));
        self.guest.state().phase = Phase::Running;
        Ok(self.configured == Some(true))
    }

    pub fn streams(&mut self, sc: &Scenario) -> Result<(), Stop> {
        for i in 0..sc.streams {
            self.stream(FIRST_STREAM + i as i32, sc)?;
        }
        Ok(())
    }

    pub fn header_callback(&mut self, name: &'static str, args: &[i32]) -> Result<(), Stop> {
        if let Some(action) = self.guest.call(name, args)? {
            let args: Vec<String> = args.iter().map(i32::to_string).collect();
            self.actions
                .push((format!("{name}({})", args.join(", ")), action));
        }
        Ok(())
    }

    /// One proxied request: headers both ways (end of stream: a GET without body), then teardown.
    pub fn stream(&mut self, ctx: i32, sc: &Scenario) -> Result<(), Stop> {
        let state = self.guest.state();
        let mut request = sc.request.clone();
        if sc.request_id {
            let id = format!("8f0c4a2e-5b7d-4c1e-9a3f-{:012x}", ctx);
            request.push((b"x-request-id".to_vec(), id.into_bytes()));
        }
        let (nreq, nresp) = (request.len() as i32, sc.response.len() as i32);
        state.maps[0] = request;
        state.maps[2] = sc.response.clone();
        state.contexts.insert(ctx as u32);
        state.effective_context = ctx as u32;
        self.guest.call("proxy_on_context_create", &[ctx, ROOT])?;
        self.header_callback("proxy_on_request_headers", &[ctx, nreq, 1])?;
        self.header_callback("proxy_on_response_headers", &[ctx, nresp, 1])?;
        self.guest.call("proxy_on_log", &[ctx])?;
        self.guest.call("proxy_on_done", &[ctx])?;
        self.guest.call("proxy_on_delete", &[ctx])?;
        let state = self.guest.state();
        state.contexts.remove(&(ctx as u32));
        state.effective_context = ROOT as u32;
        Ok(())
    }

    /// One tick, then the collector answers every call the module made, including calls it makes
    /// while handling an answer (bounded, in case it keeps retrying).
    pub fn tick_and_answer(&mut self, reply: &Reply) -> Result<(), Stop> {
        let mut seen = self.guest.state().http_calls.len();
        self.tick()?;
        for _ in 0..16 {
            let tokens: Vec<u32> = self.guest.state().http_calls[seen..]
                .iter()
                .map(|c| c.token)
                .collect();
            if tokens.is_empty() {
                break;
            }
            seen += tokens.len();
            for token in tokens {
                self.answer(token as i32, reply)?;
            }
        }
        Ok(())
    }

    /// A host ticks once the period has passed: the clock moves on by it first.
    pub fn tick(&mut self) -> Result<(), Stop> {
        let state = self.guest.state();
        state.clock_ns += u64::from(state.tick_period_ms.unwrap_or(0)) * 1_000_000;
        self.guest.call("proxy_on_tick", &[ROOT]).map(|_| ())
    }

    pub fn answer(&mut self, token: i32, reply: &Reply) -> Result<(), Stop> {
        let state = self.guest.state();
        state.maps[MAP_CALL_RESPONSE_HEADERS as usize] = reply.headers.clone();
        state.buffers[BUFFER_CALL_RESPONSE_BODY] = reply.body.clone();
        state.effective_context = ROOT as u32;
        let n = reply.num_headers.unwrap_or(reply.headers.len() as i32);
        let size = reply.body_size.unwrap_or(reply.body.len() as i32);
        self.guest
            .call("proxy_on_http_call_response", &[ROOT, token, n, size, 0])?;
        let state = self.guest.state();
        state.maps[MAP_CALL_RESPONSE_HEADERS as usize].clear();
        state.buffers[BUFFER_CALL_RESPONSE_BODY].clear();
        self.answered += 1;
        self.last_reply = Some(reply.clone());
        Ok(())
    }

    /// Envoy's shutdown: on_done; a root that answers false is waiting for its last export calls,
    /// which the collector then answers as it answered before (or 202), once each.
    pub fn finish(&mut self) -> Result<(), Stop> {
        let seen = self.guest.state().http_calls.len();
        let done = self.guest.call("proxy_on_done", &[ROOT])?;
        self.root_done = Some(done.is_none_or(|v| v != 0));
        if self.root_done == Some(false) {
            let reply = self
                .last_reply
                .clone()
                .unwrap_or_else(|| Scenario::standard().reply);
            let tokens: Vec<u32> = self.guest.state().http_calls[seen..]
                .iter()
                .map(|c| c.token)
                .collect();
            for token in tokens {
                self.answer(token as i32, &reply)?;
            }
        }
        self.guest.call("proxy_on_delete", &[ROOT])?;
        self.guest.state().contexts.remove(&(ROOT as u32));
        Ok(())
    }
}
