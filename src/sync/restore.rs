//! Restoring a document to an earlier state through new operations.
//!
//! A restore must reach every connected editor and stay undoable, so it cannot swap the state
//! out: it edits the live document until its content equals the version's, root by root — text
//! by the smallest range change, maps key by key, arrays whole, XML fragments (rich text) by
//! rewriting the top-level nodes that differ — and returns those edits as updates to store and
//! relay like any other. Restoring the version taken before undoes it.

use yrs::types::ToJson;
use yrs::{Any, Array, Doc, Map, Transact};

use super::content::{ContentError, RootKind, root_kinds, root_value};
use super::prosemirror::{self, XmlNode};
use super::text_ops::{self, TextOp};

/// Why a restore was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("root type {0:?} changed kind since the version was taken")]
    KindChanged(String),
    #[error(
        "root type {0:?} holds XML other than a fragment of elements, which cannot be restored"
    )]
    Unsupported(String),
    #[error("root type {0:?} cannot be read, so it cannot be restored")]
    Unreadable(String),
    #[error("root type {0:?} holds list values among its text, so it cannot be restored")]
    HoldsValues(String),
}

/// Edits `live` until its content equals `target`'s; returns the v1 updates made (possibly
/// none). `live` must count offsets in UTF-16.
pub fn restore(live: &Doc, target: &Doc) -> Result<Vec<Vec<u8>>, RestoreError> {
    let target_kinds = root_kinds(target);
    let live_kinds = root_kinds(live);
    // Decide everything before changing anything.
    let mut plan: Vec<(String, RootKind, Option<Any>)> = Vec::new();
    for (name, kind) in &target_kinds {
        let target_value = root_value(target, name);
        // A root without content reads as a map (nothing ever written) or an array (everything
        // deleted), whatever it held: an empty root matches any kind.
        let target_empty = target_value.as_ref().is_some_and(is_empty);
        if let Some((_, live_kind)) = live_kinds.iter().find(|(n, _)| n == name) {
            let live_empty = root_value(live, name).is_some_and(|v| is_empty(&v));
            if live_kind != kind && !live_empty && !target_empty {
                return Err(RestoreError::KindChanged(name.clone()));
            }
            if target_empty {
                // Empty the live root in its own kind.
                plan.push((name.clone(), *live_kind, None));
                continue;
            }
        } else if target_empty {
            // Nothing to restore, and declaring the root here could fix a kind clients decide.
            continue;
        }
        plan.push((name.clone(), *kind, target_value));
    }
    for (name, kind) in &live_kinds {
        if !target_kinds.iter().any(|(n, _)| n == name) {
            plan.push((name.clone(), *kind, None));
        }
    }
    if let Some((name, ..)) = plan
        .iter()
        .find(|(_, kind, _)| *kind == RootKind::Unreadable)
    {
        return Err(RestoreError::Unreadable(name.clone()));
    }
    // An XML root is rebuilt from the version's nodes; both must read as fragments.
    let mut fragments: Vec<(String, Vec<XmlNode>)> = Vec::new();
    for (name, kind, value) in &plan {
        if *kind != RootKind::Xml {
            continue;
        }
        let refused = |error: ContentError| match error {
            ContentError::Unreadable => RestoreError::Unreadable(name.clone()),
            _ => RestoreError::Unsupported(name.clone()),
        };
        match prosemirror::read_fragment(live, name) {
            Ok(_) | Err(ContentError::NoSuchKey(_)) => {}
            Err(error) => return Err(refused(error)),
        }
        let nodes = match value {
            Some(_) => prosemirror::read_fragment(target, name).map_err(refused)?,
            None => Vec::new(),
        };
        fragments.push((name.clone(), nodes));
    }
    if let Some((name, ..)) = plan
        .iter()
        .find(|(name, kind, _)| *kind == RootKind::Text && text_ops::holds_values(live, name))
    {
        return Err(RestoreError::HoldsValues(name.clone()));
    }

    let mut updates = Vec::new();
    for (name, kind, value) in plan {
        let made = match kind {
            RootKind::Text => {
                let text = match value {
                    Some(Any::String(s)) => s.to_string(),
                    _ => String::new(),
                };
                let root = live.get_or_insert_text(name.as_str());
                // The ops are computed against the live text itself, which holds no list values
                // (checked above), so they always apply.
                text_ops::apply(live, &root, &[TextOp::Replace { replace: text }])
                    .unwrap_or_default()
            }
            RootKind::Map => {
                let root = live.get_or_insert_map(name.as_str());
                let wanted = match value {
                    Some(Any::Map(map)) => map,
                    _ => Default::default(),
                };
                let mut txn = live.transact_mut();
                let present: Vec<String> = root.keys(&txn).map(str::to_owned).collect();
                for key in present {
                    if !wanted.contains_key(&key) {
                        root.remove(&mut txn, &key);
                    }
                }
                for (key, value) in wanted.iter() {
                    let current = root.get(&txn, key).map(|v| v.to_json(&txn));
                    if current.as_ref() != Some(value) {
                        root.insert(&mut txn, key.as_str(), value.clone());
                    }
                }
                vec![txn.encode_update_v1()]
            }
            RootKind::Array => {
                let root = live.get_or_insert_array(name.as_str());
                let wanted: Vec<Any> = match value {
                    Some(Any::Array(items)) => items.to_vec(),
                    _ => Vec::new(),
                };
                let mut txn = live.transact_mut();
                if root.to_json(&txn) != Any::Array(wanted.clone().into()) {
                    let len = root.len(&txn);
                    if len > 0 {
                        root.remove_range(&mut txn, 0, len);
                    }
                    root.insert_range(&mut txn, 0, wanted);
                }
                vec![txn.encode_update_v1()]
            }
            RootKind::Xml => {
                let nodes = fragments
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, nodes)| nodes.as_slice())
                    .unwrap_or_default();
                // Both were read as fragments above, so this is not refused.
                prosemirror::replace_fragment(live, &name, nodes).unwrap_or_default()
            }
            RootKind::Unreadable => Vec::new(),
        };
        updates.extend(
            made.into_iter()
                .filter(|update| !update.is_empty() && update != &[0, 0]),
        );
    }
    Ok(updates)
}

fn is_empty(value: &Any) -> bool {
    match value {
        Any::String(s) => s.is_empty(),
        Any::Array(a) => a.is_empty(),
        Any::Map(m) => m.is_empty(),
        Any::Null | Any::Undefined => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::test_support::{server_copy as copy, server_doc as live_doc};
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, ReadTxn, StateVector, Text, Update};

    #[test]
    fn text_maps_and_arrays_return_to_the_version() {
        let live = live_doc();
        let text = live.get_or_insert_text("content");
        let meta = live.get_or_insert_map("meta");
        let list = live.get_or_insert_array("list");
        {
            let mut txn = live.transact_mut();
            text.insert(&mut txn, 0, "version one");
            meta.insert(&mut txn, "title", "One");
            list.push_back(&mut txn, 1);
        }
        let version = copy(&live);
        {
            let mut txn = live.transact_mut();
            text.insert(&mut txn, 0, "edited: ");
            meta.insert(&mut txn, "title", "Two");
            meta.insert(&mut txn, "extra", true);
            list.push_back(&mut txn, 2);
        }
        let peer = copy(&live);

        let updates = restore(&live, &version).expect("restores");
        assert!(!updates.is_empty());
        assert_eq!(text.get_string(&live.transact()), "version one");
        assert_eq!(
            crate::sync::content::to_json(&live, None).expect("json"),
            crate::sync::content::to_json(&version, None).expect("json")
        );
        // A peer that applies the restore's updates converges too.
        for update in &updates {
            peer.transact_mut()
                .apply_update(Update::decode_v1(update).expect("decodes"))
                .expect("applies");
        }
        assert_eq!(
            crate::sync::content::to_json(&peer, None).expect("json"),
            crate::sync::content::to_json(&version, None).expect("json")
        );
        // Restoring to the current content changes nothing.
        assert!(restore(&live, &copy(&live)).expect("restores").is_empty());
    }

    #[test]
    fn a_version_of_emptied_text_restores_to_empty_text() {
        let live = live_doc();
        let text = live.get_or_insert_text("content");
        text.insert(&mut live.transact_mut(), 0, "a");
        text.remove_range(&mut live.transact_mut(), 0, 1);
        // As stored, the emptied root has no type and reads as an empty array.
        let version = copy(&live);
        text.insert(&mut live.transact_mut(), 0, "zz");
        restore(&live, &version).expect("restores");
        assert_eq!(text.get_string(&live.transact()), "");
        // Restoring it onto a document that never had the root declares nothing.
        let fresh = live_doc();
        assert!(restore(&fresh, &version).expect("restores").is_empty());
        assert_eq!(fresh.transact().root_refs().count(), 0);
    }

    #[test]
    fn roots_added_since_the_version_are_emptied() {
        let live = live_doc();
        let version = copy(&live);
        let notes = live.get_or_insert_text("notes");
        notes.insert(&mut live.transact_mut(), 0, "added later");
        restore(&live, &version).expect("restores");
        assert_eq!(notes.get_string(&live.transact()), "");
    }

    #[test]
    fn a_rich_text_fragment_returns_to_the_version() {
        use crate::sync::prosemirror::{parse_doc, replace_fragment, to_json};
        let json = |text: &str| {
            serde_json::json!({"type": "doc", "content": [
                {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Title"}]},
                {"type": "paragraph", "content": [
                    {"type": "text", "text": text, "marks": [{"type": "bold", "attrs": {}}]}
                ]}
            ]})
        };
        let live = live_doc();
        let nodes = parse_doc(&json("first")).expect("valid");
        replace_fragment(&live, "default", &nodes).expect("written");
        // The version as stored: the root undeclared, as a client made it.
        let version = copy(&live);
        let nodes = parse_doc(&json("second")).expect("valid");
        replace_fragment(&live, "default", &nodes).expect("written");
        let notes = live.get_or_insert_text("notes");
        notes.insert(&mut live.transact_mut(), 0, "added later");
        let peer = copy(&live);

        let updates = restore(&live, &version).expect("restores");
        assert_eq!(to_json(&live, "default").expect("reads"), json("first"));
        assert_eq!(notes.get_string(&live.transact()), "");
        for update in &updates {
            peer.transact_mut()
                .apply_update(Update::decode_v1(update).expect("decodes"))
                .expect("applies");
        }
        assert_eq!(to_json(&peer, "default").expect("reads"), json("first"));
        assert!(restore(&live, &copy(&live)).expect("restores").is_empty());

        // Restoring a version without the fragment empties it.
        let empty = copy(&live_doc());
        restore(&live, &empty).expect("restores");
        assert_eq!(
            to_json(&live, "default").expect("reads"),
            serde_json::json!({"type": "doc", "content": []})
        );
    }

    #[test]
    fn text_holding_list_values_is_not_restored() {
        let live = live_doc();
        let text = live.get_or_insert_text("content");
        text.insert(&mut live.transact_mut(), 0, "party 🎉");
        let version = copy(&live);
        // Another client uses the root as an array.
        let update = crate::sync::test_support::array_insert_at_front(&live, "content", 1);
        live.transact_mut()
            .apply_update(Update::decode_v1(&update).expect("decodes"))
            .expect("applies");
        let before = live
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        assert_eq!(
            restore(&live, &version),
            Err(RestoreError::HoldsValues("content".into()))
        );
        assert_eq!(
            live.transact()
                .encode_state_as_update_v1(&StateVector::default()),
            before
        );
    }
}
