//! The propagation floor: what any tracer must do per request — read the request headers once and
//! write a B3 context (three headers) upstream — and nothing else (no sampling, span, clock or
//! export). meshtrace at 100% is compared with it.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream;

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let headers = self.get_http_request_headers();
        let sampled = headers.iter().any(|(k, _)| k == "x-b3-sampled");
        self.set_http_request_header("x-b3-traceid", Some("463ac35c9f6413ad48485a3953bb6124"));
        self.set_http_request_header("x-b3-spanid", Some("a2fb4a1d1a96d312"));
        self.set_http_request_header("x-b3-sampled", Some(if sampled { "1" } else { "0" }));
        Action::Continue
    }
}
