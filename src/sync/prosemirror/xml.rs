//! A fragment as the XML string a Yjs client's `XmlFragment.toString()` gives, for the JSON view
//! of a document (`GET /content`).
//!
//! yrs renders XML by walking hash maps, so the same document could read differently live and
//! after a reload; this renders the [`XmlNode`]s the way Yjs does, in a fixed order: element
//! names in lower case, attributes sorted by name, a text run's formatting as nested elements
//! sorted by name (their attributes sorted too), values as JavaScript's `String()` writes them.

use std::fmt::Write;

use yrs::Any;
use yrs::any::Number;

use super::{Insert, XmlNode};

/// `nodes` as Yjs's `toString()` of the fragment holding them.
pub fn to_xml_string(nodes: &[XmlNode]) -> String {
    let mut out = String::new();
    write_nodes(&mut out, nodes);
    out
}

/// Nesting is bounded by the read that made `nodes`.
fn write_nodes(out: &mut String, nodes: &[XmlNode]) {
    for node in nodes {
        match node {
            XmlNode::Element(element) => {
                let tag = element.tag.to_lowercase();
                out.push('<');
                out.push_str(&tag);
                // `attrs` is sorted by name already.
                for (name, value) in &element.attrs {
                    let _ = write!(out, " {name}=\"{}\"", js_string(value));
                }
                out.push('>');
                write_nodes(out, &element.children);
                let _ = write!(out, "</{tag}>");
            }
            XmlNode::Text(runs) => {
                for run in runs {
                    let mut marks: Vec<&(String, Any)> = run.marks.iter().collect();
                    marks.sort_by(|a, b| a.0.cmp(&b.0));
                    for (name, value) in &marks {
                        out.push('<');
                        out.push_str(name);
                        for (key, value) in js_entries(value) {
                            let _ = write!(out, " {key}=\"{}\"", js_string(&value));
                        }
                        out.push('>');
                    }
                    match &run.insert {
                        Insert::Text(text) => out.push_str(text),
                        Insert::Embed(value) => out.push_str(&js_string(value)),
                    }
                    for (name, _) in marks.iter().rev() {
                        let _ = write!(out, "</{name}>");
                    }
                }
            }
        }
    }
}

/// What JavaScript's `for (key in value)` visits, sorted by key: an object's entries, a list's
/// indices; nothing for other values (a string's characters are left out).
fn js_entries(value: &Any) -> Vec<(String, Any)> {
    let mut entries: Vec<(String, Any)> = match value {
        Any::Map(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Any::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v.clone()))
            .collect(),
        _ => Vec::new(),
    };
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// `value` as JavaScript's `String(value)` writes it.
fn js_string(value: &Any) -> String {
    match value {
        Any::Null => "null".into(),
        Any::Undefined => "undefined".into(),
        Any::Bool(b) => b.to_string(),
        Any::Number(Number::Int(i)) => i.to_string(),
        Any::Number(Number::Float(f)) if f.is_nan() => "NaN".into(),
        Any::Number(Number::Float(f)) if f.is_infinite() => {
            if *f > 0.0 { "Infinity" } else { "-Infinity" }.into()
        }
        Any::Number(Number::Float(f)) => f.to_string(),
        Any::String(s) => s.to_string(),
        // A Uint8Array and a list join their elements with commas; null and undefined as ''.
        Any::Buffer(bytes) => bytes
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(","),
        Any::Array(items) => items
            .iter()
            .map(|v| match v {
                Any::Null | Any::Undefined => String::new(),
                v => js_string(v),
            })
            .collect::<Vec<_>>()
            .join(","),
        Any::Map(_) => "[object Object]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::prosemirror::parse_doc;
    use serde_json::json;

    #[test]
    fn the_json_view_of_a_fragment_is_the_same_declared_or_not() {
        use crate::sync::content::{self, RootKind};
        use yrs::updates::decoder::Decode;
        use yrs::{Doc, ReadTxn, StateVector, Transact, Update};
        let nodes = parse_doc(&json!({"type": "doc", "content": [
            {"type": "p", "attrs": {"a": 1, "b": 2, "c": 3}, "content": [
                {"type": "text", "text": "x", "marks": [{"type": "m", "attrs": {"k": 1, "j": 2}}]}
            ]}
        ]}))
        .expect("valid");
        let declared = Doc::new();
        crate::sync::prosemirror::replace_fragment(&declared, "default", &nodes).expect("ok");
        let state = declared
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let reloaded = Doc::new();
        reloaded
            .transact_mut()
            .apply_update(Update::decode_v1(&state).expect("decodes"))
            .expect("applies");
        let expected =
            json!({"default": "<p a=\"1\" b=\"2\" c=\"3\"><m j=\"2\" k=\"1\">x</m></p>"});
        for doc in [&declared, &reloaded] {
            assert_eq!(content::to_json(doc, None), Ok(expected.clone()));
            assert_eq!(
                content::root_kinds(doc),
                vec![("default".to_string(), RootKind::Xml)]
            );
        }
    }

    #[test]
    fn elements_and_formatting_render_as_yjs_writes_them() {
        let nodes = parse_doc(&json!({"type": "doc", "content": [
            {"type": "Heading", "attrs": {"level": 1, "align": "left"}, "content": [
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b", "marks": [
                    {"type": "link", "attrs": {"target": "_blank", "href": "h"}},
                    {"type": "bold"}
                ]}
            ]},
            {"type": "image", "attrs": {"size": [1, 2], "meta": {"k": 1}, "ratio": 1.5}}
        ]}))
        .expect("valid");
        assert_eq!(
            to_xml_string(&nodes),
            "<heading align=\"left\" level=\"1\">a<bold><link href=\"h\" target=\"_blank\">b\
             </link></bold></heading><image meta=\"[object Object]\" ratio=\"1.5\" \
             size=\"1,2\"></image>"
        );
    }
}
