//! Where the server's documents live.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use canopy_tree::{AllowAll, MemoryStore, Policy, ReplicaId, SqliteStore, Store, Tree};

use super::DocName;

/// Opens the server's replica of a document. The server opens a document when its first client
/// connects and releases it when the last one leaves.
pub trait Documents: Send + Sync + 'static {
    /// The store of one document.
    type Store: Store + Send + 'static;
    /// The policy its ops are applied under (issue 5's authorized apply plugs in here).
    type Policy: Policy + Send + 'static;
    /// Why a document could not be opened.
    type Error: std::error::Error + Send + 'static;
    /// Opens (creating if needed) the document.
    fn open(&self, doc: &DocName) -> Result<Tree<Self::Store, Self::Policy>, Self::Error>;
    /// The last client left: the tree is handed back (dropped by default).
    fn release(&self, doc: &DocName, tree: Tree<Self::Store, Self::Policy>) {
        let _ = (doc, tree);
    }
}

/// One SQLite database per document (`spec/sqlite.md`): `DIR/DOC.canopy`, created on first use.
/// Ops are applied with the tree's own validation only ([`AllowAll`] policy): no capability check
/// until issue 5's authorized apply is plugged in through [`Documents::Policy`].
#[derive(Debug, Clone)]
pub struct SqliteDocuments {
    dir: PathBuf,
    replica: ReplicaId,
}

impl SqliteDocuments {
    /// Documents in `dir` (created if missing when a document is opened). `replica` is the
    /// server's own replica id (it makes no ops; the tree needs one).
    pub fn new(dir: impl Into<PathBuf>, replica: ReplicaId) -> Self {
        Self {
            dir: dir.into(),
            replica,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The database file of `doc`.
    pub fn path(&self, doc: &DocName) -> PathBuf {
        self.dir.join(format!("{doc}.canopy"))
    }
}

/// A document database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data directory could not be created.
    #[error("creating {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused the file.
    #[error("opening {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: canopy_tree::SqliteStoreError,
    },
}

impl Documents for SqliteDocuments {
    type Store = SqliteStore;
    type Policy = AllowAll;
    type Error = OpenError;
    fn open(&self, doc: &DocName) -> Result<Tree<SqliteStore>, OpenError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| OpenError::Dir {
            dir: self.dir.clone(),
            source,
        })?;
        let path = self.path(doc);
        let store = SqliteStore::open(&path).map_err(|source| OpenError::Sqlite {
            path: path.clone(),
            source,
        })?;
        Ok(Tree::new(store, self.replica))
    }
}

/// Documents in memory (tests, benchmarks): a released document is kept, so the next client
/// finds it again; [`MemoryDocuments::insert`] preloads one.
#[derive(Debug)]
pub struct MemoryDocuments {
    docs: Mutex<HashMap<DocName, Tree<MemoryStore>>>,
    replica: ReplicaId,
}

impl MemoryDocuments {
    /// No documents yet; new ones are empty trees of `replica`.
    pub fn new(replica: ReplicaId) -> Self {
        Self {
            docs: Mutex::new(HashMap::new()),
            replica,
        }
    }

    /// Preloads (or replaces) a document. Only takes effect while no client is connected to it.
    pub fn insert(&self, doc: DocName, tree: Tree<MemoryStore>) {
        self.docs.lock().expect("poisoned").insert(doc, tree);
    }
}

impl Documents for MemoryDocuments {
    type Store = MemoryStore;
    type Policy = AllowAll;
    type Error = std::convert::Infallible;
    fn open(&self, doc: &DocName) -> Result<Tree<MemoryStore>, Self::Error> {
        let taken = self.docs.lock().expect("poisoned").remove(doc);
        Ok(taken.unwrap_or_else(|| Tree::new(MemoryStore::new(), self.replica)))
    }
    fn release(&self, doc: &DocName, tree: Tree<MemoryStore>) {
        self.docs
            .lock()
            .expect("poisoned")
            .insert(doc.clone(), tree);
    }
}
