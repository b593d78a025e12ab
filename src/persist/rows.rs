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
use std::sync::Arc;

use bytes::Bytes;

use crate::domain::DocId;
use crate::store::Append;
use crate::sync::merge_indexed;
use crate::wire::Index;

/// Most update bytes merged into one log row.
pub(crate) const MAX_ROW_BYTES: usize = 64 * 1024;

/// One append as it was queued.
struct Queued {
    doc: DocId,
    data: Bytes,
    /// Its index, when the document handed one over with it.
    index: Option<Arc<Index>>,
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
    pub(crate) fn push(&mut self, doc: DocId, data: Bytes, index: Option<Arc<Index>>, seq: u64) {
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
        self.appends.push(Queued {
            doc,
            data,
            index,
            seq,
        });
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
                .then(|| {
                    merge_indexed(group.appends.iter().map(|&i| {
                        let append = &self.appends[i];
                        (&append.data[..], append.index.as_deref())
                    }))
                })
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

    /// The positions of the rows of `doc` queued before `mark`.
    pub(crate) fn positions_before<'a>(
        &'a self,
        doc: &'a DocId,
        mark: Mark,
    ) -> impl Iterator<Item = i64> + 'a {
        self.rows
            .iter()
            .filter(move |(row, id)| row.doc == *doc && row.first_append < mark.0 && *id > 0)
            .map(|&(_, id)| id)
    }

    /// Every row's document and position.
    pub(crate) fn positions(&self) -> impl Iterator<Item = (DocId, i64)> + '_ {
        self.rows
            .iter()
            .filter(|(_, id)| *id > 0)
            .map(|(row, id)| (row.doc.clone(), *id))
    }

    /// Whether `doc` has rows queued after `mark`, which a compaction there leaves in the log.
    pub(crate) fn any_after(&self, doc: &DocId, mark: Mark) -> bool {
        self.rows
            .iter()
            .any(|(row, _)| row.doc == *doc && row.first_append >= mark.0)
    }

    /// The rows of each document, in sequence order.
    pub(crate) fn by_doc(&self) -> HashMap<DocId, Vec<(Row, i64)>> {
        let mut docs: HashMap<DocId, Vec<(Row, i64)>> = HashMap::new();
        for (row, id) in &self.rows {
            docs.entry(row.doc.clone())
                .or_default()
                .push((row.clone(), *id));
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, ReadTxn, Text, Transact, Update};

    use super::{Arc, CommittedRows, Index, MAX_ROW_BYTES, Row, Rows};
    use crate::domain::DocId;

    fn doc(name: &str) -> DocId {
        DocId::parse(name).expect("valid name")
    }

    /// The updates one client sends typing `texts` one after another at the end of `content`.
    fn typing(client: u64, texts: &[&str]) -> Vec<Bytes> {
        let author = Doc::with_client_id(client);
        let text = author.get_or_insert_text("content");
        texts
            .iter()
            .map(|typed| {
                let before = author.transact().state_vector();
                let mut txn = author.transact_mut();
                let end = text.len(&txn);
                text.insert(&mut txn, end, typed);
                drop(txn);
                Bytes::from(author.transact().encode_diff_v1(&before))
            })
            .collect()
    }

    /// The text of `content` after applying `update` to an empty document.
    fn text_of(update: &[u8]) -> String {
        let reader = Doc::new();
        let text = reader.get_or_insert_text("content");
        reader
            .transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
        text.get_string(&reader.transact())
    }

    fn ranges(rows: &[Row]) -> Vec<(&str, u64, u64)> {
        rows.iter()
            .map(|row| (row.doc.as_str(), row.first_seq, row.last_seq))
            .collect()
    }

    #[test]
    fn a_batch_writes_one_row_per_document_holding_its_updates_merged() {
        let (a, b) = (typing(1, &["he", "ll", "o"]), typing(2, &["wor", "ld"]));
        let mut batch = Rows::default();
        batch.push(doc("a"), a[0].clone(), None, 1);
        batch.push(doc("b"), b[0].clone(), None, 1);
        batch.push(doc("a"), a[1].clone(), None, 2);
        batch.push(doc("a"), a[2].clone(), None, 3);
        batch.push(doc("b"), b[1].clone(), None, 2);

        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 1, 3), ("b", 1, 2)]);
        assert_eq!(text_of(&rows[0].data), "hello");
        assert_eq!(text_of(&rows[1].data), "world");
        assert_eq!(batch.len(), 5);
    }

    /// Appends handed over with their index (as a document hands over what it received) make
    /// the same rows as the same appends without, some or all of which the merge parses.
    #[test]
    fn appends_with_their_index_make_the_same_rows() {
        let a = typing(1, &["he", "ll", "o", " there"]);
        let index = |update: &Bytes| Some(Arc::new(Index::parse(update).expect("valid")));
        let mut without = Rows::default();
        let (mut with, mut some) = (Rows::default(), Rows::default());
        for (seq, update) in (1..).zip(&a) {
            without.push(doc("a"), update.clone(), None, seq);
            with.push(doc("a"), update.clone(), index(update), seq);
            let every_other = (seq % 2 == 0).then(|| index(update)).flatten();
            some.push(doc("a"), update.clone(), every_other, seq);
        }
        let rows = without.rows();
        assert_eq!(ranges(&rows), [("a", 1, 4)]);
        assert_eq!(text_of(&rows[0].data), "hello there");
        assert_eq!(with.rows(), rows);
        assert_eq!(some.rows(), rows);
    }

    #[test]
    fn a_single_append_is_its_row_as_it_came() {
        let a = typing(1, &["only"]);
        let mut batch = Rows::default();
        batch.push(doc("a"), a[0].clone(), None, 7);
        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 7, 7)]);
        assert_eq!(rows[0].data, a[0], "not re-encoded");
    }

    #[test]
    fn the_byte_bound_starts_a_new_row() {
        let chunk = "x".repeat(MAX_ROW_BYTES / 2 - 100);
        let a = typing(1, &[&chunk, &chunk, &chunk, "tail"]);
        assert!(a[0].len() + a[1].len() <= MAX_ROW_BYTES);
        assert!(a[0].len() + a[1].len() + a[2].len() > MAX_ROW_BYTES);
        let mut batch = Rows::default();
        for (seq, update) in (1..).zip(&a) {
            batch.push(doc("a"), update.clone(), None, seq);
        }
        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 1, 2), ("a", 3, 4)]);
        assert!(rows.iter().all(|row| row.data.len() <= MAX_ROW_BYTES));
        let both = crate::sync::merge_updates(rows.iter().map(|row| &row.data[..]));
        let text = text_of(&both.expect("merges"));
        assert_eq!(text, format!("{chunk}{chunk}{chunk}tail"));
    }

    #[test]
    fn one_append_above_the_bound_is_a_row_of_its_own() {
        let big = "y".repeat(MAX_ROW_BYTES + 1);
        let a = typing(1, &["a", &big, "b"]);
        let mut batch = Rows::default();
        for (seq, update) in (1..).zip(&a) {
            batch.push(doc("a"), update.clone(), None, seq);
        }
        assert_eq!(
            ranges(&batch.rows()),
            [("a", 1, 1), ("a", 2, 2), ("a", 3, 3)]
        );
    }

    #[test]
    fn a_compaction_starts_a_new_row_and_covers_the_rows_before_it() {
        let (a, b) = (typing(1, &["1", "2", "3", "4"]), typing(2, &["x", "y"]));
        let mut batch = Rows::default();
        batch.push(doc("a"), a[0].clone(), None, 1);
        batch.push(doc("b"), b[0].clone(), None, 1);
        batch.push(doc("a"), a[1].clone(), None, 2);
        let at = batch.cut(&doc("a"));
        batch.push(doc("a"), a[2].clone(), None, 3);
        batch.push(doc("b"), b[1].clone(), None, 2);
        batch.push(doc("a"), a[3].clone(), None, 4);

        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 1, 2), ("b", 1, 2), ("a", 3, 4)]);
        let committed = CommittedRows::new(rows, &[10, 11, 12]);
        assert_eq!(
            committed.covered(&doc("a"), at, 0),
            10,
            "only its rows before it"
        );
        assert_eq!(
            committed.covered(&doc("a"), at, 15),
            15,
            "rows committed earlier"
        );
        assert!(
            committed.any_after(&doc("a"), at),
            "rows 3..=4 stay in the log"
        );
        assert_eq!(committed.covered(&doc("c"), at, 0), 0, "another document");
    }

    #[test]
    fn a_compaction_with_nothing_after_it_leaves_no_rows_behind() {
        let a = typing(1, &["1", "2"]);
        let mut batch = Rows::default();
        batch.push(doc("a"), a[0].clone(), None, 1);
        batch.push(doc("a"), a[1].clone(), None, 2);
        let at = batch.cut(&doc("a"));
        let committed = CommittedRows::new(batch.rows(), &[5]);
        assert_eq!(committed.covered(&doc("a"), at, 0), 5);
        assert!(!committed.any_after(&doc("a"), at));
        let by_doc = committed.by_doc();
        let rows: Vec<Row> = by_doc[&doc("a")]
            .iter()
            .map(|(row, _)| row.clone())
            .collect();
        assert_eq!(ranges(&rows), [("a", 1, 2)]);
        assert_eq!(by_doc[&doc("a")][0].1, 5, "the row's log position");
    }

    #[test]
    fn updates_yrs_cannot_merge_become_one_row_per_append() {
        let junk = [
            Bytes::from_static(b"\xff\xff\xff\xff"),
            Bytes::from_static(b"\x01"),
        ];
        let mut batch = Rows::default();
        batch.push(doc("a"), junk[0].clone(), None, 1);
        batch.push(doc("a"), junk[1].clone(), None, 2);
        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 1, 1), ("a", 2, 2)]);
        assert_eq!(rows[0].data, junk[0]);
        assert_eq!(rows[1].data, junk[1]);
        let committed = CommittedRows::new(rows, &[3, 4]);
        let by_doc = committed.by_doc();
        assert_eq!(by_doc[&doc("a")].len(), 2);
    }

    #[test]
    fn appends_that_join_later_extend_their_documents_row() {
        let a = typing(1, &["ab", "cd", "ef"]);
        let mut batch = Rows::default();
        batch.push(doc("a"), a[0].clone(), None, 4);
        assert_eq!(ranges(&batch.rows()), [("a", 4, 4)]);
        // As during an outage: the batch is retried with more appends of the same document.
        batch.push(doc("a"), a[1].clone(), None, 5);
        batch.push(doc("a"), a[2].clone(), None, 6);
        let rows = batch.rows();
        assert_eq!(ranges(&rows), [("a", 4, 6)]);
        assert_eq!(text_of(&rows[0].data), "abcdef");
    }
}
