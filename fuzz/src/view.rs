//! What a document shows to readers, for comparing a live document with its reloads, with the
//! loose comparison (`TANDEM_FUZZ_ORDER=loose`) that ignores the order of list items and
//! characters.

use tandem::sync::content::{self, RootKind};
use yrs::Doc;

use crate::driver::TEXT_KEY;

/// What a document shows to readers, for comparing two copies. XML roots are left out: their
/// attributes render in hash-map order, which differs between two `Doc`s.
#[derive(Debug, PartialEq)]
pub(crate) struct View {
    text: Result<String, content::ContentError>,
    roots: Vec<Root>,
}

/// One root as a reader sees it: its name, its kind, and its content as JSON (none for XML).
type Root = (
    String,
    RootKind,
    Option<Result<serde_json::Value, content::ContentError>>,
);

/// Whether reloads are compared without the order of list items and of characters
/// (`TANDEM_FUZZ_ORDER=loose`): items whose origins were never neighbours land in a different
/// order on a reload, which the server cannot detect (see `regressions/README.md`); this lets a
/// run go past them to look for everything else.
fn loose_order() -> bool {
    static LOOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LOOSE.get_or_init(|| std::env::var("TANDEM_FUZZ_ORDER").is_ok_and(|v| v == "loose"))
}

/// `value` with every list sorted and every string's characters sorted, recursively.
fn unordered(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            let mut chars: Vec<char> = s.chars().collect();
            chars.sort_unstable();
            Value::String(chars.into_iter().collect())
        }
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(unordered).collect();
            items.sort_by_cached_key(Value::to_string);
            Value::Array(items)
        }
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), unordered(v))).collect())
        }
        other => other.clone(),
    }
}

/// Two views as [`loose_order`] compares them.
fn comparable(view: View) -> View {
    if !loose_order() {
        return view;
    }
    View {
        text: view.text.map(|t| {
            let mut chars: Vec<char> = t.chars().collect();
            chars.sort_unstable();
            chars.into_iter().collect()
        }),
        roots: view
            .roots
            .into_iter()
            .map(|(name, kind, value)| (name, kind, value.map(|v| v.map(|v| unordered(&v)))))
            .collect(),
    }
}

pub(crate) fn view(doc: &Doc) -> View {
    let mut kinds = content::root_kinds(doc);
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let roots = kinds
        .into_iter()
        .map(|(name, kind)| {
            // A listed root exists; it may still be unreadable (409 over HTTP).
            let value = (kind != RootKind::Xml).then(|| content::to_json(doc, Some(&name)));
            assert_ne!(
                value,
                Some(Err(content::ContentError::NoSuchKey(name.clone()))),
                "a listed root exists"
            );
            (name, kind, value)
        })
        // An empty root reads as a missing one (a client's `getText(name)` is empty either
        // way); whether yrs keeps one that only ever held deleted content differs on a reload.
        .filter(|(_, _, value)| !matches!(value, Some(Ok(v)) if is_empty(v)))
        .collect();
    comparable(View {
        text: content::to_text(doc, TEXT_KEY),
        roots,
    })
}

fn is_empty(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
        _ => false,
    }
}
