// The seed workloads timed in wasm under Node (figures, not a test):
//   node tree/wasm-smoke/bench.mjs <canopy_wasm_smoke.wasm> [--runs 5] [--json]
// Prints rows like `canopy bench seed --json`: {"workload","n","tier","median_ms","runs"}, with tier
// `wasm-node-core` (MemoryStore) and, for a module built with the `sqlite` feature,
// `wasm-node-sqlite-memory` (SqliteStore::open_in_memory on SQLite compiled to wasm). Each run makes a
// fresh replica (untimed), then times one `smoke_seed` call (after one untimed warm-up run), which does the workload and its shape
// check exactly as `canopy/src/bench/seed.rs` does (see tree/wasm-smoke/src/seed.rs).
import { load, OK } from './module.mjs';

const args = process.argv.slice(2);
const file = args.find((a, i) => !a.startsWith('--') && args[i - 1] !== '--runs');
const runs = Number(args[args.indexOf('--runs') + 1] || 5) || 5;
const json = args.includes('--json');
if (!file || runs < 1) {
  console.error('usage: node bench.mjs <canopy_wasm_smoke.wasm> [--runs N] [--json]');
  process.exit(2);
}
const { x, outStr, outU32s } = load(file);
const tiers = [['wasm-node-core', 0]];
if (x.smoke_store_kinds() & 2) tiers.push(['wasm-node-sqlite-memory', 1]);
const workloads = [['insert-chain', 0], ['bulk-insert-root-siblings', 1]];
const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function fresh(store) {
  x.smoke_reset(); // drop the previous replicas
  if (x.smoke_replica_new(store, 0x42) !== OK) throw new Error(outStr());
  return outU32s()[0];
}

const rows = [];
for (const [tier, store] of tiers) {
  // V8 compiles wasm lazily and optimises hot functions in the background: warm every code path up
  // at the largest size first, untimed
  for (const [, code] of workloads) x.smoke_seed(fresh(store), code, 10000);
  for (const [workload, code] of workloads) {
    for (const n of [100, 1000, 10000]) {
      const times = [];
      for (let r = -1; r < runs; r++) { // run -1 warms up, untimed
        const h = fresh(store);
        const t = performance.now();
        const st = x.smoke_seed(h, code, n);
        const ms = performance.now() - t;
        if (st !== OK) throw new Error(`${workload} ${n} ${tier}: ${outStr()}`);
        if (r >= 0) times.push(ms);
      }
      rows.push({ workload, n, tier, median_ms: Math.round(median(times) * 1000) / 1000, runs });
    }
  }
}
if (json) {
  console.log(JSON.stringify(rows, null, 2));
} else {
  console.log(`${'workload'.padEnd(28)} ${'n'.padStart(7)} ${'tier'.padStart(24)} ${'median ms'.padStart(12)}`);
  for (const r of rows) {
    console.log(`${r.workload.padEnd(28)} ${String(r.n).padStart(7)} ${r.tier.padStart(24)} ${r.median_ms.toFixed(3).padStart(12)}`);
  }
}
