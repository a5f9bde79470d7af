//! Genesis entries: the store records which document it holds (`spec/ops.md` §Document
//! entries, `spec/caps.md` §11.1, §11.5), and the entry vectors of `spec/vectors/entries.json`
//! (genesis and equivocation evidence).

use canopy_caps::{
    chain_ref, sign_op, Accepted, Authz, Document, DocumentId, Entry, EntryDecodeError, Evidence,
    EvidenceError, GenesisError, IngestError, OpenError, SecretKey,
};
use canopy_tree::{
    Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Outcome, Position, ReplicaId, SqliteStore,
    Store, Tree,
};

fn key(b: u8) -> SecretKey {
    SecretKey::from_bytes(&[b; 32])
}
fn rid(k: &SecretKey) -> ReplicaId {
    ReplicaId::from_bytes(*k.did().public_key())
}
fn doc() -> Document {
    Document::new(key(1).did(), [9; 16])
}
fn owner_create(seq: u64, node: u8) -> Op {
    let owner = key(1);
    let op = Op::new(
        OpId::new(rid(&owner), seq),
        Lamport::new(seq),
        OpKind::Create {
            node: NodeId::from_bytes([node; 16]),
            parent: NodeId::ROOT,
            position: Position::from_bytes(&[node]),
            payload: None,
        },
    );
    sign_op(&owner, &doc().id(), 1, &chain_ref(&[]), op).unwrap()
}

#[test]
fn new_records_the_genesis_first_and_open_checks_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.sqlite");
    let me = rid(&key(200));
    let mut a = Authz::new(SqliteStore::open(&path).unwrap(), doc(), me).unwrap();
    let r = a.ingest([owner_create(1, 5).encode()]).unwrap();
    assert!(matches!(
        r.items[0],
        Ok(Accepted::Op {
            outcome: Outcome::Applied,
            ..
        })
    ));
    let entries = a.proof_entries().unwrap();
    assert!(matches!(&entries[0], Entry::Genesis(d) if *d == doc()));
    drop(a);

    // Another document over this store: typed refusal.
    let other = Document::new(key(1).did(), [8; 16]);
    match Authz::open(SqliteStore::open(&path).unwrap(), other, me) {
        Err(OpenError::WrongDocument { expected, found }) => {
            assert_eq!((expected, found), (other.id(), doc().id()));
        }
        r => panic!("{:?}", r.map(|_| ())),
    }
    // `new` refuses a store that is not empty.
    assert!(matches!(
        Authz::new(SqliteStore::open(&path).unwrap(), doc(), me),
        Err(OpenError::NotEmpty)
    ));
    // The right document, and the stored one.
    let a = Authz::open(SqliteStore::open(&path).unwrap(), doc(), me).unwrap();
    assert_eq!(a.tree().store().log_len().unwrap(), 1);
    drop(a);
    let a = Authz::open_stored(SqliteStore::open(&path).unwrap(), me).unwrap();
    assert_eq!(*a.state().document(), doc());
    assert_eq!(a.tree().store().log_len().unwrap(), 1);
}

#[test]
fn open_over_an_empty_store_sets_it_up_and_open_stored_refuses_it() {
    let me = rid(&key(200));
    assert!(matches!(
        Authz::open_stored(MemoryStore::new(), me),
        Err(OpenError::NoDocument)
    ));
    let a = Authz::open(MemoryStore::new(), doc(), me).unwrap();
    let entries = a.proof_entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert!(matches!(&entries[0], Entry::Genesis(d) if *d == doc()));
    let b = Authz::open_stored(a.into_store(), me).unwrap();
    assert_eq!(*b.state().document(), doc());
}

#[test]
fn a_non_empty_store_without_genesis_is_refused() {
    let me = rid(&key(200));
    // Ops logged by a plain tree (no authorization, no genesis).
    let plain = || {
        let mut t = Tree::new(MemoryStore::new(), rid(&key(1)));
        t.apply([owner_create(1, 5)]).unwrap();
        t.into_store()
    };
    assert!(matches!(
        Authz::open(plain(), doc(), me),
        Err(OpenError::NoGenesis)
    ));
    assert!(matches!(
        Authz::open_stored(plain(), me),
        Err(OpenError::NoGenesis)
    ));
    assert!(matches!(
        Authz::new(plain(), doc(), me),
        Err(OpenError::NotEmpty)
    ));
    // A first document entry that is not a genesis.
    let chain_first = || {
        let mut store = MemoryStore::new();
        let chain = Entry::Chain(vec![]).encode();
        store.begin().unwrap();
        store.doc_entry_insert(&[7; 32], chain[0], &chain).unwrap();
        store.commit().unwrap();
        store
    };
    assert!(matches!(
        Authz::open(chain_first(), doc(), me),
        Err(OpenError::NoGenesis)
    ));
    assert!(matches!(
        Authz::open_stored(chain_first(), me),
        Err(OpenError::NoGenesis)
    ));
}

#[test]
fn ingesting_a_genesis_is_a_no_op_or_a_typed_error() {
    let me = rid(&key(200));
    let mut a = Authz::new(MemoryStore::new(), doc(), me).unwrap();
    let other = Document::new(key(2).did(), [9; 16]);
    let r = a
        .ingest([
            Entry::Genesis(doc()).encode(),
            Entry::Genesis(other).encode(),
        ])
        .unwrap();
    assert_eq!(
        r.items[0],
        Ok(Accepted::Genesis {
            document: doc().id()
        })
    );
    assert_eq!(
        r.items[1],
        Err(IngestError::WrongGenesis {
            expected: doc().id(),
            found: other.id()
        })
    );
    // Nothing new was stored.
    assert_eq!(a.proof_entries().unwrap().len(), 1);
    assert_eq!(a.tree().store().doc_entries().unwrap().len(), 1);
}

#[test]
fn a_peer_learns_the_document_from_the_genesis() {
    let me = rid(&key(200));
    let mut a = Authz::new(MemoryStore::new(), doc(), rid(&key(1))).unwrap();
    a.ingest([owner_create(1, 5).encode(), owner_create(2, 6).encode()])
        .unwrap();
    // What a peer asking for `doc().id()` receives: the entries, then the log.
    let mut sent: Vec<Vec<u8>> = a
        .proof_entries()
        .unwrap()
        .iter()
        .map(Entry::encode)
        .collect();
    let log = a
        .tree()
        .store()
        .log_after(canopy_tree::LogKey::new(
            Lamport::default(),
            ReplicaId::from_bytes([0; 32]),
        ))
        .unwrap();
    sent.extend(log.iter().map(|e| e.op.encode()));

    // A substituted genesis (another owner) is caught by the id check.
    let forged = Entry::Genesis(Document::new(key(66).did(), [9; 16])).encode();
    assert!(matches!(
        Document::from_genesis(&forged, &doc().id()),
        Err(GenesisError::WrongDocument { .. })
    ));
    assert!(matches!(
        Document::from_genesis(&sent[1], &doc().id()),
        Err(GenesisError::NotGenesis)
    ));
    assert!(matches!(
        Document::from_genesis(&[0x13, 1, 2], &doc().id()),
        Err(GenesisError::Decode(EntryDecodeError::Genesis))
    ));

    let d = Document::from_genesis(&sent[0], &doc().id()).unwrap();
    assert_eq!(d, doc());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peer.sqlite");
    let mut b = Authz::new(SqliteStore::open(&path).unwrap(), d, me).unwrap();
    let r = b.ingest(&sent).unwrap();
    assert!(r.items.iter().all(|i| i.is_ok()), "{:?}", r.items);
    drop(b);
    let b = Authz::open_stored(SqliteStore::open(&path).unwrap(), me).unwrap();
    assert_eq!(*b.state().document(), doc());
    assert_eq!(b.tree().store().log_len().unwrap(), 2);
    assert_eq!(
        b.proof_entries().unwrap()[0].encode(),
        Entry::Genesis(doc()).encode()
    );
}

#[test]
fn genesis_decoding_is_strict() {
    let g = Entry::Genesis(doc()).encode();
    assert_eq!(g.len(), 49);
    assert!(matches!(Entry::decode(&g).unwrap(), Entry::Genesis(d) if d == doc()));
    for cut in 1..g.len() {
        assert_eq!(
            Entry::decode(&g[..cut]).unwrap_err(),
            EntryDecodeError::Genesis
        );
    }
    let mut long = g.clone();
    long.push(0);
    assert_eq!(Entry::decode(&long).unwrap_err(), EntryDecodeError::Genesis);
    // An owner that is not a usable Ed25519 key (the identity point has small order).
    let mut weak = g.clone();
    weak[1..33].copy_from_slice(&{
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    });
    assert_eq!(Entry::decode(&weak).unwrap_err(), EntryDecodeError::Genesis);
    let _ = DocumentId::from_bytes([0; 32]);
}

// ---- spec vectors (spec/vectors/entries.json) ----

fn vectors() -> serde_json::Value {
    use serde_json::json;
    let g = |owner: &SecretKey, nonce: [u8; 16]| {
        let d = Document::new(owner.did(), nonce);
        json!({
            "owner": owner.did().to_string(),
            "nonce": hex::encode(nonce),
            "id": d.id().to_string(),
            "hex": hex::encode(Entry::Genesis(d).encode()),
        })
    };
    let good = Entry::Genesis(doc()).encode();
    // Equivocation evidence: the owner's seq 1 in two versions.
    let (x, y) = (owner_create(1, 5), owner_create(1, 6));
    let ev = Evidence::new(x.clone(), y.clone()).unwrap();
    let (lo, hi) = ev.ops();
    let raw = |a: &Op, b: &Op| {
        let (a, b) = (a.encode(), b.encode());
        let mut out = vec![0x14];
        out.extend_from_slice(&(a.len() as u32).to_be_bytes());
        out.extend_from_slice(&a);
        out.extend_from_slice(&b);
        out
    };
    let evidence = Entry::Equivocation(ev.clone()).encode();
    let mut small_order = good.clone();
    small_order[1..33].fill(0);
    small_order[1] = 1;
    json!({
        "genesis": [g(&key(1), [9; 16]), g(&key(2), [0; 16])],
        "equivocation": [{
            "name": "the owner's seq 1 signed twice (create 05… and create 06… under ROOT)",
            "doc": doc().id().to_string(),
            "replica": hex::encode(ev.id().replica().as_bytes()),
            "seq": ev.id().seq(),
            "a_hex": hex::encode(lo.encode()),
            "b_hex": hex::encode(hi.encode()),
            "hex": hex::encode(&evidence),
        }],
        "invalid": [
            {"name": "equivocation with the ops in the wrong order", "hex": hex::encode(raw(hi, lo)), "error": "Order"},
            {"name": "equivocation with the same op twice", "hex": hex::encode(raw(&x, &x)), "error": "SameOp"},
            {"name": "equivocation with different ids", "hex": hex::encode(raw(&x, &owner_create(2, 6))), "error": "DifferentIds"},
            {"name": "equivocation of unsigned ops", "hex": hex::encode(raw(&x.unsigned(), &y.unsigned())), "error": "Unsigned"},
            {"name": "equivocation whose length prefix runs past the end", "hex": hex::encode([&[0x14, 0xff, 0xff, 0xff, 0xff][..], &lo.encode()].concat()), "error": "Framing"},
            {"name": "equivocation truncated in the second op", "hex": hex::encode(&evidence[..evidence.len() - 1]), "error": "Op"},
            {"name": "genesis without nonce", "hex": hex::encode(&good[..33]), "error": "Genesis"},
            {"name": "genesis with a trailing byte", "hex": hex::encode([good.clone(), vec![0]].concat()), "error": "Genesis"},
            {"name": "genesis whose owner has small order", "hex": hex::encode(&small_order), "error": "Genesis"},
        ],
    })
}

fn entry_error_name(e: &EntryDecodeError) -> &'static str {
    match e {
        EntryDecodeError::Genesis => "Genesis",
        EntryDecodeError::Evidence(e) => match e {
            EvidenceError::Order => "Order",
            EvidenceError::SameOp => "SameOp",
            EvidenceError::DifferentIds { .. } => "DifferentIds",
            EvidenceError::DifferentDocuments => "DifferentDocuments",
            EvidenceError::Unsigned => "Unsigned",
            EvidenceError::Framing => "Framing",
            _ => "other",
        },
        EntryDecodeError::Op(_) => "Op",
        _ => "other",
    }
}

#[test]
fn entry_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/vectors/entries.json");
    let expected = vectors();
    if std::env::var_os("CANOPY_WRITE_VECTORS").is_some() {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let file: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file, expected, "spec/vectors/entries.json is stale");
    // Independent checks of the file's claims.
    for c in file["genesis"].as_array().unwrap() {
        let owner: canopy_caps::Did = c["owner"].as_str().unwrap().parse().unwrap();
        let bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        assert_eq!(bytes[0], 0x13);
        assert_eq!(&bytes[1..33], owner.public_key());
        assert_eq!(hex::encode(&bytes[33..]), c["nonce"].as_str().unwrap());
        let id: DocumentId = c["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(Document::from_genesis(&bytes, &id).unwrap().owner(), &owner);
    }
    for c in file["equivocation"].as_array().unwrap() {
        let bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        let (a, b) = (
            hex::decode(c["a_hex"].as_str().unwrap()).unwrap(),
            hex::decode(c["b_hex"].as_str().unwrap()).unwrap(),
        );
        assert!(a < b);
        assert_eq!(bytes[0], 0x14);
        assert_eq!(bytes[1..5], (a.len() as u32).to_be_bytes());
        assert_eq!(bytes[5..], [a.clone(), b.clone()].concat());
        let Entry::Equivocation(e) = Entry::decode(&bytes).unwrap() else {
            panic!("not evidence")
        };
        assert_eq!(e.id().seq(), c["seq"].as_u64().unwrap());
        assert_eq!(
            hex::encode(e.id().replica().as_bytes()),
            c["replica"].as_str().unwrap()
        );
        assert_eq!(e.document().to_string(), c["doc"].as_str().unwrap());
        // Both signatures verify: ingesting the evidence is accepted.
        let mut r = Authz::new(MemoryStore::new(), doc(), rid(&key(200))).unwrap();
        let report = r.ingest([&bytes]).unwrap();
        assert_eq!(report.items[0], Ok(Accepted::Equivocation { id: e.id() }));
    }
    for c in file["invalid"].as_array().unwrap() {
        let bytes = hex::decode(c["hex"].as_str().unwrap()).unwrap();
        let err = Entry::decode(&bytes).expect_err(c["name"].as_str().unwrap());
        assert_eq!(
            entry_error_name(&err),
            c["error"].as_str().unwrap(),
            "{}",
            c["name"]
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    /// Random and mutated genesis / evidence bytes decode to a typed error or to an entry that
    /// re-encodes to the same bytes; never a panic.
    #[test]
    fn genesis_and_evidence_decoding_never_panics(
        tag in proptest::sample::select(vec![0x13u8, 0x14]),
        body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 0..3),
        cut in proptest::prelude::any::<usize>(),
    ) {
        let mut random = vec![tag];
        random.extend(&body);
        let (x, y) = (owner_create(1, 5), owner_create(1, 6));
        let mut mutated = Entry::Equivocation(Evidence::new(x, y).unwrap()).encode();
        for (at, bits) in &flips {
            let i = at % mutated.len();
            mutated[i] ^= bits;
        }
        mutated.truncate(1 + cut % mutated.len());
        for bytes in [random, mutated] {
            if let Ok(e) = Entry::decode(&bytes) {
                proptest::prop_assert_eq!(e.encode(), bytes);
            }
        }
    }
}
