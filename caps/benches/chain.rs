//! Chain verification cost: depth 1, 3 and 8, uncached (fresh verifier: decode + Ed25519 verify
//! of every delegation) and cached by CID (warm verifier: look-ups + policy evaluation), next to
//! raw Ed25519 `verify_strict` and batch verification in the same run.
//!
//! Run: `cargo bench -p canopy-caps --bench chain` (prints a table, then one JSON line). Under
//! `cargo test --all-targets` it runs as a 5 ms-per-figure smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use canopy_caps::{
    subtree_policy, tree_args, Ability, Cid, Context, Delegation, DelegationFields, Proofs,
    Request, Revocations, SecretKey, Verifier,
};
use ed25519_dalek::{Signature, VerifyingKey};

/// Runs `f` repeatedly for about `budget` and returns the mean time per call.
fn measure(budget: Duration, mut f: impl FnMut()) -> Duration {
    for _ in 0..10 {
        f();
    }
    let mut iters = 0u32;
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..16 {
            f();
        }
        iters += 16;
    }
    start.elapsed() / iters
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` this runs as a quick smoke.
    let benching = std::env::args().any(|a| a == "--bench");
    let default_ms = if benching { 700 } else { 5 };
    let budget = Duration::from_millis(
        std::env::var("CAPS_BENCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_ms),
    );
    let mut rng = rand_core::OsRng;
    let keys: Vec<SecretKey> = (0..9).map(|_| SecretKey::generate(&mut rng)).collect();
    let owner = keys[0].did();
    let folder = [7u8; 16];
    let node = [9u8; 16];
    let ancestors = [[8u8; 16], folder, [0u8; 16]];
    let args = tree_args(&node, &ancestors);
    let command = Ability::WriteMove.command();

    // A chain of 8 delegations owner -> k1 -> … -> k8, each scoped to the folder.
    let mut proofs = Proofs::new();
    let mut chain: Vec<Cid> = Vec::new();
    let mut dlgs = Vec::new();
    for i in 0..8 {
        let d = Delegation::issue(
            &keys[i],
            DelegationFields {
                audience: keys[i + 1].did(),
                subject: Some(owner),
                command: Ability::Write.command(),
                policy: subtree_policy(&folder, &[]),
                expiration: Some(4_000_000_000),
                not_before: None,
                meta: None,
            },
            &mut rng,
        );
        chain.push(proofs.insert(d.to_bytes().to_vec()));
        dlgs.push(d);
    }
    let revocations = Revocations::new();
    let ctx = Context {
        time: 1_800_000_000,
        revocations: &revocations,
        op: None,
    };

    // Raw Ed25519 on the same signed payloads the chain carries.
    let sigs: Vec<Signature> = dlgs
        .iter()
        .map(|d| Signature::from_slice(d.signature()).unwrap())
        .collect();
    let vks: Vec<VerifyingKey> = dlgs
        .iter()
        .map(|d| VerifyingKey::from_bytes(d.issuer().public_key()).unwrap())
        .collect();
    let msgs: Vec<&[u8]> = dlgs.iter().map(|d| d.signed_payload()).collect();
    let raw = measure(budget, || {
        black_box(vks[0].verify_strict(black_box(msgs[0]), &sigs[0])).unwrap();
    });
    let batch8 = measure(budget, || {
        black_box(ed25519_dalek::verify_batch(black_box(&msgs), &sigs, &vks)).unwrap();
    });

    println!(
        "caps chain verification ({} ms per figure, payload {} bytes)",
        budget.as_millis(),
        msgs[0].len()
    );
    println!(
        "{:<34} {:>12} {:>14}",
        "case", "µs / call", "µs / signature"
    );
    println!(
        "{:<34} {:>12.2} {:>14.2}",
        "ed25519 verify_strict (1 sig)",
        us(raw),
        us(raw)
    );
    println!(
        "{:<34} {:>12.2} {:>14.2}",
        "ed25519 verify_batch (8 sigs)",
        us(batch8),
        us(batch8) / 8.0
    );

    let mut json = vec![
        format!("\"ed25519_verify_us\":{:.3}", us(raw)),
        format!("\"ed25519_batch8_us\":{:.3}", us(batch8)),
    ];
    for depth in [1usize, 3, 8] {
        let c = &chain[..depth];
        let invoker = keys[depth].did();
        let req = Request {
            subject: &owner,
            invoker: &invoker,
            command: &command,
            args: &args,
        };
        let uncached = measure(budget, || {
            let mut v = Verifier::new();
            black_box(v.check(black_box(c), &proofs, &req, &ctx)).unwrap();
        });
        let mut warm = Verifier::new();
        warm.check(c, &proofs, &req, &ctx).unwrap();
        let cached = measure(budget, || {
            black_box(warm.check(black_box(c), &proofs, &req, &ctx)).unwrap();
        });
        println!(
            "{:<34} {:>12.2} {:>14.2}",
            format!("chain depth {depth}, uncached"),
            us(uncached),
            us(uncached) / depth as f64
        );
        println!(
            "{:<34} {:>12.2} {:>14}",
            format!("chain depth {depth}, cached by CID"),
            us(cached),
            "-"
        );
        json.push(format!("\"depth{depth}_uncached_us\":{:.3}", us(uncached)));
        json.push(format!("\"depth{depth}_cached_us\":{:.3}", us(cached)));
    }
    println!("{{{}}}", json.join(","));
}
