//! Rich text as ProseMirror (Tiptap) editors hold it: an `XmlFragment` root of XML elements and
//! formatted XML text, read and written as ProseMirror JSON.
//!
//! Tiptap's Collaboration extension binds the editor to the fragment `default` through
//! y-prosemirror, which stores a ProseMirror node as an `XmlElement` named after its type (its
//! attributes, those not `null`, as the element's attributes) and each run of text nodes as one
//! `XmlText` whose formatting attributes are the marks (mark name → the mark's attributes).
//! Reading gives exactly what y-prosemirror's `yXmlFragmentToProsemirrorJSON` gives a client:
//!
//! - `{"type":"doc","content":[..]}`; an element is `{"type","attrs"?,"content"?}`, with
//!   `attrs` left out when the element has none and `content` when it has no children;
//! - a text run is `{"type":"text","text","marks"?}`, each mark `{"type","attrs"}` with `attrs`
//!   the attribute's value whatever it is (`{}` for a mark without attributes, `true` if a
//!   client formatted with `true`), and a name y-prosemirror suffixed with `--` and an 8
//!   character hash (overlapping marks) read without the suffix;
//! - text right inside the fragment (no editor puts it there) is a list of text nodes in place of
//!   a node, as y-prosemirror has it.
//!
//! Marks come in the order a Yjs client lists them: the order their formatting first applies,
//! walking the text. yrs keeps formatting attributes in a hash map, so where several begin at the
//! same place their order is not known to the server; they are listed by name there (Tiptap's
//! own marks, `bold`, `code`, `italic`, `link`, `strike`, sort as its editor adds them). What
//! the server writes it formats in that order too ([`write`]), so its own reading and a Yjs
//! client's agree on it. ProseMirror sorts a node's marks by its schema in any case.
//!
//! The server keeps a fragment as [`XmlNode`]s in between, the same for reading, writing
//! ([`write`]) and restoring versions; [`json`] turns them into ProseMirror JSON and back.

pub mod json;
pub mod read;
pub mod write;
pub mod xml;

use std::collections::BTreeMap;

use yrs::Any;

pub use json::{ProsemirrorError, parse_doc, to_prosemirror};
pub use read::{read_fragment, to_json};
pub use write::replace_fragment;

/// The fragment Tiptap's Collaboration extension edits when it is given no other name.
pub const DEFAULT_FRAGMENT_KEY: &str = "default";

/// One child of a fragment or element.
#[derive(Debug, Clone, PartialEq)]
pub enum XmlNode {
    Element(Element),
    /// An `XmlText`: its runs of equally formatted content, in order.
    Text(Vec<Run>),
}

/// An `XmlElement`.
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub tag: String,
    /// By name; a value is never `null` (Yjs removes an attribute set to `null`).
    pub attrs: BTreeMap<String, Any>,
    pub children: Vec<XmlNode>,
}

/// A run of an `XmlText` under one set of formatting attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub insert: Insert,
    /// Formatting attribute (mark) names and values, in the order a Yjs client lists them.
    pub marks: Vec<(String, Any)>,
}

/// What a run holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Insert {
    /// Characters; never empty.
    Text(String),
    /// One embedded value (counts as one character).
    Embed(Any),
}

/// How many nodes (elements and text runs) `nodes` holds, nested ones included.
pub fn count(nodes: &[XmlNode]) -> usize {
    let mut total = 0;
    let mut pending: Vec<&XmlNode> = nodes.iter().collect();
    while let Some(node) = pending.pop() {
        match node {
            XmlNode::Element(element) => {
                total += 1;
                pending.extend(element.children.iter());
            }
            XmlNode::Text(runs) => total += runs.len(),
        }
    }
    total
}
