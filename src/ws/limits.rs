//! Fairness limits on WebSocket clients: how many connections (in total, per document, per IP
//! address), how fast each may send, and how much time applying its updates may take.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::domain::DocId;

/// Connection counts, shared by every upgrade. A slot is held by a [`Permit`] and given back
/// when the permit is dropped, however the session ends.
pub(crate) struct ConnectionLimits {
    max_total: usize,
    max_per_doc: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_doc: HashMap<DocId, usize>,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which limit turned a connection away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Full {
    #[error("server full: {0} connections open")]
    Total(usize),
    #[error("document full: {0} connections open to it")]
    Document(usize),
    #[error("too many connections from your address ({0})")]
    Address(usize),
}

/// One admitted connection's slot, or one document's on a connection that holds several: it
/// counts in whichever of the limits it was admitted under.
pub(crate) struct Permit {
    limits: Arc<ConnectionLimits>,
    /// Counted in the total.
    total: bool,
    doc: Option<DocId>,
    ip: Option<IpAddr>,
}

impl ConnectionLimits {
    pub(crate) fn new(max_total: usize, max_per_doc: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_doc,
            max_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Admits a connection to `doc` from `ip` if no limit is reached; the permit holds the slot.
    pub(crate) fn admit(self: &Arc<Self>, doc: &DocId, ip: Option<IpAddr>) -> Result<Permit, Full> {
        self.take(true, Some(doc), ip)
    }

    /// Admits a connection that will hold documents of its own choosing (the Hocuspocus
    /// protocol): counted in the total and its address's; each document is admitted with
    /// [`Self::admit_doc`].
    pub(crate) fn admit_socket(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, Full> {
        self.take(true, None, ip)
    }

    /// Admits one more document channel of a connection admitted with [`Self::admit_socket`]:
    /// counted in the document's limit, as a connection to it.
    pub(crate) fn admit_doc(self: &Arc<Self>, doc: &DocId) -> Result<Permit, Full> {
        self.take(false, Some(doc), None)
    }

    fn take(
        self: &Arc<Self>,
        total: bool,
        doc: Option<&DocId>,
        ip: Option<IpAddr>,
    ) -> Result<Permit, Full> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let over = |count: usize, max: usize| max > 0 && count >= max;
        if total && over(counts.total, self.max_total) {
            return Err(Full::Total(counts.total));
        }
        if let Some(doc) = doc {
            let on_doc = counts.per_doc.get(doc).copied().unwrap_or(0);
            if over(on_doc, self.max_per_doc) {
                return Err(Full::Document(on_doc));
            }
        }
        if let Some(ip) = ip {
            let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
            if over(from_ip, self.max_per_ip) {
                return Err(Full::Address(from_ip));
            }
            *counts.per_ip.entry(ip).or_default() += 1;
        }
        if total {
            counts.total += 1;
        }
        if let Some(doc) = doc {
            *counts.per_doc.entry(doc.clone()).or_default() += 1;
        }
        Ok(Permit {
            limits: self.clone(),
            total,
            doc: doc.cloned(),
            ip,
        })
    }

    pub(crate) fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        if self.total {
            counts.total = counts.total.saturating_sub(1);
        }
        if let Some(doc) = &self.doc {
            release(&mut counts.per_doc, doc);
        }
        if let Some(ip) = self.ip {
            release(&mut counts.per_ip, &ip);
        }
    }
}

/// Decrements a count, forgetting keys that reach zero so the maps stay small.
fn release<K: Eq + Hash>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// A token bucket: `rate` messages per second on average, `burst` at once. Every message of a
/// frame takes a token (presence takes more, by its size: see `sync::protocol`), so a frame
/// packed with messages costs what the same messages sent one by one would.
#[derive(Debug, Clone)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A rate of zero means no limit.
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// The whole tokens in the bucket at `now` (`u64::MAX` without a limit): what the next
    /// frame may cost.
    pub(crate) fn available(&mut self, now: Instant) -> u64 {
        if self.rate == 0.0 {
            return u64::MAX;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.tokens.floor() as u64
    }

    /// Takes `cost` tokens at `now`; false, taking nothing, when the bucket holds fewer.
    pub(crate) fn take(&mut self, now: Instant, cost: u64) -> bool {
        if self.available(now) < cost {
            return false;
        }
        if self.rate != 0.0 {
            self.tokens -= cost as f64;
        }
        true
    }

    /// Takes one token at `now`; false when the bucket is empty.
    #[cfg(test)]
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        self.take(now, 1)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn doc(name: &str) -> DocId {
        DocId::parse(name).expect("valid name")
    }

    #[test]
    fn each_limit_turns_away_the_connection_beyond_it_and_a_closed_one_frees_its_slot() {
        let limits = ConnectionLimits::new(3, 2, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = limits.admit(&doc("x"), Some(a)).expect("room");
        let _second = limits.admit(&doc("x"), Some(b)).expect("room");
        assert_eq!(
            limits.admit(&doc("x"), Some(b)).err(),
            Some(Full::Document(2))
        );
        let _third = limits.admit(&doc("y"), Some(a)).expect("room");
        assert_eq!(limits.admit(&doc("z"), Some(b)).err(), Some(Full::Total(3)));
        drop(first);
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.admit(&doc("y"), Some(a)).map(|_| ()), Ok(()));
        let _fourth = limits.admit(&doc("z"), Some(a)).expect("room");
        assert_eq!(limits.admit(&doc("w"), Some(a)).err(), Some(Full::Total(3)));
    }

    #[test]
    fn the_address_limit_counts_per_address() {
        let limits = ConnectionLimits::new(0, 0, 1);
        let a: IpAddr = "::1".parse().expect("ip");
        let _held = limits.admit(&doc("x"), Some(a)).expect("room");
        assert_eq!(
            limits.admit(&doc("y"), Some(a)).err(),
            Some(Full::Address(1))
        );
        assert!(limits.admit(&doc("y"), None).is_ok());
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = RateLimiter::new(10, 5);
        bucket.last = start;
        assert!((0..5).all(|_| bucket.allow(start)));
        assert!(!bucket.allow(start));
        assert!(bucket.allow(start + Duration::from_millis(100)));
        assert!(!bucket.allow(start + Duration::from_millis(100)));
        let mut open = RateLimiter::new(0, 1);
        assert!((0..10_000).all(|_| open.allow(start)));
        assert!(open.take(start, u64::MAX));
    }

    #[test]
    fn a_cost_is_taken_whole_or_not_at_all() {
        let start = Instant::now();
        let mut bucket = RateLimiter::new(10, 5);
        bucket.last = start;
        assert!(!bucket.take(start, 6));
        assert_eq!(bucket.available(start), 5);
        assert!(bucket.take(start, 4));
        assert_eq!(bucket.available(start), 1);
        assert!(!bucket.take(start, 2));
        assert!(bucket.take(start + Duration::from_millis(100), 2));
    }
}
