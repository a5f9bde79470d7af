//! Document entries and held ops (`spec/sqlite.md` §Document entries): rows a policy layer keeps
//! beside the log, written inside the batch transaction.

use rusqlite::params;

use super::{decode_op, encode_op, fixed, seq_param, Result, SqliteStore};
use crate::id::{OpId, ReplicaId};
use crate::op::Op;

impl SqliteStore {
    pub(super) fn entries_insert(
        &mut self,
        key: &[u8; 32],
        kind: u8,
        bytes: &[u8],
    ) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(
                "INSERT OR IGNORE INTO doc_entries(key, kind, bytes) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![&key[..], kind, bytes])?;
        Ok(n == 1)
    }

    pub(super) fn entries_all(&self) -> Result<Vec<(u8, Vec<u8>)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT kind, bytes FROM doc_entries ORDER BY id")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let kind = u8::try_from(r.get::<_, i64>(0)?).map_err(|_| {
                super::SqliteStoreError::CorruptColumn {
                    table: "doc_entries",
                    column: "kind",
                }
            })?;
            out.push((kind, r.get(1)?));
        }
        Ok(out)
    }

    pub(super) fn held_put(&mut self, op: &Op) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO held(replica, seq, op) VALUES (?1, ?2, ?3)")?
            .execute(params![
                &op.id().replica().as_bytes()[..],
                seq_param(op.id().seq())?,
                encode_op(op)
            ])?;
        Ok(())
    }

    pub(super) fn held_delete(&mut self, id: OpId) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM held WHERE replica = ?1 AND seq = ?2")?
            .execute(params![&id.replica().as_bytes()[..], seq_param(id.seq())?])?;
        Ok(())
    }

    pub(super) fn held_all(&self) -> Result<Vec<Op>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT replica, seq, op FROM held ORDER BY replica, seq")?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let replica =
                ReplicaId::from_bytes(fixed(r.get_ref(0)?.as_blob()?, "held", "replica")?);
            let seq = u64::try_from(r.get::<_, i64>(1)?)
                .ok()
                .filter(|&s| s >= 1)
                .ok_or(super::SqliteStoreError::CorruptColumn {
                    table: "held",
                    column: "seq",
                })?;
            out.push(decode_op(
                OpId::new(replica, seq),
                r.get_ref(2)?.as_blob()?,
            )?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use crate::id::{Lamport, NodeId, OpId, ReplicaId};
    use crate::op::{Op, OpKind};
    use crate::{MemoryStore, SqliteStore, Store};

    fn op(r: u8, seq: u64, b: u8) -> Op {
        Op::new(
            OpId::new(ReplicaId::from_bytes([r; 32]), seq),
            Lamport::new(seq),
            OpKind::SetPayload {
                node: NodeId::from_bytes([3; 16]),
                payload: vec![b],
            },
        )
    }

    #[derive(Debug, Clone)]
    enum Step {
        Entry(u8, u8, Vec<u8>),
        Hold(u8, u64, u8),
        Release(u8, u64),
        /// End the open batch: commit (true) or roll back.
        End(bool),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (
                0u8..6,
                any::<u8>(),
                prop::collection::vec(any::<u8>(), 0..4)
            )
                .prop_map(|(k, t, b)| Step::Entry(k, t, b)),
            (0u8..3, 1u64..4, any::<u8>()).prop_map(|(r, s, b)| Step::Hold(r, s, b)),
            (0u8..3, 1u64..4).prop_map(|(r, s)| Step::Release(r, s)),
            any::<bool>().prop_map(Step::End),
        ]
    }

    /// Whether each entry insert added a row; the entries; the held ops.
    type Records = (Vec<bool>, Vec<(u8, Vec<u8>)>, Vec<Op>);

    fn run<S: Store>(s: &mut S, steps: &[Step]) -> Records {
        let mut added = Vec::new();
        s.begin().unwrap();
        for st in steps {
            match st {
                Step::Entry(k, t, b) => added.push(s.doc_entry_insert(&[*k; 32], *t, b).unwrap()),
                Step::Hold(r, q, b) => s.held_insert(&op(*r, *q, *b)).unwrap(),
                Step::Release(r, q) => s
                    .held_remove(OpId::new(ReplicaId::from_bytes([*r; 32]), *q))
                    .unwrap(),
                Step::End(commit) => {
                    if *commit {
                        s.commit().unwrap();
                    } else {
                        s.rollback().unwrap();
                    }
                    s.begin().unwrap();
                }
            }
        }
        s.commit().unwrap();
        (added, s.doc_entries().unwrap(), s.held_ops().unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64),
            ..ProptestConfig::default()
        })]

        #[test]
        fn sqlite_and_memory_keep_the_same_entries_and_held_ops(
            steps in prop::collection::vec(step(), 0..40),
        ) {
            let m = run(&mut MemoryStore::new(), &steps);
            let s = run(&mut SqliteStore::open_in_memory().unwrap(), &steps);
            prop_assert_eq!(m, s);
        }
    }

    #[test]
    fn a_version_1_database_gains_the_tables_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let conn = SqliteStore::open(&path).unwrap().into_connection();
        conn.execute_batch("DROP TABLE doc_entries; DROP TABLE held; PRAGMA user_version = 1;")
            .unwrap();
        drop(conn);
        let mut s = SqliteStore::open(&path).unwrap();
        let v: i64 = s
            .connection()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
        s.begin().unwrap();
        assert!(s.doc_entry_insert(&[1; 32], 0x10, b"x").unwrap());
        s.held_insert(&op(1, 1, 0)).unwrap();
        s.commit().unwrap();
        drop(s);
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.doc_entries().unwrap(), vec![(0x10, b"x".to_vec())]);
        assert_eq!(s.held_ops().unwrap(), vec![op(1, 1, 0)]);
    }
}
