// Tandem's editor page (/d/{doc}): opens the named document over WebSocket, edits its shared text
// with everyone else who has it open, and always shows who is here and whether edits are live.
// With access control it first checks the page's token: read-only and access denied are shown.

import '../common/base.css'
import './editor.css'
import * as Y from 'yjs'
import { docNameFromPath, docNameProblem, editorPath } from '../common/docname.js'
import { openConnection, STATES, READ_ONLY_STATES, SAVED, SAVING } from './connection.js'
import { takeToken, checkAccess, AccessDenied, reasonSentence } from './access.js'
import { createEditor } from './codemirror.js'
import { showPresence } from './presence.js'
import { setUpYou } from './you.js'
import { setUpCopyLink } from './copy-link.js'

const $ = (id) => document.getElementById(id)

// The close code of a session whose access was revoked.
const REVOKED = 4403

// Shows a problem in words, with a way back to the document list.
function showError (text, { backLink = true } = {}) {
  const box = $('error')
  const words = document.createElement('span')
  words.textContent = text
  box.replaceChildren(words)
  if (backLink) {
    const link = document.createElement('a')
    link.href = '/'
    link.textContent = 'Back to all documents'
    box.append(' ', link)
  }
  box.hidden = false
}

function hideError () {
  $('error').hidden = true
  $('error').replaceChildren()
}

// Shows a connection state: a word ("Offline") and what it means ("your edits are kept…").
function showStatus (state, override = null) {
  const el = $('status')
  const { word, detail } = override ?? STATES[state]
  el.dataset.state = state
  el.querySelector('.status-word').textContent = word
  const joined = detail ? `${word.endsWith('…') ? ' ' : ' — '}${detail}` : ''
  el.querySelector('.status-detail').textContent = joined
  el.title = word + joined
}

// ws://host/ws (wss: under https) on the server that served this page.
const wsBase = () => `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// What the server allows this page, asked until it answers (it may be restarting). Rejects with
// AccessDenied when it refuses.
async function askAccess (doc, token) {
  for (let delay = 500; ; delay = Math.min(delay * 2, 5000)) {
    try {
      return await checkAccess(doc, token)
    } catch (err) {
      if (err instanceof AccessDenied) throw err
      console.warn('access check failed, retrying:', err)
      showStatus('reconnecting', { word: 'Reconnecting…', detail: "can't reach the server yet" })
      await pause(delay)
    }
  }
}

// "Read-only" next to the state, for people who may only read.
function showReadOnly () {
  document.body.dataset.access = 'read'
  $('access-badge').hidden = false
}

// The page once the server refuses access: why, and what to do; nothing of the document.
function showDenied (detail) {
  document.body.dataset.access = 'denied'
  showStatus('denied', { word: 'Access denied', detail: '' })
  hideError()
  for (const id of ['access-badge', 'editor', 'presence', 'name-hint', 'copy-link']) $(id).hidden = true
  $('user-name').closest('label').hidden = true
  $('denied-detail').textContent = reasonSentence(detail)
  $('denied').hidden = false
}

// Opens the editor on `doc` with what the access check answered (`grant`).
function openEditor (doc, token, grant) {
  const readOnly = grant.access === 'read'
  const states = readOnly ? READ_ONLY_STATES : STATES
  if (readOnly) showReadOnly()
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')
  const undoManager = new Y.UndoManager(ytext)
  let editor = null
  let ended = false
  let denied = false
  let checking = null

  // Ends the session the way the server ended it, in words.
  const endWith = ({ deleted, text }) => {
    editor?.setEditable(false)
    showStatus('offline', { word: 'Offline', detail: deleted ? 'this document was deleted' : 'disconnected by the server' })
    showError(text)
  }

  // Asks the server whether the token still admits this page; after a refusal, the page shows
  // "Access denied" for good and stops reconnecting. Resolves to whether access is lost.
  const recheck = () => {
    if (denied) return Promise.resolve(true)
    checking ??= checkAccess(doc, token).then(() => false, (err) => {
      if (!(err instanceof AccessDenied)) return false // the server can't be asked now: retrying goes on
      denied = ended = true
      connection.stop()
      editor?.setEditable(false)
        showDenied(err.message)
      return true
    }).finally(() => { checking = null })
    return checking
  }

  const connection = openConnection({
    wsBase: wsBase(),
    doc,
    ydoc,
    token,
    onChange ({ state, notice, saved }) {
      if (denied) return
      showStatus(state, state === 'live' && !readOnly ? (saved ? SAVED : SAVING) : states[state])
      $('status').dataset.saved = String(saved)
      if (notice) showError(notice, { backLink: false })
      else if (!ended) hideError()
    },
    // With access control, a close may mean the token ran out or was revoked (a refused upgrade
    // looks like any failed connection to a page), so ask.
    onClose () {
      if (grant.auth) recheck()
    },
    onTerminal (end) {
      ended = true
      if (grant.auth && (end.code === REVOKED || end.code === 1008)) {
        editor?.setEditable(false)
        showStatus('connecting', { word: 'Checking access…', detail: '' })
        // A check already under way may have been asked before this close: then ask once more.
        recheck().then((lost) => lost || recheck()).then((lost) => { if (!lost) endWith(end) })
        return
      }
      endWith(end)
    }
  })
  const { provider } = connection

  editor = createEditor({ parent: $('editor'), ytext, awareness: provider.awareness, undoManager, readOnly })
  showPresence($('presence'), provider.awareness)
  setUpYou({ awareness: provider.awareness, field: $('user-name'), hint: $('name-hint'), hintName: $('name-hint-name'), pick: $('pick-name'), fixed: grant.user })
  if (grant.auth) {
    // A link without a token lets nobody in, and one with yours would let them in as you.
    $('copy-link').hidden = true
  } else {
    setUpCopyLink($('copy-link'), `${location.origin}${editorPath(doc)}`)
  }

  // Edits the server has not stored yet exist only in this tab: say so before the tab is
  // closed.
  window.addEventListener('beforeunload', (event) => {
    if (connection.unsaved() && !connection.isEnded()) event.preventDefault()
  })

  editor.view.focus()
  // Hooks for tests and for poking at the document from the console.
  window.tandem = { doc, ydoc, ytext, provider, view: editor.view, undoManager, access: grant.access }
}

async function start (doc) {
  const token = takeToken(doc)
  let grant
  try {
    grant = await askAccess(doc, token)
  } catch (err) {
    if (!(err instanceof AccessDenied)) throw err
    showDenied(err.message)
    return
  }
  document.body.dataset.access = grant.access
  openEditor(doc, token, grant)
}

function main () {
  const doc = docNameFromPath(location.pathname)
  if (doc === null || doc === '') {
    showStatus('offline', { word: 'Not connected', detail: '' })
    showError('This address names no document.')
    return
  }
  $('doc-title').textContent = doc
  document.title = `${doc} — Tandem`
  const problem = docNameProblem(doc)
  if (problem) {
    showStatus('offline', { word: 'Not connected', detail: '' })
    showError(problem)
    return
  }
  start(doc).catch((err) => {
    console.error(err)
    showStatus('offline', { word: 'Not connected', detail: '' })
    showError(`The editor could not start: ${err?.message ?? err}`)
  })
}

main()
