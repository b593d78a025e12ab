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
//        [--nodes 3 [--redis-server redis-server]]
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
//
// With --nodes N (N > 1, Postgres only) the driver also starts a private redis-server on a free
// loopback port and N Tandem nodes on one database and that Redis; every client (editor and
// observer) belongs to one node and reconnects to that node only. There is one observer per
// document per node. The chaos schedule, drawn from the seed and printed at the start, holds:
// kill -9 of one node at a time, graceful (SIGTERM) restarts of one node, Redis kill -9 and
// restart on the same port (the nodes reconnect on their own; sometimes a node is killed while
// Redis is down), and the store outage as in single-node mode (Postgres closed to every node).
// A stopped node is started again after a few seconds. What is checked, besides the above:
//  * After a node stops (kill -9 or SIGTERM), a fresh client on ANOTHER node must, within a few
//    seconds (that node may be a log-watch interval behind), hold everything any client of any
//    node had received: what every observer held, and every other client's items that any editor
//    held. Once the node is back, a fresh client on it must hold all of that too. Reconnects of
//    every client are held back until the first check is done, and the stopped node's clients
//    until the second.
//  * During a Redis outage every running node's /readyz answers 200 with "bus":"down" at least
//    once and never 503; after Redis is back every node reports "bus":"up" again.
//  * At the end: all clients of all nodes converge; every node serves that text (REST, and a
//    fresh client per node per document) and reports the bus up (/readyz, tandem_bus_up); then
//    every node stops gracefully, the documents read straight from Postgres (snapshot + log,
//    applied with Yjs) must hold that state, and after all nodes start again each serves it.
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
      'pg-db': { type: 'string' },
      nodes: { type: 'string', default: '1' },
      'redis-server': { type: 'string', default: 'redis-server' }
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
  const nodes = Number(values.nodes)
  if (!Number.isInteger(nodes) || nodes < 1) throw new Error('--nodes must be a positive integer')
  if (nodes > 1 && backend !== 'postgres') {
    throw new Error('--nodes > 1 needs --backend postgres: several nodes share one Postgres database (SQLite serves one node)')
  }
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
    pgDb: values['pg-db'],
    nodes,
    redisServer: values['redis-server']
  }
}

const opts = parseCli(process.argv.slice(2))
const MULTI = opts.nodes > 1
// One node: server.log / server.pid, as ever. Several: node-<i>.log / node-<i>.pid, and the
// private Redis's redis.log / redis.pid (scripts/soak kills what these name if the driver dies).
const LOG_PATH = `${opts.work}/server.log`
const SERVER_PID_PATH = `${opts.work}/server.pid`
const REDIS_LOG_PATH = `${opts.work}/redis.log`
const REDIS_PID_PATH = `${opts.work}/redis.pid`
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

function serverEnv (port, extra = {}) {
  const env = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (k.startsWith('TANDEM_') || k === 'DATABASE_URL' || k === 'RUST_LOG') continue
    env[k] = v
  }
  env.TANDEM_BIND = `127.0.0.1:${port}`
  env.DATABASE_URL = opts.databaseUrl
  env.TANDEM_LOG = process.env.SOAK_SERVER_LOG ?? 'info'
  env.RUST_BACKTRACE = '1'
  return Object.assign(env, extra)
}

class Server {
  // `name` is what messages call it; one node keeps server.log / server.pid, several nodes
  // each get their own (see makeNode).
  constructor (port, { name = 'server', logPath = LOG_PATH, pidPath = SERVER_PID_PATH, env = {} } = {}) {
    this.port = port
    this.name = name
    this.logPath = logPath
    this.pidPath = pidPath
    this.extraEnv = env
    this.proc = null
    this.starts = 0
    this.expectingExit = false
    this.ready = false // started and /readyz answered 200 since
    this.exit = null // promise of { code, signal } for the current process
  }

  get http () { return `http://127.0.0.1:${this.port}` }
  get ws () { return `ws://127.0.0.1:${this.port}/ws` }
  get alive () { return this.proc !== null }

  // Starts the binary and waits for /readyz; retries a start whose process dies at once
  // (e.g. the port still held for a moment).
  async start () {
    let lastError
    for (let attempt = 1; attempt <= 5; attempt++) {
      this.spawnOnce()
      try {
        await this.waitReady(READY_TIMEOUT_MS)
        this.ready = true
        return
      } catch (err) {
        lastError = err
        if (this.alive) {
          await this.kill9()
          throw err
        }
        warn(`${this.name} start attempt ${attempt} failed: ${err.message}`)
        await sleep(500 * attempt)
      }
    }
    throw lastError
  }

  spawnOnce () {
    this.starts += 1
    fs.appendFileSync(this.logPath, `\n===== soak: ${this.name} start #${this.starts} at ${new Date().toISOString()} =====\n`)
    const fd = fs.openSync(this.logPath, 'a')
    // Its own process group: a Ctrl-C on the terminal reaches the driver, which then stops the
    // server itself (and scripts/soak kills it by PID if the driver could not).
    const proc = spawn(opts.bin, [], {
      env: serverEnv(this.port, this.extraEnv),
      stdio: ['ignore', fd, fd],
      detached: true
    })
    fs.closeSync(fd)
    this.proc = proc
    this.expectingExit = false
    fs.writeFileSync(this.pidPath, `${proc.pid}\n`)
    this.exit = new Promise((resolve) => {
      proc.once('error', (err) => {
        warn(`could not start ${opts.bin}: ${err.message}`)
      })
      proc.once('exit', (code, signal) => {
        if (this.proc === proc) {
          this.proc = null
          this.ready = false
          try { fs.unlinkSync(this.pidPath) } catch {}
        }
        if (!this.expectingExit) {
          const what = `${this.name} (pid ${proc.pid}) exited unexpectedly: code ${code}, signal ${signal}`
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
      if (!this.alive) throw new Error(`the ${this.name} exited before it was ready`)
      if ((await readyz(this, 1000)) === 200) return
      await sleep(100)
    }
    throw new Error(`/readyz did not answer 200 within ${timeoutMs} ms`)
  }

  async kill9 () {
    this.ready = false
    if (!this.alive) return { code: null, signal: null }
    this.expectingExit = true
    this.proc.kill('SIGKILL')
    return await this.exit
  }

  // SIGTERM and wait; a server that does not exit in time is killed and reported.
  async stopGraceful (timeoutMs) {
    this.ready = false
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

// /readyz with its body: { code, bus } where bus is 'up', 'down' or null (no bus, or no answer).
async function readyzBus (server, timeoutMs) {
  try {
    const res = await fetch(`${server.http}/readyz`, { signal: AbortSignal.timeout(timeoutMs) })
    const body = await res.text()
    let bus = null
    try { bus = JSON.parse(body).bus ?? null } catch {}
    return { code: res.status, bus }
  } catch (err) {
    return { code: 'error', bus: null }
  }
}

// The private Redis of a --nodes run: on a loopback port of its own, no persistence. Killed
// with -9 and started again on the same port, so that the nodes reconnect on their own.
class Redis {
  constructor (port) {
    this.port = port
    this.proc = null
    this.starts = 0
    this.expectingExit = false
    this.exit = null
  }

  get url () { return `redis://127.0.0.1:${this.port}` }
  get alive () { return this.proc !== null }

  async start () {
    let lastError
    for (let attempt = 1; attempt <= 5; attempt++) {
      this.spawnOnce()
      try {
        await until(`redis-server on port ${this.port} to answer`, () => {
          if (!this.alive) throw new Error('redis-server exited before it answered')
          return this.answering
        }, READY_TIMEOUT_MS, 100)
        return
      } catch (err) {
        lastError = err
        if (this.alive) {
          await this.kill9()
          throw err
        }
        warn(`redis start attempt ${attempt} failed: ${err.message}`)
        await sleep(500 * attempt)
      }
    }
    throw lastError
  }

  spawnOnce () {
    this.starts += 1
    fs.appendFileSync(REDIS_LOG_PATH, `\n===== soak: redis start #${this.starts} at ${new Date().toISOString()} =====\n`)
    const proc = spawn(opts.redisServer, [
      '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--logfile', REDIS_LOG_PATH
    ], { stdio: ['ignore', 'ignore', 'inherit'], detached: true })
    this.proc = proc
    this.answering = false
    this.expectingExit = false
    fs.writeFileSync(REDIS_PID_PATH, `${proc.pid}\n`)
    // Answering once a PING gets PONG (checked by a loop of plain TCP attempts).
    const ping = async () => {
      while (this.proc === proc && !this.answering) {
        this.answering = await redisPing(this.port)
        if (this.answering) { poke(); return }
        await sleep(100)
      }
    }
    ping()
    this.exit = new Promise((resolve) => {
      proc.once('error', (err) => warn(`could not start ${opts.redisServer}: ${err.message}`))
      proc.once('exit', (code, signal) => {
        if (this.proc === proc) {
          this.proc = null
          this.answering = false
          try { fs.unlinkSync(REDIS_PID_PATH) } catch {}
        }
        if (!this.expectingExit) {
          const what = `redis-server (pid ${proc.pid}) exited unexpectedly: code ${code}, signal ${signal}`
          stats.unexpectedExits.push(what)
          warn(what)
        }
        poke()
        resolve({ code, signal })
      })
    })
  }

  async kill9 () {
    if (!this.alive) return { code: null, signal: null }
    this.expectingExit = true
    this.proc.kill('SIGKILL')
    return await this.exit
  }
}

function redisPing (port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let got = ''
    const done = (ok) => { socket.destroy(); resolve(ok) }
    socket.setTimeout(1000, () => done(false))
    socket.on('error', () => done(false))
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (d) => { got += d; if (got.includes('\r\n')) done(got.startsWith('+PONG')) })
  })
}

// ---------------------------------------------------------------- the clients' sockets

// All clients (editors and observers) connect through this `ws` subclass. While the gate is
// closed, a connection attempt goes to a local socket that hangs up at once, so the stock
// provider sees a failed attempt and retries on its own schedule. `liveSockets` holds the
// sockets to the real server that have not closed yet. With several nodes the gate can also be
// closed for the clients of some nodes only (`closedPorts`).
const gate = { open: true, url: null, closedPorts: new Set() }
const liveSockets = new Set()
const portOf = (url) => Number(new URL(url).port)

class GatedWebSocket extends WebSocket {
  constructor (url, protocols) {
    const port = portOf(url)
    const real = gate.open && !gate.closedPorts.has(port)
    super(real ? url : gate.url, protocols)
    if (real) {
      this.soakPort = port
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
const observers = [] // one per document (per node), never edits: holds exactly what its server sent it
let editing = false

// A client of `docName` on `srv` (the one server, or one of the nodes).
function makeClient (docName, role, name, WS = GatedWebSocket, srv = server) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(srv.ws, docName, doc, {
    WebSocketPolyfill: WS,
    disableBc: true // else providers in this process would sync directly, bypassing the server
  })
  // ownIds: the client ids this client's own edits carry (Yjs picks a new one if it ever sees
  // its id used by someone else).
  const c = { name, role, docName, doc, provider, node: srv, text: doc.getText(TEXT), editTimer: null, flapTimer: null, edits: 0, ownIds: new Set([doc.clientID]) }
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
  c.ownIds.add(c.doc.clientID)
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
  const c = makeClient(docName, 'fresh', label, WebSocket, server)
  try {
    await until(`${label} to sync`, () => c.provider.synced, FRESH_SYNC_TIMEOUT_MS)
    return { text: c.text.toString(), state: stateOf(c.doc), svKey: svKey(c.doc) }
  } finally {
    c.provider.destroy()
    c.doc.destroy()
  }
}

// ---------------------------------------------------------------- chaos

let server = null // the one server; with --nodes > 1, `nodes` instead
const nodes = []
let redis = null
const allServers = () => MULTI ? nodes : [server]
let restartSeq = 0
// The last store outage since the previous restart: when it began and ended, and what the
// observers had received when it began (to tell whether missing data was relayed during it).
let outageSinceRestart = null

// Waits for the clients' sockets to close: all of them, or those to one node (`srv`).
async function waitSocketsClosed (why, srv = null) {
  const open = () => [...liveSockets].filter((ws) => srv === null || ws.soakPort === srv.port)
  try {
    await until(`client sockets to close (${why})`, () => open().length === 0, SOCKETS_CLOSED_TIMEOUT_MS)
  } catch (err) {
    const left = open()
    warn(`${err.message}; ${left.length} still open, terminating them`)
    for (const ws of left) ws.terminate()
    await until('terminated sockets to close', () => open().length === 0, SOCKETS_CLOSED_TIMEOUT_MS)
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
  // With several nodes every node is polled, and each must answer 503 at least once.
  const seen503By = new Set()
  const poller = (async () => {
    while (!stop) {
      const t = Date.now()
      const answers = await Promise.all(allServers().map(async (srv) => [srv, await readyz(srv, 3000)]))
      rec.polls++
      for (const [srv, code] of answers) {
        const key = MULTI ? `${srv.name} ${code}` : code
        rec.codes[key] = (rec.codes[key] ?? 0) + 1
        if (code === 503) seen503By.add(srv)
      }
      rec.seen503 = allServers().every((srv) => seen503By.has(srv))
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
  rec.durable = Promise.all(allServers().flatMap((srv) => docNames().map(async (d) => {
    const res = await fetch(`${srv.http}/api/docs/${d}/update`, { signal: AbortSignal.timeout(RECOVER_TIMEOUT_MS) })
    await res.arrayBuffer()
    if (res.status !== 200) throw new Error(`GET /api/docs/${d}/update${MULTI ? ` on ${srv.name}` : ''} answered ${res.status}`)
  }))).then(() => { rec.durableMs = Date.now() - t1 }, (err) => { rec.durableError = err.message })
  try {
    await Promise.all(allServers().map((srv) => srv.waitReady(RECOVER_TIMEOUT_MS)))
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

// ---------------------------------------------------------------- several nodes

// A node stop every 15–35 s (kill -9 six times in ten, else SIGTERM), the node started again
// 1–8 s later; a Redis outage of 3–12 s every 40–80 s, the first early, with a node kill -9
// during it every other time; the store outage as in single-node mode.
const NODE_STOP_EVERY_MIN_MS = 15000
const NODE_STOP_EVERY_MAX_MS = 35000
const NODE_DOWN_MIN_MS = 1000
const NODE_DOWN_MAX_MS = 8000
const NODE_KILL_SHARE = 0.6
const REDIS_EVERY_MIN_MS = 40000
const REDIS_EVERY_MAX_MS = 80000
const REDIS_DOWN_MIN_MS = 3000
const REDIS_DOWN_MAX_MS = 12000
const REDIS_KILL_DURING_SHARE = 0.5
// How long another node may take to hold what a stopped node had relayed (it reads the log
// every 250 ms; Redis is usually faster), and how long the nodes may take to report the bus up
// again once Redis is back (they retry every 100 ms, doubling to 5 s).
const CATCHUP_TIMEOUT_MS = 15000
const BUS_UP_TIMEOUT_MS = 30000
const FINAL_CATCHUP_TIMEOUT_MS = 30000

const multiStats = {
  plan: [],
  skipped: [],
  redisOutages: [], // { n, ms, killDuring, polled, busDownSeen, codes, upAgainMs, problems }
  liveChecks: [], // { node, doc, ok, details }: every node serves the converged text
  busAtEnd: [], // { node, readyz, metric, ok }
  storeDirect: [], // { doc, ok, length, rows, details }: straight from Postgres
  maxCatchupMs: 0
}

function makeNode (i, port) {
  return new Server(port, {
    name: `node-${i}`,
    logPath: `${opts.work}/node-${i}.log`,
    pidPath: `${opts.work}/node-${i}.pid`,
    env: { TANDEM_REDIS_URL: redis.url }
  })
}

const nodeName = (i) => `node-${i}`

// The whole chaos schedule, drawn from the seed before anything runs (times are from the start
// of editing; an event whose predecessor ran long starts late). `extras` are run after the
// chaos phase for a kind that did not get to run at all, so that every run has each kind.
function planNodeChaos () {
  const D = opts.durationMs
  const N = opts.nodes
  const other = (k) => { const j = Math.floor(chaosRng() * (N - 1)); return j >= k ? j + 1 : j }
  const stop = (type) => {
    const node = Math.floor(chaosRng() * N)
    return { type, node, other: other(node), downMs: Math.round(chaosUniform(NODE_DOWN_MIN_MS, NODE_DOWN_MAX_MS)) }
  }
  const redisEvent = (forceKill) => {
    const ev = { type: 'redis', downMs: Math.round(chaosUniform(REDIS_DOWN_MIN_MS, REDIS_DOWN_MAX_MS)) }
    if (forceKill || chaosRng() < REDIS_KILL_DURING_SHARE) {
      ev.kill = { afterMs: Math.round(chaosUniform(0.2, 0.6) * ev.downMs), ...stop('kill') }
    }
    return ev
  }
  const events = []
  for (let t = chaosUniform(0.3, 1) * NODE_STOP_EVERY_MIN_MS; t < D; t += chaosUniform(NODE_STOP_EVERY_MIN_MS, NODE_STOP_EVERY_MAX_MS)) {
    events.push({ at: Math.round(t), ...stop(chaosRng() < NODE_KILL_SHARE ? 'kill' : 'term') })
  }
  for (let t = chaosUniform(0.1, 0.4) * REDIS_EVERY_MIN_MS; t < D; t += chaosUniform(REDIS_EVERY_MIN_MS, REDIS_EVERY_MAX_MS)) {
    events.push({ at: Math.round(t), ...redisEvent(false) })
  }
  for (let t = chaosUniform(0.2, 0.5) * Math.min(D, 240000); t < D; t += chaosUniform(OUTAGE_EVERY_MIN_MS, OUTAGE_EVERY_MAX_MS)) {
    events.push({ at: Math.round(t), type: 'outage' })
  }
  events.sort((a, b) => a.at - b.at)
  const extras = { kill: stop('kill'), term: stop('term'), redis: redisEvent(true), outage: { type: 'outage' } }
  return { events, extras }
}

function describeEvent (ev) {
  const at = ev.at !== undefined ? `+${(ev.at / 1000).toFixed(1)}s ` : ''
  switch (ev.type) {
    case 'kill': return `${at}kill -9 ${nodeName(ev.node)}, back after ${ev.downMs} ms, checked on ${nodeName(ev.other)}`
    case 'term': return `${at}SIGTERM ${nodeName(ev.node)}, back after ${ev.downMs} ms, checked on ${nodeName(ev.other)}`
    case 'redis': return `${at}Redis kill -9 for ${ev.downMs} ms` +
      (ev.kill ? `, and ${ev.kill.afterMs} ms into it kill -9 ${nodeName(ev.kill.node)} (back after ${ev.kill.downMs} ms, checked on ${nodeName(ev.kill.other)})` : '')
    case 'outage': return `${at}store outage of ${Math.round(opts.outageMs / 1000)} s (Postgres closed to every node)`
  }
  return JSON.stringify(ev)
}

// What the event costs at least, to tell whether it still fits in the chaos phase.
function eventCost (ev) {
  switch (ev.type) {
    case 'kill': case 'term': return ev.downMs + 8000
    case 'redis': return Math.max(ev.downMs, ev.kill ? ev.kill.afterMs + ev.kill.downMs : 0) + 8000
    case 'outage': return opts.outageMs + 10000
  }
  return 0
}

async function runEvent (ev) {
  if (ev.type === 'kill' || ev.type === 'term') await stopNode(ev)
  else if (ev.type === 'redis') await redisOutage(ev)
  else if (ev.type === 'outage') await storeOutage()
}

async function chaosNodes (endAt) {
  const start = Date.now()
  const { events, extras } = planNodeChaos()
  multiStats.plan = events.map(describeEvent)
  log(`chaos schedule (seed ${opts.seed}; times from the start of editing; an event that would not end before the chaos phase does is skipped):`)
  for (const line of multiStats.plan) log(`    ${line}`)
  const ran = { kill: 0, term: 0, redis: 0, outage: 0 }
  for (const ev of events) {
    const at = start + ev.at
    while (Date.now() < at) {
      await sleep(Math.min(1000, at - Date.now()))
      await keepNodesUp()
    }
    if (Date.now() + eventCost(ev) > endAt) {
      multiStats.skipped.push(describeEvent(ev))
      log(`skipped (no time left in the chaos phase): ${describeEvent(ev)}`)
      continue
    }
    await keepNodesUp()
    await runEvent(ev)
    ran[ev.type]++
    if (ev.kill) ran.kill++
  }
  while (Date.now() < endAt) {
    await sleep(Math.min(1000, endAt - Date.now()))
    await keepNodesUp()
  }
  // Every run gets at least one of each.
  for (const type of ['kill', 'term', 'redis', 'outage']) {
    if (ran[type] === 0) {
      log(`one more, so that the run has each kind: ${describeEvent(extras[type])}`)
      await keepNodesUp()
      await runEvent(extras[type])
      ran[type]++
      if (extras[type].kill) ran.kill++
    }
  }
}

// A node or Redis that died on its own (already reported) is started again so the run can go on;
// one stopped on purpose is left to the event that stopped it.
async function keepNodesUp () {
  if (!redis.alive && !redis.planned) {
    warn('redis-server is not running; starting it again')
    await redis.start()
  }
  for (const n of nodes) {
    if (!n.alive && !n.planned) {
      warn(`${n.name} is not running; starting it again`)
      await n.start()
    }
  }
}

// Per document, what the clients had received from the nodes: every observer's state, and the
// items of other clients that any editor held (an editor's own items may not be stored yet;
// every other item it holds was relayed to it, hence committed).
function receivedStates () {
  const out = new Map()
  for (const d of docNames()) {
    const merged = new Y.Doc()
    for (const o of observers.filter((o) => o.docName === d)) Y.applyUpdate(merged, Y.encodeStateAsUpdate(o.doc))
    const state = stateOf(merged)
    merged.destroy()
    for (const e of editors.filter((e) => e.docName === d)) {
      for (const [client, clock] of svOf(e.doc)) {
        if (e.ownIds.has(client)) continue
        if ((state.sv.get(client) ?? 0) < clock) state.sv.set(client, clock)
      }
    }
    out.set(d, state)
  }
  return out
}

// A fresh client (plain socket) of `d` on `srv` must come to hold `want`: it syncs, then gets
// `timeoutMs` to catch up (the node may be behind the log by a watch interval). Resolves to
// { missingItems, missingDeletes, details, catchupMs, text, state }.
async function freshClientHolds (srv, d, want, label, timeoutMs) {
  const c = makeClient(d, 'fresh', label, WebSocket, srv)
  try {
    await until(`${label} to sync`, () => c.provider.synced, FRESH_SYNC_TIMEOUT_MS)
    const t0 = Date.now()
    // Polled (comparing states on every client event would cost more than it saves).
    const lacking = () => compareStates(want, stateOf(c.doc))
    let cmp = lacking()
    while ((cmp.missingItems || cmp.missingDeletes) && Date.now() - t0 < timeoutMs) {
      await sleep(100)
      cmp = lacking()
    }
    return { ...cmp, catchupMs: Date.now() - t0, text: c.text.toString(), state: stateOf(c.doc) }
  } finally {
    c.provider.destroy()
    c.doc.destroy()
  }
}

// Checks that a fresh client of every document on `srv` holds `wants`; records and logs it.
async function checkNodeHolds (srv, wants, { n, kind, where, outage, t0, label }) {
  const results = await Promise.all([...wants].map(async ([d, want]) => {
    const check = { n, kind, doc: d, where, checkedItems: svTotal(want.sv), missingItems: 0, missingDeletes: 0, details: [] }
    try {
      const got = await freshClientHolds(srv, d, want, `fresh client for ${d} on ${where} after restart #${n}`, CATCHUP_TIMEOUT_MS)
      check.missingItems = got.missingItems
      check.missingDeletes = got.missingDeletes
      check.details.push(...got.details)
      check.catchupMs = got.catchupMs
      if (!got.missingItems && !got.missingDeletes) multiStats.maxCatchupMs = Math.max(multiStats.maxCatchupMs, got.catchupMs)
      if ((check.missingItems || check.missingDeletes) && outage) {
        const early = compareStates(outage.states.get(d), got.state)
        check.details.unshift(`the ${label} came ${outage.endedAt ? `${((t0 - outage.endedAt) / 1000).toFixed(1)} s after store outage #${outage.n} ended` : `during store outage #${outage.n}`}; ` +
          `of the missing data, ${early.missingItems} items and ${early.missingDeletes} deletions had reached an observer before that outage began`)
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
      warn(`restart #${n} (${label}) ${r.doc} on ${where}: MISSING ${r.missingItems} items, ${r.missingDeletes} deletions after waiting ${r.catchupMs ?? '?'} ms; ${r.details.join('; ')}`)
    }
  }
  const missing = results.reduce((s, r) => s + r.missingItems + r.missingDeletes, 0)
  const slowest = Math.max(...results.map((r) => r.catchupMs ?? 0))
  log(`  restart #${n} check on ${where}: ${results.map((r) => `${r.doc} ${r.checkedItems} items`).join(', ')} -> ` +
    `${missing === 0 && !results.some((r) => r.error) ? `nothing missing (caught up within ${slowest} ms)` : 'MISSING DATA'}`)
}

// Stops one node (kill -9 or SIGTERM). At once a fresh client on another node must hold
// everything any client had received; after `downMs` the node starts again and a fresh client
// on it must hold all of that too. Reconnects of every client are held back until the first
// check is done, those of the stopped node's clients until the second.
async function stopNode (ev, context = '') {
  const n = ++restartSeq
  const k = nodes[ev.node]
  const other = nodes[ev.other]
  const kind = ev.type === 'kill' ? 'kill' : 'graceful'
  const label = kind === 'kill' ? 'kill -9' : 'graceful (SIGTERM)'
  log(`restart #${n}: ${label} of ${k.name}${context}`)
  k.planned = true
  gate.open = false
  gate.closedPorts.add(k.port)
  try {
    const t0 = Date.now()
    if (kind === 'kill') {
      await k.kill9()
      stats.restarts.kill9++
    } else {
      const r = await k.stopGraceful(GRACEFUL_TIMEOUT_MS)
      stats.restarts.graceful++
      if (!r.ok) {
        stats.gracefulExitProblems.push(`restart #${n} (${k.name}): ${r.why}`)
        warn(`graceful stop of ${k.name}: ${r.why}`)
      } else {
        log(`  ${k.name} exited 0 after SIGTERM in ${r.ms} ms`)
      }
    }
    // Whatever the clients of the stopped node received from it has arrived once their sockets
    // closed.
    await waitSocketsClosed(`restart #${n}`, k)
    const wants = receivedStates()
    const outage = outageSinceRestart
    outageSinceRestart = null
    if (!other.alive) await keepNodesUp()
    await checkNodeHolds(other, wants, { n, kind, where: `${other.name} (another node)`, outage, t0, label })
    gate.open = true
    const wait = t0 + ev.downMs - Date.now()
    if (wait > 0) await sleep(wait)
    await k.start()
    log(`  ${k.name} back (pid ${k.proc?.pid}) after ${Date.now() - t0} ms`)
    await checkNodeHolds(k, wants, { n, kind, where: `${k.name} (restarted)`, outage, t0, label })
  } finally {
    k.planned = false
    gate.open = true
    gate.closedPorts.delete(k.port)
  }
}

// Kills Redis for `downMs` (a node may be killed meanwhile), then starts it on the same port.
// While it is away every running node must answer /readyz with 200 and "bus":"down" (at least
// once, never 503); once it is back every node must report "bus":"up".
async function redisOutage (ev) {
  const n = multiStats.redisOutages.length + 1
  const rec = { n, ms: 0, killDuring: ev.kill ? nodeName(ev.kill.node) : null, polled: {}, busDownSeen: {}, codes: {}, upAgainMs: null, problems: [] }
  multiStats.redisOutages.push(rec)
  log(`Redis outage #${n}: kill -9 redis-server for ~${ev.downMs} ms${ev.kill ? `; ${nodeName(ev.kill.node)} gets kill -9 during it` : ''}`)
  redis.planned = true
  await redis.kill9()
  const t0 = Date.now()
  let stop = false
  const poller = (async () => {
    while (!stop) {
      const t = Date.now()
      const up = nodes.filter((srv) => srv.ready)
      const answers = await Promise.all(up.map(async (srv) => [srv, await readyzBus(srv, 3000)]))
      for (const [srv, a] of answers) {
        // A node stopped while its answer was on the way does not count.
        if (!srv.ready || stop) continue
        const key = `${srv.name} ${a.code}${a.bus ? ` bus ${a.bus}` : ''}`
        rec.codes[key] = (rec.codes[key] ?? 0) + 1
        if (a.code !== 'error') rec.polled[srv.name] = (rec.polled[srv.name] ?? 0) + 1
        if (a.code === 200 && a.bus === 'down') rec.busDownSeen[srv.name] = true
      }
      await sleep(Math.max(0, READYZ_POLL_MS - (Date.now() - t)))
    }
  })()
  const killTask = ev.kill
    ? sleep(ev.kill.afterMs).then(() => stopNode(ev.kill, ` during Redis outage #${n}`))
    : Promise.resolve()
  await sleep(ev.downMs)
  stop = true
  await poller
  await redis.start()
  redis.planned = false
  rec.ms = Date.now() - t0
  log(`  redis-server back (pid ${redis.proc?.pid}) after ${rec.ms} ms`)
  const t1 = Date.now()
  await killTask
  try {
    await until('every node to report the bus up', () => nodes.every((srv) => srv.busUp), BUS_UP_TIMEOUT_MS, 250)
    rec.upAgainMs = Date.now() - t1
  } catch (err) {
    rec.problems.push(`the bus was not up on every node within ${BUS_UP_TIMEOUT_MS} ms of Redis coming back: ` +
      nodes.map((srv) => `${srv.name} ${srv.busUp ? 'up' : 'not up'}`).join(', '))
  }
  for (const [name, count] of Object.entries(rec.polled)) {
    // The node killed during the outage may have gone before it noticed.
    if (count > 0 && !rec.busDownSeen[name] && name !== rec.killDuring) rec.problems.push(`${name} never answered /readyz 200 with "bus":"down" (${count} answers)`)
  }
  // A poll that got no answer in time (a busy machine) says nothing about readiness.
  const bad = Object.keys(rec.codes).filter((k) => !/ (200 bus (down|up)|error)$/.test(k))
  if (bad.length) rec.problems.push(`/readyz answers other than 200 during the Redis outage: ${bad.map((k) => `${k} ×${rec.codes[k]}`).join(', ')}`)
  for (const p of rec.problems) warn(`Redis outage #${n}: ${p}`)
  log(`Redis outage #${n}: over; /readyz meanwhile: ${JSON.stringify(rec.codes)}; bus up on every node ${rec.upAgainMs === null ? 'NOT within the bound' : `${rec.upAgainMs} ms after Redis was back (and any node stopped during it had started again)`}`)
}

// Keeps each node's bus state fresh for the waits above (poked so that `until` re-checks).
function watchBus () {
  let busy = false
  const timer = setInterval(async () => {
    if (busy) return
    busy = true
    try {
      await Promise.all(nodes.map(async (srv) => {
        const a = srv.ready ? await readyzBus(srv, 2000) : { code: null, bus: null }
        const up = a.code === 200 && a.bus === 'up'
        // For the progress lines: what /readyz last said of the bus ('?' when it was not 200).
        srv.busSaid = a.code === 200 ? a.bus : a.code === null ? null : '?'
        if (up !== srv.busUp) { srv.busUp = up; poke() }
      }))
    } finally {
      busy = false
    }
  }, 250)
  return () => clearInterval(timer)
}

async function metricValue (srv, name) {
  try {
    const res = await fetch(`${srv.http}/metrics`, { signal: AbortSignal.timeout(10000) })
    const body = await res.text()
    if (res.status !== 200) return `HTTP ${res.status}`
    const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(body)
    return m ? Number(m[1]) : 'absent'
  } catch (err) {
    return err.message
  }
}

// REST text of `d` from `srv`, retried until it is `want` or `timeoutMs` passed.
async function restTextFrom (srv, d, want, timeoutMs) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const res = await fetch(`${srv.http}/api/docs/${d}/content?format=text`, { signal: AbortSignal.timeout(15000) })
      const body = await res.text()
      last = res.status === 200 ? { ok: true, text: body } : { ok: false, error: `HTTP ${res.status}: ${body.slice(0, 200)}` }
    } catch (err) {
      last = { ok: false, error: err.message }
    }
    if ((last.ok && last.text === want) || Date.now() >= deadline) return last
    await sleep(250)
  }
}

// Every node must serve `finals` (REST and a fresh client per document); `catchupMs` bounds how
// long a node may take to get there. Returns the checks.
async function checkEveryNodeServes (finals, catchupMs, phase) {
  const checks = []
  await Promise.all(nodes.flatMap((srv) => docNames().map(async (d) => {
    const f = finals.get(d)
    const check = { node: srv.name, doc: d, length: f.text.length, ok: true, details: [] }
    const rest = await restTextFrom(srv, d, f.text, catchupMs)
    check.rest = rest.ok && rest.text === f.text
    if (!rest.ok) check.details.push(`REST: ${rest.error}`)
    else if (rest.text !== f.text) check.details.push(`REST text differs: ${describeDiff(f.text, rest.text)}`)
    try {
      const fresh = await freshClientHolds(srv, d, f.state, `${phase} fresh client for ${d} on ${srv.name}`, catchupMs)
      check.fresh = fresh.text === f.text && fresh.missingItems === 0 && fresh.missingDeletes === 0
      if (fresh.text !== f.text) check.details.push(`fresh client text differs: ${describeDiff(f.text, fresh.text)}`)
      if (fresh.missingItems || fresh.missingDeletes) check.details.push(`fresh client lacks ${fresh.missingItems} items, ${fresh.missingDeletes} deletions: ${fresh.details.join('; ')}`)
    } catch (err) {
      check.fresh = false
      check.details.push(`fresh client: ${err.message}`)
    }
    check.ok = check.rest && check.fresh
    checks.push(check)
  })))
  checks.sort((a, b) => a.node.localeCompare(b.node) || a.doc.localeCompare(b.doc))
  for (const c of checks) {
    if (!c.ok) warn(`${phase}: ${c.node} ${c.doc}: ${c.details.join('; ')}`)
  }
  const bad = checks.filter((c) => !c.ok).length
  log(`${phase}: ${checks.length} node/document checks (REST and fresh client): ${bad === 0 ? 'all equal' : `${bad} DIFFERENT`}`)
  return checks
}

function psqlDb (sql) {
  const args = [opts.databaseUrl, '-X', '-q', '-A', '-t', '-F', '|', '-v', 'ON_ERROR_STOP=1', '-c', sql]
  return new Promise((resolve, reject) => {
    execFile('psql', args, { timeout: 120000, maxBuffer: 1 << 30 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`psql failed: ${err.message} ${stderr}`))
      else resolve(stdout)
    })
  })
}

// A document as Postgres holds it (nothing running): its snapshot (inline or in parts) and the
// log rows after it, applied to a new Y.Doc.
async function storedState (d) {
  const lit = `'${d.replace(/'/g, "''")}'`
  const b64 = (col) => `translate(encode(${col}, 'base64'), E'\\n', '')`
  const out = await psqlDb(
    `SELECT 's', 0, ${b64('state')} FROM snapshots WHERE doc_id = ${lit} AND gen IS NULL ` +
    `UNION ALL SELECT 'p', p.part, ${b64('p.data')} FROM snapshot_parts p JOIN snapshots s ON s.doc_id = p.doc_id AND s.gen = p.gen WHERE p.doc_id = ${lit} ` +
    `UNION ALL SELECT 'u', u.id, ${b64('u.data')} FROM updates u WHERE u.doc_id = ${lit} AND u.id > COALESCE((SELECT log_id FROM snapshots WHERE doc_id = ${lit}), 0) ` +
    `UNION ALL SELECT 'n', parts, '' FROM snapshots WHERE doc_id = ${lit} ` +
    'ORDER BY 1, 2')
  const rows = out.split('\n').filter((l) => l.length).map((l) => {
    const [kind, pos, data] = l.split('|')
    return { kind, pos: Number(pos), data: Buffer.from(data ?? '', 'base64') }
  })
  const doc = new Y.Doc()
  try {
    const parts = rows.filter((r) => r.kind === 'p')
    const expectedParts = rows.find((r) => r.kind === 'n')?.pos ?? 0
    const problems = []
    if (parts.length && parts.length !== expectedParts) problems.push(`snapshot has ${parts.length} parts, its row says ${expectedParts}`)
    const inline = rows.filter((r) => r.kind === 's')
    if (inline.length) Y.applyUpdate(doc, inline[0].data)
    if (parts.length) Y.applyUpdate(doc, Buffer.concat(parts.map((r) => r.data)))
    const updates = rows.filter((r) => r.kind === 'u')
    for (const r of updates) Y.applyUpdate(doc, r.data)
    if (doc.store.pendingStructs !== null || doc.store.pendingDs !== null) problems.push('the stored updates leave structs or deletions pending (a row is missing)')
    return { text: doc.getText(TEXT).toString(), state: stateOf(doc), svKey: svKey(doc), snapshot: inline.length ? 'inline' : parts.length ? `${parts.length} parts` : 'none', logRows: updates.length, problems }
  } finally {
    doc.destroy()
  }
}

async function finalPhaseNodes () {
  log('edits stop; everyone reconnects')
  editing = false
  for (const c of clients) {
    clearTimeout(c.editTimer)
    clearTimeout(c.flapTimer)
  }
  await keepNodesUp()
  gate.open = true
  gate.closedPorts.clear()
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
    await until('every client of every document on every node to converge', () => names.every(converged), CONVERGE_TIMEOUT_MS)
    stats.convergence = { ok: true, ms: Date.now() - t0 }
    log(`all clients of all ${opts.nodes} nodes converged in ${Date.now() - t0} ms`)
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

  // The final state of each document, as node-0's observer has it (all clients agree if the
  // convergence check passed).
  const finals = new Map()
  for (const d of names) {
    const o = byDoc.get(d).find((c) => c.role === 'observer')
    finals.set(d, {
      text: o.text.toString(),
      state: stateOf(o.doc),
      svKey: svKey(o.doc),
      clientTexts: byDoc.get(d).map((c) => ({ name: c.name, text: c.text.toString() }))
    })
  }

  // Every node serves it, and has its bus up.
  multiStats.liveChecks = await checkEveryNodeServes(finals, FINAL_CATCHUP_TIMEOUT_MS, 'every node serves the converged text')
  for (const srv of nodes) {
    let a = await readyzBus(srv, 5000)
    const deadline = Date.now() + BUS_UP_TIMEOUT_MS
    while (!(a.code === 200 && a.bus === 'up') && Date.now() < deadline) {
      await sleep(250)
      a = await readyzBus(srv, 5000)
    }
    const metric = await metricValue(srv, 'tandem_bus_up')
    const check = { node: srv.name, readyz: `${a.code}${a.bus ? ` bus ${a.bus}` : ''}`, metric, ok: a.code === 200 && a.bus === 'up' && metric === 1 }
    multiStats.busAtEnd.push(check)
    if (!check.ok) warn(`${srv.name}: at the end /readyz ${check.readyz}, tandem_bus_up ${metric}`)
  }

  // Nobody may re-send anything to the restarted nodes: the checks read what was stored.
  for (const c of clients) c.provider.disconnect()
  await waitSocketsClosed('final disconnect')
  log(`final graceful stop of all ${opts.nodes} nodes at once`)
  const stops = await Promise.all(nodes.map(async (srv) => {
    srv.planned = true
    return [srv, await srv.stopGraceful(GRACEFUL_TIMEOUT_MS)]
  }))
  const problems = stops.filter(([, r]) => !r.ok).map(([srv, r]) => `${srv.name}: ${r.why}`)
  stats.finalRestart = { ok: problems.length === 0, why: problems.join('; ') }
  for (const p of problems) {
    stats.gracefulExitProblems.push(`final stop: ${p}`)
    warn(`graceful stop: ${p}`)
  }

  // Straight from Postgres, with no node running.
  for (const d of names) {
    const f = finals.get(d)
    const check = { doc: d, length: f.text.length, ok: false, details: [] }
    try {
      const st = await storedState(d)
      check.snapshot = st.snapshot
      check.logRows = st.logRows
      check.details.push(...st.problems)
      if (st.text !== f.text) check.details.push(`stored text differs: ${describeDiff(f.text, st.text)}`)
      const lacks = compareStates(f.state, st.state)
      if (lacks.missingItems || lacks.missingDeletes) check.details.push(`the store lacks ${lacks.missingItems} items, ${lacks.missingDeletes} deletions: ${lacks.details.join('; ')}`)
      else if (st.svKey !== f.svKey) check.details.push('the store holds items no client has')
      check.ok = check.details.length === 0
    } catch (err) {
      check.details.push(err.message)
    }
    multiStats.storeDirect.push(check)
    log(`stored ${d} (read from Postgres: snapshot ${check.snapshot ?? '?'}, ${check.logRows ?? '?'} log rows after it): ${check.ok ? `equal, ${f.text.length} chars` : `DIFFERENT — ${check.details.join('; ')}`}`)
  }

  // Every node again, each loading from the store.
  log('starting every node again')
  await Promise.all(nodes.map(async (srv) => { await srv.start(); srv.planned = false }))
  stats.finalChecks = await checkEveryNodeServes(finals, 5000, 'after restarting every node')
  for (const c of stats.finalChecks) {
    const f = finals.get(c.doc)
    const divergent = f.clientTexts.filter((x) => x.text !== f.text)
    if (divergent.length) {
      c.ok = false
      c.details.push(`clients with another text: ${divergent.map((x) => x.name).join(', ')}`)
    }
  }
}

// ---------------------------------------------------------------- summary

function serverLogStats (path = LOG_PATH) {
  let text = ''
  try { text = fs.readFileSync(path, 'utf8') } catch { return null }
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
  const finalOk = stats.finalChecks.length === opts.docs * opts.nodes && stats.finalChecks.every((c) => c.ok)
  const outagesRecovered = stats.outages.every((o) => o.recoveredMs !== null)
  const seen503 = stats.outages.some((o) => o.seen503)
  // With several nodes, the logs of all of them together (and each one's for the details).
  const perNodeLogs = MULTI ? nodes.map((srv) => ({ srv, st: serverLogStats(srv.logPath) })) : []
  const logStats = !MULTI
    ? serverLogStats()
    : perNodeLogs.reduce((acc, { st }) => !st ? acc : {
      errors: acc.errors.concat(st.errors),
      warns: acc.warns + st.warns,
      panics: acc.panics.concat(st.panics),
      relayedUnstored: acc.relayedUnstored + st.relayedUnstored
    }, { errors: [], warns: 0, panics: [], relayedUnstored: 0 })
  const liveOk = multiStats.liveChecks.length === opts.docs * opts.nodes && multiStats.liveChecks.every((c) => c.ok)
  const storeOk = multiStats.storeDirect.length === opts.docs && multiStats.storeDirect.every((c) => c.ok)
  const busEndOk = multiStats.busAtEnd.length === opts.nodes && multiStats.busAtEnd.every((c) => c.ok)
  const redisProblems = multiStats.redisOutages.filter((r) => r.problems.length)

  const failures = []
  if (restartFailures.length) failures.push(`${restartFailures.length} post-restart check(s) found missing data or failed`)
  if (!stats.convergence?.ok) failures.push('clients did not converge')
  if (!finalOk) failures.push(MULTI ? 'after restarting every node, some node served another state than the clients' : 'final stored state differs from the clients')
  if (MULTI) {
    if (!liveOk) failures.push('some node served another state than its converged clients')
    if (!storeOk) failures.push('the state read from Postgres differs from the clients')
    if (!busEndOk) failures.push('the bus was not up on every node at the end')
    if (redisProblems.length) failures.push(`${redisProblems.length} Redis outage(s) with problems`)
  }
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
  line('backend', `${opts.backend} (${opts.backend === 'sqlite' ? SQLITE_PATH : opts.pgDb})${MULTI ? `, ${opts.nodes} nodes, private Redis on port ${redis?.port}` : ''}`)
  line('chaos phase / total time', `${Math.round(opts.durationMs / 1000)} s / ${Math.round((Date.now() - T0) / 1000)} s (seed ${opts.seed})`)
  line('documents', `${opts.docs}`)
  line('clients', `${editors.length} editors + ${observers.length} observers`)
  line('edits made', `${stats.edits} (${stats.inserts} inserts, ${stats.deletes} deletes)`)
  line('client disconnects / reconnects', `${stats.flaps} (connection errors seen: ${stats.connectionErrors})`)
  if (!MULTI) line('restarts during chaos', `${stats.restarts.graceful + stats.restarts.kill9} (graceful ${stats.restarts.graceful} / kill -9 ${stats.restarts.kill9}) + 1 final graceful`)
  if (MULTI) {
    line('node stops during chaos', `${stats.restarts.graceful + stats.restarts.kill9} (kill -9 ${stats.restarts.kill9} / SIGTERM ${stats.restarts.graceful}), one node at a time, each started again; + final stop of all nodes at once`)
    line('Redis outages (kill -9, restart)', `${multiStats.redisOutages.length} (${multiStats.redisOutages.map((r) => `${(r.ms / 1000).toFixed(1)} s${r.killDuring ? ` + kill -9 of ${r.killDuring}` : ''}`).join(', ')}); bus up again on every node after ${multiStats.redisOutages.map((r) => r.upAgainMs === null ? 'NEVER' : `${r.upAgainMs} ms`).join(', ')}`)
    line('planned events skipped (no time)', `${multiStats.skipped.length}`)
    line('slowest catch-up of a fresh client', `${multiStats.maxCatchupMs} ms (a node may be a log-watch interval behind)`)
  }
  line('store outages', `${stats.outages.length} (${stats.outages.map((o) => `${Math.round(o.ms / 1000)} s`).join(', ')}); ready again after ${stats.outages.map((o) => o.recoveredMs === null ? 'NEVER' : `${o.recoveredMs} ms`).join(', ')}; items relayed to observers during them: ${stats.outages.map((o) => o.relayedDuring ?? '?').join(', ')}`)
  line('stored again after outage', stats.outages.map((o) => `#${o.n}: ${o.durableMs !== undefined ? `${o.durableMs} ms` : `not confirmed (${o.durableError ?? 'pending'})`}`).join('; '))
  line('readyz during outage', `${seen503 ? '503 seen' : 'not seen'}  [${stats.outages.map((o) => `#${o.n}: ${o.seen503 ? '503 seen' : 'not seen'} ${JSON.stringify(o.codes)}`).join('; ')}]`)
  const afterOutage = kill9Checks.filter((r) => (r.missingItems || r.missingDeletes) && r.afterOutage)
  const onlyAfterOutage = afterOutage.length > 0 && afterOutage.every((r) => r.afterOutage.earlyItems === 0 && r.afterOutage.earlyDeletes === 0) &&
    kill9Checks.every((r) => !(r.missingItems || r.missingDeletes) || r.afterOutage)
  line('missing after kill -9 checks', `${kill9Missing} (${kill9Checks.length} document checks over ${stats.restarts.kill9} kill -9)` +
    (kill9Missing && onlyAfterOutage ? '; all of it relayed during/after a store outage, before the kill' : ''))
  line('missing after graceful checks', `${gracefulMissing} (${stats.restartChecks.length - kill9Checks.length} document checks)`)
  line('final convergence', stats.convergence?.ok ? `all clients equal per document${MULTI ? ', across all nodes' : ''} (${stats.convergence.ms} ms)` : `FAILED: ${stats.convergence?.error}`)
  if (MULTI) {
    line('every node serves it (live)', liveOk ? `equal on ${opts.nodes} nodes × ${opts.docs} documents (REST and fresh client)`
      : `MISMATCH: ${multiStats.liveChecks.filter((c) => !c.ok).map((c) => `${c.node} ${c.doc}: ${c.details.join('; ')}`).join(' | ') || 'not reached'}`)
    line('bus at the end', busEndOk ? `up on every node (/readyz "bus":"up", tandem_bus_up 1)`
      : `NOT UP: ${multiStats.busAtEnd.map((c) => `${c.node}: readyz ${c.readyz}, tandem_bus_up ${c.metric}`).join('; ') || 'not reached'}`)
    line('store read from Postgres', storeOk ? `equal: ${multiStats.storeDirect.map((c) => `${c.doc} ${c.length} chars (snapshot ${c.snapshot}, ${c.logRows} log rows)`).join(', ')}`
      : `MISMATCH: ${multiStats.storeDirect.filter((c) => !c.ok).map((c) => `${c.doc}: ${c.details.join('; ')}`).join(' | ') || 'not reached'}`)
  }
  line(MULTI ? 'after restarting every node' : 'final equality after restart', finalOk
    ? (MULTI ? `equal on ${opts.nodes} nodes × ${opts.docs} documents (REST and fresh client)` : `equal: ${stats.finalChecks.map((c) => `${c.doc} ${c.length} chars`).join(', ')} (REST and fresh client)`)
    : `MISMATCH: ${stats.finalChecks.filter((c) => !c.ok).map((c) => `${c.node ? `${c.node} ` : ''}${c.doc}: ${c.details.join('; ')}`).join(' | ') || 'not reached'}`)
  line('unexpected server exits', `${stats.unexpectedExits.length}`)
  if (logStats) line(MULTI ? 'node logs (all nodes)' : 'server log', `${logStats.errors.length} ERROR, ${logStats.warns} WARN, ${logStats.panics.length} panic lines; "relaying updates before they are stored": ${logStats.relayedUnstored}`)
  for (const { srv, st } of perNodeLogs) {
    if (st) line(`  ${srv.name}`, `${st.errors.length} ERROR, ${st.warns} WARN, ${st.panics.length} panic lines; ${srv.starts} starts`)
  }
  for (const r of restartFailures) {
    console.log(`  ! restart #${r.n} (${r.kind === 'kill' ? 'kill -9' : 'graceful'}) ${r.doc}${r.where ? ` on ${r.where}` : ''}: ${r.missingItems} items, ${r.missingDeletes} deletions missing: ${r.details.join('; ')}`)
  }
  for (const r of redisProblems) for (const p of r.problems) console.log(`  ! Redis outage #${r.n}: ${p}`)
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
  if (failures.length) {
    if (MULTI) {
      for (const srv of nodes) console.log(`  ${srv.name} log: ${srv.logPath}`)
      console.log(`  redis log: ${REDIS_LOG_PATH}`)
    } else {
      console.log(`  server log: ${LOG_PATH}`)
    }
  }
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
  await Promise.all(nodes.filter((srv) => srv.alive).map(async (srv) => {
    srv.planned = true
    const r = await srv.stopGraceful(30000)
    if (!r.ok) warn(`stopping ${srv.name} at teardown: ${r.why}`)
  }))
  if (redis?.alive) {
    redis.planned = true
    await redis.kill9()
  }
}

async function abort (why, code) {
  if (shuttingDown) return
  shuttingDown = true
  console.error(stamp(), `aborting: ${why}`)
  try { await teardown() } catch (err) { console.error('teardown failed:', err) }
  console.error(MULTI ? `node logs: ${nodes.map((srv) => srv.logPath).join(' ')}; redis log: ${REDIS_LOG_PATH}` : `server log: ${LOG_PATH}`)
  process.exit(code)
}

process.on('SIGINT', () => abort('interrupted (SIGINT)', 130))
process.on('SIGTERM', () => abort('terminated (SIGTERM)', 143))
process.on('uncaughtException', (err) => { internalError('uncaught exception', err); abort('uncaught exception', 1) })
process.on('unhandledRejection', (err) => { internalError('unhandled rejection', err); abort('unhandled rejection', 1) })

async function main () {
  const deadline = setTimeout(() => abort(`time bound exceeded (${Math.round(HARD_DEADLINE_MS / 1000)} s)`, 1), HARD_DEADLINE_MS)
  const blackhole = await startBlackhole()
  gate.url = `ws://127.0.0.1:${blackhole.address().port}/ws`
  let stopWatchingBus = () => {}

  if (!MULTI) {
    fs.writeFileSync(LOG_PATH, '')
    const port = await freePort()
    server = new Server(port)
    log(`soak: backend ${opts.backend}, ${opts.docs} documents, ${opts.clients} editors, chaos for ${Math.round(opts.durationMs / 1000)} s, seed ${opts.seed}`)
    log(`server ${opts.bin} on 127.0.0.1:${port}, log ${LOG_PATH}`)
    await server.start()
    log(`server ready (pid ${server.proc.pid})`)
  } else {
    log(`soak: ${opts.nodes} nodes on Postgres ${opts.pgDb} and a private Redis, ${opts.docs} documents, ${opts.clients} editors, chaos for ${Math.round(opts.durationMs / 1000)} s, seed ${opts.seed}`)
    fs.writeFileSync(REDIS_LOG_PATH, '')
    redis = new Redis(await freePort())
    await redis.start()
    log(`redis-server on 127.0.0.1:${redis.port} (pid ${redis.proc.pid}), log ${REDIS_LOG_PATH}`)
    for (let i = 0; i < opts.nodes; i++) {
      const srv = makeNode(i, await freePort())
      fs.writeFileSync(srv.logPath, '')
      nodes.push(srv)
    }
    // One at a time: the first creates the schema.
    for (const srv of nodes) {
      await srv.start()
      log(`${srv.name} ready on 127.0.0.1:${srv.port} (pid ${srv.proc.pid}), log ${srv.logPath}`)
    }
    stopWatchingBus = watchBus()
    await until('every node to report the bus up', () => nodes.every((srv) => srv.busUp), BUS_UP_TIMEOUT_MS, 250)
  }

  // Editors of a document are spread over the nodes; each document has one observer per node.
  const names = docNames()
  const N = opts.nodes
  const at = (i) => MULTI ? nodes[i % N] : server
  const suffix = (i) => MULTI ? `@${nodeName(i % N)}` : ''
  for (let k = 0; k < N; k++) {
    for (const d of names) {
      const o = makeClient(d, 'observer', `${d}/observer${suffix(k)}`, GatedWebSocket, at(k))
      observers.push(o)
      clients.push(o)
    }
  }
  for (let i = 0; i < opts.clients; i++) {
    const d = names[i % names.length]
    const j = Math.floor(i / names.length)
    const c = makeClient(d, 'editor', `${d}/editor-${j}${suffix(j)}`, GatedWebSocket, at(j))
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
    const up = MULTI
      ? `nodes ${nodes.map((srv) => `${srv.name} ${srv.alive ? `up (bus ${srv.busSaid ?? '?'})` : 'down'}`).join(', ')}; redis ${redis.alive ? 'up' : 'down'}`
      : `server ${server.alive ? 'up' : 'down'}`
    const off = clients.filter((c) => !c.provider.shouldConnect).length
    log(`progress: ${stats.edits} edits, ${connected}/${clients.length} clients connected (${off} disconnected on purpose), ${up}`)
  }, 30000)

  try {
    if (MULTI) await chaosNodes(Date.now() + opts.durationMs)
    else await chaos(Date.now() + opts.durationMs)
  } finally {
    clearInterval(progress)
  }
  if (MULTI) await finalPhaseNodes()
  else await finalPhase()
  stopWatchingBus()

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
