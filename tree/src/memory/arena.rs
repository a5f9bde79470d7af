//! Log entries in insertion order, in fixed-size chunks: pushing never moves existing entries
//! (a growing `Vec` would copy the whole log on every doubling).

use crate::store::LogEntry;

const CHUNK: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct Arena {
    chunks: Vec<Vec<LogEntry>>,
    len: usize,
}

impl Arena {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn push(&mut self, e: LogEntry) {
        if self.chunks.is_empty() {
            // The first chunk grows on demand, so small logs stay small.
            self.chunks.push(Vec::new());
        } else if self.chunks.last().is_some_and(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(e);
            self.len += 1;
        }
    }

    pub(super) fn pop(&mut self) -> Option<LogEntry> {
        let c = self.chunks.last_mut()?;
        let e = c.pop();
        if c.is_empty() {
            self.chunks.pop();
        }
        if e.is_some() {
            self.len -= 1;
        }
        e
    }

    pub(super) fn get(&self, i: usize) -> Option<&LogEntry> {
        self.chunks.get(i / CHUNK)?.get(i % CHUNK)
    }

    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut LogEntry> {
        self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)
    }
}
