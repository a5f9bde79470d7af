// Host services that sqlite-wasm-rs (SQLite compiled for wasm32-unknown-unknown, under rusqlite) links
// against when its `wasm-bindgen` feature is off: sleep, randomness, clock, entropy, local time.
// The smoke module is linked with `--allow-undefined-file` listing exactly these (see build.rs), so these
// five symbols become imports of module "env"; this file implements them with Node's clock and crypto.
// Contract: sqlite-wasm-rs 0.6 `src/host/mod.rs` (status 0 = ok; LocalTime = ten little-endian i32).
import { webcrypto } from 'node:crypto';

/** Returns the `env` import object; `memory()` must return the instance's memory once instantiated. */
export function sqliteHost(memory) {
  const fill = (ptr, len) => {
    // getRandomValues fills at most 65536 bytes per call
    for (let o = 0; o < len; o += 65536) {
      webcrypto.getRandomValues(new Uint8Array(memory().buffer, ptr + o, Math.min(65536, len - o)));
    }
  };
  return {
    rust_sqlite_wasm_host_sleep(seconds, nanoseconds) {
      const ms = Number(seconds) * 1000 + nanoseconds / 1e6;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    },
    rust_sqlite_wasm_host_random(ptr, len) {
      fill(ptr, len);
      return len;
    },
    rust_sqlite_wasm_host_epoch_timestamp_in_ms(out) {
      new DataView(memory().buffer).setBigInt64(out, BigInt(Date.now()), true);
      return 0;
    },
    rust_sqlite_wasm_host_fill_entropy(ptr, len) {
      fill(ptr, len);
      return 0;
    },
    rust_sqlite_wasm_host_localtime(unixSeconds, out) {
      const d = new Date(Number(unixSeconds) * 1000);
      if (Number.isNaN(d.getTime())) return 3; // Error::InvalidTime
      const jan1 = new Date(d.getFullYear(), 0, 1);
      const isDst = d.getTimezoneOffset() < Math.max(jan1.getTimezoneOffset(),
        new Date(d.getFullYear(), 6, 1).getTimezoneOffset()) ? 1 : 0;
      const fields = [d.getFullYear(), d.getMonth() + 1, d.getDate(), d.getHours(), d.getMinutes(),
        d.getSeconds(), d.getDay(), Math.round((new Date(d.getFullYear(), d.getMonth(), d.getDate()) - jan1) / 864e5),
        isDst, -d.getTimezoneOffset() * 60];
      const v = new DataView(memory().buffer);
      fields.forEach((f, i) => v.setInt32(out + 4 * i, f, true));
      return 0;
    },
  };
}
