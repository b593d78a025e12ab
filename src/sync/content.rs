//! A document's content as JSON or plain text, for readers that do not speak Yjs.
//!
//! Root types arrive from clients without a declared type (Yjs decides a root's type when a
//! program first asks for it by name), so the server infers each root's kind from what it holds,
//! the way yrs does, and renders it without declaring anything: reading never changes the
//! document. Every read surveys the branch first ([`super::survey`]).

use serde_json::{Map, Value};
use yrs::types::{AsPrelim, ToJson};
use yrs::{
    Any, ArrayRef, Doc, GetString, In, MapRef, Out, ReadTxn, TextRef, Transact, XmlElementRef,
    XmlTextRef,
};

use super::prosemirror;
pub use super::survey::ContentError;
use super::survey::{Survey, branch_of, guarded, root, survey, text_only};

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
            render(&txn, out).map(any_to_json)
        }
        None => {
            let mut roots: Vec<(&str, Out)> = txn.root_refs().collect();
            roots.sort_by(|a, b| a.0.cmp(b.0));
            let mut object = Map::new();
            for (name, out) in roots {
                object.insert(name.to_string(), any_to_json(render(&txn, out)?));
            }
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
    let Some(branch) = branch_of(&out) else {
        return Err(ContentError::NotText(key.to_string()));
    };
    match survey(&txn, branch) {
        Survey::TextOnly { attributes } => return Ok(text_only(&txn, branch, attributes)),
        Survey::Unreadable => return Err(ContentError::Unreadable),
        Survey::Readable => {}
    }
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

/// What a root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    Text,
    Array,
    Map,
    Xml,
    /// Nothing the server can read ([`ContentError::Unreadable`]).
    Unreadable,
}

/// The kind of every root of `doc`, by name.
/// An unreadable document reports one unreadable root named `(unreadable)`.
pub fn root_kinds(doc: &Doc) -> Vec<(String, RootKind)> {
    guarded(vec![("(unreadable)".into(), RootKind::Unreadable)], || {
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
        root(&txn, key).and_then(|out| render(&txn, out).ok())
    })
}

fn kind_of<T: ReadTxn>(txn: &T, out: Out) -> RootKind {
    let Some(branch) = branch_of(&out) else {
        return RootKind::Unreadable;
    };
    match survey(txn, branch) {
        Survey::TextOnly { attributes: false } => return RootKind::Text,
        Survey::TextOnly { attributes: true } => return RootKind::Xml,
        Survey::Unreadable => return RootKind::Unreadable,
        Survey::Readable => {}
    }
    match out {
        Out::YText(_) => RootKind::Text,
        Out::YArray(_) => RootKind::Array,
        Out::YMap(_) => RootKind::Map,
        Out::UndefinedRef(branch) => match Out::UndefinedRef(branch).as_prelim(txn) {
            In::Text(_) => RootKind::Text,
            // What a rich-text editor made: a list of XML elements and text.
            In::Array(_) if prosemirror::read::is_fragment(txn, &Out::UndefinedRef(branch)) => {
                RootKind::Xml
            }
            In::Array(_) => RootKind::Array,
            In::Map(_) => RootKind::Map,
            _ => RootKind::Xml,
        },
        _ => RootKind::Xml,
    }
}

/// A root's value: typed roots render themselves; undeclared ones by the kind their content
/// implies (text, array, map, XML).
fn render<T: ReadTxn>(txn: &T, out: Out) -> Result<Any, ContentError> {
    let Some(branch) = branch_of(&out) else {
        return Ok(out.to_json(txn));
    };
    match survey(txn, branch) {
        Survey::TextOnly { attributes } => {
            return Ok(Any::from(text_only(txn, branch, attributes)));
        }
        Survey::Unreadable => return Err(ContentError::Unreadable),
        Survey::Readable => {}
    }
    // A fragment, declared or not, renders as a Yjs client's `toString()` of it: the same live,
    // reloaded (when no root is declared) and in a client, whatever order yrs keeps things in.
    let listed = matches!(out, Out::YXmlFragment(_) | Out::UndefinedRef(_)) && branch.len() > 0;
    if listed && prosemirror::read::is_fragment(txn, &out) {
        let nodes = prosemirror::read::fragment_of(txn, &out, "")?;
        return Ok(Any::from(prosemirror::xml::to_xml_string(&nodes)));
    }
    Ok(match out {
        Out::UndefinedRef(branch) => match Out::UndefinedRef(branch).as_prelim(txn) {
            In::Text(_) => Any::from(TextRef::from(branch).get_string(txn)),
            In::Array(_) => ArrayRef::from(branch).to_json(txn),
            In::Map(_) => MapRef::from(branch).to_json(txn),
            In::XmlText(_) => Any::from(XmlTextRef::from(branch).get_string(txn)),
            In::XmlElement(_) => Any::from(XmlElementRef::from(branch).get_string(txn)),
            _ => Any::Null,
        },
        typed => typed.to_json(txn),
    })
}

/// yrs values as JSON: binary becomes an array of bytes, `undefined` becomes `null`.
fn any_to_json(any: Any) -> Value {
    serde_json::to_value(&any).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::as_received;
    use crate::sync::test_support::{array_insert_at_front, text_insert};
    use crate::wire::MAX_TYPE_DEPTH;
    use yrs::Map as _;
    use yrs::updates::decoder::Decode;
    use yrs::{Array, Text, Update};

    /// Runs `read` on a thread of its own and fails the test if it has not finished within a
    /// few seconds (a regression here loops for ever or overflows the stack).
    fn finishes<R: Send + 'static>(read: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || tx.send(read()))
            .expect("spawned");
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the read finished")
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).expect("decodes"))
            .expect("applies");
    }

    /// Two stock clients using root `content` differently: one types text with an emoji, the
    /// other, having synced, inserts a value at the front of `getArray("content")`.
    fn text_and_list_in_one_root() -> Doc {
        let server = Doc::new();
        let typist = Doc::with_client_id(1);
        let text = typist.get_or_insert_text("content");
        let typed = {
            let mut txn = typist.transact_mut();
            text.insert(&mut txn, 0, "hi 😀 there");
            txn.encode_update_v1()
        };
        apply(&server, &typed);
        apply(&server, &array_insert_at_front(&server, "content", 7));
        server
    }

    #[test]
    fn a_list_holding_text_beyond_the_bmp_reads_as_its_text() {
        let doc = std::sync::Arc::new(text_and_list_in_one_root());
        let d = doc.clone();
        let (json, text, kinds) =
            finishes(move || (to_json(&d, None), to_text(&d, "content"), root_kinds(&d)));
        assert_eq!(json, Ok(serde_json::json!({ "content": "hi 😀 there" })));
        assert_eq!(text.as_deref(), Ok("hi 😀 there"));
        assert_eq!(kinds, vec![("content".to_string(), RootKind::Text)]);
    }

    #[test]
    fn a_declared_list_that_receives_text_beyond_the_bmp_reads_as_its_text() {
        // A restore declares roots; a client may still write text into one declared a list.
        let doc = std::sync::Arc::new(Doc::new());
        let items = doc.get_or_insert_array("items");
        items.push_back(&mut doc.transact_mut(), 1);
        apply(&doc, &text_insert(&doc, "items", 0, "🎉"));
        let d = doc.clone();
        let json = finishes(move || to_json(&d, None));
        assert_eq!(json, Ok(serde_json::json!({ "items": "🎉" })));
    }

    #[test]
    fn lists_and_text_without_such_characters_read_as_before() {
        // The same mix with text inside the BMP: yrs reads it as a list, one element per
        // character, and that read finishes.
        let doc = as_received(|d| {
            let list = d.get_or_insert_array("content");
            list.push_back(&mut d.transact_mut(), 7);
        });
        apply(&doc, &text_insert(&doc, "content", 1, "ab"));
        assert_eq!(
            to_json(&doc, None),
            Ok(serde_json::json!({ "content": [7, "a", "b"] }))
        );
    }

    /// The updates the fuzzer found (`fuzz/regressions/content_read_hangs/`): the last three
    /// each put a string item with an emoji into the list `list` through an origin there.
    #[test]
    fn the_recorded_hang_reads() {
        let doc = std::sync::Arc::new(Doc::new());
        for update in [
            &include_bytes!("../../fuzz/regressions/content_read_hangs/0-before.bin")[..],
            include_bytes!("../../fuzz/regressions/content_read_hangs/1.bin"),
            include_bytes!("../../fuzz/regressions/content_read_hangs/2.bin"),
            include_bytes!("../../fuzz/regressions/content_read_hangs/3.bin"),
        ] {
            apply(&doc, update);
        }
        let d = doc.clone();
        let (json, kinds) = finishes(move || (to_json(&d, None), root_kinds(&d)));
        let json = json.expect("reads");
        assert!(json["list"].is_string(), "{json}");
        assert!(json["content"].is_string(), "{json}");
        assert!(kinds.contains(&("list".to_string(), RootKind::Text)));
    }

    /// A list nested in a map holding a string with an emoji: no stock client makes one (a
    /// nested type's kind is fixed), but an update naming an origin inside the list does.
    #[test]
    fn a_nested_list_holding_text_beyond_the_bmp_is_unreadable() {
        let doc = std::sync::Arc::new(as_received(|d| {
            let meta = d.get_or_insert_map("meta");
            let mut txn = d.transact_mut();
            let list = meta.insert(&mut txn, "tags", yrs::ArrayPrelim::default());
            list.push_back(&mut txn, 1);
        }));
        // The list's element is the struct its client wrote after the list itself.
        let element = yrs::ID::new(
            doc.transact()
                .state_vector()
                .iter()
                .next()
                .map(|(c, _)| *c)
                .expect("one client"),
            1,
        );
        apply(&doc, &string_after(element, 77, "😀"));
        let d = doc.clone();
        let (json, one, kinds) =
            finishes(move || (to_json(&d, None), to_json(&d, Some("meta")), root_kinds(&d)));
        assert_eq!(json, Err(ContentError::Unreadable));
        assert_eq!(one, Err(ContentError::Unreadable));
        assert_eq!(kinds, vec![("meta".to_string(), RootKind::Unreadable)]);
    }

    /// A v1 update of one string item by `client` at clock 0 whose left origin is `origin`.
    fn string_after(origin: yrs::ID, client: u64, text: &str) -> Vec<u8> {
        use yrs::encoding::write::Write;
        use yrs::updates::encoder::{Encoder, EncoderV1};
        let mut e = EncoderV1::new();
        e.write_var(1u32); // one client
        e.write_var(1u32); // one struct
        e.write_var(client);
        e.write_var(0u32); // clock
        e.write_info(0x80 | 4); // has a left origin; string content
        e.write_left_id(&origin);
        e.write_string(text);
        e.write_var(0u32); // empty delete set
        e.to_vec()
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_unreadable() {
        let nested = |depth: usize| {
            as_received(move |d| {
                let root = d.get_or_insert_array("deep");
                let mut txn = d.transact_mut();
                let mut list = root.insert(&mut txn, 0, yrs::ArrayPrelim::default());
                for _ in 2..depth {
                    list = list.insert(&mut txn, 0, yrs::ArrayPrelim::default());
                }
            })
        };
        // `depth` counts the root: a root holding one list is two deep.
        let at_limit = std::sync::Arc::new(nested(MAX_TYPE_DEPTH));
        let d = at_limit.clone();
        let json = finishes(move || to_json(&d, None)).expect("reads");
        let mut level = &json["deep"];
        let mut depth = 1;
        while let Some(first) = level.get(0) {
            level = first;
            depth += 1;
        }
        assert_eq!(depth, MAX_TYPE_DEPTH);

        let beyond = std::sync::Arc::new(nested(MAX_TYPE_DEPTH + 1));
        let d = beyond.clone();
        let (json, kinds) = finishes(move || (to_json(&d, None), root_kinds(&d)));
        assert_eq!(json, Err(ContentError::Unreadable));
        assert_eq!(kinds, vec![("deep".to_string(), RootKind::Unreadable)]);
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
