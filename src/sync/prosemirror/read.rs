//! Reading a fragment root into [`XmlNode`]s, guarded the way every content read is
//! ([`survey::survey`] first, yrs's panics caught).
//!
//! A root that clients created arrives without a type (Yjs does not send one), and yrs infers a
//! list of XML elements as an array. So a root counts as a fragment by what it holds: declared
//! a fragment (or element), or undeclared with only XML elements and XML text in its list.

use std::sync::Arc;

use serde_json::Value;
use yrs::branch::BranchPtr;
use yrs::types::text::YChange;
use yrs::types::{Attrs, TypeRef};
use yrs::{Any, Array, ArrayRef, Doc, Map as _, MapRef, Out, ReadTxn, Text, Transact, Xml};

use super::{Element, Insert, Run, XmlNode, to_prosemirror};
use crate::sync::survey::{self, ContentError, Survey};

/// The children of fragment root `key`.
pub fn read_fragment(doc: &Doc, key: &str) -> Result<Vec<XmlNode>, ContentError> {
    survey::guarded(Err(ContentError::Unreadable), || {
        let txn = doc.transact();
        let out =
            survey::root(&txn, key).ok_or_else(|| ContentError::NoSuchKey(key.to_string()))?;
        fragment_of(&txn, &out, key)
    })
}

/// Fragment root `key` as ProseMirror JSON.
pub fn to_json(doc: &Doc, key: &str) -> Result<Value, ContentError> {
    read_fragment(doc, key).map(|nodes| to_prosemirror(&nodes))
}

/// Whether root `out` holds a fragment (see the module's doc), without reading it.
pub(crate) fn is_fragment<T: ReadTxn>(txn: &T, out: &Out) -> bool {
    survey::branch_of(out).is_some_and(|branch| {
        survey::survey(txn, branch) == Survey::Readable && holds_fragment(txn, branch)
    })
}

/// The children of the root `out` (named `key`), if it holds a fragment.
pub(crate) fn fragment_of<T: ReadTxn>(
    txn: &T,
    out: &Out,
    key: &str,
) -> Result<Vec<XmlNode>, ContentError> {
    let not_xml = || ContentError::NotXml(key.to_string());
    let branch = survey::branch_of(out).ok_or_else(not_xml)?;
    match survey::survey(txn, branch) {
        Survey::Readable => {}
        Survey::TextOnly { .. } => return Err(not_xml()),
        Survey::Unreadable => return Err(ContentError::Unreadable),
    }
    if !holds_fragment(txn, branch) {
        return Err(not_xml());
    }
    children(txn, branch)
}

fn holds_fragment<T: ReadTxn>(txn: &T, branch: BranchPtr) -> bool {
    match branch.type_ref() {
        TypeRef::XmlFragment | TypeRef::XmlElement(_) => true,
        // An undeclared root of XML children; one with nothing in it reads as an empty
        // fragment, one with only map entries is a map.
        TypeRef::Undefined | TypeRef::Array => {
            let mut items = ArrayRef::from(branch).iter(txn).peekable();
            if items.peek().is_none() {
                return MapRef::from(branch).len(txn) == 0;
            }
            items.all(|out| matches!(out, Out::YXmlElement(_) | Out::YXmlText(_)))
        }
        _ => false,
    }
}

/// The XML children of `branch`; anything else among them makes it unreadable. Nesting is
/// bounded: [`survey::survey`] checked it.
fn children<T: ReadTxn>(txn: &T, branch: BranchPtr) -> Result<Vec<XmlNode>, ContentError> {
    ArrayRef::from(branch)
        .iter(txn)
        .map(|out| match out {
            Out::YXmlElement(element) => {
                let tag = element.try_tag().ok_or(ContentError::Unreadable)?;
                let mut attrs = std::collections::BTreeMap::new();
                for (name, value) in element.attributes(txn) {
                    match value {
                        Out::Any(value) => attrs.insert(name.to_string(), value),
                        // A shared type as an attribute value: no editor makes one.
                        _ => return Err(ContentError::Unreadable),
                    };
                }
                Ok(XmlNode::Element(Element {
                    tag: tag.to_string(),
                    attrs,
                    children: children(
                        txn,
                        BranchPtr::from(AsRef::<yrs::branch::Branch>::as_ref(&element)),
                    )?,
                }))
            }
            Out::YXmlText(text) => runs(text.diff(txn, YChange::identity)).map(XmlNode::Text),
            _ => Err(ContentError::Unreadable),
        })
        .collect()
}

/// The runs of an `XmlText` from its delta. A Yjs client lists a run's formatting attributes in
/// the order they were set walking from the start (a JS `Map`): one that goes on keeps its
/// place, one that ends leaves it, one that begins comes last. Of several beginning at once the
/// delta does not tell the order; they are taken by name.
fn runs(delta: Vec<yrs::types::text::Diff<YChange>>) -> Result<Vec<Run>, ContentError> {
    let mut order: Vec<Arc<str>> = Vec::new();
    let mut runs = Vec::with_capacity(delta.len());
    for chunk in delta {
        let insert = match chunk.insert {
            Out::Any(Any::String(text)) if text.is_empty() => continue,
            Out::Any(Any::String(text)) => Insert::Text(text.to_string()),
            Out::Any(value) => Insert::Embed(value),
            // A shared type embedded in the text: no editor makes one.
            _ => return Err(ContentError::Unreadable),
        };
        let attrs: Attrs = chunk.attributes.map(|a| *a).unwrap_or_default();
        order.retain(|name| attrs.contains_key(name));
        let mut begun: Vec<&Arc<str>> = attrs.keys().filter(|k| !order.contains(k)).collect();
        begun.sort();
        order.extend(begun.into_iter().cloned());
        let marks = order
            .iter()
            .filter_map(|name| Some((name.to_string(), attrs.get(name)?.clone())))
            .collect();
        runs.push(Run { insert, marks });
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::prosemirror::to_prosemirror;
    use crate::sync::test_support::as_received;
    use serde_json::json;

    use yrs::{XmlElementPrelim, XmlFragment, XmlTextPrelim, XmlTextRef};

    fn attrs(pairs: &[(&str, Any)]) -> Attrs {
        pairs
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.clone()))
            .collect()
    }

    fn empty_map() -> Any {
        Any::Map(Default::default())
    }

    #[test]
    fn a_fragment_reads_as_y_prosemirror_gives_it() {
        let doc = as_received(|d| {
            let fragment = d.get_or_insert_xml_fragment("default");
            let mut txn = d.transact_mut();
            let heading = fragment.push_back(&mut txn, XmlElementPrelim::empty("heading"));
            heading.insert_attribute(&mut txn, "level", Any::from(2));
            let text: XmlTextRef = heading.push_back(&mut txn, XmlTextPrelim::new("Title"));
            text.format(&mut txn, 0, 5, attrs(&[("bold", empty_map())]));
            let paragraph = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let text: XmlTextRef = paragraph.push_back(&mut txn, XmlTextPrelim::new(""));
            text.insert(&mut txn, 0, "see ");
            let link = Any::from(std::collections::HashMap::from([(
                "href".to_string(),
                Any::from("https://example.com"),
            )]));
            text.insert_with_attributes(&mut txn, 4, "here", attrs(&[("link", link)]));
            fragment.push_back(&mut txn, XmlElementPrelim::empty("horizontalRule"));
        });
        assert_eq!(
            to_json(&doc, "default").expect("reads"),
            json!({"type": "doc", "content": [
                {"type": "heading", "attrs": {"level": 2}, "content": [
                    {"type": "text", "text": "Title", "marks": [{"type": "bold", "attrs": {}}]}
                ]},
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "see "},
                    {"type": "text", "text": "here", "marks": [
                        {"type": "link", "attrs": {"href": "https://example.com"}}
                    ]}
                ]},
                {"type": "horizontalRule"}
            ]})
        );
        // Reading declared nothing.
        assert!(matches!(
            survey::root(&doc.transact(), "default"),
            Some(Out::UndefinedRef(_))
        ));
    }

    #[test]
    fn marks_keep_the_order_they_began_in() {
        let doc = as_received(|d| {
            let fragment = d.get_or_insert_xml_fragment("default");
            let mut txn = d.transact_mut();
            let p = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let text: XmlTextRef = p.push_back(&mut txn, XmlTextPrelim::new("abc"));
            // `italic` covers all three, `bold` begins at the second: bold comes after italic
            // although it sorts first, and `true` as a value is the mark's attrs.
            text.format(&mut txn, 0, 3, attrs(&[("italic", empty_map())]));
            text.format(&mut txn, 1, 2, attrs(&[("bold", Any::Bool(true))]));
        });
        let json = to_json(&doc, "default").expect("reads");
        assert_eq!(
            json["content"][0]["content"],
            json!([
                {"type": "text", "text": "a", "marks": [{"type": "italic", "attrs": {}}]},
                {"type": "text", "text": "bc", "marks": [
                    {"type": "italic", "attrs": {}}, {"type": "bold", "attrs": true}
                ]}
            ])
        );
    }

    #[test]
    fn hashed_mark_names_and_text_at_the_top_read_as_y_prosemirror_does() {
        let doc = as_received(|d| {
            let fragment = d.get_or_insert_xml_fragment("default");
            let mut txn = d.transact_mut();
            let text: XmlTextRef = fragment.push_back(&mut txn, XmlTextPrelim::new("x"));
            text.format(&mut txn, 0, 1, attrs(&[("comment--a1B2+/=9", empty_map())]));
            let p = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            // An empty text keeps `content`, holding nothing.
            p.push_back(&mut txn, XmlTextPrelim::new(""));
        });
        assert_eq!(
            to_json(&doc, "default").expect("reads"),
            json!({"type": "doc", "content": [
                [{"type": "text", "text": "x", "marks": [{"type": "comment", "attrs": {}}]}],
                {"type": "paragraph", "content": []}
            ]})
        );
    }

    #[test]
    fn other_roots_are_not_fragments_and_absent_ones_are_missing() {
        let doc = as_received(|d| {
            let text = d.get_or_insert_text("content");
            let list = d.get_or_insert_array("list");
            let meta = d.get_or_insert_map("meta");
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 0, "plain");
            list.push_back(&mut txn, 1);
            meta.insert(&mut txn, "k", "v");
        });
        for key in ["content", "list", "meta"] {
            assert_eq!(
                read_fragment(&doc, key),
                Err(ContentError::NotXml(key.into()))
            );
        }
        assert_eq!(
            read_fragment(&doc, "default"),
            Err(ContentError::NoSuchKey("default".into()))
        );
        let _ = to_prosemirror(&[]);
    }

    #[test]
    fn a_fragment_holding_other_values_is_unreadable() {
        let doc = as_received(|d| {
            let fragment = d.get_or_insert_xml_fragment("default");
            let mut txn = d.transact_mut();
            let p = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let text: XmlTextRef = p.push_back(&mut txn, XmlTextPrelim::new("a"));
            text.insert_embed(&mut txn, 1, yrs::ArrayPrelim::default());
        });
        assert_eq!(
            read_fragment(&doc, "default"),
            Err(ContentError::Unreadable)
        );
    }
}
