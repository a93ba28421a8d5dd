//! The built module, compiled once per test process, and one instance of it per case.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use wasmtime::{Config, Engine, Instance, InstancePre, Linker, Module, Store, Val, ValType};

use super::host;
use super::state::HostState;

/// Enough for thousands of requests; a module stuck in a loop runs out instead of hanging the test.
const FUEL: u64 = 2_000_000_000;

pub struct Harness {
    pub path: PathBuf,
    pub module: Module,
    pub pre: InstancePre<HostState>,
    pub engine: Engine,
    pub compile_ms: u128,
}

impl Harness {
    /// The `module` imports the built module declares, in declaration order.
    pub fn imports(&self, module: &str) -> Vec<String> {
        self.module
            .imports()
            .filter(|i| i.module() == module)
            .map(|i| i.name().to_string())
            .collect()
    }
}

pub fn wasm_path() -> PathBuf {
    match std::env::var_os("MESHTRACE_WASM") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist/meshtrace.wasm"),
    }
}

/// Every test shares one compilation; a failure to load is each test's failure, with the reason.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Result<Harness, String>> = OnceLock::new();
    match HARNESS.get_or_init(load) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    }
}

fn load() -> Result<Harness, String> {
    let path = wasm_path();
    let bytes = std::fs::read(&path).map_err(|e| {
        format!(
            "cannot read {}: {e}\nrun `make build` first: it builds dist/meshtrace.wasm \
             (or point MESHTRACE_WASM at a module)",
            path.display()
        )
    })?;
    let mut config = Config::new();
    config.consume_fuel(true);
    // The shipped module is stripped: frames would read `<wasm function 1046>`. The module's own
    // panic message (logged at critical) is the useful part of a trap report.
    config.wasm_backtrace_max_frames(None);
    let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e:#}"))?;
    let started = Instant::now();
    let module = Module::new(&engine, &bytes)
        .map_err(|e| format!("{} is not a valid module: {e:#}", path.display()))?;
    let compile_ms = started.elapsed().as_millis();
    let linker = host::linker(&engine).map_err(|e| format!("defining the host: {e:#}"))?;
    let missing = missing_imports(&engine, &linker, &module);
    if !missing.is_empty() {
        return Err(format!(
            "{} imports {} function(s) this test host does not implement; add them to \
             test-harness/tests/abi/host*.rs or wasi.rs so the fault matrix covers them:\n  {}",
            path.display(),
            missing.len(),
            missing.join("\n  ")
        ));
    }
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| format!("linking {} against the host: {e:#}", path.display()))?;
    Ok(Harness {
        path,
        module,
        pre,
        engine,
        compile_ms,
    })
}

fn missing_imports(engine: &Engine, linker: &Linker<HostState>, module: &Module) -> Vec<String> {
    let mut store = Store::new(engine, HostState::new(b""));
    module
        .imports()
        .filter(|i| linker.get_by_import(&mut store, i).is_none())
        .map(|i| format!("{}::{} {:?}", i.module(), i.name(), i.ty()))
        .collect()
}

#[derive(Clone, Debug)]
pub struct Trapped {
    /// The export and its arguments, e.g. `proxy_on_request_headers(2, 4, 1)`.
    pub callback: String,
    pub message: String,
}

/// The module trapped; the details are in [`Guest::trap`]. Nothing runs after a trap: the
/// instance's state can no longer be trusted (Envoy discards the VM).
#[derive(Debug)]
pub struct Stop;

pub struct Guest {
    store: Store<HostState>,
    instance: Option<Instance>,
    pub trap: Option<Trapped>,
}

impl Guest {
    pub fn new(h: &Harness, state: HostState) -> Guest {
        let mut store = Store::new(&h.engine, state);
        store.limiter(|s| &mut s.limits);
        let mut trap = None;
        if let Err(e) = store.set_fuel(FUEL) {
            trap = Some(trapped("set_fuel", e));
        }
        let instance = match h.pre.instantiate(&mut store) {
            Ok(i) => Some(i),
            Err(e) => {
                trap = Some(trapped("instantiate", e));
                None
            }
        };
        Guest {
            store,
            instance,
            trap,
        }
    }

    pub fn state(&mut self) -> &mut HostState {
        self.store.data_mut()
    }

    pub fn into_state(self) -> HostState {
        self.store.into_data()
    }

    /// Calls an export; `Ok(None)` when the module does not export it or it returns nothing.
    pub fn call(&mut self, name: &'static str, args: &[i32]) -> Result<Option<i32>, Stop> {
        if self.trap.is_some() {
            return Err(Stop);
        }
        let Some(instance) = self.instance else {
            return Err(Stop);
        };
        let Some(func) = instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let ty = func.ty(&self.store);
        let padded = args.iter().copied().chain(std::iter::repeat(0));
        let params: Vec<Val> = ty
            .params()
            .zip(padded)
            .map(|(t, a)| match t {
                ValType::I64 => Val::I64(i64::from(a)),
                _ => Val::I32(a),
            })
            .collect();
        let mut results = vec![Val::I32(0); ty.results().len()];
        self.store.data_mut().callback = name;
        if let Err(e) = func.call(&mut self.store, &params, &mut results) {
            let args: Vec<String> = args.iter().map(i32::to_string).collect();
            self.trap = Some(trapped(&format!("{name}({})", args.join(", ")), e));
            return Err(Stop);
        }
        Ok(results.first().map(|v| match v {
            Val::I64(x) => *x as i32,
            other => other.i32().unwrap_or(0),
        }))
    }
}

fn trapped(callback: &str, e: wasmtime::Error) -> Trapped {
    Trapped {
        callback: callback.to_string(),
        message: format!("{e:#}").replace('\n', " | "),
    }
}
