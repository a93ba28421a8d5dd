// Runs a wasm32-wasip1 test binary under Node's WASI, so the core's unit tests also run as wasm.
// Used as CARGO_TARGET_WASM32_WASIP1_RUNNER by `make unit`.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
