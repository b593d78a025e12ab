//! The bus: Redis pub/sub as the fast path between nodes that share one Postgres database.
//!
//! After each commit the writer hands the bus the rows it wrote ([`CommitTap`]); the bus
//! publishes each, with its document, its position in the document's log and the node that
//! wrote it, on one channel per service (named by the database's service id, so that services
//! sharing a Redis never hear each other). Every node subscribes to that channel and hands the
//! rows of the documents it holds to them. The log in Postgres stays the truth: a row is
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

/// Rows waiting to be published; beyond this many the newest are dropped (and counted): the
/// log watch delivers them.
const QUEUE: usize = 16_384;
/// Waits between attempts to reach Redis: 100 ms, doubling up to 5 s.
const RECONNECT: Policy = Policy::new(Duration::from_millis(100), Duration::from_secs(5));
/// The version of the message layout below.
const LAYOUT: u8 = 1;

/// A row another node committed, as the bus heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerRow {
    pub doc: DocId,
    pub position: i64,
    pub data: Bytes,
}

/// Where the bus hands the rows it hears (the registry, which passes each to its document).
pub(crate) trait RowSink: Send + Sync {
    fn row(&self, row: PeerRow);
}

/// The bus of one node. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Bus {
    inner: Arc<Inner>,
    publish: mpsc::Sender<(DocId, i64, Bytes)>,
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
            channel: format!("tandem:{service}:log"),
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
    pub(crate) fn listen(&self, sink: Arc<dyn RowSink>, reconnected: Arc<dyn Fn() + Send + Sync>) {
        tokio::spawn(listen(self.inner.clone(), sink, reconnected));
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
            .try_send((doc.clone(), position, data.clone()))
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

/// One message: layout, node, position, publish time (epoch ms), the document's id (length,
/// then bytes), then the row's update.
fn encode(node: i64, doc: &DocId, position: i64, data: &[u8]) -> Vec<u8> {
    let id = doc.as_str().as_bytes();
    let mut message = Vec::with_capacity(1 + 8 * 3 + 2 + id.len() + data.len());
    message.push(LAYOUT);
    message.extend_from_slice(&node.to_be_bytes());
    message.extend_from_slice(&position.to_be_bytes());
    message.extend_from_slice(&now_ms().to_be_bytes());
    message.extend_from_slice(&(id.len() as u16).to_be_bytes());
    message.extend_from_slice(id);
    message.extend_from_slice(data);
    message
}

/// A message read back: (node, row, publish time); `None` for anything else on the channel.
fn decode(message: &[u8]) -> Option<(i64, PeerRow, i64)> {
    let (&layout, rest) = message.split_first()?;
    if layout != LAYOUT || rest.len() < 26 {
        return None;
    }
    let number = |at: usize| -> Option<i64> {
        Some(i64::from_be_bytes(rest.get(at..at + 8)?.try_into().ok()?))
    };
    let (node, position, sent) = (number(0)?, number(8)?, number(16)?);
    let len = usize::from(u16::from_be_bytes(rest.get(24..26)?.try_into().ok()?));
    let id = std::str::from_utf8(rest.get(26..26 + len)?).ok()?;
    let doc = DocId::parse(id).ok()?;
    let data = Bytes::copy_from_slice(rest.get(26 + len..)?);
    Some((
        node,
        PeerRow {
            doc,
            position,
            data,
        },
        sent,
    ))
}

/// Publishes queued rows, keeping a connection up (retrying while Redis is down). A row whose
/// publication fails is tried once more on a new connection, then dropped (and counted): the
/// log watch delivers it.
async fn publish_rows(inner: Arc<Inner>, mut queue: mpsc::Receiver<(DocId, i64, Bytes)>) {
    let mut reported = false;
    let mut connection = connect(&inner, &mut reported).await;
    while let Some((doc, position, data)) = queue.recv().await {
        let message = encode(inner.node, &doc, position, &data);
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
                    // for a connection.
                    while attempts >= 2 && queue.try_recv().is_ok() {
                        inner.metrics.bus_dropped.inc();
                    }
                    connection = connect(&inner, &mut reported).await;
                    if attempts >= 2 {
                        break;
                    }
                }
            }
        }
    }
}

/// A connection for publishing, once Redis answers.
async fn connect(inner: &Inner, reported: &mut bool) -> redis::aio::MultiplexedConnection {
    let mut backoff = RECONNECT.start();
    loop {
        match inner.client.get_multiplexed_async_connection().await {
            Ok(connection) => {
                *reported = false;
                inner.publishing.store(true, Ordering::Relaxed);
                tracing::info!("bus: publishing to Redis");
                return connection;
            }
            Err(error) => {
                down(&inner.publishing, reported, &error, "publishing");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Keeps a subscription to the service's channel and hands every row of another node on.
async fn listen(
    inner: Arc<Inner>,
    sink: Arc<dyn RowSink>,
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
            let Some((node, row, sent)) = decode(message.get_payload_bytes()) else {
                continue;
            };
            if node == inner.node {
                continue;
            }
            inner.metrics.bus_received.inc();
            let delay = (now_ms() - sent).max(0) as f64 / 1000.0;
            inner.metrics.bus_relay_seconds.observe(delay);
            sink.row(row);
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
        tracing::warn!(%error, "bus: Redis unreachable for {what}; serving through the log until it is back");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reads_back_as_it_was_written_and_anything_else_is_ignored() {
        let doc = DocId::parse("notes-1").expect("a valid id");
        let message = encode(-7, &doc, 42, b"\x01\x02\x03");
        let (node, row, sent) = decode(&message).expect("it decodes");
        assert_eq!(node, -7);
        assert_eq!(row.doc, doc);
        assert_eq!(row.position, 42);
        assert_eq!(&row.data[..], b"\x01\x02\x03");
        assert!(sent > 0);
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
