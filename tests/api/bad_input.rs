//! Hostile and broken input: each gets a close code and a reason; the document is untouched and
//! other clients keep working. Tests run in debug builds, where yrs' debug assertions are live.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::Doc;
use yrs::encoding::write::Write;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use crate::helpers::{
    Backend, TestApp, TestDb, WAIT, YClient, awareness_frame, doc_name, item_inside,
};

/// A document with known content and a bystander connected to it.
struct Scene {
    app: TestApp,
    _db: TestDb,
    doc: String,
    bystander: YClient,
}

const CONTENT: &str = "precious words";

async fn scene(max_message_size: Option<usize>) -> Scene {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = db.settings();
    if let Some(max) = max_message_size {
        settings.max_message_size = max;
    }
    let app = TestApp::spawn(settings).await;
    let doc = doc_name("hostile");
    let mut bystander = app.connect(&doc).await;
    bystander.append(CONTENT).await;
    bystander.recv_until(|c| c.updates_received >= 1).await;
    Scene {
        app,
        _db: db,
        doc,
        bystander,
    }
}

impl Scene {
    /// Sends `frame` from a fresh connection and returns how the server closed it.
    async fn attack(&self, frame: WsMessage) -> (u16, String) {
        let mut attacker = self.app.connect(&self.doc).await;
        attacker.ws.send(frame).await.expect("frame sent");
        attacker.expect_close().await
    }

    /// The document is unchanged, the bystander still works, and so do new clients.
    async fn assert_unharmed(mut self) {
        let probe = self.app.connect(&self.doc).await;
        assert_eq!(probe.text(), CONTENT);
        let before = self.bystander.updates_received;
        self.bystander.append("!").await;
        self.bystander
            .recv_until(|c| c.updates_received > before)
            .await;
        let mut probe = probe;
        probe.wait_for_text(&format!("{CONTENT}!")).await;
        self.app.stop().await;
    }
}

fn binary(bytes: Vec<u8>) -> WsMessage {
    WsMessage::Binary(bytes.into())
}

/// A v1 update with one struct whose client id is 2^53: one client, one block (a string).
fn update_with_huge_client_id() -> Vec<u8> {
    let mut u = Vec::new();
    u.write_var(1u32); // clients
    u.write_var(1u32); // blocks of this client
    u.write_var(1u64 << 53); // client id: one past the largest a Yjs client can have
    u.write_var(0u32); // clock
    u.write_u8(4); // info: string content, no origins → parent follows
    u.write_var(1u32); // parent is a named root type
    u.write_string("content");
    u.write_string("x");
    u.write_var(0u32); // empty delete set
    u
}

#[actix_web::test]
async fn a_text_frame_is_closed_with_1003() {
    let scene = scene(None).await;
    let (code, reason) = scene.attack(WsMessage::Text("hello".into())).await;
    assert_eq!(code, 1003, "{reason}");
    assert!(reason.contains("text"), "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn an_unknown_message_type_is_closed_with_1003() {
    let scene = scene(None).await;
    let (code, reason) = scene.attack(binary(vec![42, 0])).await;
    assert_eq!(code, 1003, "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn an_undecodable_message_is_closed_with_1007() {
    let scene = scene(None).await;
    // A sync Update whose payload is not a Yjs update.
    let mut frame = vec![0, 2];
    frame.write_buf([0xff; 12]);
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn a_truncated_message_is_closed_with_1007() {
    let scene = scene(None).await;
    let update = {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("content");
        let mut txn = yrs::Transact::transact_mut(&doc);
        yrs::Text::push(&text, &mut txn, "this never arrives whole");
        txn.encode_update_v1()
    };
    let mut frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
    frame.truncate(frame.len() - 5);
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn a_frame_over_the_limit_is_closed_with_1009() {
    let scene = scene(Some(64 * 1024)).await;
    let (code, reason) = scene.attack(binary(vec![0; 64 * 1024 + 1])).await;
    assert_eq!(code, 1009, "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn a_client_id_beyond_53_bits_in_an_update_is_refused_with_1007() {
    let scene = scene(None).await;
    let frame = Message::Sync(SyncMessage::Update(update_with_huge_client_id())).encode_v1();
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    // The same update as a SyncStep2 is refused just the same.
    let frame = Message::Sync(SyncMessage::SyncStep2(update_with_huge_client_id())).encode_v1();
    let (code, _) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007);
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn deletions_listing_a_client_twice_are_refused_with_1007() {
    let scene = scene(None).await;
    // Deletes the bystander's first character, then lists its client again with nothing: yrs
    // keeps only the last list, a Yjs client applies both.
    let mut update = Vec::new();
    update.write_var(0u32); // no structs
    update.write_var(2u32); // two delete-set sections…
    update.write_var(scene.bystander.client_id());
    update.write_var(1u32);
    update.write_var(0u32);
    update.write_var(1u32);
    update.write_var(scene.bystander.client_id()); // …of one client
    update.write_var(0u32);
    let frame = Message::Sync(SyncMessage::Update(update.clone())).encode_v1();
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("deletions"), "{reason}");
    let posted = reqwest::Client::new()
        .post(scene.app.url(&format!("/api/docs/{}/update", scene.doc)))
        .header("Content-Type", "application/octet-stream")
        .body(update)
        .send()
        .await
        .expect("post");
    assert_eq!(posted.status(), reqwest::StatusCode::BAD_REQUEST);
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn collected_structs_over_live_text_are_refused_with_1007() {
    let scene = scene(None).await;
    // The bystander's characters again, as one collected range, without deleting them: the
    // server keeps them, but a merge or a Yjs client takes the collected range.
    let mut update = Vec::new();
    update.write_var(1u32);
    update.write_var(1u32);
    update.write_var(scene.bystander.client_id());
    update.write_var(0u32);
    update.write_u8(0); // a collected range…
    update.write_var(CONTENT.len() as u32 + 4); // …over every character and beyond
    update.write_var(0u32); // no deletions
    let frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("live"), "{reason}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn an_item_placed_inside_a_character_is_refused_with_1007() {
    let scene = scene(None).await;
    // A new client's string whose parent is the bystander's third character, not a type. yrs
    // refuses it only once it has taken the structs before it, which nobody would have stored.
    let update = item_inside(77, (scene.bystander.client_id(), 2));
    let frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("not a shared type"), "{reason}");
    let (status, body) = content(&scene, "other").await;
    assert_eq!(status, 404, "{body}");
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn clocks_the_document_holds_are_neither_stored_nor_relayed_again() {
    let mut scene = scene(None).await;
    // The bystander's characters re-sent as other text in root `other`, then one new character
    // after them: the server keeps what it has and takes only the new character.
    let me = scene.bystander.client_id();
    let held = CONTENT.len() as u32;
    let mut update = Vec::new();
    update.write_var(1u32);
    update.write_var(2u32);
    update.write_var(me);
    update.write_var(0u32);
    update.write_u8(4);
    update.write_var(1u32);
    update.write_string("other");
    update.write_string(&"X".repeat(CONTENT.len()));
    update.write_u8(4 | 0x80); // a string with a left origin
    update.write_var(me);
    update.write_var(held - 1);
    update.write_string("!");
    update.write_var(0u32);
    let mut forger = scene.app.connect(&scene.doc).await;
    forger
        .send(Message::Sync(SyncMessage::Update(update)))
        .await;
    let before = scene.bystander.updates_received;
    scene
        .bystander
        .recv_until(|c| c.updates_received > before)
        .await;
    // The relayed update starts at the first clock the document lacked.
    let relayed = yrs::Update::decode_v1(&scene.bystander.last_update).expect("decodes");
    let sent = relayed.insertions(true);
    assert!(sent.contains(&yrs::ID::new(yrs::ClientID::new(me), held)));
    assert!(!sent.contains(&yrs::ID::new(yrs::ClientID::new(me), 0)));
    assert_eq!(scene.bystander.text(), format!("{CONTENT}!"));
    drop(forger);
    // And the store holds the same: after a restart, `other` was never written.
    let db_settings = scene._db.settings();
    scene.app.stop().await;
    scene.app = TestApp::spawn(db_settings).await;
    let (status, body) = content(&scene, "other").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = content(&scene, "content").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&format!("{CONTENT}!")), "{body}");
    scene.app.stop().await;
}

/// `GET /api/docs/{doc}/content?key=…`: status and body.
async fn content(scene: &Scene, key: &str) -> (u16, String) {
    let response = reqwest::get(
        scene
            .app
            .url(&format!("/api/docs/{}/content?key={key}", scene.doc)),
    )
    .await
    .expect("answered");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

#[actix_web::test]
async fn a_client_id_beyond_53_bits_in_awareness_is_refused_with_1007() {
    let scene = scene(None).await;
    let frame = awareness_frame(u64::MAX, 1, r#"{"user":{"name":"mallory"}}"#);
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(scene.bystander.awareness.is_empty());
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn an_awareness_state_that_is_not_json_is_refused_with_1007() {
    let scene = scene(None).await;
    let frame = awareness_frame(12345, 1, "{not json");
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(scene.bystander.awareness.is_empty());
    scene.assert_unharmed().await;
}

#[actix_web::test]
async fn an_invalid_document_name_gets_400_before_the_upgrade() {
    let db = TestDb::new(Backend::Sqlite).await;
    let app = TestApp::spawn(db.settings()).await;
    // `/ws/` names no document: it is the Hocuspocus endpoint, as `/ws` is.
    let url = format!("ws://127.0.0.1:{}/ws/", app.port);
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("`/ws/` upgrades to a Hocuspocus connection");
    let too_long = "x".repeat(129);
    for name in ["a%20b", "caf%C3%A9", "a/b", too_long.as_str(), "semi;colon"] {
        let url = format!("ws://127.0.0.1:{}/ws/{name}", app.port);
        let error = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect_err("upgrade refused");
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                assert_eq!(response.status(), 400, "{name:?}");
                let body = response.body().clone().unwrap_or_default();
                let problem: serde_json::Value =
                    serde_json::from_slice(&body).expect("problem JSON body");
                assert_eq!(
                    problem["type"], "/problems/invalid-document-name",
                    "{name:?}"
                );
            }
            other => panic!("{name:?}: expected an HTTP 400, got {other}"),
        }
    }
    app.stop().await;
}

/// One update of 20,000 adjacent items of 200 characters, a 4 MB message under the size limit,
/// is applied and relayed like any other. Applied in one transaction, yrs would join the items
/// one by one, keeping every intermediate copy of the text joined so far until the end: 40 GB,
/// enough to kill the server. (The test's own yrs clients must not apply it either: the
/// attacker and the bystander only watch for its relay, and a new client reads the result.)
#[actix_web::test]
async fn an_update_of_twenty_thousand_adjacent_items_is_applied_and_relayed() {
    const ITEMS: u32 = 20_000;
    const CHARS: u32 = 200;
    let mut scene = scene(None).await;
    let client = 0x5eed_u64;
    let chunk = "x".repeat(CHARS as usize);
    let mut update = Vec::new();
    update.write_var(1u32); // clients
    update.write_var(ITEMS); // structs of this client
    update.write_var(client);
    update.write_var(0u32); // clock
    update.write_u8(4); // string content, no origins: the parent follows
    update.write_var(1u32); // a named root type
    update.write_string("content");
    update.write_string(&chunk);
    for item in 1..ITEMS {
        update.write_u8(0x80 | 4); // string content after its left origin
        update.write_var(client);
        update.write_var(item * CHARS - 1); // the last character of the item before
        update.write_string(&chunk);
    }
    update.write_var(0u32); // empty delete set
    let frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
    let mut attacker = scene.app.connect(&scene.doc).await;
    attacker.send_raw(frame.clone()).await;

    // Relayed once applied and stored: the same bytes reach the sender and the bystander.
    for socket in [&mut attacker.ws, &mut scene.bystander.ws] {
        tokio::time::timeout(WAIT, async {
            loop {
                match socket.next().await {
                    Some(Ok(WsMessage::Binary(relayed))) if relayed.len() == frame.len() => {
                        assert_eq!(&relayed[..], &frame[..]);
                        break;
                    }
                    Some(Ok(WsMessage::Close(close))) => panic!("closed: {close:?}"),
                    Some(Ok(_)) => {}
                    other => panic!("socket ended: {other:?}"),
                }
            }
        })
        .await
        .expect("relayed in time");
    }
    // The server joined the items: a new client syncs them as one.
    let probe = scene.app.connect(&scene.doc).await;
    let text = probe.text();
    assert_eq!(text.matches('x').count(), (ITEMS * CHARS) as usize);
    assert_eq!(text.len(), (ITEMS * CHARS) as usize + CONTENT.len());
    assert!(text.contains(CONTENT));
    scene.app.stop().await;
}

/// Shared types nested deeper than the limit: yrs deletes nested types recursively, and
/// deleting a chain some thousands deep (a few bytes a level) overflowed the document thread's
/// stack and aborted the server. A chain sent whole is refused with 1007; one built an update
/// at a time stops at the limit; what was accepted can be deleted, and the server stays up.
#[actix_web::test]
async fn types_nested_beyond_the_limit_are_refused_with_1007() {
    use tandem::wire::MAX_TYPE_DEPTH;
    use yrs::{Array, ArrayPrelim, ArrayRef, Transact};

    let scene = scene(None).await;
    let whole = {
        let source = Doc::new();
        let root = source.get_or_insert_array("deep");
        let mut txn = source.transact_mut();
        let mut list: ArrayRef = root.insert(&mut txn, 0, ArrayPrelim::default());
        for _ in 0..10_000 {
            list = list.insert(&mut txn, 0, ArrayPrelim::default());
        }
        txn.encode_update_v1()
    };
    let frame = Message::Sync(SyncMessage::Update(whole.clone())).encode_v1();
    let (code, reason) = scene.attack(binary(frame)).await;
    assert_eq!(code, 1007, "{reason}");
    assert!(reason.contains("nested deeper than"), "{reason}");
    let posted = reqwest::Client::new()
        .post(scene.app.url(&format!("/api/docs/{}/update", scene.doc)))
        .header("Content-Type", "application/octet-stream")
        .body(whole)
        .send()
        .await
        .expect("answered");
    assert_eq!(posted.status(), 400);

    // One level per update, from one connection, until the server closes it.
    let source = Doc::new();
    let root = source.get_or_insert_array("deep");
    let mut builder = scene.app.connect(&scene.doc).await;
    let mut list: Option<ArrayRef> = None;
    let mut sent = 0;
    let (code, reason) = loop {
        let update = {
            let mut txn = source.transact_mut();
            list = Some(match &list {
                None => root.insert(&mut txn, 0, ArrayPrelim::default()),
                Some(list) => list.insert(&mut txn, 0, ArrayPrelim::default()),
            });
            txn.encode_update_v1()
        };
        let frame = Message::Sync(SyncMessage::Update(update)).encode_v1();
        if builder.ws.send(binary(frame)).await.is_err() {
            break builder.expect_close().await;
        }
        sent += 1;
        if sent > MAX_TYPE_DEPTH + 5 {
            break builder.expect_close().await;
        }
    };
    assert_eq!(code, 1007, "{reason}");
    // Every level up to the limit arrived (a root is one level, so one fewer update).
    let (status, body) = content(&scene, "deep").await;
    assert_eq!(status, 200);
    // Nested empty lists, one bracket per level (deeper than serde_json parses by default).
    let depth = body.chars().take_while(|c| *c == '[').count();
    assert_eq!(body.len(), 2 * depth, "{body}");
    assert_eq!(depth, MAX_TYPE_DEPTH);

    // Deleting the whole chain is harmless at this depth.
    let delete = {
        let mut txn = source.transact_mut();
        root.remove(&mut txn, 0);
        txn.encode_update_v1()
    };
    let posted = reqwest::Client::new()
        .post(scene.app.url(&format!("/api/docs/{}/update", scene.doc)))
        .header("Content-Type", "application/octet-stream")
        .body(delete)
        .send()
        .await
        .expect("answered");
    assert_eq!(posted.status(), 204);
    scene.assert_unharmed().await;
}
