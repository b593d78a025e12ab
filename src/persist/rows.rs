//! Which log rows one transaction's appends become, and which of those rows each compaction
//! queued among them covers. Pure bookkeeping (no store, no tasks), so it is tested on its own.
//!
//! The appends of a batch are grouped as they arrive: one group per document, unless the byte
//! bound or a compaction of that document starts another. Each group is written as one log row
//! holding its updates merged (a document's many small updates in a commit then cost one row,
//! and a later load one update to apply); a group yrs cannot merge is written one row per
//! append. Appends that join the batch while a commit is retried join their document's open
//! group, so the rows are worked out again before each attempt.

use std::collections::HashMap;

use bytes::Bytes;

use crate::domain::DocId;
use crate::store::Append;
use crate::sync::merge_updates;

/// Most update bytes merged into one log row.
pub(crate) const MAX_ROW_BYTES: usize = 64 * 1024;

/// One append as it was queued.
struct Queued {
    doc: DocId,
    data: Bytes,
    seq: u64,
}

/// Appends of one document that go into one log row, by index into `Rows::appends`.
#[derive(Default)]
struct Group {
    appends: Vec<usize>,
    bytes: usize,
}

/// The appends of one transaction, grouped into log rows as they arrive.
#[derive(Default)]
pub(crate) struct Rows {
    appends: Vec<Queued>,
    /// In the order of each group's first append.
    groups: Vec<Group>,
    /// Per document, the group its next append may join.
    open: HashMap<DocId, usize>,
}

/// A place in a batch: the appends queued before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark(usize);

/// One log row to write: the appends of `doc` numbered `first_seq..=last_seq`, merged (or the
/// one append as it came, when the two are equal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) doc: DocId,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) data: Bytes,
    /// Index in the batch of the row's first append. A row holds appends of one document
    /// between two compactions of it, so all of them lie on the same side of any mark.
    first_append: usize,
}

impl Row {
    /// What the store is asked to write for this row.
    pub(crate) fn to_append(&self) -> Append {
        Append {
            doc: self.doc.clone(),
            data: self.data.clone(),
        }
    }
}

impl Rows {
    /// Adds append number `seq` of `doc` to its document's open row, or starts a row when
    /// there is none or the bytes would pass [`MAX_ROW_BYTES`].
    pub(crate) fn push(&mut self, doc: DocId, data: Bytes, seq: u64) {
        let group = match self.open.get(&doc) {
            Some(&group) if self.groups[group].bytes + data.len() <= MAX_ROW_BYTES => group,
            _ => {
                self.groups.push(Group::default());
                self.open.insert(doc.clone(), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        self.groups[group].appends.push(self.appends.len());
        self.groups[group].bytes += data.len();
        self.appends.push(Queued { doc, data, seq });
    }

    /// Marks where a compaction of `doc` was queued: its later appends go to rows of their
    /// own, since a row the compaction covers must hold nothing its snapshot lacks.
    pub(crate) fn cut(&mut self, doc: &DocId) -> Mark {
        self.open.remove(doc);
        Mark(self.appends.len())
    }

    /// How many appends are queued.
    pub(crate) fn len(&self) -> usize {
        self.appends.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.appends.is_empty()
    }

    /// The rows to write, each group merged: in the order of each row's first append, hence
    /// in sequence order within a document.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let merged = (group.appends.len() > 1)
                .then(|| merge_updates(group.appends.iter().map(|&i| &self.appends[i].data[..])))
                .flatten();
            match (merged, group.appends.as_slice()) {
                (Some(data), [first, .., last]) => rows.push(Row {
                    doc: self.appends[*first].doc.clone(),
                    first_seq: self.appends[*first].seq,
                    last_seq: self.appends[*last].seq,
                    data: data.into(),
                    first_append: *first,
                }),
                _ => rows.extend(group.appends.iter().map(|&i| {
                    let append = &self.appends[i];
                    Row {
                        doc: append.doc.clone(),
                        first_seq: append.seq,
                        last_seq: append.seq,
                        data: append.data.clone(),
                        first_append: i,
                    }
                })),
            }
        }
        rows
    }
}

/// Rows as committed, each with the log id the store gave it.
pub(crate) struct CommittedRows {
    rows: Vec<(Row, i64)>,
}

impl CommittedRows {
    /// `ids` are the store's, one per row in the rows' order (0 where missing).
    pub(crate) fn new(rows: Vec<Row>, ids: &[i64]) -> Self {
        let rows = rows
            .into_iter()
            .enumerate()
            .map(|(i, row)| (row, ids.get(i).copied().unwrap_or(0)))
            .collect();
        Self { rows }
    }

    /// What a compaction of `doc` queued at `mark` covers: the highest log id among the rows of
    /// `doc` queued before it, or `floor` if that is higher.
    pub(crate) fn covered(&self, doc: &DocId, mark: Mark, floor: i64) -> i64 {
        self.rows
            .iter()
            .filter(|(row, _)| row.doc == *doc && row.first_append < mark.0)
            .map(|&(_, id)| id)
            .fold(floor, i64::max)
    }

    /// Whether `doc` has rows queued after `mark`, which a compaction there leaves in the log.
    pub(crate) fn any_after(&self, doc: &DocId, mark: Mark) -> bool {
        self.rows
            .iter()
            .any(|(row, _)| row.doc == *doc && row.first_append >= mark.0)
    }

    /// The rows of each document, in sequence order.
    pub(crate) fn by_doc(&self) -> HashMap<DocId, Vec<Row>> {
        let mut docs: HashMap<DocId, Vec<Row>> = HashMap::new();
        for (row, _) in &self.rows {
            docs.entry(row.doc.clone()).or_default().push(row.clone());
        }
        docs
    }
}
