// Tandem soak driver: many stock Yjs / y-websocket clients edit a few documents for a bounded
// time while the server is restarted (alternating SIGTERM and kill -9) and its store goes away,
// then everything must converge and survive one more restart.
//
// Started by scripts/soak, which builds the server, prepares the database and cleans up; run
// `scripts/soak --help` for the options. Invoked directly:
//
//   node tests/soak/soak.mjs --bin target/release/tandem --database-url sqlite:///tmp/x/soak.db \
//        --backend sqlite --work /tmp/x [--duration 10m] [--clients 24] [--docs 4] [--seed N]
//        [--outage 20s] [--pg-admin-url postgres://.../postgres --pg-db tandem_soak]
//
// What is checked:
//  * After every restart (kill -9 and graceful), a fresh client's state for each document must
//    contain everything the document's observer client had received from the server before the
//    server went down: the fresh state vector dominates the observer's, and every deletion the
//    observer saw is there. While the server is down and until that check is done, the clients'
//    own reconnects are held back (see `gate`), so a client re-sending its edits cannot hide an
//    update the server lost.
//  * At the end: edits stop, everyone reconnects, and every client of a document must reach the
//    same state; then the server restarts gracefully, and the stored text (REST, and a fresh
//    client) must equal every client's final text.
//  * During each store outage /readyz is polled: it must answer 503 at least once (the clients
//    keep editing, so commits fail and the server must say it is not ready).
// Exit 0 when every check passed, 1 otherwise; a summary is printed either way. Correctness
// waits are driven by client events (with polling as a fallback) and bounded by timeouts; only
// the chaos itself (edit pacing, disconnects, restarts, outage length) uses random sleeps.

import { parseArgs } from 'node:util'
import { spawn, execFile } from 'node:child_process'
import { EventEmitter } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const TEXT = 'content'

// ---------------------------------------------------------------- settings

function parseDuration (raw, flag) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(raw).trim())
  if (!m) throw new Error(`${flag}: not a duration: ${raw} (e.g. 90s, 10m, 600)`)
  const unit = { ms: 1, s: 1000, m: 60000, h: 3600000 }[m[2] ?? 's']
  return Math.round(Number(m[1]) * unit)
}

function parseCli (argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      bin: { type: 'string' },
      'database-url': { type: 'string' },
      backend: { type: 'string', default: 'sqlite' },
      work: { type: 'string' },
      duration: { type: 'string', default: '10m' },
      clients: { type: 'string', default: '24' },
      docs: { type: 'string', default: '4' },
      seed: { type: 'string' },
      outage: { type: 'string', default: '20s' },
      'pg-admin-url': { type: 'string' },
      'pg-db': { type: 'string' }
    }
  })
  for (const flag of ['bin', 'database-url', 'work']) {
    if (!values[flag]) throw new Error(`--${flag} is required`)
  }
  const backend = values.backend
  if (backend !== 'sqlite' && backend !== 'postgres') throw new Error('--backend must be sqlite or postgres')
  if (backend === 'postgres' && (!values['pg-admin-url'] || !values['pg-db'])) {
    throw new Error('--pg-admin-url and --pg-db are required with --backend postgres')
  }
  if (backend === 'postgres' && !/^[a-z_][a-z0-9_]*$/.test(values['pg-db'])) {
    throw new Error('--pg-db must be a plain lower-case identifier')
  }
  const clients = Number(values.clients)
  const docs = Number(values.docs)
  if (!Number.isInteger(docs) || docs < 1) throw new Error('--docs must be a positive integer')
  if (!Number.isInteger(clients) || clients < docs) throw new Error('--clients must be an integer >= --docs')
  const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31)
  if (!Number.isInteger(seed)) throw new Error('--seed must be an integer')
  return {
    bin: values.bin,
    databaseUrl: values['database-url'],
    backend,
    work: values.work,
    durationMs: parseDuration(values.duration, '--duration'),
    clients,
    docs,
    seed,
    outageMs: parseDuration(values.outage, '--outage'),
    pgAdminUrl: values['pg-admin-url'],
    pgDb: values['pg-db']
  }
}

const opts = parseCli(process.argv.slice(2))
const LOG_PATH = `${opts.work}/server.log`
const SERVER_PID_PATH = `${opts.work}/server.pid`
const LOCK_PID_PATH = `${opts.work}/sqlite-lock.pid`
const SQLITE_PATH = opts.backend === 'sqlite' ? sqlitePath(opts.databaseUrl) : null

// Restart every 45–90 s (scaled down for runs shorter than ~150 s so that a quick run still
// sees more than one), a store outage every 150–240 s, the first one early.
const RESTART_SCALE = Math.min(1, opts.durationMs / 150000)
const RESTART_MIN_MS = 45000 * RESTART_SCALE
const RESTART_MAX_MS = 90000 * RESTART_SCALE
const OUTAGE_EVERY_MIN_MS = 150000
const OUTAGE_EVERY_MAX_MS = 240000
// Editing pace per client: one edit every 50–200 ms (5–20 per second).
const EDIT_MIN_MS = 50
const EDIT_MAX_MS = 200
// Each editor drops its connection every 15–60 s, for 1–8 s.
const FLAP_EVERY_MIN_MS = 15000
const FLAP_EVERY_MAX_MS = 60000
const FLAP_FOR_MIN_MS = 1000
const FLAP_FOR_MAX_MS = 8000
// Bounds on the waits (none of them is a sleep: each ends as soon as its condition holds).
const READY_TIMEOUT_MS = 90000
const GRACEFUL_TIMEOUT_MS = 180000
const SOCKETS_CLOSED_TIMEOUT_MS = 20000
const FRESH_SYNC_TIMEOUT_MS = 60000
const CONVERGE_TIMEOUT_MS = 240000
const RECOVER_TIMEOUT_MS = 120000
const READYZ_POLL_MS = 250
// Everything must be over by then, whatever happens.
const HARD_DEADLINE_MS = opts.durationMs + 20 * 60000

// ---------------------------------------------------------------- plumbing

const T0 = Date.now()
const stamp = () => `[+${((Date.now() - T0) / 1000).toFixed(1).padStart(6)}s]`
const log = (...args) => console.log(stamp(), ...args)
const warn = (...args) => console.error(stamp(), 'WARNING:', ...args)

// Seeded PRNGs (mulberry32): one for the chaos schedule (restarts, outages), one for the
// clients (edits, disconnects), so that --seed replays the same schedule of restarts and
// outages (relative to the start of editing) however the edits go; timing still varies.
function mulberry32 (seed) {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6D2B79F5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rng = mulberry32(opts.seed ^ 0x5eed)
const chaosRng = mulberry32(opts.seed)
const uniform = (lo, hi) => lo + rng() * (hi - lo)
const chaosUniform = (lo, hi) => lo + chaosRng() * (hi - lo)
const randInt = (n) => Math.floor(rng() * n)
const pick = (arr) => arr[randInt(arr.length)]

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Anything that may make a waited-for condition true emits 'change' here.
const hub = new EventEmitter()
hub.setMaxListeners(0)
process.setMaxListeners(0) // every provider adds an 'exit' listener
const poke = () => hub.emit('change')

// Resolves once check() is truthy, re-checking on every hub event and every `pollMs`; rejects
// after timeoutMs with `label`.
function until (label, check, timeoutMs, pollMs = 500) {
  return new Promise((resolve, reject) => {
    let done = false
    let scheduled = false
    const finish = (fn, value) => {
      if (done) return
      done = true
      hub.off('change', onChange)
      clearInterval(poll)
      clearTimeout(timer)
      fn(value)
    }
    const test = () => {
      scheduled = false
      if (done) return
      let value
      try { value = check() } catch (err) { finish(reject, err); return }
      if (value) finish(resolve, value)
    }
    // Coalesce bursts of events into one check.
    const onChange = () => {
      if (!scheduled) { scheduled = true; setImmediate(test) }
    }
    hub.on('change', onChange)
    const poll = setInterval(test, pollMs)
    const timer = setTimeout(() => finish(reject, new Error(`timed out after ${timeoutMs} ms waiting for ${label}`)), timeoutMs)
    test()
  })
}

function sqlitePath (url) {
  const rest = url.replace(/^sqlite:(\/\/)?/, '')
  return rest.split('?')[0]
}

// ---------------------------------------------------------------- results

const stats = {
  edits: 0,
  inserts: 0,
  deletes: 0,
  flaps: 0,
  connectionErrors: 0,
  restarts: { graceful: 0, kill9: 0 },
  gracefulExitProblems: [],
  unexpectedExits: [],
  outages: [],
  restartChecks: [], // { n, kind, doc, checkedItems, missingItems, missingDeletes, details }
  convergence: null, // { ok, ms, error }
  finalChecks: [], // { doc, rest, fresh, ok, details }
  finalRestart: null,
  internalErrors: []
}

// ---------------------------------------------------------------- the server process

function freePort () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

function serverEnv (port) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('TANDEM_') || k === 'DATABASE_URL' || k === 'RUST_LOG') continue
    env[k] = v
  }
  env.TANDEM_BIND = `127.0.0.1:${port}`
  env.DATABASE_URL = opts.databaseUrl
  env.TANDEM_LOG = process.env.SOAK_SERVER_LOG ?? 'info'
  env.RUST_BACKTRACE = '1'
  return env
}

class Server {
  constructor (port) {
    this.port = port
    this.proc = null
    this.starts = 0
    this.expectingExit = false
    this.exit = null // promise of { code, signal } for the current process
  }

  get http () { return `http://127.0.0.1:${this.port}` }
  get alive () { return this.proc !== null }

  // Starts the binary and waits for /readyz; retries a start whose process dies at once
  // (e.g. the port still held for a moment).
  async start () {
    let lastError
    for (let attempt = 1; attempt <= 5; attempt++) {
      this.spawnOnce()
      try {
        await this.waitReady(READY_TIMEOUT_MS)
        return
      } catch (err) {
        lastError = err
        if (this.alive) {
          await this.kill9()
          throw err
        }
        warn(`server start attempt ${attempt} failed: ${err.message}`)
        await sleep(500 * attempt)
      }
    }
    throw lastError
  }

  spawnOnce () {
    this.starts += 1
    fs.appendFileSync(LOG_PATH, `\n===== soak: server start #${this.starts} at ${new Date().toISOString()} =====\n`)
    const fd = fs.openSync(LOG_PATH, 'a')
    // Its own process group: a Ctrl-C on the terminal reaches the driver, which then stops the
    // server itself (and scripts/soak kills it by PID if the driver could not).
    const proc = spawn(opts.bin, [], {
      env: serverEnv(this.port),
      stdio: ['ignore', fd, fd],
      detached: true
    })
    fs.closeSync(fd)
    this.proc = proc
    this.expectingExit = false
    fs.writeFileSync(SERVER_PID_PATH, `${proc.pid}\n`)
    this.exit = new Promise((resolve) => {
      proc.once('error', (err) => {
        warn(`could not start ${opts.bin}: ${err.message}`)
      })
      proc.once('exit', (code, signal) => {
        if (this.proc === proc) {
          this.proc = null
          try { fs.unlinkSync(SERVER_PID_PATH) } catch {}
        }
        if (!this.expectingExit) {
          const what = `server (pid ${proc.pid}) exited unexpectedly: code ${code}, signal ${signal}`
          stats.unexpectedExits.push(what)
          warn(what)
        }
        poke()
        resolve({ code, signal })
      })
    })
  }

  async waitReady (timeoutMs) {
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (!this.alive) throw new Error('the server exited before it was ready')
      if ((await readyz(this, 1000)) === 200) return
      await sleep(100)
    }
    throw new Error(`/readyz did not answer 200 within ${timeoutMs} ms`)
  }

  async kill9 () {
    if (!this.alive) return { code: null, signal: null }
    this.expectingExit = true
    this.proc.kill('SIGKILL')
    return await this.exit
  }

  // SIGTERM and wait; a server that does not exit in time is killed and reported.
  async stopGraceful (timeoutMs) {
    if (!this.alive) return { ok: false, why: 'not running' }
    this.expectingExit = true
    const t0 = Date.now()
    this.proc.kill('SIGTERM')
    const timer = sleep(timeoutMs).then(() => null)
    const result = await Promise.race([this.exit, timer])
    if (result === null) {
      await this.kill9()
      return { ok: false, why: `did not exit within ${timeoutMs} ms of SIGTERM (killed)`, ms: Date.now() - t0 }
    }
    if (result.code !== 0) {
      return { ok: false, why: `exited with code ${result.code}, signal ${result.signal} after SIGTERM`, ms: Date.now() - t0 }
    }
    return { ok: true, ms: Date.now() - t0 }
  }
}

async function readyz (server, timeoutMs) {
  try {
    const res = await fetch(`${server.http}/readyz`, { signal: AbortSignal.timeout(timeoutMs) })
    await res.arrayBuffer()
    return res.status
  } catch (err) {
    return 'error'
  }
}

// ---------------------------------------------------------------- the clients' sockets

// All clients (editors and observers) connect through this `ws` subclass. While the gate is
// closed, a connection attempt goes to a local socket that hangs up at once, so the stock
// provider sees a failed attempt and retries on its own schedule. `liveSockets` holds the
// sockets to the real server that have not closed yet.
const gate = { open: true, url: null }
const liveSockets = new Set()

class GatedWebSocket extends WebSocket {
  constructor (url, protocols) {
    const real = gate.open
    super(real ? url : gate.url, protocols)
    if (real) {
      liveSockets.add(this)
      this.once('close', () => { liveSockets.delete(this); poke() })
    }
  }
}

function startBlackhole () {
  return new Promise((resolve, reject) => {
    const srv = net.createServer((socket) => socket.destroy())
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => resolve(srv))
  })
}

// ---------------------------------------------------------------- clients

const clients = [] // editors and observers
const editors = []
const observers = [] // one per document, never edits: holds exactly what the server sent it
let editing = false
let wsBase = null

function makeClient (docName, role, name, WS = GatedWebSocket) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(wsBase, docName, doc, {
    WebSocketPolyfill: WS,
    disableBc: true // else providers in this process would sync directly, bypassing the server
  })
  const c = { name, role, docName, doc, provider, text: doc.getText(TEXT), editTimer: null, flapTimer: null, edits: 0 }
  provider.on('connection-error', () => { stats.connectionErrors++ })
  provider.on('status', poke)
  provider.on('sync', poke)
  doc.on('update', poke)
  return c
}

const PIECES = ['a', 'b', 'c', 'd', 'e', 'o', ' ', ' ', 'x', 'y', 'z', '\n', 'é', 'ü', 'ß', 'ж', 'ы', 'λ', '中', '文', '한', 'ल', '€', '😀', '🎉', '👍🏽', '🦀']

function randomPiece () {
  let s = ''
  for (let n = 1 + randInt(8); n > 0; n--) s += pick(PIECES)
  return s
}

const isHigh = (code) => code >= 0xD800 && code <= 0xDBFF

// Y.Text positions are UTF-16 units; never split a surrogate pair (no editor does).
function boundaryAt (s, i) {
  return i > 0 && i < s.length && isHigh(s.charCodeAt(i - 1)) ? i - 1 : i
}

function editOnce (c) {
  const s = c.text.toString()
  const len = s.length
  const pInsert = len < 400 ? 0.75 : len < 1500 ? 0.55 : 0.35
  if (len === 0 || rng() < pInsert) {
    c.text.insert(boundaryAt(s, randInt(len + 1)), randomPiece())
    stats.inserts++
  } else {
    const start = boundaryAt(s, randInt(len))
    let end = Math.min(len, start + 1 + randInt(5))
    if (end < len && isHigh(s.charCodeAt(end - 1))) end += 1
    c.text.delete(start, end - start)
    stats.deletes++
  }
  c.edits++
  stats.edits++
}

function scheduleEdit (c) {
  c.editTimer = setTimeout(() => {
    if (!editing) return
    try { editOnce(c) } catch (err) { internalError(`edit by ${c.name}`, err) }
    scheduleEdit(c)
  }, uniform(EDIT_MIN_MS, EDIT_MAX_MS))
}

// Drop the connection now and then (the Y.Doc stays; edits made offline sync on reconnect).
function scheduleFlap (c) {
  c.flapTimer = setTimeout(() => {
    if (!editing) return
    c.provider.disconnect()
    stats.flaps++
    c.flapTimer = setTimeout(() => {
      if (!editing) return
      c.provider.connect()
      scheduleFlap(c)
    }, uniform(FLAP_FOR_MIN_MS, FLAP_FOR_MAX_MS))
  }, uniform(FLAP_EVERY_MIN_MS, FLAP_EVERY_MAX_MS))
}

function docNames () {
  return Array.from({ length: opts.docs }, (_, i) => `soak-${i}`)
}

const svOf = (doc) => Y.decodeStateVector(Y.encodeStateVector(doc))
const svTotal = (sv) => { let n = 0; for (const v of sv.values()) n += v; return n }
const svKey = (doc) => Buffer.from(Y.encodeStateVector(doc)).toString('base64')

// What `have` lacks of `want`: missing insert clocks per client id, and deleted ranges of
// `want` not deleted in `have` (one line per client id).
function compareStates (want, have) {
  const missing = []
  let missingItems = 0
  for (const [client, clock] of want.sv) {
    const got = have.sv.get(client) ?? 0
    if (got < clock) {
      missing.push(`client ${client}: ${clock - got} items missing (has clock ${got}, expected ${clock})`)
      missingItems += clock - got
    }
  }
  let missingDeletes = 0
  for (const [client, items] of want.ds.clients) {
    let count = 0
    let first = null
    let last = null
    for (const item of items) {
      for (let k = 0; k < item.len; k++) {
        const clock = item.clock + k
        if (!Y.isDeleted(have.ds, { client, clock })) {
          count++
          if (first === null) first = clock
          last = clock
        }
      }
    }
    if (count > 0) {
      missing.push(`client ${client}: ${count} deletions missing (clocks ${first}..${last})`)
      missingDeletes += count
    }
  }
  return { missingItems, missingDeletes, details: missing }
}

function stateOf (doc) {
  return { sv: svOf(doc), ds: Y.snapshot(doc).ds }
}

// A new client on a new Y.Doc, plain socket (not gated): what does the server give it?
async function freshClient (server, docName, label) {
  const c = makeClient(docName, 'fresh', label, WebSocket)
  try {
    await until(`${label} to sync`, () => c.provider.synced, FRESH_SYNC_TIMEOUT_MS)
    return { text: c.text.toString(), state: stateOf(c.doc), svKey: svKey(c.doc) }
  } finally {
    c.provider.destroy()
    c.doc.destroy()
  }
}

// ---------------------------------------------------------------- chaos

let server = null
let restartSeq = 0
// The last store outage since the previous restart: when it began and ended, and what the
// observers had received when it began (to tell whether missing data was relayed during it).
let outageSinceRestart = null

async function waitSocketsClosed (why) {
  try {
    await until(`client sockets to close (${why})`, () => liveSockets.size === 0, SOCKETS_CLOSED_TIMEOUT_MS)
  } catch (err) {
    warn(`${err.message}; ${liveSockets.size} still open, terminating them`)
    for (const ws of liveSockets) ws.terminate()
    await until('terminated sockets to close', () => liveSockets.size === 0, SOCKETS_CLOSED_TIMEOUT_MS)
  }
}

// Stops the server (kill -9 or SIGTERM), then checks that a fresh client gets everything each
// observer had received. Clients are held off the new server until the check is done.
async function restartServer (kind) {
  const n = ++restartSeq
  const label = kind === 'kill' ? 'kill -9' : 'graceful (SIGTERM)'
  log(`restart #${n}: ${label}`)
  gate.open = false
  try {
    const t0 = Date.now()
    if (kind === 'kill') {
      await server.kill9()
      stats.restarts.kill9++
    } else {
      const r = await server.stopGraceful(GRACEFUL_TIMEOUT_MS)
      stats.restarts.graceful++
      if (!r.ok) {
        stats.gracefulExitProblems.push(`restart #${n}: ${r.why}`)
        warn(`graceful stop: ${r.why}`)
      } else {
        log(`  server exited 0 after SIGTERM in ${r.ms} ms`)
      }
    }
    // Whatever the observers received from the old server has arrived once their sockets closed.
    await waitSocketsClosed(`restart #${n}`)
    const before = observers.map((o) => ({ doc: o.docName, ...stateOf(o.doc) }))
    const outage = outageSinceRestart
    outageSinceRestart = null
    await server.start()
    log(`  server back (pid ${server.proc?.pid}) after ${Date.now() - t0} ms; checking stored state`)
    const results = await Promise.all(before.map(async (b) => {
      const check = { n, kind, doc: b.doc, checkedItems: svTotal(b.sv), missingItems: 0, missingDeletes: 0, details: [] }
      try {
        const fresh = await freshClient(server, b.doc, `fresh client for ${b.doc} after restart #${n}`)
        Object.assign(check, compareStates(b, fresh.state))
        if ((check.missingItems || check.missingDeletes) && outage) {
          // Is the loss confined to what was relayed after the outage began?
          const early = compareStates(outage.states.get(b.doc), fresh.state)
          check.details.unshift(`the ${label} came ${outage.endedAt ? `${((t0 - outage.endedAt) / 1000).toFixed(1)} s after store outage #${outage.n} ended` : `during store outage #${outage.n}`}; ` +
            `of the missing data, ${early.missingItems} items and ${early.missingDeletes} deletions had reached the observer before that outage began`)
          check.afterOutage = { n: outage.n, earlyItems: early.missingItems, earlyDeletes: early.missingDeletes }
        }
      } catch (err) {
        check.details.push(`fresh client failed: ${err.message}`)
        check.error = true
      }
      return check
    }))
    for (const r of results) {
      stats.restartChecks.push(r)
      if (r.missingItems || r.missingDeletes || r.error) {
        warn(`restart #${n} (${label}) ${r.doc}: MISSING ${r.missingItems} items, ${r.missingDeletes} deletions; ${r.details.join('; ')}`)
      }
    }
    const missing = results.reduce((s, r) => s + r.missingItems + r.missingDeletes, 0)
    log(`  restart #${n} check: ${results.map((r) => `${r.doc} ${r.checkedItems} items`).join(', ')} -> ${missing === 0 && !results.some((r) => r.error) ? 'nothing missing' : 'MISSING DATA'}`)
  } finally {
    gate.open = true
  }
}

function runPsql (...commands) {
  const args = [opts.pgAdminUrl, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1']
  for (const c of commands) args.push('-c', c)
  return new Promise((resolve, reject) => {
    execFile('psql', args, { timeout: 30000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`psql failed: ${err.message} ${stderr}`))
      else resolve(stdout)
    })
  })
}

let heldLock = null // the python process holding the SQLite write lock, if any
let pgBlocked = false

// Holds BEGIN EXCLUSIVE on the SQLite file from another process until told to release (or
// until its stdin closes, e.g. if this driver dies).
function lockSqlite () {
  const script = [
    'import sqlite3, sys',
    'c = sqlite3.connect(sys.argv[1], timeout=60, isolation_level=None)',
    "c.execute('BEGIN EXCLUSIVE')",
    "print('locked', flush=True)",
    'sys.stdin.readline()',
    "c.execute('ROLLBACK')",
    'c.close()',
    'try:',
    "    print('released', flush=True)",
    'except BrokenPipeError:', // the driver is gone; the lock is released all the same
    '    pass'
  ].join('\n')
  const proc = spawn('python3', ['-c', script, SQLITE_PATH], { stdio: ['pipe', 'pipe', 'inherit'] })
  heldLock = proc
  fs.writeFileSync(LOCK_PID_PATH, `${proc.pid}\n`)
  let out = ''
  const exited = new Promise((resolve) => proc.once('exit', (code) => {
    if (heldLock === proc) heldLock = null
    try { fs.unlinkSync(LOCK_PID_PATH) } catch {}
    poke()
    resolve(code)
  }))
  proc.stdout.on('data', (d) => { out += d; poke() })
  return until('the SQLite write lock', () => {
    if (out.includes('locked')) return true
    if (heldLock !== proc) throw new Error('the lock holder exited before taking the lock')
    return false
  }, 90000).then(() => ({
    release: async () => {
      proc.stdin.end('release\n')
      const code = await exited
      if (code !== 0 || !out.includes('released')) throw new Error(`the lock holder exited with ${code}`)
    }
  }))
}

async function blockPostgres () {
  const db = opts.pgDb
  pgBlocked = true
  const out = await runPsql(
    `ALTER DATABASE ${db} ALLOW_CONNECTIONS false`,
    `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '${db}' AND pid <> pg_backend_pid()`
  )
  log(`  postgres: ${db} closed to connections, ${out.trim()} backend(s) terminated`)
  return {
    release: async () => {
      await runPsql(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`)
      pgBlocked = false
    }
  }
}

async function storeOutage () {
  const n = stats.outages.length + 1
  const rec = { n, ms: 0, polls: 0, codes: {}, seen503: false, recoveredMs: null }
  stats.outages.push(rec)
  log(`store outage #${n} (${opts.backend}): begin, ~${Math.round(opts.outageMs / 1000)} s`)
  // What the observers have before the store goes away (taken first: the server may start
  // relaying unstored updates within milliseconds of the first failed commit).
  const observedBefore = observers.reduce((n, o) => n + svTotal(svOf(o.doc)), 0)
  const marker = { n, states: new Map(observers.map((o) => [o.docName, stateOf(o.doc)])), endedAt: null }
  outageSinceRestart = marker
  const hold = opts.backend === 'sqlite' ? await lockSqlite() : await blockPostgres()
  const t0 = Date.now()
  let stop = false
  const poller = (async () => {
    while (!stop) {
      const t = Date.now()
      const code = await readyz(server, 3000)
      rec.polls++
      rec.codes[code] = (rec.codes[code] ?? 0) + 1
      if (code === 503) rec.seen503 = true
      await sleep(Math.max(0, READYZ_POLL_MS - (Date.now() - t)))
    }
  })()
  await sleep(opts.outageMs)
  stop = true
  await poller
  // Evidence that the outage bit: the server relays only what is durable, so the observers
  // should have received (almost) nothing while the store was away.
  rec.relayedDuring = observers.reduce((n, o) => n + svTotal(svOf(o.doc)), 0) - observedBefore
  await hold.release()
  rec.ms = Date.now() - t0
  const t1 = Date.now()
  marker.endedAt = t1
  // How long until what was relayed during the outage is stored: GET /update answers only once
  // everything the document applied is durable. Not awaited, so the chaos goes on meanwhile
  // (a restart in that window aborts the measurement, which is then reported as such).
  rec.durable = Promise.all(docNames().map(async (d) => {
    const res = await fetch(`${server.http}/api/docs/${d}/update`, { signal: AbortSignal.timeout(RECOVER_TIMEOUT_MS) })
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`GET /api/docs/${d}/update answered ${res.status}`)
  })).then(() => { rec.durableMs = Date.now() - t1 }, (err) => { rec.durableError = err.message })
  try {
    await server.waitReady(RECOVER_TIMEOUT_MS)
    rec.recoveredMs = Date.now() - t1
  } catch (err) {
    rec.recoverError = err.message
    warn(`after outage #${n}: ${err.message}`)
  }
  log(`store outage #${n}: end after ${rec.ms} ms; readyz during outage: ${rec.seen503 ? '503 seen' : 'not seen'} (${JSON.stringify(rec.codes)}); ready again after ${rec.recoveredMs ?? 'NEVER'} ms; ${rec.relayedDuring} items relayed to observers during it`)
  rec.durable.then(() => log(`store outage #${n}: everything relayed during it is stored ${rec.durableMs !== undefined ? `${rec.durableMs} ms after the store came back` : `— not confirmed: ${rec.durableError}`}`))
}

async function chaos (endAt) {
  let nextRestart = Date.now() + chaosUniform(RESTART_MIN_MS, RESTART_MAX_MS)
  let nextOutage = Date.now() + chaosUniform(0.2, 0.5) * Math.min(opts.durationMs, 240000)
  let kind = 'kill'
  const outageCost = opts.outageMs + 10000
  const restartCost = 5000
  for (;;) {
    // An event that would not finish before the end is dropped; the other may still fit.
    if (Math.max(nextOutage, Date.now()) + outageCost > endAt) nextOutage = Infinity
    if (Math.max(nextRestart, Date.now()) + restartCost > endAt) nextRestart = Infinity
    if (nextOutage === Infinity && nextRestart === Infinity) break
    const isOutage = nextOutage < nextRestart
    const at = isOutage ? nextOutage : nextRestart
    while (Date.now() < at) {
      await sleep(Math.min(1000, at - Date.now()))
      await keepServerUp()
    }
    if (isOutage) {
      await storeOutage()
      nextOutage = Date.now() + chaosUniform(OUTAGE_EVERY_MIN_MS, OUTAGE_EVERY_MAX_MS)
    } else {
      await restartServer(kind)
      kind = kind === 'kill' ? 'graceful' : 'kill'
      nextRestart = Date.now() + chaosUniform(RESTART_MIN_MS, RESTART_MAX_MS)
    }
  }
  while (Date.now() < endAt) {
    await sleep(Math.min(1000, endAt - Date.now()))
    await keepServerUp()
  }
  // Every run gets at least one kill -9, one graceful restart and one outage.
  if (stats.restarts.kill9 === 0) await restartServer('kill')
  if (stats.restarts.graceful === 0) await restartServer('graceful')
  if (stats.outages.length === 0) await storeOutage()
}

// A server that died on its own (already reported) is started again so the run can go on.
async function keepServerUp () {
  if (!server.alive) {
    warn('server is not running; starting it again')
    await server.start()
  }
}

// ---------------------------------------------------------------- final phase

async function finalPhase () {
  log('edits stop; everyone reconnects')
  editing = false
  for (const c of clients) {
    clearTimeout(c.editTimer)
    clearTimeout(c.flapTimer)
  }
  await keepServerUp()
  gate.open = true
  for (const c of clients) c.provider.connect()

  const names = docNames()
  const byDoc = new Map(names.map((d) => [d, clients.filter((c) => c.docName === d)]))
  const converged = (d) => {
    const cs = byDoc.get(d)
    if (!cs.every((c) => c.provider.wsconnected && c.provider.synced)) return false
    const sv = svKey(cs[0].doc)
    const text = cs[0].text.toString()
    return cs.every((c) => svKey(c.doc) === sv && c.text.toString() === text)
  }
  const t0 = Date.now()
  try {
    await until('every client of every document to converge', () => names.every(converged), CONVERGE_TIMEOUT_MS)
    stats.convergence = { ok: true, ms: Date.now() - t0 }
    log(`all clients converged in ${Date.now() - t0} ms`)
  } catch (err) {
    stats.convergence = { ok: false, ms: Date.now() - t0, error: err.message, details: [] }
    warn(err.message)
    for (const d of names) {
      for (const c of byDoc.get(d)) {
        const line = `${d} ${c.name}: connected=${c.provider.wsconnected} synced=${c.provider.synced} ` +
          `length=${c.text.length} sv=${JSON.stringify([...svOf(c.doc)])} pending=${c.doc.store.pendingStructs !== null}`
        stats.convergence.details.push(line)
        console.error('   ', line)
      }
    }
  }

  // The final state of each document, as every client (observer included) has it.
  const finals = new Map()
  for (const d of names) {
    const o = byDoc.get(d).find((c) => c.role === 'observer')
    finals.set(d, {
      text: o.text.toString(),
      state: stateOf(o.doc),
      clientTexts: byDoc.get(d).map((c) => ({ name: c.name, text: c.text.toString() }))
    })
  }

  // Nobody may re-send anything to the restarted server: the check reads what it stored.
  for (const c of clients) c.provider.disconnect()
  await waitSocketsClosed('final disconnect')
  log('final graceful restart')
  const stop = await server.stopGraceful(GRACEFUL_TIMEOUT_MS)
  stats.finalRestart = stop
  if (!stop.ok) {
    stats.gracefulExitProblems.push(`final restart: ${stop.why}`)
    warn(`graceful stop: ${stop.why}`)
  }
  await server.start()

  for (const d of names) {
    const f = finals.get(d)
    const check = { doc: d, length: f.text.length, ok: true, details: [] }
    const rest = await restText(d)
    check.rest = rest.ok && rest.text === f.text
    if (!rest.ok) check.details.push(`REST: ${rest.error}`)
    else if (rest.text !== f.text) check.details.push(`REST text differs: ${describeDiff(f.text, rest.text)}`)
    try {
      const fresh = await freshClient(server, d, `final fresh client for ${d}`)
      const cmp = compareStates(f.state, fresh.state)
      check.fresh = fresh.text === f.text && cmp.missingItems === 0 && cmp.missingDeletes === 0
      if (fresh.text !== f.text) check.details.push(`fresh client text differs: ${describeDiff(f.text, fresh.text)}`)
      if (cmp.missingItems || cmp.missingDeletes) check.details.push(`fresh client lacks ${cmp.missingItems} items, ${cmp.missingDeletes} deletions: ${cmp.details.join('; ')}`)
    } catch (err) {
      check.fresh = false
      check.details.push(`fresh client: ${err.message}`)
    }
    const divergent = f.clientTexts.filter((c) => c.text !== f.text)
    if (divergent.length) check.details.push(`clients with another text: ${divergent.map((c) => c.name).join(', ')}`)
    check.ok = check.rest && check.fresh && divergent.length === 0
    stats.finalChecks.push(check)
    log(`final ${d}: ${f.text.length} chars; REST ${check.rest ? 'equal' : 'DIFFERENT'}, fresh client ${check.fresh ? 'equal' : 'DIFFERENT'}${check.details.length ? ' — ' + check.details.join('; ') : ''}`)
  }
}

async function restText (d) {
  let last = null
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const res = await fetch(`${server.http}/api/docs/${d}/content?format=text`, { signal: AbortSignal.timeout(15000) })
      const body = await res.text()
      if (res.status === 200) return { ok: true, text: body }
      last = `HTTP ${res.status}: ${body.slice(0, 200)}`
      if (res.status !== 503) break
    } catch (err) {
      last = err.message
    }
    await sleep(500)
  }
  return { ok: false, error: last }
}

function describeDiff (want, got) {
  let i = 0
  while (i < want.length && i < got.length && want[i] === got[i]) i++
  return `expected ${want.length} chars, got ${got.length}; first difference at ${i}: ` +
    `expected ${JSON.stringify(want.slice(i, i + 30))}, got ${JSON.stringify(got.slice(i, i + 30))}`
}

// ---------------------------------------------------------------- summary

function serverLogStats () {
  let text = ''
  try { text = fs.readFileSync(LOG_PATH, 'utf8') } catch { return null }
  // Strip ANSI colours for matching.
  const lines = text.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, ''))
  const errors = lines.filter((l) => /\bERROR\b/.test(l))
  return {
    errors,
    warns: lines.filter((l) => /\bWARN\b/.test(l)).length,
    panics: lines.filter((l) => /panicked/.test(l)),
    // The server's degraded mode while its store fails (informational; the wording may change).
    relayedUnstored: lines.filter((l) => /before they are stored/.test(l)).length
  }
}

function summarize () {
  const restartMissing = stats.restartChecks.reduce((s, r) => s + r.missingItems + r.missingDeletes, 0)
  const restartFailures = stats.restartChecks.filter((r) => r.missingItems || r.missingDeletes || r.error)
  const kill9Checks = stats.restartChecks.filter((r) => r.kind === 'kill')
  const kill9Missing = kill9Checks.reduce((s, r) => s + r.missingItems + r.missingDeletes, 0)
  const gracefulMissing = restartMissing - kill9Missing
  const finalOk = stats.finalChecks.length === opts.docs && stats.finalChecks.every((c) => c.ok)
  const outagesRecovered = stats.outages.every((o) => o.recoveredMs !== null)
  const seen503 = stats.outages.some((o) => o.seen503)
  const logStats = serverLogStats()

  const failures = []
  if (restartFailures.length) failures.push(`${restartFailures.length} post-restart check(s) found missing data or failed`)
  if (!stats.convergence?.ok) failures.push('clients did not converge')
  if (!finalOk) failures.push('final stored state differs from the clients')
  if (stats.unexpectedExits.length) failures.push(`${stats.unexpectedExits.length} unexpected server exit(s)`)
  if (stats.gracefulExitProblems.length) failures.push(`${stats.gracefulExitProblems.length} graceful stop problem(s)`)
  if (!outagesRecovered) failures.push('the server did not become ready again after an outage')
  const unnoticed = stats.outages.filter((o) => !o.seen503)
  if (unnoticed.length) failures.push(`/readyz never answered 503 during store outage(s) ${unnoticed.map((o) => `#${o.n}`).join(', ')}`)
  if (logStats?.panics.length) failures.push(`${logStats.panics.length} panic(s) in the server log`)
  if (stats.internalErrors.length) failures.push(`${stats.internalErrors.length} driver error(s)`)

  const line = (k, v) => console.log(`  ${k.padEnd(34)} ${v}`)
  console.log('')
  console.log('==================== tandem soak summary ====================')
  line('backend', `${opts.backend} (${opts.backend === 'sqlite' ? SQLITE_PATH : opts.pgDb})`)
  line('chaos phase / total time', `${Math.round(opts.durationMs / 1000)} s / ${Math.round((Date.now() - T0) / 1000)} s (seed ${opts.seed})`)
  line('documents', `${opts.docs}`)
  line('clients', `${editors.length} editors + ${observers.length} observers`)
  line('edits made', `${stats.edits} (${stats.inserts} inserts, ${stats.deletes} deletes)`)
  line('client disconnects / reconnects', `${stats.flaps} (connection errors seen: ${stats.connectionErrors})`)
  line('restarts during chaos', `${stats.restarts.graceful + stats.restarts.kill9} (graceful ${stats.restarts.graceful} / kill -9 ${stats.restarts.kill9}) + 1 final graceful`)
  line('store outages', `${stats.outages.length} (${stats.outages.map((o) => `${Math.round(o.ms / 1000)} s`).join(', ')}); ready again after ${stats.outages.map((o) => o.recoveredMs === null ? 'NEVER' : `${o.recoveredMs} ms`).join(', ')}; items relayed to observers during them: ${stats.outages.map((o) => o.relayedDuring ?? '?').join(', ')}`)
  line('stored again after outage', stats.outages.map((o) => `#${o.n}: ${o.durableMs !== undefined ? `${o.durableMs} ms` : `not confirmed (${o.durableError ?? 'pending'})`}`).join('; '))
  line('readyz during outage', `${seen503 ? '503 seen' : 'not seen'}  [${stats.outages.map((o) => `#${o.n}: ${o.seen503 ? '503 seen' : 'not seen'} ${JSON.stringify(o.codes)}`).join('; ')}]`)
  const afterOutage = kill9Checks.filter((r) => (r.missingItems || r.missingDeletes) && r.afterOutage)
  const onlyAfterOutage = afterOutage.length > 0 && afterOutage.every((r) => r.afterOutage.earlyItems === 0 && r.afterOutage.earlyDeletes === 0) &&
    kill9Checks.every((r) => !(r.missingItems || r.missingDeletes) || r.afterOutage)
  line('missing after kill -9 checks', `${kill9Missing} (${kill9Checks.length} document checks over ${stats.restarts.kill9} kill -9)` +
    (kill9Missing && onlyAfterOutage ? '; all of it relayed during/after a store outage, before the kill' : ''))
  line('missing after graceful checks', `${gracefulMissing} (${stats.restartChecks.length - kill9Checks.length} document checks)`)
  line('final convergence', stats.convergence?.ok ? `all clients equal per document (${stats.convergence.ms} ms)` : `FAILED: ${stats.convergence?.error}`)
  line('final equality after restart', finalOk
    ? `equal: ${stats.finalChecks.map((c) => `${c.doc} ${c.length} chars`).join(', ')} (REST and fresh client)`
    : `MISMATCH: ${stats.finalChecks.filter((c) => !c.ok).map((c) => `${c.doc}: ${c.details.join('; ')}`).join(' | ') || 'not reached'}`)
  line('unexpected server exits', `${stats.unexpectedExits.length}`)
  if (logStats) line('server log', `${logStats.errors.length} ERROR, ${logStats.warns} WARN, ${logStats.panics.length} panic lines; "relaying updates before they are stored": ${logStats.relayedUnstored}`)
  for (const r of restartFailures) {
    console.log(`  ! restart #${r.n} (${r.kind === 'kill' ? 'kill -9' : 'graceful'}) ${r.doc}: ${r.missingItems} items, ${r.missingDeletes} deletions missing: ${r.details.join('; ')}`)
  }
  for (const p of stats.gracefulExitProblems) console.log(`  ! graceful stop: ${p}`)
  for (const u of stats.unexpectedExits) console.log(`  ! ${u}`)
  for (const e of stats.internalErrors) console.log(`  ! driver: ${e}`)
  if (logStats?.panics.length) for (const p of logStats.panics.slice(0, 5)) console.log(`  ! ${p.slice(0, 300)}`)
  // The 503 answers of /readyz are logged as errors too; show the others.
  const notable = logStats?.errors.filter((e) => !e.includes('route=/readyz')) ?? []
  if (notable.length) {
    console.log(`  first ERROR lines of the server log (other than /readyz answers; ${notable.length} in all):`)
    for (const e of notable.slice(0, 5)) console.log(`    ${e.slice(0, 300)}`)
  }
  console.log(`  RESULT: ${failures.length === 0 ? 'PASS' : 'FAIL — ' + failures.join('; ')}`)
  if (failures.length) console.log(`  server log: ${LOG_PATH}`)
  console.log('=============================================================')
  return failures.length === 0
}

// ---------------------------------------------------------------- lifecycle

let shuttingDown = false

function internalError (what, err) {
  const msg = `${what}: ${err?.stack ?? err}`
  stats.internalErrors.push(msg)
  console.error(stamp(), 'ERROR:', msg)
}

// Stops everything this driver started: clients, the lock holder, the postgres block, the server.
async function teardown () {
  editing = false
  for (const c of clients) {
    clearTimeout(c.editTimer)
    clearTimeout(c.flapTimer)
    try { c.provider.destroy() } catch {}
  }
  if (heldLock) {
    try { heldLock.stdin.end('release\n') } catch {}
    const p = heldLock
    await Promise.race([new Promise((resolve) => p.once('exit', resolve)), sleep(5000)])
    if (heldLock === p) p.kill('SIGKILL')
  }
  if (pgBlocked) {
    try { await runPsql(`ALTER DATABASE ${opts.pgDb} ALLOW_CONNECTIONS true`) } catch (err) { warn(err.message) }
  }
  if (server?.alive) {
    const r = await server.stopGraceful(30000)
    if (!r.ok) warn(`stopping the server at teardown: ${r.why}`)
  }
}

async function abort (why, code) {
  if (shuttingDown) return
  shuttingDown = true
  console.error(stamp(), `aborting: ${why}`)
  try { await teardown() } catch (err) { console.error('teardown failed:', err) }
  console.error(`server log: ${LOG_PATH}`)
  process.exit(code)
}

process.on('SIGINT', () => abort('interrupted (SIGINT)', 130))
process.on('SIGTERM', () => abort('terminated (SIGTERM)', 143))
process.on('uncaughtException', (err) => { internalError('uncaught exception', err); abort('uncaught exception', 1) })
process.on('unhandledRejection', (err) => { internalError('unhandled rejection', err); abort('unhandled rejection', 1) })

async function main () {
  const deadline = setTimeout(() => abort(`time bound exceeded (${Math.round(HARD_DEADLINE_MS / 1000)} s)`, 1), HARD_DEADLINE_MS)
  fs.writeFileSync(LOG_PATH, '')
  const blackhole = await startBlackhole()
  gate.url = `ws://127.0.0.1:${blackhole.address().port}/ws`

  const port = await freePort()
  server = new Server(port)
  wsBase = `ws://127.0.0.1:${port}/ws`
  log(`soak: backend ${opts.backend}, ${opts.docs} documents, ${opts.clients} editors, chaos for ${Math.round(opts.durationMs / 1000)} s, seed ${opts.seed}`)
  log(`server ${opts.bin} on 127.0.0.1:${port}, log ${LOG_PATH}`)
  await server.start()
  log(`server ready (pid ${server.proc.pid})`)

  const names = docNames()
  for (const d of names) {
    const o = makeClient(d, 'observer', `${d}/observer`)
    observers.push(o)
    clients.push(o)
  }
  for (let i = 0; i < opts.clients; i++) {
    const d = names[i % names.length]
    const c = makeClient(d, 'editor', `${d}/editor-${Math.floor(i / names.length)}`)
    editors.push(c)
    clients.push(c)
  }
  await until('every client to sync once', () => clients.every((c) => c.provider.synced), 60000)
  log(`${clients.length} clients synced; editing starts`)

  editing = true
  for (const c of editors) {
    scheduleEdit(c)
    scheduleFlap(c)
  }
  const progress = setInterval(() => {
    const connected = clients.filter((c) => c.provider.wsconnected).length
    log(`progress: ${stats.edits} edits, ${connected}/${clients.length} clients connected, server ${server.alive ? 'up' : 'down'}`)
  }, 30000)

  try {
    await chaos(Date.now() + opts.durationMs)
  } finally {
    clearInterval(progress)
  }
  await finalPhase()

  await Promise.all(stats.outages.map((o) => o.durable))
  const ok = summarize()
  shuttingDown = true
  clearTimeout(deadline)
  await teardown()
  blackhole.close()
  process.exit(ok ? 0 : 1)
}

main().catch(async (err) => {
  internalError('soak driver failed', err)
  try { summarize() } catch (e) { console.error('summary failed:', e) }
  await abort('driver failure', 1)
})
