//! Partial replicas on disk for `canopy sync --subtree X` and `canopy doc ls --subtree X`: one
//! SQLite file per (server, document, subtree), `DATA/replicas/HOST_PORT/DOC.X.partial`
//! ([`SqlitePartial`], `spec/sync.md` §"Partial replica storage").
//!
//! A file in the snapshot format of earlier versions (`cnpyPR01`) at that path is converted once
//! into a SQLite file (the snapshot is kept beside it as `.partial.snapshot`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use canopy_sync::{PartialReplica, PayloadState, SqlitePartial};
use canopy_tree::{NodeId, ReplicaId};

/// The first bytes of a snapshot file (`sync/src/partial/snapshot.rs`).
const SNAPSHOT_MAGIC: &[u8] = b"cnpyPR01";

/// Opens the partial replica of subtree `x` at `path`, creating it (with a fresh replica id from
/// `new_replica`) if the file does not exist, and converting a snapshot file of earlier versions.
pub(crate) fn open(
    path: &Path,
    x: NodeId,
    new_replica: impl FnOnce() -> ReplicaId,
) -> anyhow::Result<PartialReplica<SqlitePartial>> {
    if is_snapshot(path)? {
        convert_snapshot(path)?;
    }
    let store = SqlitePartial::open(path).with_context(|| format!("opening {}", path.display()))?;
    let replica =
        match PartialReplica::open(store).with_context(|| format!("reading {}", path.display()))? {
            Some(r) => r,
            None => {
                let store = SqlitePartial::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                PartialReplica::init(store, x, new_replica())
                    .with_context(|| format!("creating {}", path.display()))?
            }
        };
    if replica.scope() != x {
        bail!(
            "{} holds the subtree of {}, not {x}",
            path.display(),
            replica.scope()
        );
    }
    Ok(replica)
}

fn is_snapshot(path: &Path) -> anyhow::Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 8];
    match std::fs::File::open(path) {
        Ok(mut f) => Ok(f.read(&mut head)? == 8 && head == SNAPSHOT_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces a snapshot file by a SQLite file with the same state (written beside it, then
/// renamed over it; the snapshot is kept as `.partial.snapshot`).
fn convert_snapshot(path: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let old = PartialReplica::decode(&bytes)
        .with_context(|| format!("reading the snapshot {}", path.display()))?;
    let tmp = path.with_extension("partial.converting");
    let _ = std::fs::remove_file(&tmp);
    {
        let store =
            SqlitePartial::open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // closing the connection (dropping the copy) folds the WAL into the file before the rename
        drop(
            old.copy_into(store)
                .with_context(|| format!("writing {}", tmp.display()))?,
        );
    }
    let kept = path.with_extension("partial.snapshot");
    std::fs::rename(path, &kept).with_context(|| format!("keeping {}", kept.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    eprintln!(
        "converted the snapshot {} to SQLite (the old file is kept as {})",
        path.display(),
        kept.display()
    );
    Ok(())
}

/// The partial replica file of `doc`'s subtree `x` under `DATA/replicas/*/` (one per server: the
/// default path of `canopy sync URL --doc DOC --subtree X`).
pub(crate) fn find(data: &Path, doc: &str, x: NodeId) -> anyhow::Result<PathBuf> {
    let dir = data.join("replicas");
    let name = format!("{doc}.{x}.partial");
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let p = e?.path().join(&name);
            if p.is_file() {
                found.push(p);
            }
        }
    }
    match found.len() {
        0 => bail!(
            "no partial replica of {doc} under {x} in {} (run `canopy sync URL --doc {doc} --subtree {x}`)",
            dir.display()
        ),
        1 => Ok(found.remove(0)),
        _ => bail!(
            "partial replicas of {doc} under {x} from several servers: choose one with --replica ({})",
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Prints the children of `node` (default: the scope root) of the partial replica at `path`, one
/// keyset page at a time, like `canopy doc ls` does for a full replica.
pub(crate) fn ls(path: &Path, x: NodeId, node: Option<NodeId>) -> anyhow::Result<()> {
    if !path.is_file() {
        bail!("no partial replica at {}", path.display());
    }
    if is_snapshot(path)? {
        convert_snapshot(path)?;
    }
    let store = SqlitePartial::open(path).with_context(|| format!("opening {}", path.display()))?;
    let replica = PartialReplica::open(store)
        .with_context(|| format!("reading {}", path.display()))?
        .with_context(|| format!("{} holds no partial replica yet", path.display()))?;
    if replica.scope() != x {
        bail!(
            "{} holds the subtree of {}, not {x}",
            path.display(),
            replica.scope()
        );
    }
    let node = node.unwrap_or(x);
    if node != x && !replica.holds(node)? {
        bail!("{node} is not in the replica (the subtree of {x})");
    }
    const PAGE: usize = 256;
    let count = |n: NodeId| -> anyhow::Result<usize> {
        let mut total = 0;
        let mut after = None;
        loop {
            let page = replica.children_page(n, after.as_ref().map(|(p, c)| (p, *c)), PAGE)?;
            total += page.len();
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.clone()),
                _ => return Ok(total),
            }
        }
    };
    let mut after = None;
    loop {
        let page = replica.children_page(node, after.as_ref().map(|(p, c)| (p, *c)), PAGE)?;
        for (_, c) in &page {
            let text = match replica.node(*c)?.map(|r| r.payload) {
                Some(PayloadState::Present { bytes, .. }) => {
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                Some(PayloadState::Withheld) => "(payload withheld)".to_string(),
                _ => String::new(),
            };
            println!("{c}  {text}  ({} children)", count(*c)?);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => after = Some(last.clone()),
            _ => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_tree::Place;

    #[test]
    fn a_snapshot_file_is_converted_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.partial");
        let x = NodeId::from_bytes([1; 16]);
        let mut old = PartialReplica::new(x, ReplicaId::from_bytes([2; 32]));
        let a = NodeId::from_bytes([3; 16]);
        old.create(a, x, Place::Last, Some(b"a".to_vec())).unwrap();
        std::fs::write(&path, old.encode()).unwrap();
        let r = open(&path, x, || {
            unreachable!("the replica id comes from the snapshot")
        })
        .unwrap();
        assert_eq!(r.all_records().unwrap(), old.records());
        assert_eq!(r.own_ops(), old.own_ops());
        assert_eq!(r.replica(), old.replica());
        drop(r);
        assert!(path.with_extension("partial.snapshot").is_file());
        // now a SQLite file: opened as is
        let r = open(&path, x, || unreachable!()).unwrap();
        assert_eq!(r.children_page(x, None, 10).unwrap()[0].1, a);
        assert!(open(&path, a, || unreachable!()).is_err());
    }

    #[test]
    fn ls_reads_pages_and_refuses_other_scopes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.partial");
        let x = NodeId::from_bytes([1; 16]);
        let mut r = open(&path, x, || ReplicaId::from_bytes([2; 32])).unwrap();
        let mut last = None;
        for i in 0..300u16 {
            let mut b = [9u8; 16];
            b[..2].copy_from_slice(&i.to_be_bytes());
            let n = NodeId::from_bytes(b);
            r.create(n, x, Place::Last, Some(format!("n{i}").into_bytes()))
                .unwrap();
            last = Some(n);
        }
        drop(r);
        ls(&path, x, None).unwrap();
        ls(&path, x, last).unwrap();
        assert!(ls(&path, x, Some(NodeId::from_bytes([7; 16]))).is_err());
        assert!(ls(&path, NodeId::from_bytes([7; 16]), None).is_err());
        assert!(ls(&dir.path().join("missing.partial"), x, None).is_err());
    }
}
