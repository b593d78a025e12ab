// Tandem's Hocuspocus scenarios: drive the stock `@hocuspocus/provider` (3.x, or 2.x with
// `--provider 2`) from npm against a running Tandem server's `/ws`, so the Rust integration
// tests can prove Tiptap's client works unmodified.
//
//   node tests/hocuspocus/run.mjs <scenario> --url <ws://host:port> [--provider 2|3]
//        [--doc <name>] [--docs <a,b,c>] [--text <s>] [--expect <s>] [--clients <n>]
//        [--token <t>] [--tokens <t for each of --docs>] [--read-token <t>] [--bad-tokens <t1,t2,...>] [--api <http base>]
//        [--api-key <k>] [--timeout-ms <ms>]
//
// Scenarios: converge, multiplex, awareness, mixed, tokens, read-only, write-saved, read,
// bad-messages, closed-by-server, limits.
// Success: one JSON line `{"ok":true,"scenario":...}` on stdout, exit 0. Failure or timeout:
// `{"ok":false,...,"error":...}`, exit 1. Every wait is driven by client events, never sleeps.

import { parseArgs } from 'node:util'
import * as Y from 'yjs'
import WebSocket from 'ws'
import * as v3 from '@hocuspocus/provider'
import * as v2 from 'hocuspocus-provider-2'
import { WebsocketProvider } from 'y-websocket'

const TEXT = 'content'
const opened = new Set()
let scenario = null
let finished = false

function parseCli (argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      url: { type: 'string' },
      provider: { type: 'string', default: '3' },
      doc: { type: 'string' },
      docs: { type: 'string' },
      text: { type: 'string' },
      expect: { type: 'string' },
      clients: { type: 'string', default: '3' },
      token: { type: 'string' },
      tokens: { type: 'string' },
      'read-token': { type: 'string' },
      'bad-tokens': { type: 'string' },
      api: { type: 'string' },
      'api-key': { type: 'string' },
      'timeout-ms': { type: 'string', default: '20000' }
    }
  })
  scenario = positionals[0] ?? null
  if (positionals.length !== 1) throw new Error('expected exactly one scenario name')
  if (!values.url) throw new Error('--url is required')
  if (!['2', '3'].includes(values.provider)) throw new Error('--provider is 2 or 3')
  return {
    ...values,
    docs: values.docs ? values.docs.split(',') : [],
    tokens: values.tokens ? values.tokens.split(',') : [],
    clients: Number(values.clients),
    timeoutMs: Number(values['timeout-ms'])
  }
}

function finish (result, code) {
  if (finished) return
  finished = true
  for (const p of opened) {
    try { p.destroy() } catch {}
  }
  process.stdout.write(JSON.stringify({ scenario, ...result }) + '\n')
  process.exit(code)
}

const fail = (error) => {
  console.error(error)
  finish({ ok: false, error: String(error?.stack ?? error) }, 1)
}

// ---------------------------------------------------------------- clients

let cli
const lib = () => (cli.provider === '2' ? v2 : v3)

/** A socket that providers share (`HocuspocusProviderWebsocket`). */
function socket () {
  const s = new (lib().HocuspocusProviderWebsocket)({ url: cli.url, WebSocketPolyfill: WebSocket })
  opened.add(s)
  return s
}

/**
 * A provider of document `name`, on `shared` (a socket of its own if none), with events
 * recorded: `p.events.authFailed`, `p.events.closed` (reasons), `p.events.scope`.
 */
function provider (name, { shared, token, doc } = {}) {
  const events = { authFailed: [], closed: [], scope: null, statuses: [] }
  const websocketProvider = shared ?? socket()
  const p = new (lib().HocuspocusProvider)({
    websocketProvider,
    name,
    document: doc ?? new Y.Doc(),
    token: token ?? null,
    onAuthenticationFailed: ({ reason }) => events.authFailed.push(reason),
    // 2.x emits no scope with the event; both keep it on the provider.
    onAuthenticated: () => { events.scope = p.authorizedScope ?? 'unknown' },
    onClose: ({ event }) => events.closed.push(event?.reason ?? '')
  })
  // 3.x attaches a provider to a shared socket on request; 2.x does on construction.
  if (cli.provider === '3') p.attach()
  p.events = events
  p.socket = websocketProvider
  opened.add(p)
  return p
}

const text = (p) => p.document.getText(TEXT).toString()

/** Resolves once `check()` holds, looking again on every event `on` subscribes to. */
function until (label, on, check) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out: ${label}`)), cli.timeoutMs)
    const look = () => {
      let ok
      try { ok = check() } catch (e) { clearTimeout(timer); return reject(e) }
      if (ok) { clearTimeout(timer); resolve(ok) }
    }
    on(look)
    look()
  })
}

/** Every update of `p`'s document, every sync-status, auth and close event, and presence. */
const anyChange = (p) => (look) => {
  p.document.on('update', look)
  for (const e of ['synced', 'unsyncedChanges', 'authenticated', 'authenticationFailed', 'close', 'awarenessChange', 'status']) {
    p.on(e, look)
  }
}

const synced = (p, label) => until(`${label}: synced`, anyChange(p), () => p.synced || p.isSynced)
const saved = (p, label) =>
  until(`${label}: all changes stored`, anyChange(p), () => (p.synced || p.isSynced) && p.unsyncedChanges === 0)

function append (p, s) {
  const t = p.document.getText(TEXT)
  t.insert(t.length, s)
}

async function api (method, path, body) {
  const headers = { 'content-type': 'application/json' }
  if (cli['api-key']) headers.authorization = `Bearer ${cli['api-key']}`
  const response = await fetch(cli.api + path, { method, headers, body: body && JSON.stringify(body) })
  return { status: response.status, body: await response.text() }
}

// ---------------------------------------------------------------- scenarios

const scenarios = {
  /** Providers on sockets of their own each type markers; all converge, every change saved. */
  async converge () {
    const ps = Array.from({ length: cli.clients }, () => provider(cli.doc, { token: cli.token }))
    await Promise.all(ps.map((p, i) => synced(p, `client ${i}`)))
    ps.forEach((p, i) => { for (let k = 0; k < 10; k++) append(p, `[${i}:${k}]`) })
    const markers = cli.clients * 10
    await Promise.all(ps.map((p, i) =>
      until(`client ${i} sees every marker`, anyChange(p), () => (text(p).match(/\[\d+:\d+\]/g) ?? []).length === markers)))
    await Promise.all(ps.map((p, i) => saved(p, `client ${i}`)))
    const texts = new Set(ps.map(text))
    if (texts.size !== 1) throw new Error(`clients disagree: ${[...texts].join(' | ')}`)
    return { markers, text: [...texts][0] }
  },

  /**
   * Three documents on one socket stay apart; one is detached and another attached while the
   * socket stays open; a fresh socket then reads each document alone.
   */
  async multiplex () {
    const shared = socket()
    let opens = 0
    shared.on('open', () => { opens++ })
    const [a, b, c] = cli.docs
    const pa = provider(a, { shared, token: cli.token })
    const pb = provider(b, { shared, token: cli.token })
    const pc = provider(c, { shared, token: cli.token })
    await Promise.all([pa, pb, pc].map((p, i) => synced(p, `doc ${i}`)))
    append(pa, 'only in a;')
    append(pb, 'only in b;')
    append(pc, 'only in c;')
    await Promise.all([pa, pb, pc].map((p, i) => saved(p, `doc ${i}`)))
    // Detach b; the socket stays open for a and c, and takes a fourth document.
    if (cli.provider === '3') pb.detach(); else pb.destroy()
    opened.delete(pb)
    const d = `${a}-late`
    const pd = provider(d, { shared, token: cli.token })
    await synced(pd, 'late doc')
    append(pd, 'only in d;')
    append(pa, 'more in a;')
    await Promise.all([saved(pd, 'late doc'), saved(pa, 'doc a again')])
    if (opens !== 1) throw new Error(`the shared socket opened ${opens} times`)
    // A reader on a socket of its own sees each document alone.
    const fresh = socket()
    const got = {}
    for (const name of [a, b, c, d]) {
      const r = provider(name, { shared: fresh, token: cli.token })
      await synced(r, `reader of ${name}`)
      got[name] = text(r)
    }
    return { texts: got, opens }
  },

  /** Presence crosses between two providers and is removed when one leaves. */
  async awareness () {
    const pa = provider(cli.doc, { token: cli.token })
    const pb = provider(cli.doc, { token: cli.token })
    await Promise.all([synced(pa, 'A'), synced(pb, 'B')])
    pa.setAwarenessField('user', { name: 'Ada', color: '#f00' })
    const idA = pa.document.clientID
    await until('B sees A', anyChange(pb), () => pb.awareness.getStates().get(idA)?.user?.name === 'Ada')
    pb.setAwarenessField('user', { name: 'Bob' })
    await until('A sees B', anyChange(pa), () => pa.awareness.getStates().get(pb.document.clientID)?.user?.name === 'Bob')
    pa.destroy()
    opened.delete(pa)
    await until('A removed for B', anyChange(pb), () => !pb.awareness.getStates().has(idA))
    return { seenByB: true, seenByA: true, removedOnLeave: true }
  },

  /** A Hocuspocus provider and a y-websocket provider on one document: edits and presence. */
  async mixed () {
    const hp = provider(cli.doc, { token: cli.token })
    const ydoc = new Y.Doc()
    const params = cli.token ? { token: cli.token } : {}
    const yws = new WebsocketProvider(cli.url, cli.doc, ydoc, { WebSocketPolyfill: WebSocket, params })
    opened.add(yws)
    await synced(hp, 'hocuspocus')
    await until('y-websocket synced', (look) => yws.on('sync', look), () => yws.synced)
    append(hp, 'from hocuspocus;')
    const yt = ydoc.getText(TEXT)
    await until('y-websocket sees hocuspocus', (look) => ydoc.on('update', look), () => yt.toString().includes('from hocuspocus;'))
    yt.insert(yt.length, 'from y-websocket;')
    await until('hocuspocus sees y-websocket', anyChange(hp), () => text(hp).includes('from y-websocket;'))
    yws.awareness.setLocalStateField('user', { name: 'Yan' })
    await until('hocuspocus sees y-websocket presence', anyChange(hp),
      () => hp.awareness.getStates().get(ydoc.clientID)?.user?.name === 'Yan')
    hp.setAwarenessField('user', { name: 'Hugo' })
    await until('y-websocket sees hocuspocus presence', (look) => yws.awareness.on('change', look),
      () => yws.awareness.getStates().get(hp.document.clientID)?.user?.name === 'Hugo')
    await saved(hp, 'hocuspocus')
    return { text: text(hp), yText: yt.toString() }
  },

  /**
   * Each bad token (`none`: no token) is refused with a reason (onAuthenticationFailed); a
   * good one works.
   */
  async tokens () {
    const refused = []
    const bad = cli['bad-tokens'] === undefined ? [] : cli['bad-tokens'].split(',')
    for (const token of bad) {
      const p = provider(cli.doc, { token: token === 'none' ? null : token })
      await until(`token ${token} refused`, anyChange(p), () => p.events.authFailed.length > 0)
      refused.push(p.events.authFailed[0])
    }
    const good = provider(cli.doc, { token: cli.token })
    await synced(good, 'good token')
    append(good, 'with a good token;')
    await saved(good, 'good token')
    return { refused, scope: good.events.scope }
  },

  /**
   * A read-only provider is told its scope, sees a writer's edits, and its own edits are
   * refused without closing the socket: its count of unsaved changes stays above zero.
   */
  async 'read-only' () {
    const writer = provider(cli.doc, { token: cli.token })
    const reader = provider(cli.doc, { token: cli['read-token'] })
    await Promise.all([synced(writer, 'writer'), synced(reader, 'reader')])
    await until('reader scope', anyChange(reader), () => reader.events.scope !== null)
    append(reader, 'reader edit;')
    append(writer, 'writer edit;')
    await until('reader sees the writer', anyChange(reader), () => text(reader).includes('writer edit;'))
    await saved(writer, 'writer')
    // The writer's next change is stored after the reader's refused one was handled.
    append(writer, 'again;')
    await saved(writer, 'writer again')
    await until('reader sees it', anyChange(reader), () => text(reader).includes('again;'))
    return {
      scope: reader.events.scope,
      readerUnsynced: reader.unsyncedChanges,
      writerSees: text(writer),
      readerClosed: reader.events.closed.length,
      readerAuthFailed: reader.events.authFailed.length
    }
  },

  /** Writes `--text` in pieces and reports once the server says every piece is stored. */
  async 'write-saved' () {
    const p = provider(cli.doc, { token: cli.token })
    await synced(p, 'writer')
    for (const piece of cli.text.match(/.{1,8}/g)) append(p, piece)
    await saved(p, 'writer')
    return { text: text(p), unsynced: p.unsyncedChanges }
  },

  /** Reads a document, waiting until it reads `--expect` if given. */
  async read () {
    const p = provider(cli.doc, { token: cli.token })
    await synced(p, 'reader')
    if (cli.expect !== undefined) {
      await until('reader sees the text', anyChange(p), () => text(p) === cli.expect)
    }
    return { text: text(p) }
  },

  /**
   * Bad messages on a socket with three documents: a malformed one for b closes b's channel
   * with a reason while a and c keep working; an unknown type for a closes a; a frame with no
   * readable document name closes the socket with 1007, and the provider reconnects.
   */
  async 'bad-messages' () {
    const shared = socket()
    const closes = []
    shared.on('close', ({ event }) => closes.push([event.code, String(event.reason)]))
    const [a, b, c] = cli.docs
    const [pa, pb, pc] = [a, b, c].map((name) => provider(name, { shared, token: cli.token }))
    await Promise.all([pa, pb, pc].map((p, i) => synced(p, `doc ${i}`)))
    // b: a sync message whose update is cut short.
    shared.webSocket.send(frame(b, [0, 2, 50, 1, 2]))
    await until('b closed', anyChange(pb), () => pb.events.closed.length > 0)
    append(pa, 'a still works;')
    append(pc, 'c still works;')
    await Promise.all([saved(pa, 'a after b was closed'), saved(pc, 'c after b was closed')])
    // a: a message type nobody defined.
    shared.webSocket.send(frame(a, [42]))
    await until('a closed', anyChange(pa), () => pa.events.closed.length > 0)
    append(pc, 'c works on;')
    await saved(pc, 'c after a was closed')
    // A frame that names no document: the socket closes, and the provider connects again.
    shared.webSocket.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x0f]))
    await until('socket closed', (look) => shared.on('close', look), () => closes.length > 0)
    await until('c synced again', anyChange(pc), () => pc.synced || pc.isSynced)
    return {
      bClosed: pb.events.closed[0],
      aClosed: pa.events.closed[0],
      socketClose: closes[0],
      cText: text(pc)
    }
  },

  /**
   * One socket: two documents open, a third is refused past the limit of documents per
   * connection; a document whose connections are all taken closes its channel with 1013.
   */
  async limits () {
    const shared = socket()
    const [a, b, c] = cli.docs
    const pa = provider(a, { shared, token: cli.token })
    const pb = provider(b, { shared, token: cli.token })
    await Promise.all([synced(pa, 'a'), synced(pb, 'b')])
    const pc = provider(c, { shared, token: cli.token })
    await until('third refused', anyChange(pc), () => pc.events.authFailed.length > 0)
    // Detaching one makes room on the socket, for a document with no room of its own.
    if (cli.provider === '3') pb.detach(); else pb.destroy()
    opened.delete(pb)
    const pfull = provider(cli.doc, { shared, token: cli.token })
    await until('full document closed', anyChange(pfull), () => pfull.events.closed.length > 0)
    append(pa, 'a still works;')
    await saved(pa, 'a')
    return { thirdRefused: pc.events.authFailed[0], fullClosed: pfull.events.closed[0] }
  },

  /**
   * Three documents on one socket: b is deleted and c's access revoked through the REST API;
   * each gets a close with the y-websocket code and reason, and a keeps working.
   */
  async 'closed-by-server' () {
    const shared = socket()
    const [a, b, c] = cli.docs
    const [pa, pb, pc] = [a, b, c].map((name, i) => provider(name, { shared, token: cli.tokens[i] ?? cli.token }))
    await Promise.all([pa, pb, pc].map((p, i) => synced(p, `doc ${i}`)))
    for (const p of [pa, pb, pc]) append(p, 'saved;')
    await Promise.all([pa, pb, pc].map((p, i) => saved(p, `doc ${i}`)))
    const deleted = await api('DELETE', `/api/docs/${b}`)
    if (deleted.status !== 204) throw new Error(`delete answered ${deleted.status} ${deleted.body}`)
    await until('b closed', anyChange(pb), () => pb.events.closed.length > 0)
    const revoked = await api('POST', `/api/docs/${c}/disconnect`)
    if (revoked.status !== 200) throw new Error(`disconnect answered ${revoked.status} ${revoked.body}`)
    await until('c closed', anyChange(pc), () => pc.events.closed.length > 0)
    append(pa, 'a still works;')
    await saved(pa, 'a')
    return { bClosed: pb.events.closed[0], cClosed: pc.events.closed[0], aText: text(pa) }
  }
}

/** A Hocuspocus frame: the document name, then `body`. */
function frame (name, body) {
  const bytes = new TextEncoder().encode(name)
  return new Uint8Array([bytes.length, ...bytes, ...body])
}

try {
  cli = parseCli(process.argv.slice(2))
  const run = scenarios[scenario]
  if (!run) throw new Error(`unknown scenario ${scenario}`)
  setTimeout(() => fail(new Error(`scenario timed out after ${cli.timeoutMs} ms`)), cli.timeoutMs + 5000).unref()
  run().then((result) => finish({ ok: true, ...result }, 0), fail)
} catch (error) {
  fail(error)
}
