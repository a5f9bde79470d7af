// Loads the smoke module (canopy_wasm_smoke.wasm) and wraps its calling convention (crate docs):
// bytes in through the module's input buffer, bytes out through its output buffer, i32 statuses.
import fs from 'node:fs';
import { sqliteHost } from './sqlite-host.mjs';

export const OK = 0, LIB_ERROR = 1, BAD_INPUT = -1;
const enc = new TextEncoder(), dec = new TextDecoder();

/** Instantiates the module at `file`; returns its exports `x`, the buffer helpers and its imports. */
export function load(file) {
  const module = new WebAssembly.Module(fs.readFileSync(file));
  let instance;
  // SQLite's host services are imports of "env" (only in a module built with the `sqlite` feature)
  const imports = WebAssembly.Module.imports(module).length
    ? { env: sqliteHost(() => instance.exports.memory) }
    : {};
  instance = new WebAssembly.Instance(module, imports);
  const x = instance.exports;
  function put(bytes) {
    if (typeof bytes === 'string') bytes = enc.encode(bytes);
    const ptr = x.smoke_input(bytes.length);
    new Uint8Array(x.memory.buffer, ptr, bytes.length).set(bytes); // memory may have grown: fresh view
  }
  const out = () => new Uint8Array(x.memory.buffer, x.smoke_output_ptr(), x.smoke_output_len()).slice();
  const outStr = () => dec.decode(out());
  const outU32s = () => {
    const b = out();
    const v = new DataView(b.buffer);
    return Array.from({ length: b.length / 4 }, (_, i) => v.getUint32(i * 4, true));
  };
  const importNames = WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}`);
  return { x, put, out, outStr, outU32s, importNames };
}
