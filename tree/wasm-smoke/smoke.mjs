// Runs the canopy-tree wasm smoke test under Node:
//   node tree/wasm-smoke/smoke.mjs <canopy_wasm_smoke.wasm> [--sqlite]
// Instantiates the module, drives the real canopy_tree API through the plain extern "C" exports of
// tree/wasm-smoke/src (see its crate docs for the calling convention) and asserts concrete results:
// child order, counts, payload bytes, skipped cycles, delete/restore, late ops, convergence,
// check_invariants(). The tree scenarios run on every store the module has (MemoryStore; with the
// crate's `sqlite` feature also SqliteStore on SQLite compiled to wasm); --sqlite makes a module without
// SQLite a failure. Exits 1 on any failure (a failed assertion, a trap such as a Rust panic, a missing
// export).
import assert from 'node:assert/strict';
import { load, OK, LIB_ERROR, BAD_INPUT } from './module.mjs';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
const requireSqlite = args.includes('--sqlite');
if (!file) {
  console.error('usage: node smoke.mjs <canopy_wasm_smoke.wasm> [--sqlite]');
  process.exit(2);
}
const { x, put, out, outStr, outU32s, importNames } = load(file);
const enc = new TextEncoder();
const u32s = (...values) => {
  const b = new Uint8Array(values.length * 4);
  const v = new DataView(b.buffer);
  values.forEach((n, i) => v.setUint32(i * 4, n, true));
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
  assert.equal(x.smoke_log_key_cmp(2n ** 63n, 1, 2n ** 63n, 1), 0);
  assert.equal(x.smoke_log_key_cmp(2n ** 63n, 1, 2n ** 63n + 1n, 1), -1, 'u64 lamport survives the ABI');
  assert.equal(x.smoke_log_key_cmp(2n ** 64n - 1n, 1, 1n, 9), 1, 'u64::MAX');
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
// --- the tree ---------------------------------------------------------------------------------------
const ROOT = 0, TRASH = 1;
const FIRST = 0, LAST = 1, AFTER = 2, BEFORE = 3;
const MEMORY = 0, SQLITE = 1;

/** Calls an export that must succeed; returns its output as u32s. */
function ok(name, ...a) {
  const st = x[name](...a);
  assert.equal(st, OK, `${name}(${a}) -> ${st}: ${outStr()}`);
  return outU32s();
}
/** Calls an export that must fail with a typed library error; returns the error's Debug text. */
function libErr(name, ...a) {
  const st = x[name](...a);
  assert.equal(st, LIB_ERROR, `${name}(${a}) should fail, got ${st}`);
  return outStr();
}
const T = {
  replica: (store, byte) => ok('smoke_replica_new', store, byte)[0],
  create(h, parent, place = LAST, sibling = 0, payload = undefined) {
    if (payload !== undefined) put(payload);
    return ok('smoke_create', h, parent, place, sibling, payload === undefined ? 0 : 1)[0];
  },
  move: (h, node, parent, place = LAST, sibling = 0) => ok('smoke_move', h, node, parent, place, sibling),
  del: (h, node) => ok('smoke_delete', h, node),
  restore: (h, node, parent, place = LAST, sibling = 0) => ok('smoke_restore', h, node, parent, place, sibling),
  setPayload(h, node, bytes) {
    put(bytes);
    return ok('smoke_set_payload', h, node);
  },
  children: (h, parent) => ok('smoke_children', h, parent),
  parent: (h, node) => ok('smoke_parent', h, node)[0], // undefined: none
  payload(h, node) {
    ok('smoke_payload', h, node);
    const b = out();
    return b.length === 0 ? null : b.slice(1);
  },
  state(h, node) {
    const [deleted, exists, depth] = ok('smoke_node_state', h, node);
    return { deleted: !!deleted, exists: !!exists, depth };
  },
  counts(h) {
    const [nodes, root, trash] = ok('smoke_counts', h);
    return { nodes, root, trash };
  },
  events() {
    ok('smoke_events');
    return outStr().trim().split('\n').filter(Boolean);
  },
  sent: (h) => ok('smoke_sent_count', h)[0],
  /** Delivers ops [start, start+count) made by `from` to `to`; returns the outcome counts. */
  deliver(from, to, { start = 0, count = undefined, reversed = false } = {}) {
    const n = count ?? T.sent(from) - start;
    ok('smoke_deliver', from, to, start, n, reversed ? 1 : 0);
    return Object.fromEntries(outStr().trim().split(' ').map((kv) => kv.split('=')).map(([k, v]) => [k, +v]));
  },
  dump(h) {
    ok('smoke_dump', h);
    return outStr();
  },
  check: (h) => ok('smoke_check', h),
};
const bytes = (s) => enc.encode(s);

check('op decoder: a valid op round trips, random and truncated bytes give typed errors', () => {
  // a create by replica 0x07.., seq 1, lamport 1, under ROOT, made by the module itself
  x.smoke_reset();
  ok('smoke_replica_new', 0, 7);
  put(bytes('p'));
  ok('smoke_create', 0, 0, 1, 0, 1);
  ok('smoke_sent_op', 0, 0);
  const wire = out();
  put(wire);
  assert.equal(x.smoke_op_decode(), OK);
  assert.deepEqual(out(), wire, 'decode + encode is the identity');
  for (let cut = 0; cut < wire.length; cut++) {
    put(wire.slice(0, cut));
    assert.equal(x.smoke_op_decode(), LIB_ERROR, `truncated to ${cut}`);
  }
  put(new Uint8Array([...wire, 0]));
  assert.equal(x.smoke_op_decode(), LIB_ERROR, 'trailing byte');
  let seed = 7, typed = 0;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) >> 8;
  for (let i = 0; i < 2000; i++) {
    const junk = Uint8Array.from({ length: rnd() % 64 }, () => rnd() & 255);
    if (i % 2) junk[0] = wire[0]; // right version byte: gets past the first check
    put(junk);
    const st = x.smoke_op_decode(); // a trap (panic) would throw here and fail the check
    assert.ok(st === OK || st === LIB_ERROR, `status ${st}`);
    typed += st === LIB_ERROR;
  }
  assert.ok(typed > 1900, `${typed} of 2000 random inputs rejected`);
});

function treeScenarios(store, label) {
  const tag = (name) => `[${label}] ${name}`;
  let A, B, C, a, b, c, d, e;
  check(tag('create: sibling order, payloads, counts, events'), () => {
    x.smoke_reset();
    A = T.replica(store, 1);
    a = T.create(A, ROOT, LAST, 0, bytes('a'));
    b = T.create(A, ROOT, LAST);
    c = T.create(A, ROOT, FIRST);
    d = T.create(A, ROOT, AFTER, a, new Uint8Array([0, 255, 7]));
    assert.deepEqual(T.events(), [`Created ${d}`, `PayloadChanged ${d}`]);
    e = T.create(A, ROOT, BEFORE, c);
    assert.deepEqual(T.children(A, ROOT), [e, c, a, d, b]);
    assert.deepEqual(T.counts(A), { nodes: 5, root: 5, trash: 0 });
    assert.deepEqual(T.payload(A, a), bytes('a'));
    assert.deepEqual(T.payload(A, d), new Uint8Array([0, 255, 7]));
    assert.equal(T.payload(A, b), null);
    assert.equal(T.parent(A, a), ROOT);
    assert.equal(T.parent(A, ROOT), undefined);
    assert.deepEqual(T.state(A, a), { deleted: false, exists: true, depth: 1 });
    T.check(A);
  });
  check(tag('move; a local cycle is a typed error that changes nothing'), () => {
    T.move(A, a, b);
    assert.deepEqual(T.events(), [`Moved ${a}`]);
    T.move(A, d, b, FIRST);
    assert.deepEqual(T.children(A, b), [d, a]);
    assert.deepEqual(T.children(A, ROOT), [e, c, b]);
    assert.equal(T.parent(A, a), b);
    assert.deepEqual(T.state(A, a), { deleted: false, exists: true, depth: 2 });
    const before = T.dump(A);
    assert.match(libErr('smoke_move', A, b, a, LAST, 0), /^Cycle/);
    assert.match(libErr('smoke_move', A, b, b, LAST, 0), /^Cycle/);
    assert.match(libErr('smoke_move', A, ROOT, a, LAST, 0), /^Reserved/);
    assert.match(libErr('smoke_move', A, a, ROOT, AFTER, d), /^SiblingNotUnder/);
    assert.equal(T.dump(A), before, 'refused moves change nothing');
    T.check(A);
  });
  check(tag('payload: last writer wins, empty payload is not "none"'), () => {
    const big = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    T.setPayload(A, b, big);
    assert.deepEqual(T.events(), [`PayloadChanged ${b}`]);
    assert.deepEqual(T.payload(A, b), big);
    T.setPayload(A, b, new Uint8Array(0));
    assert.deepEqual(T.payload(A, b), new Uint8Array(0));
    T.setPayload(A, b, bytes('final'));
    assert.deepEqual(T.payload(A, b), bytes('final'));
  });
  check(tag('delete moves a subtree to TRASH; restore brings it back'), () => {
    T.del(A, b);
    assert.deepEqual(T.events(), [`Deleted ${b}`]);
    assert.equal(T.parent(A, b), TRASH);
    assert.deepEqual(T.state(A, b), { deleted: true, exists: true, depth: 1 });
    assert.deepEqual(T.state(A, a), { deleted: true, exists: true, depth: 2 }, 'children are deleted with it');
    assert.deepEqual(T.children(A, ROOT), [e, c]);
    assert.deepEqual(T.counts(A), { nodes: 5, root: 2, trash: 1 });
    assert.match(libErr('smoke_move', A, a, ROOT, LAST, 0), /^InTrash/);
    assert.match(libErr('smoke_restore', A, c, ROOT, LAST, 0), /^NotInTrash/);
    T.restore(A, b, ROOT, FIRST);
    assert.deepEqual(T.events(), [`Restored ${b}`]);
    assert.deepEqual(T.children(A, ROOT), [b, e, c]);
    assert.deepEqual(T.children(A, b), [d, a], 'the subtree comes back whole');
    assert.deepEqual(T.state(A, a), { deleted: false, exists: true, depth: 2 });
    assert.deepEqual(T.payload(A, b), bytes('final'));
    assert.deepEqual(T.counts(A), { nodes: 5, root: 3, trash: 0 });
    T.check(A);
  });
  check(tag('wire delivery out of order and with duplicates converges'), () => {
    B = T.replica(store, 2);
    const n = T.sent(A);
    assert.equal(n, 12, '5 creates, 2 moves, 3 payload writes, 1 delete, 1 restore');
    const r = T.deliver(A, B, { reversed: true });
    assert.equal(r.rejected, 0);
    assert.equal(T.dump(B), T.dump(A));
    const again = T.deliver(A, B, { start: 3, count: 4 });
    assert.equal(again.duplicate, 4, 'duplicates are ignored');
    assert.equal(again.events, 0);
    T.check(B);
  });
  check(tag('ops arriving before their predecessors are parked, then released'), () => {
    const E = T.replica(store, 5);
    const first = T.deliver(A, E, { start: 6 }); // ops 7..12 of A: op 7 awaits op 6
    assert.equal(first.pending, 6, JSON.stringify(first));
    assert.equal(first.events, 0);
    assert.deepEqual(T.counts(E), { nodes: 0, root: 0, trash: 0 });
    const rest = T.deliver(A, E, { start: 0, count: 6 });
    assert.equal(rest.applied, 12, `6 delivered + 6 released: ${JSON.stringify(rest)}`);
    assert.equal(T.dump(E), T.dump(A));
    T.check(E);
  });
  check(tag('concurrent moves that would make a cycle: exactly one is skipped, replicas agree'), () => {
    // A moves e under c while B moves c under e
    const [sa, sb] = [T.sent(A), T.sent(B)];
    T.move(A, e, c);
    T.move(B, c, e);
    const atB = T.deliver(A, B, { start: sa });
    const atA = T.deliver(B, A, { start: sb });
    assert.equal(atA.skipped_cycle + atB.skipped_cycle, 1, JSON.stringify({ atA, atB }));
    assert.equal(T.dump(A), T.dump(B));
    const pe = T.parent(A, e), pc = T.parent(A, c);
    assert.ok((pe === c && pc === ROOT) || (pc === e && pe === ROOT), `one move won: e->${pe} c->${pc}`);
    T.check(A);
    T.check(B);
  });
  check(tag('a late op (older than everything applied) is applied by undo/redo'), () => {
    // D has seen nothing: its ops have the smallest Lamport timestamps of all
    const D = T.replica(store, 4);
    const late = T.create(D, ROOT, LAST, 0, bytes('late'));
    T.setPayload(D, late, bytes('late2'));
    C = T.replica(store, 3);
    T.deliver(B, C, { reversed: true });
    T.deliver(A, C);
    const before = T.counts(C).nodes;
    const r = T.deliver(D, C);
    assert.equal(r.applied, 2, JSON.stringify(r));
    assert.ok(T.children(C, ROOT).includes(late));
    assert.deepEqual(T.payload(C, late), bytes('late2'));
    assert.equal(T.counts(C).nodes, before + 1);
    for (const h of [A, B]) T.deliver(D, h);
    T.deliver(B, A);
    T.deliver(A, B);
    assert.equal(T.dump(A), T.dump(C));
    assert.equal(T.dump(B), T.dump(C));
    for (const h of [A, B, C, D]) T.check(h);
  });
  check(tag('a delete that had not seen a concurrent insert does not hide it'), () => {
    const [sa, sb] = [T.sent(A), T.sent(B)];
    T.del(A, b);
    const fresh = T.create(B, b, LAST, 0, bytes('new'));
    T.deliver(A, B, { start: sa });
    T.deliver(B, A, { start: sb });
    for (const h of [A, B]) {
      assert.equal(T.state(h, b).deleted, false);
      assert.ok(T.children(h, b).includes(fresh));
      T.check(h);
    }
    assert.equal(T.dump(A), T.dump(B));
  });
  check(tag('seed workloads (insert-chain, bulk-insert-root-siblings) have the right shape'), () => {
    for (const [workload, code] of [['insert-chain', 0], ['bulk-insert-root-siblings', 1]]) {
      for (const n of [1, 100, 1000]) {
        const h = T.replica(store, 0x42);
        assert.equal(x.smoke_seed(h, code, n), OK, `${workload} ${n}: ${outStr()}`);
        const c = T.counts(h);
        assert.equal(c.nodes, n);
        assert.equal(c.root, workload === 'insert-chain' ? 1 : n);
        T.check(h);
      }
    }
    assert.equal(x.smoke_seed(A, 7, 1), BAD_INPUT, 'unknown workload');
  });
  check(tag('bad handles and references are rejected without trapping'), () => {
    assert.equal(x.smoke_create(99, ROOT, LAST, 0, 0), BAD_INPUT);
    assert.equal(x.smoke_create(A, 12345, LAST, 0, 0), BAD_INPUT);
    assert.equal(x.smoke_create(A, ROOT, 9, 0, 0), BAD_INPUT);
    assert.equal(x.smoke_deliver(A, B, 0, 100000, 0), BAD_INPUT);
    assert.equal(x.smoke_replica_new(77, 1), BAD_INPUT);
    for (const h of [A, B, C]) T.check(h);
  });
}

const kinds = x.smoke_store_kinds();
check('module has the stores asked for, and imports nothing but SQLite\'s host services', () => {
  assert.ok(kinds & 1, 'MemoryStore');
  if (requireSqlite) assert.ok(kinds & 2, 'SqliteStore (build with --features sqlite)');
  // the tree core does no IO: without SQLite the module imports nothing at all
  const sqliteHost = ['sleep', 'random', 'epoch_timestamp_in_ms', 'fill_entropy', 'localtime']
    .map((f) => `env.rust_sqlite_wasm_host_${f}`);
  assert.deepEqual([...importNames].sort(), kinds & 2 ? [...sqliteHost].sort() : []);
});
treeScenarios(MEMORY, 'memory');
if (kinds & 2) {
  treeScenarios(SQLITE, 'sqlite');
  check('[mixed] a SqliteStore replica and a MemoryStore replica converge to the same tree', () => {
    x.smoke_reset();
    const S = T.replica(SQLITE, 1), M = T.replica(MEMORY, 2);
    const known = { [S]: [ROOT], [M]: [ROOT] }; // nodes each replica has seen
    let seed = 12345, created = 0, moved = 0;
    const rnd = (n) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let i = 0; i < 80; i++) {
      const h = i % 2 ? S : M;
      const k = known[h];
      if (k.length < 3 || rnd(3) === 0) {
        k.push(T.create(h, k[rnd(k.length)], rnd(2), 0, bytes(`n${i}`)));
        created++;
      } else if (x.smoke_move(h, k[1 + rnd(k.length - 1)], k[rnd(k.length)], rnd(2), 0) === OK) {
        moved++; // a move into the node's own subtree is refused locally (LIB_ERROR): fine here
      }
      if (rnd(4) === 0) {
        T.deliver(S, M);
        T.deliver(M, S);
        const all = [...new Set([...known[S], ...known[M]])];
        known[S] = [...all];
        known[M] = [...all];
      }
    }
    T.deliver(S, M);
    T.deliver(M, S);
    assert.equal(T.dump(S), T.dump(M));
    assert.equal(T.counts(S).nodes, created);
    assert.ok(created >= 10 && moved >= 10, `created ${created}, moved ${moved}`);
    T.check(S);
    T.check(M);
  });
}

// --- summary --------------------------------------------------------------------------------------------
const failed = results.filter(([, s]) => s !== 'ok');
for (const [name, s] of results) console.log(`${s === 'ok' ? 'ok  ' : 'FAIL'} ${name}`);
console.log(`wasm smoke: ${results.length - failed.length}/${results.length} passed (${file})`);
process.exit(failed.length ? 1 : 0);
