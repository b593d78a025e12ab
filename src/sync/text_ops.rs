//! Editing a text root without speaking Yjs: insert, delete and replace, by position.
//!
//! Positions and lengths count UTF-16 code units, as JavaScript strings and Yjs do, and may not
//! fall inside a surrogate pair. Every operation is checked against the text as the previous
//! ones left it, before anything is applied: a batch applies whole or not at all. A replacement
//! changes only the range between the longest common prefix and suffix, so cursors and
//! concurrent edits outside that range are untouched.
//!
//! Rich text may hold embedded objects (an image, a nested type) between its characters. They
//! are not part of the text that positions count, and keep their place: an insert at `n` lands
//! just before the text's `n`-th unit, after any object there, and a deletion removes the
//! objects strictly inside its range. yrs counts each object as one position, so every
//! position is translated before it is applied.

use serde::Deserialize;
use yrs::{
    Any, Doc, IdSet, Out, ReadTxn, Snapshot, StateVector, Text, TextRef, Transact, TransactionMut,
};

/// One edit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum TextOp {
    /// Insert `insert` at position `at`.
    Insert { insert: String, at: u32 },
    /// Delete `delete` code units starting at position `at`.
    Delete { delete: u32, at: u32 },
    /// Make the whole text equal to `replace`.
    Replace { replace: String },
}

impl TextOp {
    /// Bytes of text this operation inserts (an upper bound on what it adds to a document).
    pub fn inserted_bytes(&self) -> usize {
        match self {
            TextOp::Insert { insert, .. } => insert.len(),
            TextOp::Replace { replace } => replace.len(),
            TextOp::Delete { .. } => 0,
        }
    }
}

/// Why a batch was refused; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextOpError {
    #[error("operation {op}: position {at} is beyond the end of the text ({len})")]
    OutOfRange { op: usize, at: u64, len: u64 },
    #[error("operation {op}: position {at} falls inside a character (a UTF-16 surrogate pair)")]
    SplitsCharacter { op: usize, at: u64 },
    /// The root holds list values among its text (clients used it both as text and as an
    /// array), whose positions a text edit cannot place.
    #[error(
        "the text holds values that are neither text nor embedded objects; edit it with a Yjs client"
    )]
    HoldsValues,
    /// More operations than one batch may hold.
    #[error("a batch holds at most {0} operations: send the rest in another")]
    TooManyOps(usize),
}

/// Operations one batch may hold. yrs finds each position by walking the text's items from its
/// start, and a batch's inserts cut the text into more items, so past some thousands of
/// operations a batch costs about the square of them: into a 4 M-character text, 1,000 random
/// inserts take about 0.1 s and 10,000 about 1 s (BENCHMARKS.md), while the 80,000 a 16 MiB
/// body allows took more than a minute.
pub const MAX_OPS: usize = 10_000;

/// A range change in UTF-16 units: remove `delete` units at `at`, then insert `insert` there.
#[derive(Debug, PartialEq, Eq)]
struct Splice {
    at: u32,
    delete: u32,
    insert: String,
}

/// Checks `ops` against `text` and turns them into splices, simulating each on a copy. The copy
/// is a rope, so each operation costs about the log of the text's length plus its own size,
/// and a batch about linear time in its size however long the text is.
fn plan(text: &str, ops: &[TextOp]) -> Result<Vec<Splice>, TextOpError> {
    let mut current = ropey::Rope::from_str(text);
    let mut splices = Vec::with_capacity(ops.len());
    for (op, edit) in ops.iter().enumerate() {
        let splice = match edit {
            TextOp::Insert { insert, at } => Splice {
                at: *at,
                delete: 0,
                insert: insert.clone(),
            },
            TextOp::Delete { delete, at } => Splice {
                at: *at,
                delete: *delete,
                insert: String::new(),
            },
            TextOp::Replace { replace } => {
                let units: Vec<u16> = current
                    .chars()
                    .flat_map(|c| {
                        let mut buf = [0u16; 2];
                        c.encode_utf16(&mut buf).to_vec()
                    })
                    .collect();
                minimal_splice(&units, replace)
            }
        };
        let len = current.len_utf16_cu() as u64;
        let start = u64::from(splice.at);
        let end = start + u64::from(splice.delete);
        if end > len {
            return Err(TextOpError::OutOfRange { op, at: end, len });
        }
        let mut chars = [0usize; 2];
        for (i, boundary) in [start as usize, end as usize].into_iter().enumerate() {
            let char_at = current.utf16_cu_to_char(boundary);
            if current.char_to_utf16_cu(char_at) != boundary {
                return Err(TextOpError::SplitsCharacter {
                    op,
                    at: boundary as u64,
                });
            }
            chars[i] = char_at;
        }
        current.remove(chars[0]..chars[1]);
        current.insert(chars[0], &splice.insert);
        splices.push(splice);
    }
    Ok(splices)
}

/// True when `at` lies between the two halves of a surrogate pair.
fn splits_pair(units: &[u16], at: usize) -> bool {
    at > 0
        && at < units.len()
        && (0xD800..0xDC00).contains(&units[at - 1])
        && (0xDC00..0xE000).contains(&units[at])
}

/// The single range change that turns `old` into `new`: everything between their longest
/// common prefix and suffix, measured in whole characters.
fn minimal_splice(old: &[u16], new: &str) -> Splice {
    let new_units: Vec<u16> = new.encode_utf16().collect();
    let mut prefix = old
        .iter()
        .zip(&new_units)
        .take_while(|(a, b)| a == b)
        .count();
    // Never stop between the halves of a surrogate pair.
    if splits_pair(old, prefix) || splits_pair(&new_units, prefix) {
        prefix -= 1;
    }
    let max_suffix = old.len().min(new_units.len()) - prefix;
    let mut suffix = old
        .iter()
        .rev()
        .zip(new_units.iter().rev())
        .take(max_suffix)
        .take_while(|(a, b)| a == b)
        .count();
    if splits_pair(old, old.len() - suffix) || splits_pair(&new_units, new_units.len() - suffix) {
        suffix -= 1;
    }
    let inserted = &new_units[prefix..new_units.len() - suffix];
    Splice {
        at: prefix as u32,
        delete: (old.len() - suffix - prefix) as u32,
        insert: String::from_utf16_lossy(inserted),
    }
}

/// The text of a root and where its embedded objects sit, in text positions (UTF-16 units):
/// an object at `p` lies between the text's units `p - 1` and `p`, in the order listed.
struct Layout {
    text: String,
    objects: Vec<u32>,
}

/// One run of a text root's content.
enum Piece {
    Text(String),
    /// An embedded object, or a nested type.
    Object,
}

/// A text root's content in order. A diff from nothing to now marks every run of text as added
/// and leaves objects unmarked (a plain diff cannot tell an object holding a string from text).
fn pieces(txn: &mut TransactionMut, root: &TextRef) -> Vec<Piece> {
    let now = txn.snapshot();
    let nothing = Snapshot::new(StateVector::default(), IdSet::new());
    root.diff_range(txn, Some(&now), Some(&nothing), |_| ())
        .into_iter()
        .map(|chunk| match (chunk.ychange, chunk.insert) {
            (Some(()), Out::Any(Any::String(s))) => Piece::Text(s.to_string()),
            _ => Piece::Object,
        })
        .collect()
}

impl Layout {
    fn of(txn: &mut TransactionMut, root: &TextRef) -> Result<Layout, TextOpError> {
        let mut layout = Layout {
            text: String::new(),
            objects: Vec::new(),
        };
        let mut units = 0u32;
        for piece in pieces(txn, root) {
            match piece {
                Piece::Text(s) => {
                    layout.text.push_str(&s);
                    units += s.encode_utf16().count() as u32;
                }
                Piece::Object => layout.objects.push(units),
            }
        }
        // The diff leaves out list values (numbers, maps…) that yrs still counts.
        if units + layout.objects.len() as u32 != root.len(txn) {
            return Err(TextOpError::HoldsValues);
        }
        Ok(layout)
    }

    /// yrs's position just before text unit `at`, after any objects there.
    fn after_objects(&self, at: u32) -> u32 {
        at + self.objects.partition_point(|&p| p <= at) as u32
    }

    /// yrs's position just after text unit `at - 1`, before any objects there.
    fn before_objects(&self, at: u32) -> u32 {
        at + self.objects.partition_point(|&p| p < at) as u32
    }

    /// Applies `splice` to `root` in `txn`, and to this layout.
    fn apply(&mut self, txn: &mut TransactionMut, root: &TextRef, splice: &Splice) {
        let end = splice.at + splice.delete;
        let start = self.after_objects(splice.at);
        if splice.delete > 0 {
            root.remove_range(txn, start, self.before_objects(end) - start);
        }
        if !splice.insert.is_empty() {
            root.insert(txn, start, &splice.insert);
        }
        let inserted = splice.insert.encode_utf16().count() as u32;
        self.objects.retain(|&p| p <= splice.at || p >= end);
        for p in &mut self.objects {
            if *p > splice.at {
                *p = *p - splice.delete + inserted;
            }
        }
    }
}

/// Whether root `key` of `doc` holds list values among its text, which text edits refuse
/// ([`TextOpError::HoldsValues`]). An absent root holds none.
pub fn holds_values(doc: &Doc, key: &str) -> bool {
    let mut txn = doc.transact_mut();
    let root = txn
        .root_refs()
        .find(|(name, _)| *name == key)
        .and_then(|(_, out)| out.try_branch().map(yrs::branch::BranchPtr::from));
    root.is_some_and(|branch| Layout::of(&mut txn, &TextRef::from(branch)).is_err())
}

/// Splices applied in one transaction: yrs joins the adjacent items a transaction inserted
/// when it commits, copying the text joined so far at each step, which is quadratic in what
/// one transaction joins. Committing every so many splices keeps a long batch linear.
const SPLICES_PER_TRANSACTION: usize = 256;

/// Applies `ops` to the text root `text` of `doc` and returns the v1 updates it made (none when
/// nothing changed), one per transaction of at most [`SPLICES_PER_TRANSACTION`] splices. Every
/// operation is checked before any is applied. `doc` must count offsets in UTF-16.
pub fn apply(doc: &Doc, text: &TextRef, ops: &[TextOp]) -> Result<Vec<Vec<u8>>, TextOpError> {
    if ops.len() > MAX_OPS {
        return Err(TextOpError::TooManyOps(MAX_OPS));
    }
    let (mut layout, splices) = {
        let mut txn = doc.transact_mut();
        let layout = Layout::of(&mut txn, text)?;
        let splices = plan(&layout.text, ops)?;
        (layout, splices)
    };
    let mut updates = Vec::new();
    for batch in splices.chunks(SPLICES_PER_TRANSACTION) {
        let mut txn = doc.transact_mut();
        for splice in batch {
            layout.apply(&mut txn, text, splice);
        }
        let update = txn.encode_update_v1();
        if update != [0, 0] {
            updates.push(update);
        }
    }
    Ok(updates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::array_insert_at_front;
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, OffsetKind, Options};

    fn doc_with(text: &str) -> (Doc, TextRef) {
        let doc = Doc::with_options(Options {
            offset_kind: OffsetKind::Utf16,
            ..Options::default()
        });
        let root = doc.get_or_insert_text("content");
        root.insert(&mut doc.transact_mut(), 0, text);
        (doc, root)
    }

    fn run(text: &str, ops: &[TextOp]) -> Result<String, TextOpError> {
        let (doc, root) = doc_with(text);
        apply(&doc, &root, ops)?;
        Ok(root.get_string(&doc.transact()))
    }

    #[test]
    fn inserts_deletes_and_replaces_apply_in_order() {
        let ops = [
            TextOp::Insert {
                insert: "Hello".into(),
                at: 0,
            },
            TextOp::Insert {
                insert: ", world".into(),
                at: 5,
            },
            TextOp::Delete { delete: 2, at: 5 },
        ];
        assert_eq!(run("", &ops), Ok("Helloworld".into()));
        let replace = [TextOp::Replace {
            replace: "a brand new text".into(),
        }];
        assert_eq!(run("an old text", &replace), Ok("a brand new text".into()));
    }

    #[test]
    fn positions_count_utf16_units_and_never_split_a_character() {
        // "𝄞" is two UTF-16 units.
        assert_eq!(
            run(
                "a𝄞b",
                &[TextOp::Insert {
                    insert: "!".into(),
                    at: 3
                }]
            ),
            Ok("a𝄞!b".into())
        );
        assert_eq!(
            run(
                "a𝄞b",
                &[TextOp::Insert {
                    insert: "!".into(),
                    at: 2
                }]
            ),
            Err(TextOpError::SplitsCharacter { op: 0, at: 2 })
        );
        assert_eq!(
            run(
                "a𝄞b",
                &[TextOp::Replace {
                    replace: "a𝄟b".into()
                }]
            ),
            Ok("a𝄟b".into())
        );
    }

    #[test]
    fn a_batch_with_a_bad_operation_changes_nothing() {
        let (doc, root) = doc_with("abc");
        let ops = [
            TextOp::Insert {
                insert: "x".into(),
                at: 0,
            },
            TextOp::Delete { delete: 10, at: 1 },
        ];
        assert_eq!(
            apply(&doc, &root, &ops),
            Err(TextOpError::OutOfRange {
                op: 1,
                at: 11,
                len: 4
            })
        );
        assert_eq!(root.get_string(&doc.transact()), "abc");
        assert!(matches!(
            run(
                "abc",
                &[TextOp::Insert {
                    insert: "x".into(),
                    at: u32::MAX
                }]
            ),
            Err(TextOpError::OutOfRange { .. })
        ));
    }

    #[test]
    fn replace_touches_only_what_changed() {
        let old: Vec<u16> = "the quick brown fox".encode_utf16().collect();
        assert_eq!(
            minimal_splice(&old, "the quick red fox"),
            Splice {
                at: 10,
                delete: 5,
                insert: "red".into()
            }
        );
        assert_eq!(
            minimal_splice(&old, "the quick brown fox"),
            Splice {
                at: 19,
                delete: 0,
                insert: String::new()
            }
        );
        // A collaborator's edit elsewhere survives a replace made from an older copy.
        let (doc, root) = doc_with("aaa bbb ccc");
        let concurrent = Doc::new();
        let their = concurrent.get_or_insert_text("content");
        {
            let state = doc
                .transact()
                .encode_state_as_update_v1(&Default::default());
            concurrent
                .transact_mut()
                .apply_update(yrs::Update::decode_v1(&state).expect("decodes"))
                .expect("applies");
        }
        let theirs = {
            let mut txn = concurrent.transact_mut();
            their.insert(&mut txn, 0, ">> ");
            txn.encode_update_v1()
        };
        apply(
            &doc,
            &root,
            &[TextOp::Replace {
                replace: "aaa BBB ccc".into(),
            }],
        )
        .expect("applies");
        {
            doc.transact_mut()
                .apply_update(yrs::Update::decode_v1(&theirs).expect("decodes"))
                .expect("applies");
        }
        assert_eq!(root.get_string(&doc.transact()), ">> aaa BBB ccc");
    }

    /// `parts` in order: `Ok(text)` for text, `Err(n)` for the embedded number `n`.
    fn rich(parts: &[Result<&str, i64>]) -> (Doc, TextRef) {
        let (doc, root) = doc_with("");
        let mut txn = doc.transact_mut();
        let mut at = 0;
        for part in parts {
            match part {
                Ok(text) => {
                    root.insert(&mut txn, at, text);
                    at += text.encode_utf16().count() as u32;
                }
                Err(n) => {
                    root.insert_embed(&mut txn, at, Any::from(*n));
                    at += 1;
                }
            }
        }
        drop(txn);
        (doc, root)
    }

    /// The text with each embedded object shown as `[*]`.
    fn shown(doc: &Doc, root: &TextRef) -> String {
        pieces(&mut doc.transact_mut(), root)
            .into_iter()
            .map(|piece| match piece {
                Piece::Text(s) => s,
                Piece::Object => "[*]".to_string(),
            })
            .collect()
    }

    fn edit(parts: &[Result<&str, i64>], ops: &[TextOp]) -> Result<String, TextOpError> {
        let (doc, root) = rich(parts);
        apply(&doc, &root, ops)?;
        Ok(shown(&doc, &root))
    }

    #[test]
    fn embedded_objects_keep_their_place_and_take_no_position() {
        let parts = [Ok("ab"), Err(1), Ok("cd")];
        let insert = |at: u32| TextOp::Insert {
            insert: "X".into(),
            at,
        };
        assert_eq!(edit(&parts, &[insert(1)]), Ok("aXb[*]cd".into()));
        // At the object's place: after it, just before the text's unit 2.
        assert_eq!(edit(&parts, &[insert(2)]), Ok("ab[*]Xcd".into()));
        assert_eq!(edit(&parts, &[insert(3)]), Ok("ab[*]cXd".into()));
        assert_eq!(edit(&parts, &[insert(4)]), Ok("ab[*]cdX".into()));
        // A deletion takes the objects strictly inside its range.
        let delete = |at: u32, delete: u32| TextOp::Delete { delete, at };
        assert_eq!(edit(&parts, &[delete(1, 2)]), Ok("ad".into()));
        assert_eq!(edit(&parts, &[delete(0, 2)]), Ok("[*]cd".into()));
        assert_eq!(edit(&parts, &[delete(2, 2)]), Ok("ab[*]".into()));
        // Later operations see the objects where the earlier ones left them.
        assert_eq!(
            edit(&parts, &[insert(0), delete(0, 2), insert(2)]),
            Ok("b[*]cXd".into())
        );
        let replace = TextOp::Replace {
            replace: "abZcd".into(),
        };
        assert_eq!(edit(&parts, &[replace]), Ok("ab[*]Zcd".into()));
    }

    #[test]
    fn an_object_before_a_pair_does_not_shift_an_edit_into_it() {
        // yrs counts the object as one position: untranslated, position 2 would fall between
        // the halves of "🎉" and split it into two replacement characters.
        let parts = [Err(7), Ok("🎉x")];
        let ops = [TextOp::Insert {
            insert: "!".into(),
            at: 2,
        }];
        assert_eq!(edit(&parts, &ops), Ok("[*]🎉!x".into()));
    }

    #[test]
    fn an_object_holding_a_string_is_told_from_text() {
        let (doc, root) = doc_with("ab");
        root.insert_embed(&mut doc.transact_mut(), 1, Any::from("img"));
        let ops = [TextOp::Insert {
            insert: "X".into(),
            at: 2,
        }];
        apply(&doc, &root, &ops).expect("applies");
        assert_eq!(shown(&doc, &root), "a[*]bX");
    }

    #[test]
    fn text_holding_list_values_is_refused() {
        // Another client used the root as an array: its values have no text position.
        let (doc, root) = doc_with("hi");
        let update = array_insert_at_front(&doc, "content", 5);
        doc.transact_mut()
            .apply_update(yrs::Update::decode_v1(&update).expect("decodes"))
            .expect("applies");
        let before = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let ops = [TextOp::Insert {
            insert: "!".into(),
            at: 2,
        }];
        assert_eq!(apply(&doc, &root, &ops), Err(TextOpError::HoldsValues));
        assert_eq!(
            doc.transact()
                .encode_state_as_update_v1(&yrs::StateVector::default()),
            before
        );
    }

    #[test]
    fn operations_parse_from_json() {
        let ops: Vec<TextOp> =
            serde_json::from_str(r#"[{"insert":"x","at":1},{"delete":2,"at":0},{"replace":"y"}]"#)
                .expect("valid ops");
        assert_eq!(ops.len(), 3);
        assert!(serde_json::from_str::<Vec<TextOp>>(r#"[{"insert":"x"}]"#).is_err());
        assert!(serde_json::from_str::<Vec<TextOp>>(r#"[{"delete":-1,"at":0}]"#).is_err());
    }

    #[test]
    fn a_batch_of_more_than_the_limit_changes_nothing() {
        let ops = vec![
            TextOp::Insert {
                insert: "x".into(),
                at: 0
            };
            MAX_OPS + 1
        ];
        assert_eq!(run("abc", &ops), Err(TextOpError::TooManyOps(MAX_OPS)));
        assert_eq!(run("", &ops[..MAX_OPS]).map(|t| t.len()), Ok(MAX_OPS));
    }

    #[test]
    fn batches_in_several_transactions_make_the_text_their_ops_make_in_order() {
        let mut seed = 7u64;
        let mut next = |n: u32| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) % u64::from(n.max(1))) as u32
        };
        for round in 0..300 {
            let start: String = (0..next(40))
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let mut model: Vec<u16> = start.encode_utf16().collect();
            let mut ops = Vec::new();
            // Now and then more than one transaction's worth.
            let count = if round % 20 == 0 { 600 } else { next(30) + 2 };
            for _ in 0..count {
                let len = model.len() as u32;
                let op = match next(3) {
                    0 => TextOp::Insert {
                        insert: ["x", "yz", "é", "😀"][next(4) as usize].into(),
                        at: next(len + 1),
                    },
                    1 if len > 0 => {
                        let at = next(len);
                        TextOp::Delete {
                            delete: next(len - at) + 1,
                            at,
                        }
                    }
                    _ => TextOp::Insert {
                        insert: "q".into(),
                        at: len,
                    },
                };
                // Keep to ops the model can apply without splitting a pair.
                let probe = plan(&String::from_utf16_lossy(&model), std::slice::from_ref(&op));
                let Ok(splices) = probe else { continue };
                for splice in splices {
                    let end = (splice.at + splice.delete) as usize;
                    model.splice(splice.at as usize..end, splice.insert.encode_utf16());
                }
                ops.push(op);
            }
            let got = run(&start, &ops).expect("the batch applies");
            assert_eq!(
                got,
                String::from_utf16_lossy(&model),
                "round {round}: {ops:?}"
            );
        }
    }
}
