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
use crate::wire::AwarenessEntry;

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
    /// Live states per owner, for the cap on what one connection may hold.
    owned: HashMap<OwnerId, usize>,
}

/// A connection tried to hold more live presence states than it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many presence states: at most {0} per connection")]
pub struct TooManyStates(pub usize);

impl Presence {
    /// True when no client has a live state.
    pub fn is_empty(&self) -> bool {
        self.clients.values().all(|c| c.json.is_none())
    }

    /// Applies an awareness update from connection `owner`; returns the client ids whose entry
    /// changed (added, renewed, updated or removed), which are what gets relayed. An update that
    /// would leave `owner` holding more than `max_per_owner` live states is refused whole, and
    /// nothing of it is applied: a stock client holds one, and every state held is sent to
    /// every newcomer.
    pub fn apply(
        &mut self,
        owner: OwnerId,
        entries: Vec<AwarenessEntry>,
        now: Instant,
        max_per_owner: usize,
    ) -> Result<Vec<u64>, TooManyStates> {
        // Counted before anything changes; an entry the merge rule would ignore still counts,
        // which only errs against a client that sends stale states of other clients.
        let held = self.owned.get(&owner).copied().unwrap_or(0);
        let gained = entries
            .iter()
            .filter(|entry| entry.json.as_str() != NULL_STATE)
            .filter(|entry| {
                self.clients
                    .get(&entry.client)
                    .is_none_or(|state| state.json.is_none() || state.owner != Some(owner))
            })
            .count();
        if held.saturating_add(gained) > max_per_owner {
            return Err(TooManyStates(max_per_owner));
        }
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
                        let previous = state.owner;
                        state.clock = entry.clock;
                        state.last_updated = now;
                        state.owner = incoming.as_ref().map(|_| owner);
                        state.json = incoming;
                        let (is_live, next) = (state.json.is_some(), state.owner);
                        if was_live || is_live {
                            changed.push(entry.client);
                        }
                        self.disown(previous);
                        self.own(next);
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
                        self.own(Some(owner));
                    }
                }
            }
        }
        Ok(changed)
    }

    fn own(&mut self, owner: Option<OwnerId>) {
        if let Some(owner) = owner {
            *self.owned.entry(owner).or_default() += 1;
        }
    }

    fn disown(&mut self, owner: Option<OwnerId>) {
        if let Some(owner) = owner
            && let Some(count) = self.owned.get_mut(&owner)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.owned.remove(&owner);
            }
        }
    }

    /// Live states that connection `owner` holds.
    pub fn held_by(&self, owner: OwnerId) -> usize {
        self.owned.get(&owner).copied().unwrap_or(0)
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
        let mut disowned = Vec::new();
        for (&client, state) in &mut self.clients {
            if state.json.is_some() && pred(state) {
                state.json = None;
                disowned.push(state.owner.take());
                cleared.push(client);
            }
        }
        for owner in disowned {
            self.disown(owner);
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

    /// The awareness frame with every live state.
    pub fn encode_all(&self) -> Option<Bytes> {
        self.encode(&self.live())
    }

    /// Every live state, for a newcomer or an awareness query, in frames of about
    /// `max_frame` bytes at most (a state longer than that goes alone), so that each can be
    /// offered to a client's queue on its own and a crowded document never makes one huge frame.
    pub fn encode_all_chunked(&self, max_frame: usize) -> Vec<Bytes> {
        let mut frames = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        for client in self.live() {
            let size = self.clients.get(&client).map_or(0, |state| {
                state.json.as_deref().map_or(0, str::len) + STATE_OVERHEAD
            });
            if !batch.is_empty() && bytes + size > max_frame {
                frames.extend(self.encode(&batch));
                batch.clear();
                bytes = 0;
            }
            batch.push(client);
            bytes += size;
        }
        frames.extend(self.encode(&batch));
        frames
    }

    fn live(&self) -> Vec<u64> {
        self.clients
            .iter()
            .filter(|(_, s)| s.json.is_some())
            .map(|(id, _)| *id)
            .collect()
    }
}

/// Bytes an entry takes besides its JSON: the client id, clock and length, as varints.
const STATE_OVERHEAD: usize = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_awareness_v1;
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
        assert_eq!(
            p.apply(1, vec![entry(7, 1, r#"{"a":1}"#)], now, 8)
                .expect("within the cap"),
            vec![7]
        );
        assert_eq!(
            p.apply(1, vec![entry(7, 1, r#"{"a":2}"#)], now, 8)
                .expect("within the cap"),
            Vec::<u64>::new()
        );
        assert_eq!(
            p.apply(1, vec![entry(7, 2, r#"{"a":1}"#)], now, 8)
                .expect("within the cap"),
            vec![7]
        );
        let all = decode(&p.encode_all().expect("one live state"));
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].client, all[0].clock), (7, 2));
    }

    #[test]
    fn a_removal_clears_the_state_but_keeps_its_clock() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(7, 3, "{}")], now, 8)
            .expect("within the cap");
        assert_eq!(
            p.apply(1, vec![entry(7, 3, "null")], now, 8)
                .expect("within the cap"),
            vec![7]
        );
        assert!(p.is_empty());
        assert!(p.encode_all().is_none());
        // A stale re-send of the old state cannot resurrect it.
        assert_eq!(
            p.apply(1, vec![entry(7, 3, "{}")], now, 8)
                .expect("within the cap"),
            Vec::<u64>::new()
        );
        let removed = decode(&p.encode(&[7]).expect("known client"));
        assert_eq!(removed[0].json, "null");
    }

    #[test]
    fn closing_a_connection_clears_only_its_states() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(10, 1, "{}")], now, 8)
            .expect("within the cap");
        p.apply(2, vec![entry(20, 1, "{}")], now, 8)
            .expect("within the cap");
        assert_eq!(p.remove_owner(1), vec![10]);
        let live = decode(&p.encode_all().expect("one left"));
        assert_eq!(live.iter().map(|e| e.client).collect::<Vec<_>>(), vec![20]);
    }

    #[test]
    fn names_come_from_live_user_states() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(1, 1, r#"{"user":{"name":"bob"}}"#)], now, 8)
            .expect("within the cap");
        p.apply(
            1,
            vec![entry(2, 1, r##"{"user":{"name":"alice","color":"#f00"}}"##)],
            now,
            8,
        )
        .expect("within the cap");
        p.apply(2, vec![entry(3, 1, r#"{"cursor":null}"#)], now, 8)
            .expect("within the cap");
        p.apply(2, vec![entry(4, 1, r#"{"user":{"name":"gone"}}"#)], now, 8)
            .expect("within the cap");
        p.apply(2, vec![entry(4, 1, "null")], now, 8)
            .expect("within the cap");
        assert_eq!(p.names(), vec!["alice", "bob"]);
    }

    #[test]
    fn states_not_renewed_expire() {
        let mut p = Presence::default();
        let start = Instant::now();
        p.apply(1, vec![entry(10, 1, "{}")], start, 8)
            .expect("within the cap");
        p.apply(
            1,
            vec![entry(11, 1, "{}")],
            start + Duration::from_secs(20),
            8,
        )
        .expect("within the cap");
        let timeout = Duration::from_secs(30);
        assert_eq!(p.expire(start + Duration::from_secs(31), timeout), vec![10]);
        assert_eq!(p.expire(start + Duration::from_secs(51), timeout), vec![11]);
        assert!(p.is_empty());
    }

    #[test]
    fn a_connection_holds_at_most_its_cap_of_live_states() {
        let mut p = Presence::default();
        let now = Instant::now();
        p.apply(1, vec![entry(10, 1, "{}"), entry(11, 1, "{}")], now, 2)
            .expect("two fit");
        assert_eq!(p.held_by(1), 2);
        // Renewing a state it holds gains nothing.
        assert!(p.apply(1, vec![entry(10, 2, "{}")], now, 2).is_ok());
        // A third is refused, and nothing of the refused update is applied.
        assert_eq!(
            p.apply(1, vec![entry(10, 3, "null"), entry(12, 1, "{}")], now, 2),
            Err(TooManyStates(2))
        );
        assert_eq!(p.held_by(1), 2);
        // Clearing one makes room; another connection has its own cap.
        p.apply(1, vec![entry(11, 2, "null")], now, 2)
            .expect("a removal");
        assert_eq!(p.held_by(1), 1);
        assert!(p.apply(1, vec![entry(12, 1, "{}")], now, 2).is_ok());
        assert!(
            p.apply(2, vec![entry(20, 1, "{}"), entry(21, 1, "{}")], now, 2)
                .is_ok()
        );
        // A state taken over by another connection moves to its count.
        p.apply(2, vec![entry(10, 9, "{}")], now, 3).expect("fits");
        assert_eq!((p.held_by(1), p.held_by(2)), (1, 3));
        assert_eq!(p.remove_owner(2).len(), 3);
        assert_eq!(p.held_by(2), 0);
        assert_eq!(
            p.expire(now + Duration::from_secs(60), Duration::from_secs(30)),
            vec![12]
        );
        assert_eq!(p.held_by(1), 0);
    }

    #[test]
    fn every_live_state_goes_out_in_frames_of_bounded_size() {
        let mut p = Presence::default();
        let now = Instant::now();
        let state = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000));
        for client in 0..10 {
            p.apply(client, vec![entry(client, 1, &state)], now, 1)
                .expect("one each");
        }
        let frames = p.encode_all_chunked(3000);
        assert!(frames.len() >= 4, "{} frames", frames.len());
        assert!(frames.iter().all(|f| f.len() <= 3000 + 16));
        let mut seen: Vec<u64> = frames.iter().flat_map(decode).map(|e| e.client).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(Presence::default().encode_all_chunked(3000).is_empty());
    }
}
