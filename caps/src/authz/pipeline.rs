//! Pipelined ingest: batch k+1 is decoded and signature-checked on a worker thread while batch k
//! is applied (`spec/caps.md` §Verified ingest: the result is that of ingesting the batches one
//! after another).

use std::sync::{mpsc, Mutex, PoisonError};
use std::thread;

use canopy_tree::{ApplyError, Store};

use super::ingest::{Authz, IngestReport, Verified};

impl<S: Store> Authz<S> {
    /// Ingests `batches` in order, exactly as calling [`Authz::ingest`] on each one in turn
    /// would, handing each batch's report to `report` (with the batch's index) as soon as the
    /// batch is applied.
    ///
    /// The two halves of an ingest overlap: a worker thread runs [`Verified::check`] (decoding
    /// and batch signature verification, which read nothing of the replica) on batch k+1 while
    /// this thread applies batch k with [`Authz::ingest_verified`]. On two cores the throughput
    /// is that of the slower half instead of the sum of both. The worker is at most two
    /// batches ahead. Where only one core is available, or no thread can be started (e.g.
    /// `wasm32-unknown-unknown`), the batches are ingested one after another on this thread.
    ///
    /// A store error stops the ingest: the failing batch is rolled back (as with
    /// [`Authz::ingest`]), later batches are not ingested, and the error is returned; the
    /// reports of the batches before it were handed out already.
    ///
    /// ```
    /// use canopy_caps::{chain_ref, sign_op, Accepted, Authz, Document, SecretKey};
    /// use canopy_tree::{Lamport, MemoryStore, NodeId, Op, OpId, OpKind, Outcome, Position, ReplicaId};
    ///
    /// let owner = SecretKey::from_bytes(&[1; 32]);
    /// let doc = Document::new(owner.did(), [0; 16]);
    /// let me = ReplicaId::from_bytes(*owner.did().public_key());
    /// // 40 signed creates by the owner, in 4 batches of 10 encoded ops.
    /// let ops: Vec<Vec<u8>> = (1..=40u64)
    ///     .map(|seq| {
    ///         let op = Op::new(
    ///             OpId::new(me, seq),
    ///             Lamport::new(seq),
    ///             OpKind::Create {
    ///                 node: NodeId::from_bytes([seq as u8; 16]),
    ///                 parent: NodeId::ROOT,
    ///                 position: Position::from_bytes(&[1, seq as u8]),
    ///                 payload: None,
    ///             },
    ///         );
    ///         sign_op(&owner, &doc.id(), 1_700_000_000, &chain_ref(&[]), op).unwrap().encode()
    ///     })
    ///     .collect();
    ///
    /// let mut replica = Authz::new(MemoryStore::new(), doc, ReplicaId::from_bytes([9; 32]))?;
    /// let mut applied = 0;
    /// replica.ingest_pipelined(ops.chunks(10), |_batch, report| {
    ///     applied += report
    ///         .items
    ///         .iter()
    ///         .filter(|i| matches!(i, Ok(Accepted::Op { outcome: Outcome::Applied, .. })))
    ///         .count();
    /// })?;
    /// assert_eq!(applied, 40);
    /// assert_eq!(replica.tree().node_count()?, 40);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    // Per-item results are data (one per input), not this function's error path.
    #[allow(clippy::result_large_err)]
    pub fn ingest_pipelined<I, B, T, F>(
        &mut self,
        batches: I,
        mut report: F,
    ) -> Result<(), ApplyError<S::Error>>
    where
        I: IntoIterator<Item = B>,
        I::IntoIter: Send,
        B: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
        F: FnMut(usize, IngestReport),
    {
        let doc = self.state().document().id();
        let batches = batches.into_iter();
        if thread::available_parallelism().map_or(true, |n| n.get() < 2) {
            return self.ingest_serially(batches, &mut report);
        }
        // The worker takes batches through the lock; if it cannot be started, this thread
        // takes them all.
        let batches = Mutex::new(batches);
        thread::scope(|scope| {
            // Capacity 1: one checked batch waits while the worker checks the next.
            let (tx, rx) = mpsc::sync_channel::<Verified>(1);
            let batches = &batches;
            let worker = thread::Builder::new()
                .name("canopy-verify".into())
                .spawn_scoped(scope, move || {
                    let mut batches = batches.lock().unwrap_or_else(PoisonError::into_inner);
                    for batch in &mut *batches {
                        // The receiver is gone after a store error: stop checking.
                        if tx.send(Verified::check(doc, batch)).is_err() {
                            break;
                        }
                    }
                });
            if worker.is_err() {
                let mut batches = batches.lock().unwrap_or_else(PoisonError::into_inner);
                return self.ingest_serially(&mut *batches, &mut report);
            }
            // The channel closes when the worker has checked every batch (or panicked: the
            // scope then re-raises its panic).
            for (index, verified) in rx.into_iter().enumerate() {
                let r = self.ingest_verified(verified)?;
                report(index, r);
            }
            Ok(())
        })
    }

    #[allow(clippy::result_large_err)]
    fn ingest_serially<B, T>(
        &mut self,
        batches: impl Iterator<Item = B>,
        report: &mut impl FnMut(usize, IngestReport),
    ) -> Result<(), ApplyError<S::Error>>
    where
        B: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        for (i, batch) in batches.enumerate() {
            let r = self.ingest(batch)?;
            report(i, r);
        }
        Ok(())
    }
}
