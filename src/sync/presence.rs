//! Presence (Yjs "awareness") as the server keeps it for one document.
//!
//! The server is a relay, not a peer: it has no state of its own, remembers which connection set
//! which client's state so that a closed connection's states can be cleared, and expires states
//! that nobody renewed (clients renew theirs every 15 s). The merge rule is the one every Yjs
//! peer applies, so what the server tells a late joiner matches what the others see.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use yrs::encoding::write::Write;

use super::protocol::encode_awareness;
use super::validate::AwarenessEntry;

/// Identifies the connection that set a state.
pub type OwnerId = u64;

/// The JSON a Yjs client sends for "no state" (the client left or cleared its presence).
const NULL_STATE: &str = "null";

#[derive(Debug)]
struct ClientState {
    clock: u32,
    /// `None` once removed; the clock is kept so that stale messages cannot bring it back.
    json: Option<Arc<str>>,
    last_updated: Instant,
    owner: Option<OwnerId>,
}

/// Presence states of one document.
#[derive(Debug, Default)]
pub struct Presence {
    clients: HashMap<u64, ClientState>,
}

impl Presence {
    /// True when no client has a live state.
    pub fn is_empty(&self) -> bool {
        self.clients.values().all(|c| c.json.is_none())
    }

    /// Applies an awareness update from connection `owner`; returns the client ids whose entry
    /// changed (added, renewed, updated or removed), which are what gets relayed.
    pub fn apply(
        &mut self,
        owner: OwnerId,
        entries: Vec<AwarenessEntry>,
        now: Instant,
    ) -> Vec<u64> {
        let mut changed = Vec::with_capacity(entries.len());
        for entry in entries {
            let incoming =
                (entry.json.as_str() != NULL_STATE).then(|| Arc::<str>::from(entry.json));
            match self.clients.get_mut(&entry.client) {
                Some(state) => {
                    // Newer clock wins; at the same clock only a removal of a live state counts.
                    let removal_at_same_clock =
                        state.clock == entry.clock && incoming.is_none() && state.json.is_some();
                    if state.clock < entry.clock || removal_at_same_clock {
                        let was_live = state.json.is_some();
                        state.clock = entry.clock;
                        state.last_updated = now;
                        state.owner = incoming.as_ref().map(|_| owner);
                        state.json = incoming;
                        if was_live || state.json.is_some() {
                            changed.push(entry.client);
                        }
                    }
                }
                None => {
                    let live = incoming.is_some();
                    self.clients.insert(
                        entry.client,
                        ClientState {
                            clock: entry.clock,
                            json: incoming,
                            last_updated: now,
                            owner: live.then_some(owner),
                        },
                    );
                    if live {
                        changed.push(entry.client);
                    }
                }
            }
        }
        changed
    }

    /// The `user.name` of every live state that has one (the convention of Yjs editor bindings),
    /// sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .clients
            .values()
            .filter_map(|c| c.json.as_deref())
            .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
            .filter_map(|state| state["user"]["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    /// Clears every live state that connection `owner` set; returns the cleared client ids.
    pub fn remove_owner(&mut self, owner: OwnerId) -> Vec<u64> {
        self.clear_where(|state| state.owner == Some(owner))
    }

    /// Clears live states not renewed within `timeout`, and forgets cleared entries that have
    /// been quiet for twice as long; returns the cleared client ids.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<u64> {
        self.clients.retain(|_, state| {
            state.json.is_some() || now.duration_since(state.last_updated) < timeout * 2
        });
        self.clear_where(|state| now.duration_since(state.last_updated) >= timeout)
    }

    fn clear_where(&mut self, mut pred: impl FnMut(&ClientState) -> bool) -> Vec<u64> {
        let mut cleared = Vec::new();
        for (&client, state) in &mut self.clients {
            if state.json.is_some() && pred(state) {
                state.json = None;
                state.owner = None;
                cleared.push(client);
            }
        }
        cleared
    }

    /// The awareness frame describing `clients` (a cleared one as the JSON `null`), or `None`
    /// when the list is empty.
    pub fn encode(&self, clients: &[u64]) -> Option<Bytes> {
        let mut payload = Vec::new();
        let known: Vec<(u64, &ClientState)> = clients
            .iter()
            .filter_map(|id| self.clients.get(id).map(|s| (*id, s)))
            .collect();
        if known.is_empty() {
            return None;
        }
        payload.write_var(known.len());
        for (client, state) in known {
            payload.write_var(client);
            payload.write_var(state.clock);
            payload.write_string(state.json.as_deref().unwrap_or(NULL_STATE));
        }
        Some(encode_awareness(&payload))
    }

    /// The awareness frame with every live state, for a newcomer or an awareness query.
    pub fn encode_all(&self) -> Option<Bytes> {
        let live: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, s)| s.json.is_some())
            .map(|(id, _)| *id)
            .collect();
        self.encode(&live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::validate::parse_awareness_v1;
    use yrs::encoding::read::{Cursor, Read};

    fn entry(client: u64, clock: u32, json: &str) -> AwarenessEntry {
        AwarenessEntry {
            client,
            clock,
            json: json.to_string(),
        }
    }

    fn decode(frame: &Bytes) -> Vec<AwarenessEntry> {
        let mut cursor = Cursor::new(frame);
        assert_eq!(cursor.read_var::<u64>().expect("tag"), 1);
        parse_awareness_v1(cursor.read_buf().expect("payload")).expect("valid awareness")
    }

    #[test]
    fn newer_clocks_win_and_stale_ones_are_ignored() {
        let mut p = Presence::default();
        let now = Instant::now();
        assert_eq!(p.apply(1, vec![entry(7, 1, r#"{"a":1}"#)], now), vec![7]);
        assert_eq!(
            p.apply(1, vec![entry(7, 1, r#"{"a":2}"#)], now),
            Vec::<u64>::new()
        );
        assert_eq!(p.apply(1, vec![entry(7, 2, r#"{"a":1}"#)], now), vec![7]);
        let all = decode(&p.encode_all().expect("one live state"));
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].client, all[0].clock), (7, 2));
    }

    #[test]
    fn a_removal_clears_the_state_but_keeps_its_clock() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(7, 3, "{}")], now);
        assert_eq!(p.apply(1, vec![entry(7, 3, "null")], now), vec![7]);
        assert!(p.is_empty());
        assert!(p.encode_all().is_none());
        // A stale re-send of the old state cannot resurrect it.
        assert_eq!(p.apply(1, vec![entry(7, 3, "{}")], now), Vec::<u64>::new());
        let removed = decode(&p.encode(&[7]).expect("known client"));
        assert_eq!(removed[0].json, "null");
    }

    #[test]
    fn closing_a_connection_clears_only_its_states() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(10, 1, "{}")], now);
        p.apply(2, vec![entry(20, 1, "{}")], now);
        assert_eq!(p.remove_owner(1), vec![10]);
        let live = decode(&p.encode_all().expect("one left"));
        assert_eq!(live.iter().map(|e| e.client).collect::<Vec<_>>(), vec![20]);
    }

    #[test]
    fn names_come_from_live_user_states() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(1, 1, r#"{"user":{"name":"bob"}}"#)], now);
        p.apply(
            1,
            vec![entry(2, 1, r##"{"user":{"name":"alice","color":"#f00"}}"##)],
            now,
        );
        p.apply(2, vec![entry(3, 1, r#"{"cursor":null}"#)], now);
        p.apply(2, vec![entry(4, 1, r#"{"user":{"name":"gone"}}"#)], now);
        p.apply(2, vec![entry(4, 1, "null")], now);
        assert_eq!(p.names(), vec!["alice", "bob"]);
    }

    #[test]
    fn states_not_renewed_expire() {
        let mut p = Presence::default();
        let start = Instant::now();
        p.apply(1, vec![entry(10, 1, "{}")], start);
        p.apply(1, vec![entry(11, 1, "{}")], start + Duration::from_secs(20));
        let timeout = Duration::from_secs(30);
        assert_eq!(p.expire(start + Duration::from_secs(31), timeout), vec![10]);
        assert_eq!(p.expire(start + Duration::from_secs(51), timeout), vec![11]);
        assert!(p.is_empty());
    }
}
