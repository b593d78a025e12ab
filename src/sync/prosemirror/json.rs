//! [`XmlNode`]s as ProseMirror JSON, and ProseMirror JSON checked strictly into them.
//!
//! What is accepted is what ProseMirror's `Node.toJSON` (Tiptap's `editor.getJSON()`) gives and
//! y-prosemirror can store: a `doc` of nodes `{type, attrs?, content?}` and text nodes
//! `{type: "text", text, marks?}` with marks `{type, attrs?}`. Anything else is refused with the
//! place it was found, rather than dropped: marks on a node other than text (y-prosemirror does
//! not store them), empty text, a mark twice on one text, unknown fields. Node attributes set to
//! `null` are left out, as y-prosemirror leaves them out.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};
use yrs::Any;
use yrs::any::Number;

use super::{Element, Insert, Run, XmlNode};
use crate::wire::MAX_TYPE_DEPTH;

/// Most text nodes in a row (one `XmlText`): writing one formats it mark by mark, each a walk
/// over the text so far.
pub const MAX_TEXT_RUN: usize = 1_000;
/// Most marks on one text node.
pub const MAX_MARKS: usize = 32;

/// Why ProseMirror JSON was refused: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ProseMirror JSON at {path}: {why}")]
pub struct ProsemirrorError {
    pub path: String,
    pub why: String,
}

fn refuse<T>(path: &str, why: impl Into<String>) -> Result<T, ProsemirrorError> {
    Err(ProsemirrorError {
        path: path.to_string(),
        why: why.into(),
    })
}

/// A fragment's children as y-prosemirror's `yXmlFragmentToProsemirrorJSON` renders them.
pub fn to_prosemirror(nodes: &[XmlNode]) -> Value {
    // Text right in the fragment stays a list in place of a node, as y-prosemirror has it.
    let content: Vec<Value> = nodes
        .iter()
        .map(|node| match node {
            XmlNode::Element(element) => element_json(element),
            XmlNode::Text(runs) => Value::Array(runs.iter().map(run_json).collect()),
        })
        .collect();
    json!({ "type": "doc", "content": content })
}

fn element_json(element: &Element) -> Value {
    let mut object = Map::new();
    object.insert("type".into(), Value::String(element.tag.clone()));
    if !element.attrs.is_empty() {
        let attrs = element
            .attrs
            .iter()
            .map(|(k, v)| (k.clone(), any_json(v)))
            .collect();
        object.insert("attrs".into(), Value::Object(attrs));
    }
    if !element.children.is_empty() {
        let mut content = Vec::new();
        for child in &element.children {
            match child {
                XmlNode::Element(element) => content.push(element_json(element)),
                XmlNode::Text(runs) => content.extend(runs.iter().map(run_json)),
            }
        }
        object.insert("content".into(), Value::Array(content));
    }
    Value::Object(object)
}

fn run_json(run: &Run) -> Value {
    let text = match &run.insert {
        Insert::Text(text) => Value::String(text.clone()),
        Insert::Embed(value) => any_json(value),
    };
    let mut object = Map::new();
    object.insert("type".into(), "text".into());
    object.insert("text".into(), text);
    if !run.marks.is_empty() {
        let marks = run
            .marks
            .iter()
            .map(|(name, value)| json!({ "type": mark_name(name), "attrs": any_json(value) }))
            .collect();
        object.insert("marks".into(), Value::Array(marks));
    }
    Value::Object(object)
}

/// A formatting attribute's mark name: y-prosemirror names overlapping marks `name--` and an
/// 8 character hash, and reads them without it.
fn mark_name(attribute: &str) -> &str {
    let bytes = attribute.as_bytes();
    let hashed = bytes.len() >= 10
        && &bytes[bytes.len() - 10..bytes.len() - 8] == b"--"
        && bytes[bytes.len() - 8..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if hashed {
        &attribute[..attribute.len() - 10]
    } else {
        attribute
    }
}

/// A yrs value as JSON, as a Yjs client's JSON of it reads: integral numbers without a
/// fraction, binary as a list of bytes, `undefined` as `null`.
pub(crate) fn any_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(Number::Int(i)) => Value::from(*i),
        Any::Number(Number::Float(f)) if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 => {
            Value::from(*f as i64)
        }
        Any::Number(Number::Float(f)) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_json).collect()),
        Any::Map(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), any_json(v))).collect()),
    }
}

/// A JSON value as yrs stores it. Integers beyond what a JS number holds exactly become
/// floats, as in a Yjs client (yrs would write them as BigInt, which JSON cannot carry).
pub(crate) fn json_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if i.unsigned_abs() <= (1 << 53) => Any::Number(Number::Int(i)),
            _ => Any::Number(Number::Float(n.as_f64().unwrap_or(f64::NAN))),
        },
        Value::String(s) => Any::from(s.as_str()),
        Value::Array(items) => Any::Array(items.iter().map(json_any).collect()),
        Value::Object(map) => Any::Map(std::sync::Arc::new(
            map.iter()
                .map(|(k, v)| (k.clone(), json_any(v)))
                .collect::<HashMap<_, _>>(),
        )),
    }
}

/// Checks a ProseMirror document and gives the fragment's children it describes.
pub fn parse_doc(json: &Value) -> Result<Vec<XmlNode>, ProsemirrorError> {
    let object = fields(json, "", &["type", "attrs", "content"])?;
    match object.get("type") {
        Some(Value::String(t)) if t == "doc" => {}
        _ => return refuse("type", r#"the top node must be {"type": "doc", ..}"#),
    }
    match object.get("attrs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(attrs)) if attrs.values().all(Value::is_null) => {}
        Some(_) => return refuse("attrs", "the doc node's attributes are not stored"),
    }
    content(object.get("content"), "content", 2)
}

/// `value` as an object with no other fields than `allowed`.
fn fields<'a>(
    value: &'a Value,
    path: &str,
    allowed: &[&str],
) -> Result<&'a Map<String, Value>, ProsemirrorError> {
    let here = if path.is_empty() { "the top" } else { path };
    let Value::Object(object) = value else {
        return refuse(here, "a node must be a JSON object");
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return refuse(here, format!("unknown field {unknown:?}"));
    }
    Ok(object)
}

/// A node's `content`: nodes `depth` deep (the fragment's children are two deep, counting the
/// fragment as one, as [`MAX_TYPE_DEPTH`] does). Text nodes in a row make one text.
fn content(
    value: Option<&Value>,
    path: &str,
    depth: usize,
) -> Result<Vec<XmlNode>, ProsemirrorError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return refuse(path, "content must be a list of nodes"),
    };
    if depth > MAX_TYPE_DEPTH && !items.is_empty() {
        return refuse(
            path,
            format!("nodes nest deeper than {MAX_TYPE_DEPTH} levels"),
        );
    }
    let mut nodes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let is_text = matches!(item.get("type"), Some(Value::String(t)) if t == "text");
        if is_text {
            let run = text(item, &path)?;
            match nodes.last_mut() {
                Some(XmlNode::Text(runs)) if runs.len() >= MAX_TEXT_RUN => {
                    return refuse(
                        &path,
                        format!("more than {MAX_TEXT_RUN} text nodes in a row"),
                    );
                }
                Some(XmlNode::Text(runs)) => runs.push(run),
                _ => nodes.push(XmlNode::Text(vec![run])),
            }
        } else {
            nodes.push(XmlNode::Element(element(item, &path, depth)?));
        }
    }
    Ok(nodes)
}

fn element(value: &Value, path: &str, depth: usize) -> Result<Element, ProsemirrorError> {
    let object = fields(value, path, &["type", "attrs", "content", "marks"])?;
    let tag = match object.get("type") {
        Some(Value::String(tag)) if !tag.is_empty() => tag.clone(),
        _ => return refuse(path, r#""type" must be a non-empty string"#),
    };
    match object.get("marks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(marks)) if marks.is_empty() => {}
        Some(_) => {
            return refuse(
                &format!("{path}.marks"),
                "marks on a node other than text are not stored by y-prosemirror",
            );
        }
    }
    let attrs = match object.get("attrs") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(attrs)) => attrs
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), json_any(v)))
            .collect(),
        Some(_) => return refuse(&format!("{path}.attrs"), "attrs must be an object"),
    };
    let children = content(object.get("content"), &format!("{path}.content"), depth + 1)?;
    Ok(Element {
        tag,
        attrs,
        children,
    })
}

fn text(value: &Value, path: &str) -> Result<Run, ProsemirrorError> {
    let object = fields(value, path, &["type", "text", "marks"])?;
    let text = match object.get("text") {
        Some(Value::String(text)) if !text.is_empty() => text.clone(),
        _ => return refuse(path, r#"a text node needs a non-empty string "text""#),
    };
    let marks = match object.get("marks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(marks)) if marks.len() > MAX_MARKS => {
            return refuse(
                &format!("{path}.marks"),
                format!("more than {MAX_MARKS} marks"),
            );
        }
        Some(Value::Array(marks)) => {
            let mut parsed: Vec<(String, Any)> = Vec::with_capacity(marks.len());
            for (i, mark) in marks.iter().enumerate() {
                let path = format!("{path}.marks[{i}]");
                let (name, attrs) = self::mark(mark, &path)?;
                if parsed.iter().any(|(n, _)| *n == name) {
                    return refuse(&path, format!("mark {name:?} appears twice"));
                }
                parsed.push((name, attrs));
            }
            parsed
        }
        Some(_) => return refuse(&format!("{path}.marks"), "marks must be a list"),
    };
    Ok(Run {
        insert: Insert::Text(text),
        marks,
    })
}

fn mark(value: &Value, path: &str) -> Result<(String, Any), ProsemirrorError> {
    let object = fields(value, path, &["type", "attrs"])?;
    let name = match object.get("type") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => return refuse(path, r#""type" must be a non-empty string"#),
    };
    // y-prosemirror stores a mark's attrs as they are, `{}` for none.
    let attrs = match object.get("attrs") {
        None | Some(Value::Null) => Any::Map(Default::default()),
        Some(attrs @ Value::Object(_)) => json_any(attrs),
        Some(_) => return refuse(&format!("{path}.attrs"), "attrs must be an object"),
    };
    Ok((name, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(json: Value) -> String {
        parse_doc(&json).expect_err("refused").to_string()
    }

    #[test]
    fn a_tiptap_document_round_trips() {
        let doc = json!({"type": "doc", "content": [
            {"type": "heading", "attrs": {"level": 1, "id": null}, "content": [
                {"type": "text", "text": "Plan"}
            ]},
            {"type": "bulletList", "content": [
                {"type": "listItem", "content": [
                    {"type": "paragraph", "content": [
                        {"type": "text", "text": "bold ", "marks": [{"type": "bold"}]},
                        {"type": "text", "text": "link", "marks": [
                            {"type": "bold"},
                            {"type": "link", "attrs": {"href": "https://a.example", "target": null}}
                        ]}
                    ]}
                ]}
            ]},
            {"type": "paragraph"}
        ]});
        let nodes = parse_doc(&doc).expect("valid");
        // `null` attributes are left out, and marks without attrs get `{}`.
        assert_eq!(
            to_prosemirror(&nodes),
            json!({"type": "doc", "content": [
                {"type": "heading", "attrs": {"level": 1}, "content": [
                    {"type": "text", "text": "Plan"}
                ]},
                {"type": "bulletList", "content": [
                    {"type": "listItem", "content": [
                        {"type": "paragraph", "content": [
                            {"type": "text", "text": "bold ", "marks": [{"type": "bold", "attrs": {}}]},
                            {"type": "text", "text": "link", "marks": [
                                {"type": "bold", "attrs": {}},
                                {"type": "link", "attrs": {"href": "https://a.example", "target": null}}
                            ]}
                        ]}
                    ]}
                ]},
                {"type": "paragraph"}
            ]})
        );
        let XmlNode::Element(list) = &nodes[1] else {
            panic!("an element")
        };
        let XmlNode::Element(item) = &list.children[0] else {
            panic!("an element")
        };
        let XmlNode::Element(paragraph) = &item.children[0] else {
            panic!("an element")
        };
        // Both text nodes are one XmlText.
        assert!(matches!(&paragraph.children[..], [XmlNode::Text(runs)] if runs.len() == 2));
    }

    #[test]
    fn bad_shapes_are_refused_with_their_place() {
        let cases = [
            (json!([]), "the top"),
            (json!({"type": "paragraph"}), "the top node must be"),
            (
                json!({"type": "doc", "content": {}}),
                "content must be a list",
            ),
            (
                json!({"type": "doc", "content": [{"type": ""}]}),
                "content[0]",
            ),
            (
                json!({"type": "doc", "content": [{"type": "p", "text": "x"}]}),
                "unknown field \"text\"",
            ),
            (
                json!({"type": "doc", "content": [{"type": "text", "text": ""}]}),
                "non-empty string \"text\"",
            ),
            (
                json!({"type": "doc", "content": [{"type": "text", "text": "a", "marks": [{"type": "b"}, {"type": "b"}]}]}),
                "content[0].marks[1]: mark \"b\" appears twice",
            ),
            (
                json!({"type": "doc", "content": [{"type": "text", "text": "a", "marks": [{"type": "b", "attrs": true}]}]}),
                "marks[0].attrs",
            ),
            (
                json!({"type": "doc", "content": [{"type": "image", "marks": [{"type": "link"}]}]}),
                "content[0].marks",
            ),
            (
                json!({"type": "doc", "content": [{"type": "p", "attrs": [1]}]}),
                "attrs must be an object",
            ),
            (
                json!({"type": "doc", "attrs": {"x": 1}}),
                "doc node's attributes",
            ),
            (
                json!({"type": "doc", "content": [{"type": "p", "content": [7]}]}),
                "content[0].content[0]",
            ),
        ];
        for (json, expected) in cases {
            let message = refused(json.clone());
            assert!(message.contains(expected), "{json}: {message}");
        }
    }

    #[test]
    fn nesting_and_runs_are_bounded() {
        let mut node = json!({"type": "p"});
        for _ in 0..MAX_TYPE_DEPTH {
            node = json!({"type": "div", "content": [node]});
        }
        assert!(refused(json!({"type": "doc", "content": [node]})).contains("nest deeper"));

        let runs: Vec<Value> = (0..=MAX_TEXT_RUN)
            .map(|i| json!({"type": "text", "text": "x", "marks": [{"type": format!("m{}", i % 2)}]}))
            .collect();
        assert!(
            refused(json!({"type": "doc", "content": [{"type": "p", "content": runs}]}))
                .contains("text nodes in a row")
        );
    }

    #[test]
    fn values_convert_as_a_yjs_client_reads_them() {
        assert_eq!(any_json(&Any::from(2.0)), json!(2));
        assert_eq!(any_json(&Any::from(2.5)), json!(2.5));
        assert_eq!(json_any(&json!(3)), Any::Number(Number::Int(3)));
        assert!(matches!(
            json_any(&json!(u64::MAX)),
            Any::Number(Number::Float(_))
        ));
        assert_eq!(mark_name("link--abcdEF12"), "link");
        assert_eq!(mark_name("link--abc"), "link--abc");
        assert_eq!(mark_name("ä--abcdEF1="), "ä");
    }
}
