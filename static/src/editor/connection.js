// The editor page's link to the Tandem server: a y-websocket provider for one document, turned
// into the four connection states a person sees (connecting, live, reconnecting, offline) and into
// plain-words explanations of the close codes the server uses.

import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'

// The acknowledgement Tandem sends, when asked with `?acks=1`, once one of this page's updates
// (a SyncStep2 or an Update message) is durable: message type 8, then 1 (0: refused).
const MESSAGE_STORED = 8

// Close codes after which reconnecting would only repeat the refusal.
const TERMINAL = new Set([1003, 1007, 1008, 1009])
const DELETED = 4404

const shouldReconnect = (event) =>
  !TERMINAL.has(event.code) && !(event.code >= 4400 && event.code < 4500)

// What each state is called, and what it means for your edits.
export const STATES = {
  connecting: { word: 'Connecting…', detail: '' },
  live: { word: 'Live', detail: 'edits are shared and saved as you type' },
  reconnecting: { word: 'Reconnecting…', detail: 'your edits are kept and merged when the connection returns' },
  offline: { word: 'Offline', detail: 'your edits are kept and merged when you reconnect' }
}

// A live connection, for someone who edits: whether the server has stored every edit of theirs
// (it acknowledges each once it is durable).
export const SAVED = { word: 'Saved', detail: 'every edit is stored on the server' }
export const SAVING = { word: 'Saving…', detail: 'edits are shared; the server is storing them' }

// The same states for someone who may only read.
export const READ_ONLY_STATES = {
  connecting: STATES.connecting,
  live: { word: 'Live', detail: "others' changes appear as they are made" },
  reconnecting: { word: 'Reconnecting…', detail: "others' changes appear when the connection returns" },
  offline: { word: 'Offline', detail: "others' changes appear when you reconnect" }
}

// Words for a close code that ends the session (the page will not reconnect by itself).
export function terminalMessage (code, reason) {
  const why = reason ? ` (${reason})` : ''
  if (code === DELETED) return { deleted: true, text: 'This document was deleted.' }
  if (code === 1009) {
    return { text: `The server refused a change because it is too large${why}. Edits since then are not saved. Reload the page to reconnect; split very large pastes into smaller parts.` }
  }
  if (code === 1008) return { text: `The server refused access to this document${why}.` }
  if (code === 1003 || code === 1007) {
    return { text: `The server refused data from this page (close code ${code}${why}). Edits since then are not saved. Reload the page to reconnect.` }
  }
  return { text: `The server closed this document (close code ${code}${why}). Reload the page to try again.` }
}

// Words for a close the provider recovers from by reconnecting; null when it needs none.
function transientMessage (code) {
  if (code === 1011) return "The server couldn't open this document just now. Retrying…"
  return null
}

// Counts, per socket, the messages that carry this page's changes and the server's
// acknowledgements of them: a WebSocket class for the provider that counts what it sends.
function countingSocket (counts) {
  return class CountingWebSocket extends WebSocket {
    constructor (...args) {
      super(...args)
      counts.sent = 0
      counts.acked = 0
    }

    send (data) {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
      // Sync (0), then SyncStep2 (1) or Update (2).
      if (bytes[0] === 0 && (bytes[1] === 1 || bytes[1] === 2)) counts.sent++
      super.send(data)
    }
  }
}

// Opens the document `doc` on the server at `wsBase` (e.g. ws://host/ws) for `ydoc`, presenting
// `token` (a document token, or null on an open server). `onChange({ state, notice, saved })` is
// called on every state change; `saved` says whether the server has stored every edit made on
// this page; `onClose(event)` whenever a connection closes or could not be made;
// `onTerminal({ code, reason, deleted, text })` once when the server ends the session for good.
export function openConnection ({ wsBase, doc, ydoc, token = null, onChange, onClose = () => {}, onTerminal }) {
  const counts = { sent: 0, acked: 0 }
  const params = token ? { token, acks: '1' } : { acks: '1' }
  const options = { shouldReconnect, params, WebSocketPolyfill: countingSocket(counts) }
  const provider = new WebsocketProvider(wsBase, doc, ydoc, options)
  // Edits of this page the server has not acknowledged as stored. Made while connected, an edit
  // is sent at once and counted; made while not, it goes with the SyncStep2 of the next
  // connection, whose acknowledgement clears it.
  let unsaved = false
  ydoc.on('update', (_update, origin) => {
    if (origin !== provider) {
      unsaved = true
      update()
    }
  })
  provider.messageHandlers[MESSAGE_STORED] = (_encoder, decoder) => {
    if (decoding.readVarUint(decoder) !== 1) return
    counts.acked++
    if (counts.acked >= counts.sent && provider.synced) unsaved = false
    update()
  }
  let everLive = false
  let failedOnce = false
  let ended = false
  let notice = null
  let last = null

  const compute = () => {
    if (ended) return 'offline'
    if (provider.wsconnected && provider.synced) return 'live'
    if (!everLive && !failedOnce) return 'connecting'
    if (provider.wsconnecting || provider.wsconnected) return 'reconnecting'
    return 'offline'
  }

  const update = () => {
    const state = compute()
    if (state === 'live') {
      everLive = true
      notice = null
    }
    const saved = !unsaved
    const key = `${state}|${notice}|${saved}`
    if (key === last) return
    last = key
    onChange({ state, notice, saved })
  }

  provider.on('status', update)
  provider.on('sync', update)
  provider.on('connection-error', update)
  provider.on('connection-close', (event) => {
    failedOnce = true
    const words = event ? transientMessage(event.code) : null
    if (words) notice = words
    update()
    if (!ended) onClose(event)
  })
  provider.on('closed', ({ code, reason }) => {
    ended = true
    update()
    onTerminal({ code, reason, ...terminalMessage(code, reason) })
  })
  // The provider's own retry timer may be throttled in a background tab; retry when the network
  // or the tab comes back.
  const nudge = () => { if (!ended && !provider.wsconnected && !provider.wsconnecting) provider.connect() }
  window.addEventListener('online', nudge)
  document.addEventListener('visibilitychange', () => { if (document.visibilityState === 'visible') nudge() })

  // Ends the session from this side for good: no reconnecting, no more state changes.
  const stop = () => {
    ended = true
    provider.disconnect()
  }

  update()
  return { provider, state: compute, isEnded: () => ended, stop, unsaved: () => unsaved }
}
