//! Making a fragment's content equal to given [`XmlNode`]s, in one transaction (one update).
//!
//! The children both have alike at the start and at the end are kept; those between are
//! deleted and the new ones inserted in their place, so an edit of one paragraph leaves the
//! others (and the cursors in them) alone. Text is inserted plain and then formatted mark by
//! mark, in reverse name order: each formatting attribute goes in before those already there,
//! so marks that begin together are listed by name, by a Yjs client as by the server's own
//! reader (which cannot see their order, see [`super`]). ProseMirror orders a node's marks by
//! its schema in any case.

use std::sync::Arc;

use yrs::types::Attrs;
use yrs::{
    Doc, OffsetKind, Text, Transact, TransactionMut, Xml, XmlElementPrelim, XmlElementRef,
    XmlFragment, XmlFragmentRef, XmlTextPrelim, XmlTextRef,
};

use super::{Element, Insert, Run, XmlNode, read};
use crate::sync::survey::{self, ContentError};

/// Makes fragment root `key` of `doc` hold `nodes`; returns the v1 update made (none if it held
/// them already). A root that does not exist is created; one that holds something other than a
/// fragment is refused, changing nothing.
pub fn replace_fragment(
    doc: &Doc,
    key: &str,
    nodes: &[XmlNode],
) -> Result<Vec<Vec<u8>>, ContentError> {
    let live = match read::read_fragment(doc, key) {
        Ok(live) => live,
        Err(ContentError::NoSuchKey(_)) if nodes.is_empty() => return Ok(Vec::new()),
        Err(ContentError::NoSuchKey(_)) => Vec::new(),
        Err(error) => return Err(error),
    };
    let kept_front = live.iter().zip(nodes).take_while(|(a, b)| a == b).count();
    let kept_back = live[kept_front..]
        .iter()
        .rev()
        .zip(nodes[kept_front..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    let removed = live.len() - kept_front - kept_back;
    let inserted = &nodes[kept_front..nodes.len() - kept_back];
    if removed == 0 && inserted.is_empty() {
        return Ok(Vec::new());
    }
    // The root as it is, so as not to declare a type for a root clients made (a declared root
    // would render differently from the same one reloaded); a new root must be declared.
    let existing = survey::root(&doc.transact(), key).and_then(|out| survey::branch_of(&out));
    let fragment = match existing {
        Some(branch) => XmlFragmentRef::from(branch),
        None => doc.get_or_insert_xml_fragment(key),
    };
    let units = doc.offset_kind();
    let mut txn = doc.transact_mut();
    if removed > 0 {
        fragment.remove_range(&mut txn, kept_front as u32, removed as u32);
    }
    for (i, node) in inserted.iter().enumerate() {
        insert(&mut txn, &fragment, (kept_front + i) as u32, node, units);
    }
    Ok(vec![txn.encode_update_v1()])
}

/// Inserts `node` at `index` of `parent`. Recursion is bounded: nodes come from a check
/// ([`super::parse_doc`]) or a read ([`survey::survey`]) that bounds their nesting.
fn insert<P: XmlFragment>(
    txn: &mut TransactionMut,
    parent: &P,
    index: u32,
    node: &XmlNode,
    units: OffsetKind,
) {
    match node {
        XmlNode::Element(element) => {
            let made: XmlElementRef =
                parent.insert(txn, index, XmlElementPrelim::empty(element.tag.as_str()));
            fill(txn, &made, element, units);
        }
        XmlNode::Text(runs) => {
            let made: XmlTextRef = parent.insert(txn, index, XmlTextPrelim::new(""));
            write_runs(txn, &made, runs, units);
        }
    }
}

fn fill(txn: &mut TransactionMut, made: &XmlElementRef, element: &Element, units: OffsetKind) {
    for (name, value) in &element.attrs {
        made.insert_attribute(txn, name.as_str(), value.clone());
    }
    for (i, child) in element.children.iter().enumerate() {
        insert(txn, made, i as u32, child, units);
    }
}

fn write_runs(txn: &mut TransactionMut, text: &XmlTextRef, runs: &[Run], units: OffsetKind) {
    let mut spans = Vec::with_capacity(runs.len());
    let mut at = 0u32;
    for run in runs {
        let len = match &run.insert {
            Insert::Text(s) if s.is_empty() => continue,
            Insert::Text(s) => {
                text.insert(txn, at, s);
                length(s, units)
            }
            Insert::Embed(value) => {
                text.insert_embed(txn, at, value.clone());
                1
            }
        };
        spans.push((at, len, &run.marks));
        at += len;
    }
    for (at, len, marks) in spans {
        let mut marks: Vec<&(String, yrs::Any)> = marks.iter().collect();
        marks.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, value) in marks.into_iter().rev() {
            let attrs: Attrs = [(Arc::<str>::from(name.as_str()), value.clone())].into();
            text.format(txn, at, len, attrs);
        }
    }
}

/// `s`'s length in the units the document counts text in.
fn length(s: &str, units: OffsetKind) -> u32 {
    let n = match units {
        OffsetKind::Bytes => s.len(),
        OffsetKind::Utf16 => s.encode_utf16().count(),
    };
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::prosemirror::{parse_doc, read_fragment, to_json};
    use crate::sync::test_support::{server_copy as copy, server_doc};
    use serde_json::json;
    use yrs::updates::decoder::Decode;
    use yrs::{ReadTxn, Update};

    fn rich() -> serde_json::Value {
        json!({"type": "doc", "content": [
            {"type": "heading", "attrs": {"level": 2}, "content": [
                {"type": "text", "text": "Ünïcode 🎉 title"}
            ]},
            {"type": "paragraph", "content": [
                {"type": "text", "text": "plain "},
                {"type": "text", "text": "both", "marks": [
                    {"type": "bold", "attrs": {}}, {"type": "italic", "attrs": {}}
                ]},
                {"type": "text", "text": " link", "marks": [
                    {"type": "link", "attrs": {"href": "https://x.example"}}
                ]}
            ]},
            {"type": "orderedList", "attrs": {"start": 3}, "content": [
                {"type": "listItem", "content": [
                    {"type": "paragraph", "content": [{"type": "text", "text": "one"}]},
                    {"type": "bulletList", "content": [
                        {"type": "listItem", "content": [{"type": "paragraph"}]}
                    ]}
                ]}
            ]}
        ]})
    }

    #[test]
    fn what_is_written_reads_back_the_same_here_and_in_a_copy() {
        let doc = server_doc();
        let nodes = parse_doc(&rich()).expect("valid");
        let updates = replace_fragment(&doc, "default", &nodes).expect("written");
        assert_eq!(updates.len(), 1);
        assert_eq!(to_json(&doc, "default").expect("reads"), rich());
        // A peer given only the update reads the same, marks in the order given.
        let peer = server_doc();
        peer.transact_mut()
            .apply_update(Update::decode_v1(&updates[0]).expect("decodes"))
            .expect("applies");
        assert_eq!(to_json(&peer, "default").expect("reads"), rich());
        assert_eq!(to_json(&copy(&doc), "default").expect("reads"), rich());
        // Writing the same again changes nothing.
        assert!(
            replace_fragment(&doc, "default", &nodes)
                .expect("ok")
                .is_empty()
        );
    }

    #[test]
    fn a_replace_keeps_the_children_that_did_not_change() {
        let doc = server_doc();
        let before = parse_doc(&rich()).expect("valid");
        replace_fragment(&doc, "default", &before).expect("written");
        let mut changed = rich();
        changed["content"][1]["content"][0]["text"] = json!("changed ");
        let after = parse_doc(&changed).expect("valid");
        let sv = doc.transact().state_vector();
        let updates = replace_fragment(&doc, "default", &after).expect("written");
        assert_eq!(to_json(&doc, "default").expect("reads"), changed);
        // Only the paragraph was rewritten: the update deletes one child of the fragment.
        let update = Update::decode_v1(&updates[0]).expect("decodes");
        assert_eq!(update.delete_set().len(), 1);
        let peer = copy(&doc);
        assert_eq!(
            read_fragment(&peer, "default"),
            read_fragment(&doc, "default")
        );
        assert!(doc.transact().state_vector() != sv);
    }

    #[test]
    fn marks_that_begin_together_are_written_by_name() {
        let doc = server_doc();
        let given = json!({"type": "doc", "content": [{"type": "paragraph", "content": [
            {"type": "text", "text": "a", "marks": [{"type": "strike"}]},
            {"type": "text", "text": "b", "marks": [
                {"type": "strike"}, {"type": "link", "attrs": {"href": "h"}}, {"type": "bold"}
            ]}
        ]}]});
        let nodes = parse_doc(&given).expect("valid");
        replace_fragment(&doc, "default", &nodes).expect("written");
        // `strike` goes on from the first run and keeps its place; the two that begin at the
        // second come after it, by name.
        let json = to_json(&copy(&doc), "default").expect("reads");
        let names: Vec<&str> = json["content"][0]["content"][1]["marks"]
            .as_array()
            .expect("marks")
            .iter()
            .filter_map(|m| m["type"].as_str())
            .collect();
        assert_eq!(names, ["strike", "bold", "link"]);
    }

    #[test]
    fn a_root_of_another_kind_is_refused_and_left_alone() {
        let doc = server_doc();
        let text = doc.get_or_insert_text("notes");
        text.insert(&mut doc.transact_mut(), 0, "plain");
        let nodes = parse_doc(&rich()).expect("valid");
        assert_eq!(
            replace_fragment(&doc, "notes", &nodes),
            Err(ContentError::NotXml("notes".into()))
        );
        assert_eq!(text.get_string(&doc.transact()), "plain");
        // Emptying a root that does not exist declares nothing.
        assert!(
            replace_fragment(&doc, "absent", &[])
                .expect("ok")
                .is_empty()
        );
        assert!(doc.transact().get_xml_fragment("absent").is_none());
    }

    use yrs::GetString;
}
