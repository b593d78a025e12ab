//! The `text_edit` target: one `POST /api/docs/{id}/text` body, parsed and applied as the route
//! and the document core do, checked against a plain UTF-16 model of the operations.

use std::time::Instant;

use bytes::Bytes;
use serde::Deserialize;
use tandem::collab::core::{Effect, LocalEditError, build_doc};
use tandem::sync::content;
use tandem::sync::protocol::decode_update;
use tandem::sync::text_ops::{self, TextOp};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, OffsetKind, Options, Transact, Update};

use crate::driver::{BASE_DOC, TEXT_KEY, core_of, stored};

/// A v1 update with no structs and no deletions; the document actor skips it.
const EMPTY_UPDATE: &[u8] = &[0, 0];

/// The body of `POST /api/docs/{id}/text`, with the same shape and the same serde attributes
/// as `tandem::routes::updates::TextEdit` (whose fields are private).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TextEditBody {
    key: Option<String>,
    ops: Vec<TextOp>,
}

/// What one text-edit input did (used by the replay tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextOutcome {
    /// The body is not valid JSON for the route (400 from actix's JSON extractor).
    BadBody,
    /// The root is not text (400).
    NotText,
    /// The operations were refused (400); nothing changed.
    Refused,
    /// Applied (204).
    Applied,
}

/// The document a text edit starts from: the base document, loaded as `build_doc` does but
/// with a fixed client id so that a failing input replays exactly.
fn text_doc() -> Doc {
    let doc = Doc::with_options(Options {
        client_id: yrs::block::ClientID::new(0x1f_2e3d),
        offset_kind: OffsetKind::Utf16,
        ..Options::default()
    });
    doc.transact_mut()
        .apply_update(Update::decode_v1(BASE_DOC).expect("the base document decodes"))
        .expect("the base document applies");
    doc
}

/// The model of a batch: the same operations on a plain UTF-16 buffer.
fn model(text: &str, ops: &[TextOp]) -> Option<String> {
    let splits = |u: &[u16], at: usize| {
        at > 0
            && at < u.len()
            && (0xD800..0xDC00).contains(&u[at - 1])
            && (0xDC00..0xE000).contains(&u[at])
    };
    let mut units: Vec<u16> = text.encode_utf16().collect();
    for op in ops {
        match op {
            TextOp::Replace { replace } => units = replace.encode_utf16().collect(),
            TextOp::Insert { insert, at } => {
                let at = *at as usize;
                if at > units.len() || splits(&units, at) {
                    return None;
                }
                units.splice(at..at, insert.encode_utf16());
            }
            TextOp::Delete { delete, at } => {
                let (at, end) = (*at as usize, *at as u64 + u64::from(*delete));
                if end > units.len() as u64 || splits(&units, at) || splits(&units, end as usize) {
                    return None;
                }
                units.drain(at..end as usize);
            }
        }
    }
    Some(String::from_utf16(&units).expect("whole characters only"))
}

/// One request body, handled as `post_text` (routes/updates.rs) and the `EditText` handler
/// (collab/document/api.rs) handle it: the JSON extractor, the default key, the `to_text`
/// check, then the core's `edit` with `text_ops::apply` on `get_or_insert_text(key)`. Then: the result must match a
/// plain model of the operations, a refused batch must change nothing, and the update the
/// server stores and relays must pass the server's validator and give the same text when a
/// copy of the document (a client, or a reload) applies it.
pub fn text_edit(data: &[u8]) -> TextOutcome {
    // actix-web's `web::Json` parses the body with `serde_json::from_slice`.
    let route = serde_json::from_slice::<tandem::routes::updates::TextEdit>(data);
    let body = serde_json::from_slice::<TextEditBody>(data);
    assert_eq!(
        route.is_ok(),
        body.is_ok(),
        "the mirror of TextEdit disagrees with the route's type"
    );
    let Ok(TextEditBody { key, ops }) = body else {
        return TextOutcome::BadBody;
    };
    let key = key.unwrap_or_else(|| TEXT_KEY.to_string());
    let now = Instant::now();
    let mut core = core_of(text_doc(), now);
    let doc = core.doc().clone();
    let Ok(before) = content::to_text(&doc, &key) else {
        return TextOutcome::NotText;
    };
    let root = doc.get_or_insert_text(key.as_str());
    let expected = model(&before, &ops);
    // As the `EditText` handler makes it: one edit of the core.
    let edited = core.edit(
        |doc| text_ops::apply(doc, &doc.get_or_insert_text(key.as_str()), &ops),
        now,
    );
    let result = match edited {
        Ok(_) => Ok(core
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Append { data, .. } => Some(data.to_vec()),
                _ => None,
            })
            .collect::<Vec<_>>()),
        Err(LocalEditError::Refused(error)) => Err(error),
        Err(LocalEditError::Failed) => panic!("a text edit panicked"),
    };
    let after = root.get_string(&doc.transact());
    let Ok(updates) = result else {
        assert_eq!(after, before, "a refused batch changed the text");
        assert_eq!(
            expected, None,
            "the model accepts a batch that apply refused"
        );
        return TextOutcome::Refused;
    };
    assert_eq!(
        Some(&after),
        expected.as_ref(),
        "the text differs from the model"
    );
    assert_eq!(
        content::to_text(&doc, &key).as_deref(),
        Ok(after.as_str()),
        "to_text disagrees with the root"
    );
    if !updates.is_empty() {
        // A client holding the base document receives the relays, in order.
        let client = text_doc();
        for update in &updates {
            assert_ne!(
                update.as_slice(),
                EMPTY_UPDATE,
                "an empty update is not relayed"
            );
            let incoming = decode_update(Bytes::from(update.clone()))
                .expect("the server's own update passes its validator");
            client
                .transact_mut()
                .apply_update(incoming.update)
                .expect("the relayed update applies");
        }
        assert_eq!(
            content::to_text(&client, &key).as_deref(),
            Ok(after.as_str())
        );
        // A reload from the store: base snapshot plus the logged updates.
        let reloaded = build_doc(&stored(updates)).expect("stored updates decode");
        assert_eq!(
            content::to_text(&reloaded, &key).as_deref(),
            Ok(after.as_str()),
            "reload differs"
        );
    } else {
        assert_eq!(after, before, "an empty update changed the text");
    }
    TextOutcome::Applied
}
