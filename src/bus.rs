//! The bus: Redis pub/sub as the fast path between nodes that share one Postgres database.
//!
//! After each commit the writer hands the bus the rows it wrote ([`CommitTap`]); the bus
//! publishes each, with its document, its position in the document's log and the node that
//! wrote it, on one channel per service (named by the database's service id, so that services
//! sharing a Redis never hear each other). Every node subscribes to that channel and hands the
//! rows of the documents it holds to them. Presence goes the same way, best effort, as it does
//! to clients. The log in Postgres stays the truth: a row is
//! published only once it is committed, a document applies rows in position order only, and
//! whatever Redis drops, delays or loses while it is down, the log watch
//! (`collab/log_watch.rs`) reads from the log. So Redis can make nodes faster, never make them
//! diverge.
//!
//! Both connections are kept up by tasks of their own, which retry with backoff while Redis is
//! down; the node serves through the log watch meanwhile, and [`Bus::is_up`] says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::backoff::Policy;
use crate::domain::DocId;
use crate::metrics::Metrics;
use crate::persist::CommitTap;
use crate::store::Store;

/// Rows waiting to be published; beyond this many the newest are dropped (and counted): the
/// log watch delivers them.
const QUEUE: usize = 16_384;
/// Waits between attempts to reach Redis: 100 ms, doubling up to 5 s.
const RECONNECT: Policy = Policy::new(Duration::from_millis(100), Duration::from_secs(5));
/// The first byte of a message: which layout follows (see `encode`).
const ROW: u8 = 1;
const PRESENCE: u8 = 2;

/// A row another node committed, as the bus heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerRow {
    pub doc: DocId,
    pub position: i64,
    pub data: Bytes,
}

/// Where the bus hands what it hears (the registry, which passes each to its document).
pub(crate) trait BusSink: Send + Sync {
    fn row(&self, row: PeerRow);
    /// An awareness frame another node's subscribers of `doc` sent.
    fn presence(&self, doc: DocId, frame: Bytes);
}

/// What a node publishes.
enum Outgoing {
    Row(DocId, i64, Bytes),
    Presence(DocId, Bytes),
}

/// The bus of one node. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Bus {
    inner: Arc<Inner>,
    publish: mpsc::Sender<Outgoing>,
}

struct Inner {
    client: redis::Client,
    channel: String,
    node: i64,
    /// Both connections are up.
    publishing: AtomicBool,
    listening: AtomicBool,
    metrics: Arc<Metrics>,
}

impl Bus {
    /// The bus to the other nodes, with `--redis-url`: refused with SQLite, which serves one node.
    /// A Redis that cannot be reached does not stop the start: the node serves through the log
    /// meanwhile, and says so.
    pub(crate) async fn for_settings(
        url: Option<&str>,
        store: &dyn Store,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<Bus>> {
        let Some(url) = url else {
            return Ok(None);
        };
        if !store.shares_log() {
            anyhow::bail!(
                "--redis-url (TANDEM_REDIS_URL) needs Postgres: Redis relays updates between nodes \
                 that share one Postgres database, and a SQLite database serves one node. Point \
                 DATABASE_URL at postgres://… or leave out --redis-url."
            );
        }
        let service = store
            .service_id()
            .await
            .map_err(|e| anyhow::anyhow!("Failed to read the service id from the database: {e}"))?;
        let bus = Self::start(url, &service, store.node(), metrics.clone())?;
        tracing::info!(redis = %crate::store::redact(url), "several nodes: relaying through Redis, and through the log");
        Ok(Some(bus))
    }

    /// A bus on the Redis at `url` for the service `service` (see `Store::service_id`), as node
    /// `node`; starts publishing at once, retrying while Redis cannot be reached. Fails only if
    /// the URL itself is not one.
    pub(crate) fn start(
        url: &str,
        service: &str,
        node: i64,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("--redis-url is not a Redis URL: {e}"))?;
        let inner = Arc::new(Inner {
            client,
            channel: format!("tandem:{service}"),
            node,
            publishing: AtomicBool::new(false),
            listening: AtomicBool::new(false),
            metrics,
        });
        let (publish, queue) = mpsc::channel(QUEUE);
        tokio::spawn(publish_rows(inner.clone(), queue));
        Ok(Self { inner, publish })
    }

    /// Starts hearing what other nodes publish, handing each row to `sink`; `reconnected` is
    /// called each time the subscription is made again, so that the node reads from the log
    /// what it may have missed meanwhile.
    pub(crate) fn listen(&self, sink: Arc<dyn BusSink>, reconnected: Arc<dyn Fn() + Send + Sync>) {
        tokio::spawn(listen(self.inner.clone(), sink, reconnected));
    }

    /// Tells the other nodes that presence in `doc` changed here (an awareness frame). Best
    /// effort, as presence is: dropped while Redis is away.
    pub(crate) fn publish_presence(&self, doc: &DocId, frame: Bytes) {
        if self
            .publish
            .try_send(Outgoing::Presence(doc.clone(), frame))
            .is_err()
        {
            self.inner.metrics.bus_dropped.inc();
        }
    }

    /// Whether both connections to Redis are up.
    pub(crate) fn is_up(&self) -> bool {
        self.inner.publishing.load(Ordering::Relaxed)
            && self.inner.listening.load(Ordering::Relaxed)
    }
}

impl CommitTap for Bus {
    fn committed(&self, doc: &DocId, position: i64, data: &Bytes) {
        if position <= 0 {
            return;
        }
        if self
            .publish
            .try_send(Outgoing::Row(doc.clone(), position, data.clone()))
            .is_err()
        {
            self.inner.metrics.bus_dropped.inc();
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One message: its kind, the node, for a row its position and publish time (epoch ms), the
/// document's id (length, then bytes), then the row's update or the awareness frame.
fn encode(node: i64, outgoing: &Outgoing) -> Vec<u8> {
    let (kind, doc, numbers, body) = match outgoing {
        Outgoing::Row(doc, position, data) => (ROW, doc, vec![*position, now_ms()], data),
        Outgoing::Presence(doc, frame) => (PRESENCE, doc, Vec::new(), frame),
    };
    let id = doc.as_str().as_bytes();
    let mut message = Vec::with_capacity(1 + 8 * 3 + 2 + id.len() + body.len());
    message.push(kind);
    message.extend_from_slice(&node.to_be_bytes());
    for number in numbers {
        message.extend_from_slice(&number.to_be_bytes());
    }
    message.extend_from_slice(&(id.len() as u16).to_be_bytes());
    message.extend_from_slice(id);
    message.extend_from_slice(body);
    message
}

/// What a message says.
#[derive(Debug, PartialEq, Eq)]
enum Heard {
    /// A row, with its publish time.
    Row(PeerRow, i64),
    Presence(DocId, Bytes),
}

/// A message read back: the node and what it says; `None` for anything else on the channel.
fn decode(message: &[u8]) -> Option<(i64, Heard)> {
    let (&kind, rest) = message.split_first()?;
    let number = |at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(rest.get(at..at + 8)?.try_into().ok()?))
    };
    let node = number(0)?;
    let numbers = match kind {
        ROW => 2,
        PRESENCE => 0,
        _ => return None,
    };
    let at = 8 + 8 * numbers;
    let len = usize::from(u16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?));
    let id = std::str::from_utf8(rest.get(at + 2..at + 2 + len)?).ok()?;
    let doc = DocId::parse(id).ok()?;
    let body = Bytes::copy_from_slice(rest.get(at + 2 + len..)?);
    let heard = if kind == ROW {
        let row = PeerRow {
            doc,
            position: number(8)?,
            data: body,
        };
        Heard::Row(row, number(16)?)
    } else {
        Heard::Presence(doc, body)
    };
    Some((node, heard))
}

/// Publishes queued rows, keeping a connection up (retrying while Redis is down). A row whose
/// publication fails is tried once more on a new connection, then dropped (and counted): the
/// log watch delivers it.
async fn publish_rows(inner: Arc<Inner>, mut queue: mpsc::Receiver<Outgoing>) {
    let mut reported = false;
    let (mut connection, waited) = connect(&inner, &mut reported).await;
    // Rows queued while Redis was away are in the log, and the other nodes read them there.
    if waited {
        drop_queued(&inner, &mut queue);
    }
    while let Some(outgoing) = queue.recv().await {
        let message = encode(inner.node, &outgoing);
        let mut attempts = 0;
        loop {
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(&inner.channel)
                .arg(&message)
                .query_async(&mut connection)
                .await;
            match sent {
                Ok(_) => {
                    inner.metrics.bus_published.inc();
                    break;
                }
                Err(error) => {
                    down(&inner.publishing, &mut reported, &error, "publishing");
                    attempts += 1;
                    if attempts == 2 {
                        inner.metrics.bus_dropped.inc();
                    }
                    // Rows queued while Redis is away are in the log: drop them, then wait
                    // for a connection, and drop those queued meanwhile too.
                    if attempts >= 2 {
                        drop_queued(&inner, &mut queue);
                    }
                    let (fresh, waited) = connect(&inner, &mut reported).await;
                    connection = fresh;
                    if attempts >= 2 || waited {
                        if attempts < 2 {
                            inner.metrics.bus_dropped.inc();
                        }
                        drop_queued(&inner, &mut queue);
                        break;
                    }
                }
            }
        }
    }
}

/// Drops (and counts) the rows waiting to be published: the log watch delivers them.
fn drop_queued(inner: &Inner, queue: &mut mpsc::Receiver<Outgoing>) {
    while queue.try_recv().is_ok() {
        inner.metrics.bus_dropped.inc();
    }
}

/// A connection for publishing, once Redis answers, and whether it had to wait for Redis.
async fn connect(inner: &Inner, reported: &mut bool) -> (redis::aio::MultiplexedConnection, bool) {
    let mut backoff = RECONNECT.start();
    let mut waited = false;
    loop {
        // A Redis that wants a password lets us connect, and refuses every command after.
        let answered = async {
            let mut connection = inner.client.get_multiplexed_async_connection().await?;
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await?;
            redis::RedisResult::Ok(connection)
        };
        match answered.await {
            Ok(connection) => {
                *reported = false;
                inner.publishing.store(true, Ordering::Relaxed);
                tracing::info!("bus: publishing to Redis");
                return (connection, waited);
            }
            Err(error) => {
                waited = true;
                down(&inner.publishing, reported, &error, "publishing");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Keeps a subscription to the service's channel and hands every row of another node on.
async fn listen(
    inner: Arc<Inner>,
    sink: Arc<dyn BusSink>,
    reconnected: Arc<dyn Fn() + Send + Sync>,
) {
    let mut backoff = RECONNECT.start();
    let mut reported = false;
    loop {
        let subscribed = async {
            let mut pubsub = inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&inner.channel).await?;
            redis::RedisResult::Ok(pubsub)
        }
        .await;
        let pubsub = match subscribed {
            Ok(pubsub) => pubsub,
            Err(error) => {
                down(&inner.listening, &mut reported, &error, "listening");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        backoff.reset();
        reported = false;
        inner.listening.store(true, Ordering::Relaxed);
        tracing::info!(channel = %inner.channel, "bus: listening to Redis");
        // Whatever was published while nobody listened is in the log.
        reconnected();
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Some((node, heard)) = decode(message.get_payload_bytes()) else {
                continue;
            };
            if node == inner.node {
                continue;
            }
            match heard {
                Heard::Row(row, sent) => {
                    inner.metrics.bus_received.inc();
                    let delay = (now_ms() - sent).max(0) as f64 / 1000.0;
                    inner.metrics.bus_relay_seconds.observe(delay);
                    sink.row(row);
                }
                Heard::Presence(doc, frame) => sink.presence(doc, frame),
            }
        }
        inner.listening.store(false, Ordering::Relaxed);
        tracing::warn!(
            "bus: lost the connection to Redis; serving through the log until it is back"
        );
    }
}

/// Marks one connection down, saying why once until it is up again.
fn down(flag: &AtomicBool, reported: &mut bool, error: &redis::RedisError, what: &str) {
    flag.store(false, Ordering::Relaxed);
    if !*reported {
        *reported = true;
        if refused_credentials(error) {
            tracing::error!(%error, "bus: Redis refused this node's credentials for {what}: give its password in --redis-url (redis://:PASSWORD@HOST:6379, or redis://USER:PASSWORD@HOST:6379); serving through the log until it accepts them");
        } else {
            tracing::warn!(%error, "bus: Redis unreachable for {what}; serving through the log until it is back");
        }
    }
}

/// Whether Redis turned this node away for want of a password, or for a wrong one.
fn refused_credentials(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("NOAUTH" | "WRONGPASS"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_it_was_written_and_anything_else_is_ignored() {
        let doc = DocId::parse("notes-1").expect("a valid id");
        let row = Outgoing::Row(doc.clone(), 42, Bytes::from_static(b"\x01\x02\x03"));
        let message = encode(-7, &row);
        let Some((-7, Heard::Row(heard, sent))) = decode(&message) else {
            panic!("a row from node -7");
        };
        assert_eq!(heard.doc, doc);
        assert_eq!(heard.position, 42);
        assert_eq!(&heard.data[..], b"\x01\x02\x03");
        assert!(sent > 0);
        let presence = encode(
            5,
            &Outgoing::Presence(doc.clone(), Bytes::from_static(b"\x01")),
        );
        assert_eq!(
            decode(&presence),
            Some((5, Heard::Presence(doc, Bytes::from_static(b"\x01"))))
        );
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&message[..20]), None);
        let mut other = message.clone();
        other[0] = 9;
        assert_eq!(decode(&other), None);
        let mut bad_id = message;
        bad_id[27] = b'/';
        assert_eq!(decode(&bad_id), None);
    }
}
