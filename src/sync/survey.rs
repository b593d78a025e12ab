//! Whether yrs may read a branch, decided before asking it to.
//!
//! Two structures that clients can send make yrs's readers fail in ways `catch_unwind` cannot
//! stop, so every read of a document's content surveys the branch first ([`survey`]) and keeps
//! yrs away from them:
//! - A list holding a character beyond the BMP (an emoji, say). yrs counts a string item in
//!   UTF-16 code units but reads it by characters, so its list reader waits for a second element
//!   that never comes and loops for ever. Stock Yjs clients produce this whenever two of them use
//!   one root differently (one types text with emoji into `content`, another inserts into
//!   `getArray('content')`). Such a branch is read as the text it holds.
//! - Shared types nested very deep: yrs renders nested types recursively and would overflow the
//!   thread's stack, which aborts the process. Updates cannot nest types that deep
//!   ([`super::nesting`]); a document stored before that limit could, and reads as unreadable.
//!
//! The plain readers ([`super::content`]) and the rich-text reader ([`super::prosemirror`]) both
//! start here.

use yrs::branch::BranchPtr;
use yrs::types::TypeRef;
use yrs::types::text::YChange;
use yrs::{Any, GetString, Map as _, MapRef, Out, ReadTxn, Text as _, TextRef, XmlTextRef};

use crate::wire::MAX_TYPE_DEPTH;

/// Why a root could not be read as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the document has no root type named {0:?}")]
    NoSuchKey(String),
    #[error("root type {0:?} is not text")]
    NotText(String),
    /// Not a fragment of XML elements and text (what a rich-text editor edits).
    #[error("root type {0:?} is not an XML fragment")]
    NotXml(String),
    /// yrs cannot read it: its structure is inconsistent, or nested too deep.
    #[error("the document's structure cannot be read")]
    Unreadable,
}

/// Runs a read of the document, turning a panic inside yrs (which malformed but accepted
/// structures can cause) into `fallback`: reading must never take the server down.
pub(crate) fn guarded<T>(fallback: T, read: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        tracing::error!("reading a document's content panicked");
        fallback
    })
}

/// How a branch can be read, decided without asking yrs to read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Survey {
    /// yrs reads the branch and everything in it.
    Readable,
    /// The branch would be read as a list but holds text beyond the BMP: only its text is read
    /// (as XML text when it also has attributes, the way yrs infers such a root).
    TextOnly { attributes: bool },
    /// Something in it cannot be read at all.
    Unreadable,
}

/// Whether yrs may read `branch` as a list (by type, or by inference for an undeclared root).
fn read_as_list(branch: &BranchPtr) -> bool {
    matches!(
        branch.type_ref(),
        TypeRef::Array | TypeRef::Undefined | TypeRef::XmlElement(_) | TypeRef::XmlFragment
    )
}

/// One branch's own content, read without yrs's list reader: whether its strings hold a
/// character beyond the BMP, and the shared types in its list and its map.
fn scan<T: ReadTxn>(txn: &T, branch: BranchPtr) -> (bool, Vec<BranchPtr>) {
    let mut beyond_bmp = false;
    let mut nested = Vec::new();
    // A text's diff walks the list item by item: strings come whole, embedded types as values,
    // other values are skipped.
    for chunk in TextRef::from(branch).diff(txn, YChange::identity) {
        match chunk.insert {
            Out::Any(Any::String(s)) => beyond_bmp |= s.chars().any(|c| c > '\u{FFFF}'),
            Out::Any(_) => {}
            out => nested.extend(branch_of(&out)),
        }
    }
    for (_, value) in MapRef::from(branch).iter(txn) {
        nested.extend(branch_of(&value));
    }
    (beyond_bmp, nested)
}

/// The shared type a value is, if it is one.
pub(crate) fn branch_of(out: &Out) -> Option<BranchPtr> {
    out.try_branch().map(BranchPtr::from)
}

/// What a [`Survey::TextOnly`] branch reads as: its text, as XML text when it has attributes.
pub(crate) fn text_only<T: ReadTxn>(txn: &T, branch: BranchPtr, attributes: bool) -> String {
    if attributes {
        XmlTextRef::from(branch).get_string(txn)
    } else {
        TextRef::from(branch).get_string(txn)
    }
}

/// Surveys `branch` and everything nested in it (without recursion: nesting has no limit).
pub(crate) fn survey<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Survey {
    let (beyond_bmp, nested) = scan(txn, branch);
    if beyond_bmp && read_as_list(&branch) {
        return match branch.type_ref() {
            TypeRef::Array | TypeRef::Undefined => Survey::TextOnly {
                attributes: MapRef::from(branch).len(txn) > 0,
            },
            _ => Survey::Unreadable,
        };
    }
    let mut pending: Vec<(BranchPtr, usize)> = nested.into_iter().map(|b| (b, 2)).collect();
    while let Some((branch, depth)) = pending.pop() {
        // Updates cannot nest deeper; a document stored before that limit might.
        if depth > MAX_TYPE_DEPTH {
            return Survey::Unreadable;
        }
        let (beyond_bmp, nested) = scan(txn, branch);
        if beyond_bmp && read_as_list(&branch) {
            return Survey::Unreadable;
        }
        pending.extend(nested.into_iter().map(|b| (b, depth + 1)));
    }
    Survey::Readable
}

/// Root `key`, found without declaring it (which would change the document).
pub(crate) fn root<T: ReadTxn>(txn: &T, key: &str) -> Option<Out> {
    txn.root_refs()
        .find(|(name, _)| *name == key)
        .map(|(_, out)| out)
}
