// Tandem interop scenarios: drive unmodified Yjs clients (yjs + y-websocket
// over the `ws` socket) against a running Tandem server, so the Rust
// integration tests can prove stock clients sync, converge and share presence.
//
//   node tests/interop/run.mjs <scenario> (--url <ws base> | --urls <ws base>,<ws base>,...) --doc <name>
//        [--text <s>] [--expect <s>] [--clients <n>] [--timeout-ms <ms>] [--abrupt]
//        [--write-token <t> --read-token <t>]
//
// Scenarios: write, read, converge, awareness, offline, rust-peer, read-only.
// With --urls (several nodes of one service), the clients a scenario opens take the URLs in
// turn: the first client the first URL, the second the second, and so on round.
// Success: one JSON line `{"ok":true,"scenario":...}` on stdout, exit 0.
// Failure or timeout: `{"ok":false,"scenario":...,"error":...}`, exit 1,
// details on stderr. Every wait is driven by client events, never by sleeps.

import { parseArgs } from 'node:util'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { prosemirrorScenarios } from './prosemirror.mjs'

const TEXT = 'content'
const INSERTS_PER_CLIENT = 20

// ---------------------------------------------------------------- plumbing

const providers = new Set()
const pending = new Set() // labels of the waits still in progress
let scenario = null
let finished = false

function parseCli (argv) {
  if (argv[0] && !argv[0].startsWith('-')) scenario = argv[0]
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      urls: { type: 'string' },
      doc: { type: 'string' },
      text: { type: 'string' },
      expect: { type: 'string' },
      clients: { type: 'string', default: '3' },
      'timeout-ms': { type: 'string', default: '20000' },
      abrupt: { type: 'boolean', default: false },
      'write-token': { type: 'string' },
      'read-token': { type: 'string' }
    }
  })
  scenario = positionals[0] ?? null
  if (positionals.length !== 1) throw new Error('expected exactly one scenario name')
  if (!values.url === !values.urls) throw new Error('give --url or --urls')
  const urls = values.urls ? values.urls.split(',') : [values.url]
  if (!values.doc) throw new Error('--doc is required')
  const clients = Number(values.clients)
  const timeoutMs = Number(values['timeout-ms'])
  if (!Number.isInteger(clients) || clients < 1) throw new Error('--clients must be a positive integer')
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new Error('--timeout-ms must be a positive number')
  return { ...values, urls, clients, timeoutMs }
}

function need (value, flag) {
  if (value === undefined || value === '') throw new Error(`${flag} is required for scenario ${scenario}`)
  return value
}

// Destroy every provider, print the single result line, then exit so that no
// lingering socket or reconnect timer can keep the process alive.
function finish (result, code) {
  if (finished) return
  finished = true
  for (const p of providers) {
    try { p.destroy() } catch (err) { console.error('destroy failed:', err) }
  }
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(code))
}

function fail (err) {
  console.error(`[${scenario}] failed:`, err?.stack ?? err)
  finish({ ok: false, scenario, error: String(err?.message ?? err) }, 1)
}

// A stock provider on its own Y.Doc. BroadcastChannel exists in Node, so it
// is disabled: otherwise providers in this one process would sync with each
// other directly and the test would no longer prove anything about the server.
let opened = 0
function connect (opts, name, extra = {}) {
  const doc = new Y.Doc()
  const url = opts.urls[opened++ % opts.urls.length]
  const provider = new WebsocketProvider(url, opts.doc, doc, {
    WebSocketPolyfill: WebSocket,
    disableBc: true,
    ...extra
  })
  const seen = new Set()
  provider.on('connection-error', (event) => {
    const msg = event?.message ?? event?.error?.message ?? String(event)
    if (!seen.has(msg)) {
      seen.add(msg)
      console.error(`[${name}] connection error: ${msg}`)
    }
  })
  providers.add(provider)
  return { name, doc, provider, text: doc.getText(TEXT), awareness: provider.awareness }
}

// Resolve once `check()` is true, re-checking whenever `subscribe` reports an
// event. `subscribe(listener)` must return a function that unsubscribes.
function until (label, check, subscribe) {
  return new Promise((resolve, reject) => {
    let off = () => {}
    const test = () => {
      let value
      try { value = check() } catch (err) { off(); pending.delete(label); reject(err); return }
      if (value) { off(); pending.delete(label); resolve(value) }
    }
    pending.add(label)
    off = subscribe(test)
    test()
  })
}

const onSync = (provider) => (fn) => {
  provider.on('sync', fn)
  return () => provider.off('sync', fn)
}

const onText = (...clients) => (fn) => {
  for (const c of clients) c.text.observe(fn)
  return () => { for (const c of clients) c.text.unobserve(fn) }
}

const onAwareness = (client) => (fn) => {
  client.awareness.on('change', fn)
  return () => client.awareness.off('change', fn)
}

const synced = (c) => until(`${c.name} synced`, () => c.provider.synced, onSync(c.provider))

const textIncludes = (c, s) =>
  until(`${c.name} content includes ${JSON.stringify(s)}`, () => c.text.toString().includes(s), onText(c))

const tick = () => new Promise((resolve) => setImmediate(resolve))

// ---------------------------------------------------------------- awareness wire tap
// The stock client ignores an awareness entry for its own client id when the
// clock is unchanged, so the server's echo of our own state never shows up as
// an awareness event on the sender. To observe the echo robustly we read the
// wire instead: a `ws` subclass (still a plain `ws` socket for the provider)
// hands every incoming frame to a tiny decoder of the y-websocket framing
// (varUint message type 1 = awareness, then a length-prefixed update made of
// varUint count, and per entry varUint clientID, varUint clock, varString JSON).

function tappedSocket (onFrame) {
  return class TappedWebSocket extends WebSocket {
    constructor (...args) {
      super(...args)
      this.addEventListener('message', (event) => onFrame(new Uint8Array(event.data)))
    }
  }
}

function reader (bytes) {
  let pos = 0
  const varUint = () => {
    let num = 0
    let mult = 1
    for (;;) {
      if (pos >= bytes.length) throw new Error('truncated frame')
      const b = bytes[pos++]
      num += (b & 0x7f) * mult
      if (b < 0x80) return num
      mult *= 128
    }
  }
  const varBytes = () => {
    const len = varUint()
    if (pos + len > bytes.length) throw new Error('truncated frame')
    const out = bytes.subarray(pos, pos + len)
    pos += len
    return out
  }
  return { varUint, varBytes }
}

// Returns the awareness entries of a frame, or [] for any other message type.
function awarenessEntries (frame) {
  const outer = reader(frame)
  if (outer.varUint() !== 1) return []
  const update = reader(outer.varBytes())
  const entries = []
  for (let n = update.varUint(); n > 0; n--) {
    const clientID = update.varUint()
    const clock = update.varUint()
    const state = JSON.parse(new TextDecoder().decode(update.varBytes()))
    entries.push({ clientID, clock, state })
  }
  return entries
}

// ---------------------------------------------------------------- scenarios

async function write (opts) {
  const text = need(opts.text, '--text')
  const a = connect(opts, 'writer')
  await synced(a)
  a.text.insert(a.text.length, text)
  // A fresh client can only learn the text from the server.
  const b = connect(opts, 'checker')
  await synced(b)
  await textIncludes(b, text)
  return { text: a.text.toString() }
}

async function read (opts) {
  const c = connect(opts, 'reader')
  await synced(c)
  if (opts.text !== undefined) await textIncludes(c, opts.text)
  return { text: c.text.toString() }
}

async function converge (opts) {
  const n = opts.clients
  const clients = Array.from({ length: n }, (_, i) => connect(opts, `c${i}`))
  await Promise.all(clients.map(synced))

  const markers = clients.map((_, i) => `[c${i}]`)
  const count = (s, m) => s.split(m).length - 1
  const before = clients[0].text.toString()
  const expected = markers.map((m) => count(before, m) + INSERTS_PER_CLIENT)

  // Insert only at marker boundaries (start of text or right after a ']'):
  // concurrent inserts then land between whole markers, never inside one,
  // so every marker stays countable in the merged text.
  const boundaries = (s) => [0, ...[...s].flatMap((ch, i) => (ch === ']' ? [i + 1] : []))]
  const burst = async (c, marker) => {
    for (let k = 0; k < INSERTS_PER_CLIENT; k++) {
      const spots = boundaries(c.text.toString())
      c.text.insert(spots[Math.floor(Math.random() * spots.length)], marker)
      await tick()
    }
  }
  await Promise.all(clients.map((c, i) => burst(c, markers[i])))

  const final = await until('all clients identical with every marker', () => {
    const s = clients[0].text.toString()
    const same = clients.every((c) => c.text.toString() === s)
    return same && markers.every((m, i) => count(s, m) === expected[i]) ? s : null
  }, onText(...clients))
  const total = markers.reduce((sum, m) => sum + count(final, m), 0)
  return { clients: n, markers: total, text: final }
}

async function awareness (opts) {
  let echoSeen = false
  let echoWaiter = () => {}
  let aID = null
  const isAlice = (state) => state?.user?.name === 'alice'
  const onFrame = (frame) => {
    try {
      for (const e of awarenessEntries(frame)) {
        if (e.clientID === aID && isAlice(e.state)) { echoSeen = true; echoWaiter() }
      }
    } catch (err) {
      console.error('[alice] could not decode frame:', err.message)
    }
  }

  const a = connect(opts, 'alice', { WebSocketPolyfill: tappedSocket(onFrame) })
  aID = a.doc.clientID
  const b = connect(opts, 'bob')
  await Promise.all([synced(a), synced(b)])

  const echo = until('echo of alice state to alice', () => echoSeen, (fn) => {
    echoWaiter = fn
    return () => { echoWaiter = () => {} }
  })
  const seen = until('bob sees alice', () => isAlice(b.awareness.getStates().get(aID)), onAwareness(b))
  a.awareness.setLocalState({ user: { name: 'alice', color: '#f00' } })
  await Promise.all([echo, seen])

  // The stock client says goodbye (null state) before closing its socket, and
  // the server drops a closed connection's states. With --abrupt the TCP
  // socket is cut first, so only the server's own cleanup can tell bob.
  if (opts.abrupt) a.provider.ws?.terminate()
  a.provider.destroy()
  providers.delete(a.provider)
  await until('bob sees alice removed', () => !b.awareness.getStates().has(aID), onAwareness(b))
  return { seenByB: true, echoToA: true, removedOnDisconnect: true }
}

async function offline (opts) {
  const a = connect(opts, 'A')
  const b = connect(opts, 'B')
  await Promise.all([synced(a), synced(b)])

  a.provider.disconnect()
  a.text.insert(a.text.length, 'offline-A')
  b.text.insert(b.text.length, 'online-B')
  if (a.text.toString().includes('online-B')) throw new Error('A received an update while disconnected')
  a.provider.connect()
  await synced(a)

  const final = await until('A and B identical with both edits', () => {
    const s = a.text.toString()
    return s === b.text.toString() && s.includes('offline-A') && s.includes('online-B') ? s : null
  }, onText(a, b))
  return { text: final }
}

async function rustPeer (opts) {
  const text = need(opts.text, '--text')
  const expect = need(opts.expect, '--expect')
  const c = connect(opts, 'node-peer')
  await synced(c)
  c.text.insert(c.text.length, text)
  await textIncludes(c, expect)
  return { text: c.text.toString() }
}

// A writer and a read-only client, each with its document token: the reader receives
// everything; its own edit is dropped, the stock client is told (it logs y-websocket's
// "Permission denied" warning), and it stays connected and keeps receiving.
async function readOnly (opts) {
  const writeToken = need(opts['write-token'], '--write-token')
  const readToken = need(opts['read-token'], '--read-token')
  const denials = new EventTarget()
  const reasons = []
  const warn = console.warn
  console.warn = (...args) => {
    const line = args.join(' ')
    if (!line.startsWith('Permission denied')) return warn(...args)
    reasons.push(line)
    denials.dispatchEvent(new Event('denied'))
  }
  const onDenied = (fn) => {
    denials.addEventListener('denied', fn)
    return () => denials.removeEventListener('denied', fn)
  }
  const w = connect(opts, 'writer', { params: { token: writeToken } })
  const r = connect(opts, 'reader', { params: { token: readToken } })
  await Promise.all([synced(w), synced(r)])
  w.text.insert(0, 'from-writer ')
  await textIncludes(r, 'from-writer ')
  let readerCloses = 0
  r.provider.on('connection-close', () => { readerCloses++ })
  r.text.insert(r.text.length, 'from-reader')
  await until('the reader is told permission denied', () => reasons.length > 0, onDenied)
  w.text.insert(w.text.length, 'later')
  await textIncludes(r, 'later')
  const checker = connect(opts, 'checker', { params: { token: writeToken } })
  await synced(checker)
  return {
    denied: reasons[0],
    readerStayedConnected: readerCloses === 0,
    writerText: w.text.toString(),
    checkerText: checker.text.toString()
  }
}

// Two clients use root `notes` differently: one types `--text` into getText('notes'); the other,
// once it has that text, inserts a number at the front of getArray('notes'). A third client
// confirms the server holds both edits.
async function mixedRoot (opts) {
  const text = need(opts.text, '--text')
  const root = 'notes'
  const typist = connect(opts, 'typist')
  await synced(typist)
  typist.doc.getText(root).insert(0, text)
  const lister = connect(opts, 'lister')
  await synced(lister)
  await until('the lister has the text', () => lister.doc.store.clients.has(typist.doc.clientID), onUpdate(lister.doc))
  lister.doc.getArray(root).insert(0, [7])
  const checker = connect(opts, 'checker')
  await synced(checker)
  await until('the checker has both edits', () => checker.doc.store.clients.has(lister.doc.clientID), onUpdate(checker.doc))
  return { text: checker.doc.getText(root).toString() }
}

const onUpdate = (doc) => (fn) => {
  doc.on('update', fn)
  return () => doc.off('update', fn)
}

const SCENARIOS = { write, read, converge, awareness, offline, 'rust-peer': rustPeer, 'read-only': readOnly, 'mixed-root': mixedRoot }
Object.assign(SCENARIOS, prosemirrorScenarios({ connect, synced, until, onUpdate }))

// ---------------------------------------------------------------- main

async function main () {
  process.on('uncaughtException', fail)
  process.on('unhandledRejection', fail)
  const opts = parseCli(process.argv.slice(2))
  const run = SCENARIOS[scenario]
  if (!run) throw new Error(`unknown scenario ${JSON.stringify(scenario)}; expected one of ${Object.keys(SCENARIOS).join(', ')}`)
  setTimeout(() => {
    const waiting = [...pending].join('; ') || 'scenario'
    fail(new Error(`timeout after ${opts.timeoutMs}ms waiting for: ${waiting}`))
  }, opts.timeoutMs)
  const result = await run(opts)
  finish({ ok: true, scenario, ...result }, 0)
}

main().catch(fail)
