// Runs the canopy-tree wasm smoke test under Node: node tree/wasm-smoke/smoke.mjs <canopy_wasm_smoke.wasm>
// Instantiates the module with no imports, drives the real canopy_tree API through the plain
// extern "C" exports of tree/wasm-smoke/src/lib.rs and asserts concrete results. Exits 1 on any failure
// (a failed assertion, a trap such as a Rust panic, or a missing export).
import fs from 'node:fs';
import assert from 'node:assert/strict';

const file = process.argv[2];
if (!file) {
  console.error('usage: node smoke.mjs <canopy_wasm_smoke.wasm>');
  process.exit(2);
}
const { instance } = await WebAssembly.instantiate(fs.readFileSync(file), {});
const x = instance.exports;
const OK = 0, LIB_ERROR = 1, BAD_INPUT = -1;
const enc = new TextEncoder(), dec = new TextDecoder();

// --- calling convention: write input bytes, call, read output bytes -------------------------------------
function put(bytes) {
  if (typeof bytes === 'string') bytes = enc.encode(bytes);
  const ptr = x.smoke_input(bytes.length);
  new Uint8Array(x.memory.buffer, ptr, bytes.length).set(bytes); // memory may have grown: fresh view
}
function out() {
  return new Uint8Array(x.memory.buffer, x.smoke_output_ptr(), x.smoke_output_len()).slice();
}
const outStr = () => dec.decode(out());
const u32s = (...pairs) => {
  const b = new Uint8Array(pairs.length * 4);
  const v = new DataView(b.buffer);
  pairs.forEach((n, i) => v.setUint32(i * 4, n, true));
  return b;
};

const results = [];
function check(name, fn) {
  try {
    fn();
    results.push([name, 'ok']);
  } catch (e) {
    results.push([name, 'FAIL']);
    console.error(`FAIL ${name}: ${e && e.stack || e}`);
  }
}

// --- ids and the op model -------------------------------------------------------------------------------
check('NodeId hex round trip', () => {
  const hex = '00112233445566778899aabbccddeeff';
  put(hex);
  assert.equal(x.smoke_node_id_parse(), OK);
  assert.equal(outStr(), hex);
  put(hex.toUpperCase());
  assert.equal(x.smoke_node_id_parse(), OK, 'upper-case hex parses');
  assert.equal(outStr(), hex, 'Display is lower-case');
});
check('NodeId parse errors are typed, not traps', () => {
  for (const bad of ['', 'zz', '0011', '00112233445566778899aabbccddeeff00']) {
    put(bad);
    assert.equal(x.smoke_node_id_parse(), LIB_ERROR, JSON.stringify(bad));
    assert.ok(outStr().length > 0, 'error text present');
  }
  put(new Uint8Array([0xff, 0xfe, 0xfd]));
  assert.equal(x.smoke_node_id_parse(), BAD_INPUT, 'invalid UTF-8');
});
check('OpId round trip and errors', () => {
  const r = '07'.repeat(32);
  put(`${r}@42`);
  assert.equal(x.smoke_op_id_parse(), OK);
  assert.equal(outStr(), `${r}@42`);
  for (const bad of [`${r}@0`, `${r}`, `${r}@-1`, `07@1`]) {
    put(bad);
    assert.equal(x.smoke_op_id_parse(), LIB_ERROR, bad);
  }
});
check('reserved node ids', () => {
  put(new Uint8Array(16));
  assert.equal(x.smoke_node_is_reserved(), 1, 'ROOT');
  put(new Uint8Array(16).fill(0xff));
  assert.equal(x.smoke_node_is_reserved(), 1, 'TRASH');
  put(new Uint8Array(16).fill(1));
  assert.equal(x.smoke_node_is_reserved(), 0);
  put(new Uint8Array(15));
  assert.equal(x.smoke_node_is_reserved(), BAD_INPUT);
});
check('total order (lamport, replica)', () => {
  assert.equal(x.smoke_log_key_cmp(1n, 9, 2n, 1), -1, 'lamport first');
  assert.equal(x.smoke_log_key_cmp(5n, 2, 5n, 1), 1, 'replica breaks ties');
  assert.equal(x.smoke_log_key_cmp(2n ** 63n, 1, 2n ** 63n, 1), 0, 'u64 lamport survives the ABI');
});
check('version vector coverage', () => {
  put(u32s(1, 5, 2, 1));
  assert.equal(x.smoke_version_vector_covers(1, 5n), 1);
  assert.equal(x.smoke_version_vector_covers(1, 6n), 0);
  assert.equal(x.smoke_version_vector_covers(2, 1n), 1);
  assert.equal(x.smoke_version_vector_covers(3, 1n), 0);
  put(new Uint8Array(7));
  assert.equal(x.smoke_version_vector_covers(1, 1n), BAD_INPUT);
});

// --- summary --------------------------------------------------------------------------------------------
const failed = results.filter(([, s]) => s !== 'ok');
for (const [name, s] of results) console.log(`${s === 'ok' ? 'ok  ' : 'FAIL'} ${name}`);
console.log(`wasm smoke: ${results.length - failed.length}/${results.length} passed (${file})`);
process.exit(failed.length ? 1 : 0);
