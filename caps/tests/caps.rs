//! Integration tests for `canopy-caps`: UCAN fixture conformance, chain validation (one negative
//! case per error variant), revocation, share links, attenuation and decoder robustness.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_caps::fixtures;
use canopy_caps::*;
use proptest::prelude::*;
use rand_core::{CryptoRng, RngCore};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn run_fixture(path: PathBuf) -> Vec<fixtures::CaseResult> {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let results = fixtures::run(&text, now()).unwrap();
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "{}: {failed:#?}", path.display());
    results
}

#[test]
fn ucan_delegation_fixture() {
    let r = run_fixture(repo().join("../shared/vectors/ucan-1.0.0/delegation.json"));
    assert_eq!(r.len(), 1);
}

#[test]
fn ucan_policy_fixture() {
    let r = run_fixture(repo().join("../shared/vectors/ucan-1.0.0/policy.json"));
    // 6 valid groups with 17 policies, 4 invalid groups with 8 policies.
    assert_eq!(r.len(), 25, "{r:#?}");
}

#[test]
fn ucan_invocation_fixture() {
    let r = run_fixture(repo().join("spec/vectors/ucan/invocation.json"));
    assert_eq!(r.len(), 20);
}

#[test]
fn fixture_runner_reports_details() {
    let text = std::fs::read_to_string(repo().join("spec/vectors/ucan/invocation.json")).unwrap();
    for r in fixtures::run(&text, now()).unwrap() {
        println!("{} -> {}", r.name, r.detail);
    }
    // A fixture file whose expectation is wrong must fail: flip one expected error class.
    let flipped = text.replacen("\"name\": \"InvalidClaim\"", "\"name\": \"Expired\"", 1);
    let results = fixtures::run(&flipped, now()).unwrap();
    assert_eq!(results.iter().filter(|r| !r.passed).count(), 1);
    assert!(fixtures::run("{\"valid\": [{\"x\": 1}]}", now()).is_err());
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Deterministic RNG for tests (xorshift: nonces and ephemeral keys only need to differ).
struct TestRng(u64);
impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for TestRng {}
fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes(&[n; 32])
}

fn cmd(s: &str) -> Command {
    s.parse().unwrap()
}

struct Grant<'a> {
    from: &'a SecretKey,
    to: Did,
    sub: Option<Did>,
    cmd: &'a str,
    pol: Policy,
    exp: Option<u64>,
    nbf: Option<u64>,
}

fn grant(g: Grant<'_>) -> Delegation {
    Delegation::issue(
        g.from,
        DelegationFields {
            audience: g.to,
            subject: g.sub,
            command: cmd(g.cmd),
            policy: g.pol,
            expiration: g.exp,
            not_before: g.nbf,
            meta: None,
        },
        &mut TestRng(42),
    )
}

fn simple(from: &SecretKey, to: &SecretKey, sub: &SecretKey, c: &str) -> Delegation {
    grant(Grant {
        from,
        to: to.did(),
        sub: Some(sub.did()),
        cmd: c,
        pol: Policy::default(),
        exp: None,
        nbf: None,
    })
}

/// owner(1) -> alice(2) -> bob(3), `/tree/write`, no policy.
fn two_hop() -> (Proofs, Vec<Cid>, [SecretKey; 3]) {
    let (o, a, b) = (key(1), key(2), key(3));
    let mut proofs = Proofs::new();
    let chain = vec![
        proofs.insert(simple(&o, &a, &o, "/tree/write").to_bytes().to_vec()),
        proofs.insert(simple(&a, &b, &o, "/tree/write").to_bytes().to_vec()),
    ];
    (proofs, chain, [o, a, b])
}

fn empty_args() -> Ipld {
    Ipld::Map(Default::default())
}

fn check(
    proofs: &Proofs,
    chain: &[Cid],
    subject: &Did,
    invoker: &Did,
    c: &str,
    time: u64,
) -> Result<Authorized, VerifyError> {
    let revs = Revocations::new();
    let command = cmd(c);
    let args = empty_args();
    Verifier::new().check(
        chain,
        proofs,
        &Request {
            subject,
            invoker,
            command: &command,
            args: &args,
        },
        &Context {
            time,
            revocations: &revs,
            op: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Chain validation: one negative case per error variant

#[test]
fn chain_valid_and_command_prefix() {
    let (proofs, chain, [o, _, b]) = two_hop();
    let ok = check(&proofs, &chain, &o.did(), &b.did(), "/tree/write/move", 10).unwrap();
    assert_eq!(ok.chain(), chain.as_slice());
    check(&proofs, &chain, &o.did(), &b.did(), "/tree/write", 10).unwrap();
    let err = check(&proofs, &chain, &o.did(), &b.did(), "/tree/writex", 10).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::InvalidClaim(ClaimError::CommandNotCovered { .. })
        ),
        "{err}"
    );
    let err = check(&proofs, &chain, &o.did(), &b.did(), "/tree/read", 10).unwrap_err();
    assert_eq!(err.class(), "InvalidClaim");
}

#[test]
fn invalid_claim_no_proof_and_root_rules() {
    let (o, a) = (key(1), key(2));
    let proofs = Proofs::new();
    assert!(matches!(
        check(&proofs, &[], &o.did(), &a.did(), "/tree", 0),
        Err(VerifyError::InvalidClaim(ClaimError::NoProof))
    ));
    // The owner needs no proof.
    check(&proofs, &[], &o.did(), &o.did(), "/tree", 0).unwrap();
    // A root not issued by the subject.
    let mut proofs = Proofs::new();
    let c = proofs.insert(simple(&a, &a, &o, "/tree").to_bytes().to_vec());
    assert!(matches!(
        check(&proofs, &[c], &o.did(), &a.did(), "/tree", 0),
        Err(VerifyError::InvalidClaim(ClaimError::RootNotSubject { .. }))
    ));
    // A powerline root.
    let pl = grant(Grant {
        from: &o,
        to: a.did(),
        sub: None,
        cmd: "/",
        pol: Policy::default(),
        exp: None,
        nbf: None,
    });
    let c = proofs.insert(pl.to_bytes().to_vec());
    assert!(matches!(
        check(&proofs, &[c], &o.did(), &a.did(), "/tree", 0),
        Err(VerifyError::InvalidClaim(ClaimError::RootPowerline { .. }))
    ));
}

#[test]
fn powerline_below_root_is_accepted() {
    let (o, a, b) = (key(1), key(2), key(3));
    let mut proofs = Proofs::new();
    let root = proofs.insert(simple(&o, &a, &o, "/tree").to_bytes().to_vec());
    let pl = grant(Grant {
        from: &a,
        to: b.did(),
        sub: None,
        cmd: "/tree",
        pol: Policy::default(),
        exp: None,
        nbf: None,
    });
    let c = proofs.insert(pl.to_bytes().to_vec());
    check(&proofs, &[root, c], &o.did(), &b.did(), "/tree/read", 0).unwrap();
}

#[test]
fn unavailable_proof() {
    let (mut proofs, chain, [o, _, b]) = two_hop();
    let missing = cid_of(b"not stored");
    let err = check(
        &proofs,
        &[chain[0], missing],
        &o.did(),
        &b.did(),
        "/tree/write",
        0,
    )
    .unwrap_err();
    assert_eq!(err, VerifyError::UnavailableProof { cid: missing });
    // Bytes stored under their own CID can't stand in for another CID.
    proofs.insert(b"\x80".to_vec());
    assert_eq!(
        check(&proofs, &[missing], &o.did(), &b.did(), "/tree", 0)
            .unwrap_err()
            .class(),
        "UnavailableProof"
    );
}

#[test]
fn expired_and_too_early() {
    let (o, a) = (key(1), key(2));
    let mut proofs = Proofs::new();
    let d = grant(Grant {
        from: &o,
        to: a.did(),
        sub: Some(o.did()),
        cmd: "/tree",
        pol: Policy::default(),
        exp: Some(100),
        nbf: Some(50),
    });
    let c = proofs.insert(d.to_bytes().to_vec());
    let at = |t| check(&proofs, &[c], &o.did(), &a.did(), "/tree", t);
    assert!(matches!(
        at(49),
        Err(VerifyError::TooEarly {
            nbf: 50,
            at: 49,
            ..
        })
    ));
    assert_eq!(at(50).unwrap().expiration(), Some(100));
    at(99).unwrap();
    assert!(matches!(
        at(100),
        Err(VerifyError::Expired {
            exp: 100,
            at: 100,
            cid: Some(_)
        })
    ));
}

#[test]
fn invalid_audience() {
    let (o, a, b, c) = (key(1), key(2), key(3), key(4));
    let mut proofs = Proofs::new();
    let d1 = proofs.insert(simple(&o, &a, &o, "/tree").to_bytes().to_vec());
    let d2 = proofs.insert(simple(&c, &b, &o, "/tree").to_bytes().to_vec());
    assert!(matches!(
        check(&proofs, &[d1, d2], &o.did(), &b.did(), "/tree", 0),
        Err(VerifyError::InvalidAudience { .. })
    ));
    // Last audience is not the invoker.
    assert!(matches!(
        check(&proofs, &[d1], &o.did(), &b.did(), "/tree", 0),
        Err(VerifyError::InvalidAudience { .. })
    ));
}

#[test]
fn invalid_subject() {
    let (o, a, b, x) = (key(1), key(2), key(3), key(9));
    let mut proofs = Proofs::new();
    let d1 = proofs.insert(simple(&o, &a, &o, "/tree").to_bytes().to_vec());
    let d2 = proofs.insert(simple(&a, &b, &x, "/tree").to_bytes().to_vec());
    assert!(matches!(
        check(&proofs, &[d1, d2], &o.did(), &b.did(), "/tree", 0),
        Err(VerifyError::InvalidSubject { .. })
    ));
    // The request names another document.
    assert!(matches!(
        check(&proofs, &[d1], &x.did(), &a.did(), "/tree", 0),
        Err(VerifyError::InvalidSubject { .. })
    ));
}

#[test]
fn invalid_signature() {
    let (o, a) = (key(1), key(2));
    let d = simple(&o, &a, &o, "/tree");
    // Re-sign the same payload with another key but keep the issuer: the signature must fail.
    let mut bytes = d.to_bytes().to_vec();
    let forged = key(7).sign(d.signed_payload());
    let at = bytes.windows(64).position(|w| w == d.signature()).unwrap();
    bytes[at..at + 64].copy_from_slice(&forged);
    let mut proofs = Proofs::new();
    let c = proofs.insert(bytes);
    let err = check(&proofs, &[c], &o.did(), &a.did(), "/tree", 0).unwrap_err();
    assert_eq!(
        err,
        VerifyError::InvalidSignature {
            cid: Some(c),
            issuer: o.did()
        }
    );
}

#[test]
fn match_error() {
    let (o, a) = (key(1), key(2));
    let folder = [5u8; 16];
    let d = grant(Grant {
        from: &o,
        to: a.did(),
        sub: Some(o.did()),
        cmd: "/tree",
        pol: subtree_policy(&folder, &[]),
        exp: None,
        nbf: None,
    });
    let mut proofs = Proofs::new();
    let c = proofs.insert(d.to_bytes().to_vec());
    let revs = Revocations::new();
    let ctx = Context {
        time: 0,
        revocations: &revs,
        op: None,
    };
    let mut v = Verifier::new();
    let req = |node: &'static [u8; 16], anc: &'static [[u8; 16]]| (node, anc);
    let (node, anc) = req(&[6u8; 16], &[[5u8; 16], [0u8; 16]]);
    let (o_did, a_did) = (o.did(), a.did());
    let ok = TreeRequest {
        owner: &o_did,
        actor: &a_did,
        ability: Ability::WriteMove,
        node,
        ancestors: anc,
    };
    assert!(authorize(&mut v, &proofs, &[c], &ok, &ctx).is_allowed());
    let outside = [[4u8; 16], [0u8; 16]];
    let bad = TreeRequest {
        ancestors: &outside,
        ..ok
    };
    assert_eq!(
        authorize(&mut v, &proofs, &[c], &bad, &ctx),
        Decision::Deny {
            reason: VerifyError::MatchError { cid: c }
        }
    );
}

#[test]
fn too_deep_and_cycle() {
    let keys: Vec<SecretKey> = (1..=11).map(key).collect();
    let mut proofs = Proofs::new();
    let owner = keys[0].did();
    let chain: Vec<Cid> = (0..10)
        .map(|i| {
            proofs.insert(
                simple(&keys[i], &keys[i + 1], &keys[0], "/tree")
                    .to_bytes()
                    .to_vec(),
            )
        })
        .collect();
    check(&proofs, &chain[..8], &owner, &keys[8].did(), "/tree", 0).unwrap();
    assert_eq!(
        check(&proofs, &chain[..9], &owner, &keys[9].did(), "/tree", 0).unwrap_err(),
        VerifyError::TooDeep {
            depth: 9,
            max: MAX_CHAIN_DEPTH
        }
    );
    // o -> a -> o -> a: the same delegation twice.
    let (o, a) = (&keys[0], &keys[1]);
    let d1 = proofs.insert(simple(o, a, o, "/tree").to_bytes().to_vec());
    let d2 = proofs.insert(simple(a, o, o, "/tree").to_bytes().to_vec());
    assert_eq!(
        check(&proofs, &[d1, d2, d1], &o.did(), &a.did(), "/tree", 0).unwrap_err(),
        VerifyError::Cycle { cid: d1 }
    );
}

#[test]
fn malformed_proof() {
    let (o, a) = (key(1), key(2));
    let mut proofs = Proofs::new();
    let c = proofs.insert(vec![0x82, 0x40, 0xa0]);
    assert!(matches!(
        check(&proofs, &[c], &o.did(), &a.did(), "/tree", 0),
        Err(VerifyError::MalformedProof { .. })
    ));
}

#[test]
fn cache_is_keyed_by_cid_and_skips_signatures() {
    let (proofs, chain, [o, _, b]) = two_hop();
    let revs = Revocations::new();
    let command = cmd("/tree/write");
    let args = empty_args();
    let (od, bd) = (o.did(), b.did());
    let req = Request {
        subject: &od,
        invoker: &bd,
        command: &command,
        args: &args,
    };
    let ctx = Context {
        time: 0,
        revocations: &revs,
        op: None,
    };
    let mut v = Verifier::new();
    v.check(&chain, &proofs, &req, &ctx).unwrap();
    assert_eq!(v.cached(), 2);
    // Cached delegations no longer need their bytes.
    v.check(&chain, &Proofs::new(), &req, &ctx).unwrap();
    v.clear();
    assert!(matches!(
        v.check(&chain, &Proofs::new(), &req, &ctx),
        Err(VerifyError::UnavailableProof { .. })
    ));
    // A bounded cache empties itself instead of growing; decisions do not change.
    let keys: Vec<SecretKey> = (1..=9).map(key).collect();
    let mut long = Proofs::new();
    let chain8: Vec<Cid> = (0..8)
        .map(|i| {
            long.insert(
                simple(&keys[i], &keys[i + 1], &keys[0], "/tree")
                    .to_bytes()
                    .to_vec(),
            )
        })
        .collect();
    let (k0, k8, tree) = (keys[0].did(), keys[8].did(), cmd("/tree"));
    let req8 = Request {
        subject: &k0,
        invoker: &k8,
        command: &tree,
        args: &args,
    };
    let mut small = Verifier::with_capacity_limit(8);
    small.check(&chain8, &long, &req8, &ctx).unwrap();
    assert_eq!(small.cached(), 8);
    small.check(&chain, &proofs, &req, &ctx).unwrap();
    assert_eq!(small.cached(), 2);
    small.check(&chain8, &long, &req8, &ctx).unwrap();
    assert_eq!(small.cached(), 8);
}

// ---------------------------------------------------------------------------------------------
// Invocations

#[test]
fn invocation_round_trip_and_verify() {
    let (proofs, chain, [o, _, b]) = two_hop();
    let issued = Invocation::issue(
        &b,
        InvocationFields {
            subject: o.did(),
            audience: None,
            command: cmd("/tree/write/create"),
            args: Default::default(),
            proofs: chain.clone(),
            expiration: Some(1000),
            issued_at: Some(5),
        },
        &mut TestRng(3),
    );
    let inv = Invocation::decode(issued.to_bytes()).unwrap();
    assert_eq!(inv.cid(), issued.cid());
    assert_eq!(inv.proofs(), chain.as_slice());
    assert_eq!(inv.issued_at(), Some(5));
    let revs = Revocations::new();
    let ctx = |time| Context {
        time,
        revocations: &revs,
        op: None,
    };
    Verifier::new()
        .verify_invocation(&inv, &proofs, &ctx(10))
        .unwrap();
    assert!(matches!(
        Verifier::new().verify_invocation(&inv, &proofs, &ctx(1000)),
        Err(VerifyError::Expired { cid: None, .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Revocation

#[test]
fn revocation_cutoffs_and_authority() {
    let (proofs, chain, [o, a, b]) = two_hop();
    let replica = *b.did().public_key();
    let command = cmd("/tree/write");
    let args = empty_args();
    let (od, bd) = (o.did(), b.did());
    let req = Request {
        subject: &od,
        invoker: &bd,
        command: &command,
        args: &args,
    };
    let run = |revs: &Revocations, seq: Option<u64>| {
        Verifier::new().check(
            &chain,
            &proofs,
            &req,
            &Context {
                time: 0,
                revocations: revs,
                op: seq.map(|seq| OpRef { replica, seq }),
            },
        )
    };
    // Alice revokes her delegation to Bob after Bob's op 3.
    let rev = Revocation::issue(
        &a,
        chain[1],
        BTreeMap::from([(replica, 3)]),
        BTreeSet::new(),
    );
    let back = Revocation::decode(rev.to_bytes()).unwrap();
    assert_eq!(back.cutoff(&replica), 3);
    assert_eq!(back.cid(), rev.cid());
    let mut revs = Revocations::new();
    revs.insert(back);
    run(&revs, Some(3)).unwrap();
    assert_eq!(
        run(&revs, Some(4)).unwrap_err(),
        VerifyError::Revoked {
            cid: chain[1],
            revoker: a.did()
        }
    );
    assert!(matches!(run(&revs, None), Err(VerifyError::Revoked { .. })));
    // A stranger's revocation does not count; the owner's does (issuer above in the chain).
    let mut revs = Revocations::new();
    revs.insert(Revocation::issue(
        &key(9),
        chain[1],
        BTreeMap::new(),
        BTreeSet::new(),
    ));
    run(&revs, Some(1)).unwrap();
    revs.insert(Revocation::issue(
        &o,
        chain[1],
        BTreeMap::new(),
        BTreeSet::new(),
    ));
    assert!(matches!(
        run(&revs, Some(1)),
        Err(VerifyError::Revoked { .. })
    ));
    // Bob cannot revoke Alice's root grant to himself... but as audience of chain[1] he may renounce it.
    let mut revs = Revocations::new();
    revs.insert(Revocation::issue(
        &b,
        chain[0],
        BTreeMap::new(),
        BTreeSet::new(),
    ));
    run(&revs, Some(1)).unwrap();
    revs.insert(Revocation::issue(
        &b,
        chain[1],
        BTreeMap::new(),
        BTreeSet::new(),
    ));
    assert!(matches!(
        run(&revs, Some(1)),
        Err(VerifyError::Revoked { .. })
    ));
    // `keep` exempts the chain through a listed child delegation.
    let mut revs = Revocations::new();
    revs.insert(Revocation::issue(
        &o,
        chain[0],
        BTreeMap::new(),
        BTreeSet::from([chain[1]]),
    ));
    run(&revs, None).unwrap();
}

#[test]
fn revocation_rejects_forgery() {
    let rev = Revocation::issue(
        &key(1),
        cid_of(b"x"),
        BTreeMap::from([([1; 32], 5)]),
        BTreeSet::new(),
    );
    let mut bytes = rev.to_bytes().to_vec();
    let at = bytes.len() - 1;
    bytes[at] ^= 1; // flip a bit inside the payload
    assert!(Revocation::decode(&bytes).is_err());
    assert!(matches!(
        Revocation::decode(simple(&key(1), &key(2), &key(1), "/tree").to_bytes()),
        Err(RevocationError::Decode(DecodeError::WrongTag { .. }))
    ));
}

// ---------------------------------------------------------------------------------------------
// Share links

fn share_setup() -> (SecretKey, SecretKey, SecretKey, ShareLink, Proofs, Vec<Cid>) {
    let (o, a, claimer) = (key(1), key(2), key(3));
    // Owner -> Alice (write on folder 5), Alice shares read on the folder via a link.
    let folder = [5u8; 16];
    let root = grant(Grant {
        from: &o,
        to: a.did(),
        sub: Some(o.did()),
        cmd: "/tree",
        pol: subtree_policy(&folder, &[]),
        exp: None,
        nbf: None,
    });
    let link = ShareLink::create(
        &a,
        o.did(),
        vec![root.to_bytes().to_vec()],
        cmd("/tree/read"),
        subtree_policy(&folder, &[]),
        1000,
        &mut TestRng(9),
    );
    let url = link.to_url("https://canopy.example/doc/1");
    assert!(url.starts_with("https://canopy.example/doc/1#canopy-share-v1."));
    let parsed = ShareLink::parse(&url).unwrap();
    assert_eq!(parsed.delegation().cid(), link.delegation().cid());
    assert_eq!(parsed.ephemeral(), link.ephemeral());
    let claimed = parsed
        .claim(&claimer.did(), Some(&o.did()), 10, &mut TestRng(10))
        .unwrap();
    let mut proofs = Proofs::new();
    let chain: Vec<Cid> = claimed
        .chain
        .iter()
        .map(|b| proofs.insert(b.clone()))
        .collect();
    assert_eq!(chain.len(), 3);
    (o, a, claimer, parsed, proofs, chain)
}

#[test]
fn share_link_round_trip_single_use() {
    let (o, _a, claimer, link, mut proofs, chain) = share_setup();
    let (od, cd) = (o.did(), claimer.did());
    let node = [6u8; 16];
    let anc = [[5u8; 16], [0u8; 16]];
    let req = TreeRequest {
        owner: &od,
        actor: &cd,
        ability: Ability::ReadPayload,
        node: &node,
        ancestors: &anc,
    };
    let no_revs = Revocations::new();
    fn ctx(revs: &Revocations) -> Context<'_> {
        Context {
            time: 20,
            revocations: revs,
            op: None,
        }
    }
    assert!(authorize(&mut Verifier::new(), &proofs, &chain, &req, &ctx(&no_revs)).is_allowed());
    // Writing is not granted by the link.
    let write = TreeRequest {
        ability: Ability::WriteCreate,
        ..req
    };
    assert!(!authorize(
        &mut Verifier::new(),
        &proofs,
        &chain,
        &write,
        &ctx(&no_revs)
    )
    .is_allowed());

    // Claim once more for a second person: with both claims' revocations known, both lose
    // (the link is single-use); with only the first claim's, only the second claimer loses.
    let first = link
        .claim(&claimer.did(), Some(&o.did()), 11, &mut TestRng(12))
        .unwrap();
    let second_key = key(4);
    let second = link
        .claim(&second_key.did(), Some(&o.did()), 11, &mut TestRng(13))
        .unwrap();
    let chain1: Vec<Cid> = first
        .chain
        .iter()
        .map(|b| proofs.insert(b.clone()))
        .collect();
    let chain2: Vec<Cid> = second
        .chain
        .iter()
        .map(|b| proofs.insert(b.clone()))
        .collect();
    let mut revs = Revocations::new();
    revs.insert(first.revocation.clone());
    assert!(authorize(&mut Verifier::new(), &proofs, &chain1, &req, &ctx(&revs)).is_allowed());
    let sd = second_key.did();
    let req2 = TreeRequest { actor: &sd, ..req };
    assert!(matches!(
        authorize(&mut Verifier::new(), &proofs, &chain2, &req2, &ctx(&revs)),
        Decision::Deny {
            reason: VerifyError::Revoked { .. }
        }
    ));
    revs.insert(second.revocation);
    assert!(!authorize(&mut Verifier::new(), &proofs, &chain1, &req, &ctx(&revs)).is_allowed());
}

#[test]
fn share_link_failures() {
    let (o, a, claimer, link, _, _) = share_setup();
    let url = link.to_url("canopy://share");
    // Expired.
    assert_eq!(
        link.claim(&claimer.did(), None, 1000, &mut TestRng(1))
            .unwrap_err(),
        ShareError::Expired {
            exp: 1000,
            now: 1000
        }
    );
    // Foreign document.
    assert!(matches!(
        link.claim(&claimer.did(), Some(&a.did()), 10, &mut TestRng(1)),
        Err(ShareError::ForeignDocument { .. })
    ));
    // Not a link.
    assert_eq!(
        ShareLink::parse("https://x/y").unwrap_err(),
        ShareError::NotAShareLink
    );
    assert_eq!(
        ShareLink::parse("https://x/y#canopy-share-v1.!!").unwrap_err(),
        ShareError::Base64
    );
    // Tampering with any character of the fragment never yields a different valid link.
    let (base, frag) = url.split_once('#').unwrap();
    let mut rejected = 0;
    for i in (16..frag.len()).step_by(7) {
        let mut chars: Vec<char> = frag.chars().collect();
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let tampered = format!("{base}#{}", chars.iter().collect::<String>());
        match ShareLink::parse(&tampered) {
            Err(_) => rejected += 1,
            Ok(l) => {
                // Only bits of the secret key or signature-free padding changed: then the link's
                // delegation no longer matches its key or its claim fails.
                assert!(
                    l.claim(&claimer.did(), Some(&o.did()), 10, &mut TestRng(1))
                        .is_err()
                        || l.delegation().cid() == link.delegation().cid()
                );
            }
        }
    }
    assert!(rejected > 0);
    // A link whose key was swapped for another key: ForeignKey.
    let other = ShareLink::create(
        &a,
        o.did(),
        link.proofs().to_vec(),
        cmd("/tree/read"),
        Policy::default(),
        1000,
        &mut TestRng(77),
    );
    let url2 = other.to_url("canopy://share");
    let spliced = splice_key(&url, &url2);
    assert!(matches!(
        ShareLink::parse(&spliced),
        Err(ShareError::ForeignKey { .. })
    ));
    // A link whose chain is broken (the proof is not the issuer's): Chain error on claim.
    let stranger = ShareLink::create(
        &key(8),
        o.did(),
        link.proofs().to_vec(),
        cmd("/tree/read"),
        Policy::default(),
        1000,
        &mut TestRng(78),
    );
    assert!(matches!(
        stranger.claim(&claimer.did(), Some(&o.did()), 10, &mut TestRng(1)),
        Err(ShareError::Chain(VerifyError::InvalidAudience { .. }))
    ));
}

/// Takes the delegation of link `a` and the key of link `b`.
fn splice_key(a: &str, b: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let payload = |u: &str| {
        let frag = u.split_once("#canopy-share-v1.").unwrap().1;
        let bytes = URL_SAFE_NO_PAD.decode(frag).unwrap();
        serde_ipld_dagcbor::from_slice::<BTreeMap<String, Ipld>>(&bytes).unwrap()
    };
    let mut pa = payload(a);
    let pb = payload(b);
    pa.insert("key".into(), pb["key"].clone());
    let bytes = serde_ipld_dagcbor::to_vec(&pa).unwrap();
    format!(
        "canopy://share#canopy-share-v1.{}",
        URL_SAFE_NO_PAD.encode(bytes)
    )
}

// ---------------------------------------------------------------------------------------------
// Properties

fn arb_policy() -> impl Strategy<Value = (Option<u8>, Vec<u8>)> {
    // (subtree root among nodes 1..=6 or whole tree, excluded nodes)
    (
        proptest::option::of(1u8..=6),
        proptest::collection::vec(1u8..=6, 0..2),
    )
}

fn node(n: u8) -> [u8; 16] {
    [n; 16]
}

/// A fixed tree: 0 = ROOT; 1,2 under ROOT; 3,4 under 1; 5 under 3; 6 under 2.
fn ancestors_of(n: u8) -> Vec<[u8; 16]> {
    let parent = |n: u8| match n {
        1 | 2 => Some(0),
        3 | 4 => Some(1),
        5 => Some(3),
        6 => Some(2),
        _ => None,
    };
    let mut out = Vec::new();
    let mut cur = parent(n);
    while let Some(p) = cur {
        out.push(node(p));
        cur = parent(p);
    }
    out
}

fn to_policy((root, excl): &(Option<u8>, Vec<u8>)) -> Policy {
    let excluded: Vec<_> = excl.iter().map(|n| node(*n)).collect();
    subtree_policy(&node(root.unwrap_or(0)), &excluded)
}

const CMDS: [&str; 6] = [
    "/",
    "/tree",
    "/tree/read",
    "/tree/write",
    "/tree/write/move",
    "/tree/read/payload",
];

proptest! {
    // 64 cases by default keeps the suite fast on 2 cores; PROPTEST_CASES raises it for long runs.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Attenuation: whatever a two-delegation chain allows, its first delegation alone allows too
    /// (a delegation never grants more than its proof).
    #[test]
    fn attenuation(p0 in arb_policy(), p1 in arb_policy(), c0 in 0usize..6, c1 in 0usize..6, ability in 0usize..9, target in 0u8..=6, e0 in proptest::option::of(1u64..100), e1 in proptest::option::of(1u64..100), t in 0u64..100) {
        let (o, a, b) = (key(1), key(2), key(3));
        let d0 = grant(Grant { from: &o, to: a.did(), sub: Some(o.did()), cmd: CMDS[c0], pol: to_policy(&p0), exp: e0, nbf: None });
        let d1 = grant(Grant { from: &a, to: b.did(), sub: Some(o.did()), cmd: CMDS[c1], pol: to_policy(&p1), exp: e1, nbf: None });
        let mut proofs = Proofs::new();
        let (k0, k1) = (proofs.insert(d0.to_bytes().to_vec()), proofs.insert(d1.to_bytes().to_vec()));
        let revs = Revocations::new();
        let ctx = Context { time: t, revocations: &revs, op: None };
        let anc = ancestors_of(target);
        let n = node(target);
        let (od, ad, bd) = (o.did(), a.did(), b.did());
        let ab = ABILITIES[ability];
        let via_chain = authorize(&mut Verifier::new(), &proofs, &[k0, k1], &TreeRequest { owner: &od, actor: &bd, ability: ab, node: &n, ancestors: &anc }, &ctx);
        let via_proof = authorize(&mut Verifier::new(), &proofs, &[k0], &TreeRequest { owner: &od, actor: &ad, ability: ab, node: &n, ancestors: &anc }, &ctx);
        if via_chain.is_allowed() {
            prop_assert!(via_proof.is_allowed(), "{via_chain:?} but proof alone: {via_proof:?}");
        }
        // And the leaf's own constraints bind too: the chain allows only what d1 alone would.
        if via_chain.is_allowed() {
            prop_assert!(CMDS[c1].parse::<Command>().unwrap().proves(&ab.command()));
            prop_assert!(to_policy(&p1).matches(&tree_args(&n, &anc)));
        }
    }

    /// Delegations round-trip: issue → bytes → decode gives the same fields, bytes and CID.
    #[test]
    fn delegation_round_trip(p in arb_policy(), c in 0usize..6, exp in proptest::option::of(0u64..(1u64 << 53)), nbf in proptest::option::of(0u64..(1u64 << 53)), powerline in any::<bool>(), seed in 1u64..u64::MAX) {
        let (o, a) = (key(1), key(2));
        let d = Delegation::issue(&o, DelegationFields {
            audience: a.did(),
            subject: if powerline { None } else { Some(o.did()) },
            command: cmd(CMDS[c]),
            policy: to_policy(&p),
            expiration: exp,
            not_before: nbf,
            meta: Some(BTreeMap::from([("k".to_owned(), Ipld::Integer(seed as i128))])),
        }, &mut TestRng(seed));
        let back = Delegation::decode(d.to_bytes()).unwrap();
        prop_assert_eq!(back.cid(), d.cid());
        prop_assert_eq!(back.cid(), cid_of(d.to_bytes()));
        prop_assert!(back.signature_valid());
        prop_assert_eq!(back.policy(), &to_policy(&p));
        prop_assert_eq!(back.expiration(), exp);
        prop_assert_eq!(back.not_before(), nbf);
        prop_assert_eq!(back.subject().copied(), if powerline { None } else { Some(o.did()) });
        prop_assert_eq!(back.command().as_str(), CMDS[c]);
    }

    /// Random bytes into every decoder: typed errors, never a panic.
    #[test]
    fn random_bytes_into_every_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Delegation::decode(&bytes);
        let _ = Invocation::decode(&bytes);
        let _ = Revocation::decode(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        let _ = ShareLink::parse(&format!("x#canopy-share-v1.{text}"));
        let _ = text.parse::<Did>();
        let _ = text.parse::<Command>();
        let _ = Selector::parse(&text);
        let _ = SecretKey::from_key_file(&text);
        let _ = SecretKey::from_multicodec_base64(&text);
        let _ = fixtures::parse_lenient_json(&text);
        let _ = fixtures::run(&text, 0);
    }

    /// Mutating one byte of a valid token: decoding fails or the signature/CID tells it apart.
    #[test]
    fn mutated_tokens_are_rejected(pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let d = simple(&key(1), &key(2), &key(1), "/tree/write");
        let mut bytes = d.to_bytes().to_vec();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(m) = Delegation::decode(&bytes) {
            prop_assert!(!m.signature_valid(), "a one-bit change kept a valid signature");
        }
    }

    /// Random share-link payloads (well-formed base64 of random CBOR-ish bytes) never panic.
    #[test]
    fn random_share_payloads(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        use base64::Engine as _;
        let url = format!("x#canopy-share-v1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes));
        let _ = ShareLink::parse(&url);
    }
}

// ---------------------------------------------------------------------------------------------
// spec/vectors/caps.json: built here deterministically; the committed file must match exactly.
// Regenerate after an intended format change with `CANOPY_WRITE_VECTORS=1 cargo test -p canopy-caps --test caps spec_vectors`.

fn vectors() -> serde_json::Value {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use canopy_caps::ipld_json::ipld_to_json;
    use serde_json::json;

    let b64 = |b: &[u8]| STANDARD.encode(b);
    let (owner, alice, bob) = (key(1), key(2), key(3));
    let keys: Vec<_> = [1u8, 2, 3]
        .iter()
        .map(|n| {
            let k = key(*n);
            json!({"seed_hex": hex::encode([*n; 32]), "secret_multicodec_base64": k.to_multicodec_base64().as_str(), "did": k.did().to_string()})
        })
        .collect();

    let folder = [0x0au8; 16];
    let private = [0x0bu8; 16];
    let fields = |aud: Did, cmd: &str, pol: Policy, exp: Option<u64>| DelegationFields {
        audience: aud,
        subject: Some(owner.did()),
        command: self::cmd(cmd),
        policy: pol,
        expiration: exp,
        not_before: None,
        meta: None,
    };
    let d1 = Delegation::issue_with_nonce(
        &owner,
        fields(
            alice.did(),
            "/tree/write",
            subtree_policy(&folder, &[private]),
            Some(2_000_000_000),
        ),
        vec![1; 16],
    );
    let d2 = Delegation::issue_with_nonce(
        &alice,
        fields(
            bob.did(),
            "/tree/write/move",
            Policy::default(),
            Some(1_900_000_000),
        ),
        vec![2; 16],
    );
    let delegations: Vec<_> = [&d1, &d2]
        .iter()
        .map(|d| json!({"token_base64": b64(d.to_bytes()), "cid": d.cid().to_string(), "signed_payload_base64": b64(d.signed_payload()), "payload": ipld_to_json(&Ipld::Map(d.payload().clone()))}))
        .collect();

    // Tree scope: policy, verifier-derived args, expected match.
    let root = [0u8; 16];
    let inner = [0x0cu8; 16];
    let scope_cases: Vec<_> = [
        ("node inside the granted subtree", inner, vec![folder, root], true),
        ("the granted root itself", folder, vec![root], true),
        ("the excluded subtree's root", private, vec![folder, root], false),
        ("below the excluded subtree", inner, vec![private, folder, root], false),
        ("outside the granted subtree", inner, vec![root], false),
        ("ROOT", root, vec![], false),
    ]
    .into_iter()
    .map(|(name, node, anc, expect)| {
        let pol = subtree_policy(&folder, &[private]);
        let args = tree_args(&node, &anc);
        assert_eq!(pol.matches(&args), expect, "{name}");
        json!({"name": name, "policy": ipld_to_json(&pol.to_ipld()), "args": ipld_to_json(&args), "matches": expect})
    })
    .collect();

    // Chains: owner -> alice -> bob, judged for bob.
    let mut proofs = Proofs::new();
    let chain = vec![
        proofs.insert(d1.to_bytes().to_vec()),
        proofs.insert(d2.to_bytes().to_vec()),
    ];
    let chain_cases: Vec<_> = [
        ("move inside the folder", "/tree/write/move", inner, vec![folder, root], 1_800_000_000u64, bob.did(), None),
        ("create is not delegated to bob", "/tree/write/create", inner, vec![folder, root], 1_800_000_000, bob.did(), Some("InvalidClaim")),
        ("move in the excluded subtree", "/tree/write/move", inner, vec![private, folder, root], 1_800_000_000, bob.did(), Some("MatchError")),
        ("after bob's delegation expired", "/tree/write/move", inner, vec![folder, root], 1_900_000_000, bob.did(), Some("Expired")),
        ("alice is not the leaf audience", "/tree/write/move", inner, vec![folder, root], 1_800_000_000, alice.did(), Some("InvalidAudience")),
    ]
    .into_iter()
    .map(|(name, c, node, anc, time, invoker, expect)| {
        let revs = Revocations::new();
        let command = cmd(c);
        let args = tree_args(&node, &anc);
        let od = owner.did();
        let got = Verifier::new().check(&chain, &proofs, &Request { subject: &od, invoker: &invoker, command: &command, args: &args }, &Context { time, revocations: &revs, op: None });
        assert_eq!(got.as_ref().err().map(VerifyError::class), expect, "{name}: {got:?}");
        json!({"name": name, "chain": chain.iter().map(|c| c.to_string()).collect::<Vec<_>>(), "subject": od.to_string(), "invoker": invoker.to_string(), "command": c, "args": ipld_to_json(&args), "time": time, "error": expect})
    })
    .collect();

    // Revocation: alice stops accepting bob's ops after seq 7 of bob's replica.
    let replica = *bob.did().public_key();
    let rev = Revocation::issue(
        &alice,
        d2.cid(),
        BTreeMap::from([(replica, 7)]),
        BTreeSet::new(),
    );
    let revocations = vec![json!({
        "record_base64": b64(rev.to_bytes()),
        "cid": rev.cid().to_string(),
        "issuer": alice.did().to_string(),
        "delegation": d2.cid().to_string(),
        "cutoffs": [[hex::encode(replica), 7]],
        "envelope": ipld_to_json(&serde_ipld_dagcbor::from_slice::<Ipld>(rev.to_bytes()).unwrap()),
        "allowed_seq": 7,
        "denied_seq": 8,
    })];
    {
        let mut revs = Revocations::new();
        revs.insert(rev.clone());
        let command = cmd("/tree/write/move");
        let args = tree_args(&inner, &[folder, root]);
        let (od, bd) = (owner.did(), bob.did());
        let req = Request {
            subject: &od,
            invoker: &bd,
            command: &command,
            args: &args,
        };
        let at = |seq| {
            Verifier::new().check(
                &chain,
                &proofs,
                &req,
                &Context {
                    time: 1_800_000_000,
                    revocations: &revs,
                    op: Some(OpRef { replica, seq }),
                },
            )
        };
        assert!(at(7).is_ok());
        assert!(matches!(at(8), Err(VerifyError::Revoked { .. })));
    }

    // Share link: alice shares read on the folder through ephemeral key seed 0x44…
    let eph = SecretKey::from_bytes(&[0x44; 32]);
    let link_dlg = Delegation::issue_with_nonce(
        &alice,
        fields(
            eph.did(),
            "/tree/read",
            subtree_policy(&folder, &[]),
            Some(1_850_000_000),
        ),
        vec![3; 16],
    );
    let link = ShareLink::from_parts(eph, link_dlg, vec![d1.to_bytes().to_vec()]).unwrap();
    let url = link.to_url("https://canopy.example/d/1");
    let share = json!({"url": url.as_str(), "ephemeral_did": link.ephemeral().to_string(), "delegation_cid": link.delegation().cid().to_string(), "proof_cids": [d1.cid().to_string()]});

    json!({
        "comment": "Canopy capability vectors (spec/caps.md). Binary values are standard padded base64; DAG-JSON-style {\"/\": …} for bytes and links inside payloads.",
        "varsig_header_hex": hex::encode(VARSIG_ED25519_DAG_CBOR),
        "keys": keys,
        "delegations": delegations,
        "scope": scope_cases,
        "chains": chain_cases,
        "revocations": revocations,
        "share_links": [share],
    })
}

#[test]
fn spec_vectors() {
    let path = repo().join("spec/vectors/caps.json");
    let text = serde_json::to_string_pretty(&vectors()).unwrap() + "\n";
    if std::env::var_os("CANOPY_WRITE_VECTORS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).expect("spec/vectors/caps.json exists");
    assert!(
        committed == text,
        "spec/vectors/caps.json differs from what the code produces"
    );

    // And the committed file decodes on its own.
    let v: serde_json::Value = serde_json::from_str(&committed).unwrap();
    use base64::Engine as _;
    let b64 = |s: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(s.as_str().unwrap())
            .unwrap()
    };
    for d in v["delegations"].as_array().unwrap() {
        let dl = Delegation::decode(&b64(&d["token_base64"])).unwrap();
        assert!(dl.signature_valid());
        assert_eq!(dl.cid().to_string(), d["cid"].as_str().unwrap());
    }
    for k in v["keys"].as_array().unwrap() {
        let key =
            SecretKey::from_multicodec_base64(k["secret_multicodec_base64"].as_str().unwrap())
                .unwrap();
        assert_eq!(key.did().to_string(), k["did"].as_str().unwrap());
    }
    let r = &v["revocations"][0];
    let rev = Revocation::decode(&b64(&r["record_base64"])).unwrap();
    assert_eq!(rev.cid().to_string(), r["cid"].as_str().unwrap());
    let link = ShareLink::parse(v["share_links"][0]["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        link.delegation().cid().to_string(),
        v["share_links"][0]["delegation_cid"].as_str().unwrap()
    );
    for case in v["scope"].as_array().unwrap() {
        let pol =
            Policy::from_ipld(&canopy_caps::ipld_json::json_to_ipld(&case["policy"])).unwrap();
        let args = canopy_caps::ipld_json::json_to_ipld(&case["args"]);
        assert_eq!(pol.matches(&args), case["matches"].as_bool().unwrap());
    }
}

/// Exhaustive companion to the `attenuation` property over a small grid, which also shows the
/// property is not vacuous: the grid has both allowed and denied requests.
#[test]
fn attenuation_grid() {
    let (o, a, b) = (key(1), key(2), key(3));
    let (od, ad, bd) = (o.did(), a.did(), b.did());
    let revs = Revocations::new();
    let ctx = Context {
        time: 0,
        revocations: &revs,
        op: None,
    };
    let mut proofs = Proofs::new();
    let mut v = Verifier::new();
    let (mut allowed, mut denied) = (0, 0);
    for r0 in 0u8..=6 {
        let d0 = grant(Grant {
            from: &o,
            to: ad,
            sub: Some(od),
            cmd: "/tree",
            pol: subtree_policy(&node(r0), &[]),
            exp: None,
            nbf: None,
        });
        let k0 = proofs.insert(d0.to_bytes().to_vec());
        for r1 in 0u8..=6 {
            let d1 = grant(Grant {
                from: &a,
                to: bd,
                sub: Some(od),
                cmd: "/tree/write",
                pol: subtree_policy(&node(r1), &[]),
                exp: None,
                nbf: None,
            });
            let k1 = proofs.insert(d1.to_bytes().to_vec());
            for target in 0u8..=6 {
                let (n, anc) = (node(target), ancestors_of(target));
                let chain = authorize(
                    &mut v,
                    &proofs,
                    &[k0, k1],
                    &TreeRequest {
                        owner: &od,
                        actor: &bd,
                        ability: Ability::WriteMove,
                        node: &n,
                        ancestors: &anc,
                    },
                    &ctx,
                );
                let alone = authorize(
                    &mut v,
                    &proofs,
                    &[k0],
                    &TreeRequest {
                        owner: &od,
                        actor: &ad,
                        ability: Ability::WriteMove,
                        node: &n,
                        ancestors: &anc,
                    },
                    &ctx,
                );
                // Allowed exactly when the target is inside both subtrees.
                let inside = |r: u8| r == target || anc.contains(&node(r));
                assert_eq!(
                    chain.is_allowed(),
                    inside(r0) && inside(r1),
                    "r0={r0} r1={r1} target={target}"
                );
                assert!(!chain.is_allowed() || alone.is_allowed());
                if chain.is_allowed() {
                    allowed += 1
                } else {
                    denied += 1
                }
            }
        }
    }
    assert!(
        allowed > 20 && denied > 20,
        "allowed {allowed}, denied {denied}"
    );
}

fn arb_ipld() -> impl Strategy<Value = Ipld> {
    let leaf = prop_oneof![
        Just(Ipld::Null),
        any::<bool>().prop_map(Ipld::Bool),
        (-5i64..5).prop_map(|i| Ipld::Integer(i.into())),
        prop_oneof![Just(f64::NAN), Just(1.0), Just(-0.5), Just(1e300)].prop_map(Ipld::Float),
        prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just(">="),
            Just("like"),
            Just("not"),
            Just("and"),
            Just("or"),
            Just("all"),
            Just("any"),
            Just("."),
            Just(".a"),
            Just(".a[]"),
            Just(".[-1]"),
            Just(".[1:]"),
            Just(".b?"),
            Just("*x\\*"),
            Just("a")
        ]
        .prop_map(|s| Ipld::String(s.to_owned())),
        proptest::collection::vec(any::<u8>(), 0..4).prop_map(Ipld::Bytes),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Ipld::List),
            proptest::collection::btree_map(
                prop_oneof![Just("a".to_owned()), Just("b".to_owned())],
                inner,
                0..3
            )
            .prop_map(Ipld::Map),
        ]
    })
}

proptest! {
    /// Random IPLD as a policy and as arguments, random selector text: parsing and evaluation
    /// never panic, and a parsed policy round-trips through its IPLD form.
    #[test]
    fn policies_and_selectors_never_panic(pol in arb_ipld(), args in arb_ipld(), sel in "[.\\[\\]\"ab01:?\\-]{0,12}") {
        if let Ok(p) = Policy::from_ipld(&pol) {
            let _ = p.matches(&args);
            prop_assert_eq!(Policy::from_ipld(&p.to_ipld()).unwrap(), p);
        }
        if let Ok(s) = Selector::parse(&sel) {
            let stmt = Statement::Eq(s, Ipld::Null);
            let _ = Policy::new(vec![stmt]).matches(&args);
        }
    }
}

fn arb_statement() -> impl Strategy<Value = Ipld> {
    let s = |x: &str| Ipld::String(x.to_owned());
    let sel = prop_oneof![
        Just("."),
        Just(".a"),
        Just(".a[]"),
        Just(".a?"),
        Just(".[0]"),
        Just(".[-1]"),
        Just(".[1:3]"),
        Just(".b[]?.a"),
        Just(".[\"a\"]")
    ]
    .prop_map(move |x| s(x));
    let leaf = (
        prop_oneof![
            Just("=="),
            Just("!="),
            Just("<"),
            Just("<="),
            Just(">"),
            Just(">="),
            Just("like")
        ],
        sel.clone(),
        arb_ipld(),
    )
        .prop_map(|(op, sel, v)| {
            let v = match (op, v) {
                ("like", Ipld::String(g)) => Ipld::String(g),
                ("like", _) => Ipld::String("*a*".into()),
                ("<" | "<=" | ">" | ">=", v @ (Ipld::Integer(_) | Ipld::Float(_))) => v,
                ("<" | "<=" | ">" | ">=", _) => Ipld::Integer(1),
                (_, v) => v,
            };
            Ipld::List(vec![Ipld::String(op.into()), sel, v])
        });
    leaf.prop_recursive(4, 24, 3, move |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|st| Ipld::List(vec![Ipld::String("not".into()), st])),
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| Ipld::List(vec![Ipld::String("and".into()), Ipld::List(v)])),
            proptest::collection::vec(inner.clone(), 0..3)
                .prop_map(|v| Ipld::List(vec![Ipld::String("or".into()), Ipld::List(v)])),
            (sel.clone(), inner.clone()).prop_map(|(s, st)| Ipld::List(vec![
                Ipld::String("all".into()),
                s,
                st
            ])),
            (sel.clone(), inner).prop_map(|(s, st)| Ipld::List(vec![
                Ipld::String("any".into()),
                s,
                st
            ])),
        ]
    })
}

proptest! {
    /// Well-formed random policies always parse, evaluate without panicking, and `not` is the
    /// complement of its statement whenever the statement's paths resolve.
    #[test]
    fn structured_policies(stmts in proptest::collection::vec(arb_statement(), 0..3), args in arb_ipld()) {
        let ipld = Ipld::List(stmts.clone());
        let p = Policy::from_ipld(&ipld).unwrap();
        let _ = p.matches(&args);
        for st in stmts {
            let yes = Policy::from_ipld(&Ipld::List(vec![st.clone()])).unwrap().matches(&args);
            let no = Policy::from_ipld(&Ipld::List(vec![Ipld::List(vec![Ipld::String("not".into()), st])])).unwrap().matches(&args);
            prop_assert!(!(yes && no), "a statement and its negation both hold");
        }
    }
}
