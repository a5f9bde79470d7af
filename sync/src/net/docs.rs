//! Where the server's documents live: plain trees for trusted set-ups ([`SqliteDocuments`],
//! [`MemoryDocuments`]) and authorized replicas with handshake authentication
//! ([`AuthzDocuments`], what `canopy serve` runs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use canopy_caps::{chain_ref, Authz, Did, Document, DocumentId, Entry};
use canopy_tree::{AllowAll, MemoryStore, ReplicaId, SqliteStore, Store, Tree};

use super::auth::{AuthError, Authenticator};
use super::server::{Admission, Admit, AdmitError};
use super::DocName;
use crate::filter::CapsRead;
use crate::session::Replica;

/// Opens the server's replica of a document. The server opens a document when its first client
/// connects and releases it when the last one leaves.
pub trait Documents: Send + Sync + 'static {
    /// The replica of one document: a plain [`Tree`] (trusted set-ups) or an authorized
    /// [`Authz`] replica.
    type Replica: Replica + Send + 'static;
    /// Why a document could not be opened.
    type Error: std::error::Error + Send + 'static;
    /// Opens the document, creating it if needed and possible: `genesis` is the document as
    /// sent by the connection that opens it, when it sent one (authorized documents are
    /// created only from their genesis).
    fn open(&self, doc: &DocName, genesis: Option<&Document>)
        -> Result<Self::Replica, Self::Error>;
    /// The last client left: the replica is handed back (dropped by default).
    fn release(&self, doc: &DocName, replica: Self::Replica) {
        let _ = (doc, replica);
    }
}

/// One SQLite database per document (`spec/sqlite.md`): `DIR/DOC.canopy`, created on first use,
/// holding a plain [`Tree`]: ops are applied with the tree's own validation only ([`AllowAll`]
/// policy), no signature or capability check. For trusted set-ups and benchmarks; `canopy serve`
/// runs [`AuthzDocuments`].
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
    type Replica = Tree<SqliteStore, AllowAll>;
    type Error = OpenError;
    fn open(&self, doc: &DocName, _: Option<&Document>) -> Result<Tree<SqliteStore>, OpenError> {
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
    type Replica = Tree<MemoryStore, AllowAll>;
    type Error = std::convert::Infallible;
    fn open(&self, doc: &DocName, _: Option<&Document>) -> Result<Tree<MemoryStore>, Self::Error> {
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

/// Authorized documents (what `canopy serve` runs): one SQLite database per document,
/// `DIR/ID.canopy`, named by its [`DocumentId`] in 64 hex digits, opened as an [`Authz`] replica
/// (verified, authorized ingest of every pushed op and entry; the store's first document entry
/// is the genesis). It is also the server's [`Admit`]: a connection authenticates with a
/// handshake credential ([`Authenticator`], `spec/sync.md` §Transport) and reads through
/// [`CapsRead`] with its DID and chain. A document is created by the first admitted connection
/// that sends its genesis; the server makes no ops of its own.
///
/// Cheap to clone (shared state): pass one clone as the documents and one as the admission.
#[derive(Clone)]
pub struct AuthzDocuments {
    inner: Arc<AuthzInner>,
}

struct AuthzInner {
    dir: PathBuf,
    replica: ReplicaId,
    auth: Authenticator,
    /// Documents whose genesis is known (stored, or created here).
    known: Mutex<HashMap<DocumentId, Document>>,
    clock: crate::filter::Clock,
}

impl std::fmt::Debug for AuthzDocuments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzDocuments")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AuthzDocuments {
    /// Documents in `dir` (created if missing when a document is created). `replica` is the
    /// server's replica id (it makes no ops; the tree needs one). Time is the system clock.
    pub fn new(dir: impl Into<PathBuf>, replica: ReplicaId) -> Self {
        Self::with_clock(dir, replica, Arc::new(unix_now))
    }

    /// As [`AuthzDocuments::new`], with a clock (Unix seconds) for credentials and read checks.
    pub fn with_clock(
        dir: impl Into<PathBuf>,
        replica: ReplicaId,
        clock: crate::filter::Clock,
    ) -> Self {
        Self {
            inner: Arc::new(AuthzInner {
                dir: dir.into(),
                replica,
                auth: Authenticator::new(),
                known: Mutex::new(HashMap::new()),
                clock,
            }),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The database file of `doc`.
    pub fn path(&self, doc: &DocumentId) -> PathBuf {
        self.inner.dir.join(format!("{doc}.canopy"))
    }

    /// The stored document named `doc`, if this server has it.
    fn stored(&self, doc: &DocumentId) -> Result<Option<Document>, AuthzOpenError> {
        if let Some(d) = self.inner.known.lock().expect("poisoned").get(doc) {
            return Ok(Some(*d));
        }
        let path = self.path(doc);
        if !path.exists() {
            return Ok(None);
        }
        let store = SqliteStore::open(&path).map_err(|source| AuthzOpenError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let entries = store
            .doc_entries()
            .map_err(|source| AuthzOpenError::Sqlite {
                path: path.clone(),
                source,
            })?;
        let Some((_, first)) = entries.first() else {
            return Ok(None);
        };
        match Document::from_genesis(first, doc) {
            Ok(d) => {
                self.inner.known.lock().expect("poisoned").insert(*doc, d);
                Ok(Some(d))
            }
            Err(_) => Err(AuthzOpenError::NotThisDocument { path }),
        }
    }
}

/// An authorized document could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthzOpenError {
    /// The URL path is not a document id.
    #[error("not a document id")]
    NotAnId,
    /// The data directory could not be created.
    #[error("creating {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused the file.
    #[error("opening {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: canopy_tree::SqliteStoreError,
    },
    /// The file is not an authorized replica of this document.
    #[error("{path} does not hold this document")]
    NotThisDocument {
        /// The file.
        path: PathBuf,
    },
    /// The document is not on this server and no genesis came with the connection.
    #[error("unknown document")]
    Unknown,
    /// The authorized replica could not be opened over the file.
    #[error("opening {path}: {source}")]
    Authz {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: canopy_caps::OpenError<canopy_tree::SqliteStoreError>,
    },
}

impl Documents for AuthzDocuments {
    type Replica = Authz<SqliteStore>;
    type Error = AuthzOpenError;
    fn open(
        &self,
        doc: &DocName,
        genesis: Option<&Document>,
    ) -> Result<Authz<SqliteStore>, AuthzOpenError> {
        let id: DocumentId = doc.as_str().parse().map_err(|_| AuthzOpenError::NotAnId)?;
        let path = self.path(&id);
        let existed = path.exists();
        if !existed && genesis.is_none() {
            return Err(AuthzOpenError::Unknown);
        }
        std::fs::create_dir_all(&self.inner.dir).map_err(|source| AuthzOpenError::Dir {
            dir: self.inner.dir.clone(),
            source,
        })?;
        let store = SqliteStore::open(&path).map_err(|source| AuthzOpenError::Sqlite {
            path: path.clone(),
            source,
        })?;
        let authz = match genesis {
            // open-or-create, refusing a store of another document
            Some(g) if g.id() == id => Authz::open(store, *g, self.inner.replica),
            Some(_) => return Err(AuthzOpenError::NotThisDocument { path }),
            None => Authz::open_stored(store, self.inner.replica),
        }
        .map_err(|source| AuthzOpenError::Authz {
            path: path.clone(),
            source,
        })?;
        if authz.state().document().id() != id {
            return Err(AuthzOpenError::NotThisDocument { path });
        }
        let d = *authz.state().document();
        self.inner.known.lock().expect("poisoned").insert(id, d);
        Ok(authz)
    }
}

impl Admit for AuthzDocuments {
    type Filter = CapsRead;
    fn admit(
        &self,
        doc: &DocName,
        bearer: Option<&str>,
    ) -> Result<Admission<CapsRead>, AdmitError> {
        let id: DocumentId = doc
            .as_str()
            .parse()
            .map_err(|_| AdmitError::UnknownDocument)?;
        let stored = self.stored(&id).map_err(|_| AdmitError::Unavailable)?;
        let now = (self.inner.clock)();
        let a = self
            .inner
            .auth
            .check(id, stored.as_ref().map(Document::owner), bearer, now)
            .map_err(|e| match e {
                AuthError::UnknownDocument => AdmitError::UnknownDocument,
                e => AdmitError::Credential(e),
            })?;
        let filter = CapsRead::new(a.reader, chain_ref(&a.chain), self.inner.clock.clone());
        let document = stored.or(a.genesis);
        Ok(Admission {
            filter,
            entries: a.entries.iter().map(Entry::encode).collect(),
            genesis: a.genesis,
            genesis_entry: document.map(|d| Entry::Genesis(d).encode()),
        })
    }
}

/// The owner of a document, for tests and tools: `None` if this server does not have it.
impl AuthzDocuments {
    /// The owner of `doc` if this server holds it.
    pub fn owner(&self, doc: &DocumentId) -> Option<Did> {
        self.stored(doc).ok().flatten().map(|d| *d.owner())
    }
}
