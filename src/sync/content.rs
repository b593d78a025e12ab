//! A document's content as JSON or plain text, for readers that do not speak Yjs.
//!
//! Root types arrive from clients without a declared type (Yjs decides a root's type when a
//! program first asks for it by name), so the server infers each root's kind from what it holds,
//! the way yrs does, and renders it without declaring anything: reading never changes the
//! document.

use serde_json::{Map, Value};
use yrs::types::{AsPrelim, ToJson};
use yrs::{
    Any, ArrayRef, Doc, GetString, In, MapRef, Out, ReadTxn, TextRef, Transact, XmlElementRef,
    XmlTextRef,
};

/// Why a root could not be read as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the document has no root type named {0:?}")]
    NoSuchKey(String),
    #[error("root type {0:?} is not text")]
    NotText(String),
    /// yrs panicked reading it: its structure is inconsistent.
    #[error("the document's structure cannot be read")]
    Unreadable,
}

/// Runs a read of the document, turning a panic inside yrs (which malformed but accepted
/// structures can cause) into `fallback`: reading must never take the server down.
fn guarded<T>(fallback: T, read: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        tracing::error!("reading a document's content panicked");
        fallback
    })
}

/// Every root type as one JSON object keyed by root name, or one root's value with `key`.
pub fn to_json(doc: &Doc, key: Option<&str>) -> Result<Value, ContentError> {
    guarded(Err(ContentError::Unreadable), || {
        to_json_unguarded(doc, key)
    })
}

fn to_json_unguarded(doc: &Doc, key: Option<&str>) -> Result<Value, ContentError> {
    let txn = doc.transact();
    match key {
        Some(key) => {
            let out = root(&txn, key).ok_or_else(|| ContentError::NoSuchKey(key.to_string()))?;
            Ok(any_to_json(render(&txn, out)))
        }
        None => {
            let mut roots: Vec<(&str, Out)> = txn.root_refs().collect();
            roots.sort_by(|a, b| a.0.cmp(b.0));
            let object: Map<String, Value> = roots
                .into_iter()
                .map(|(name, out)| (name.to_string(), any_to_json(render(&txn, out))))
                .collect();
            Ok(Value::Object(object))
        }
    }
}

/// The text of root `key`; an absent root reads as empty text.
pub fn to_text(doc: &Doc, key: &str) -> Result<String, ContentError> {
    guarded(Err(ContentError::Unreadable), || {
        to_text_unguarded(doc, key)
    })
}

fn to_text_unguarded(doc: &Doc, key: &str) -> Result<String, ContentError> {
    let txn = doc.transact();
    let Some(out) = root(&txn, key) else {
        return Ok(String::new());
    };
    match out {
        Out::YText(text) => Ok(text.get_string(&txn)),
        Out::YXmlText(text) => Ok(text.get_string(&txn)),
        Out::UndefinedRef(branch) => match Out::UndefinedRef(branch).as_prelim(&txn) {
            In::Text(_) => Ok(TextRef::from(branch).get_string(&txn)),
            In::XmlText(_) => Ok(XmlTextRef::from(branch).get_string(&txn)),
            // A root with no content at all is inferred as a map, and one whose every item was
            // deleted (emptied text included) as an array: either is empty text just as well.
            In::Map(map) if map.is_empty() => Ok(String::new()),
            In::Array(items) if items.is_empty() => Ok(String::new()),
            _ => Err(ContentError::NotText(key.to_string())),
        },
        _ => Err(ContentError::NotText(key.to_string())),
    }
}

fn root<T: ReadTxn>(txn: &T, key: &str) -> Option<Out> {
    txn.root_refs()
        .find(|(name, _)| *name == key)
        .map(|(_, out)| out)
}

/// What a root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Text,
    Array,
    Map,
    Xml,
}

/// The kind of every root of `doc`, by name.
/// An unreadable document reports one XML root named `(unreadable)`, which nothing restores.
pub fn root_kinds(doc: &Doc) -> Vec<(String, RootKind)> {
    guarded(vec![("(unreadable)".into(), RootKind::Xml)], || {
        let txn = doc.transact();
        txn.root_refs()
            .map(|(name, out)| (name.to_string(), kind_of(&txn, out)))
            .collect()
    })
}

/// A root's value as yrs renders it (text as a string, arrays and maps as JSON-like values).
pub fn root_value(doc: &Doc, key: &str) -> Option<Any> {
    guarded(None, || {
        let txn = doc.transact();
        root(&txn, key).map(|out| render(&txn, out))
    })
}

fn kind_of<T: ReadTxn>(txn: &T, out: Out) -> RootKind {
    match out {
        Out::YText(_) => RootKind::Text,
        Out::YArray(_) => RootKind::Array,
        Out::YMap(_) => RootKind::Map,
        Out::UndefinedRef(branch) => match Out::UndefinedRef(branch).as_prelim(txn) {
            In::Text(_) => RootKind::Text,
            In::Array(_) => RootKind::Array,
            In::Map(_) => RootKind::Map,
            _ => RootKind::Xml,
        },
        _ => RootKind::Xml,
    }
}

/// A root's value: typed roots render themselves; undeclared ones by the kind their content
/// implies (text, array, map, XML).
fn render<T: ReadTxn>(txn: &T, out: Out) -> Any {
    match out {
        Out::UndefinedRef(branch) => match Out::UndefinedRef(branch).as_prelim(txn) {
            In::Text(_) => Any::from(TextRef::from(branch).get_string(txn)),
            In::Array(_) => ArrayRef::from(branch).to_json(txn),
            In::Map(_) => MapRef::from(branch).to_json(txn),
            In::XmlText(_) => Any::from(XmlTextRef::from(branch).get_string(txn)),
            In::XmlElement(_) => Any::from(XmlElementRef::from(branch).get_string(txn)),
            _ => Any::Null,
        },
        typed => typed.to_json(txn),
    }
}

/// yrs values as JSON: binary becomes an array of bytes, `undefined` becomes `null`.
fn any_to_json(any: Any) -> Value {
    serde_json::to_value(&any).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Map as _, Text, Update};

    /// A document as the server holds it: built only from updates, no root declared.
    fn as_received(build: impl FnOnce(&Doc)) -> Doc {
        let source = Doc::new();
        build(&source);
        let update = source
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decodes"))
            .expect("applies");
        doc
    }

    #[test]
    fn every_root_is_rendered_by_its_inferred_kind() {
        let doc = as_received(|d| {
            let text = d.get_or_insert_text("content");
            let list = d.get_or_insert_array("items");
            let meta = d.get_or_insert_map("meta");
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 0, "hello");
            list.push_back(&mut txn, 1);
            list.push_back(&mut txn, "two");
            meta.insert(&mut txn, "title", "Notes");
        });
        let json = to_json(&doc, None).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "content": "hello",
                "items": [1, "two"],
                "meta": { "title": "Notes" }
            })
        );
        assert_eq!(
            to_json(&doc, Some("meta")).expect("one root"),
            serde_json::json!({ "title": "Notes" })
        );
        assert_eq!(
            to_json(&doc, Some("nope")),
            Err(ContentError::NoSuchKey("nope".into()))
        );
    }

    #[test]
    fn text_whose_every_character_was_deleted_reads_as_empty_text() {
        let doc = as_received(|d| {
            let text = d.get_or_insert_text("content");
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 0, "a");
            text.remove_range(&mut txn, 0, 1);
        });
        assert_eq!(to_text(&doc, "content").expect("empty text"), "");
    }

    #[test]
    fn text_reads_text_roots_and_refuses_others() {
        let doc = as_received(|d| {
            let text = d.get_or_insert_text("content");
            let meta = d.get_or_insert_map("meta");
            let mut txn = d.transact_mut();
            text.insert(&mut txn, 0, "line one\nline two");
            meta.insert(&mut txn, "k", "v");
        });
        assert_eq!(
            to_text(&doc, "content").expect("text"),
            "line one\nline two"
        );
        assert_eq!(to_text(&doc, "absent").expect("empty"), "");
        assert_eq!(
            to_text(&doc, "meta"),
            Err(ContentError::NotText("meta".into()))
        );
        // Reading declared nothing: the roots are still as they arrived.
        assert!(matches!(
            root(&doc.transact(), "content"),
            Some(Out::UndefinedRef(_))
        ));
    }
}
