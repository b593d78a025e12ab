// Tandem's editor page (/d/{doc}): opens the named document over WebSocket, edits its shared text
// with everyone else who has it open, and always shows who is here and whether edits are live.

import '../common/base.css'
import './editor.css'
import * as Y from 'yjs'
import { docNameFromPath, docNameProblem, editorPath } from '../common/docname.js'
import { openConnection, STATES } from './connection.js'
import { createEditor } from './codemirror.js'
import { showPresence } from './presence.js'
import { setUpYou } from './you.js'
import { setUpCopyLink } from './copy-link.js'

const $ = (id) => document.getElementById(id)

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

function start (doc) {
  const ydoc = new Y.Doc()
  const ytext = ydoc.getText('content')
  const undoManager = new Y.UndoManager(ytext)
  let editor = null
  let editedWhileAway = false
  let ended = false

  const connection = openConnection({
    wsBase: wsBase(),
    doc,
    ydoc,
    onChange ({ state, notice }) {
      showStatus(state)
      if (state === 'live') editedWhileAway = false
      if (notice) showError(notice, { backLink: false })
      else if (!ended) hideError()
    },
    onTerminal ({ deleted, text }) {
      ended = true
      editor?.setEditable(false)
      editedWhileAway = false
      showStatus('offline', { word: 'Offline', detail: deleted ? 'this document was deleted' : 'disconnected by the server' })
      showError(text)
    }
  })
  const { provider } = connection

  editor = createEditor({ parent: $('editor'), ytext, awareness: provider.awareness, undoManager })
  showPresence($('presence'), provider.awareness)
  setUpYou({ awareness: provider.awareness, field: $('user-name'), hint: $('name-hint'), hintName: $('name-hint-name'), pick: $('pick-name') })
  setUpCopyLink($('copy-link'), `${location.origin}${editorPath(doc)}`)

  // Edits made while not live exist only in this tab until the server has them: say so before
  // the tab is closed.
  ydoc.on('update', (_update, origin) => {
    if (origin !== provider && connection.state() !== 'live') editedWhileAway = true
  })
  window.addEventListener('beforeunload', (event) => {
    if (editedWhileAway && !connection.isEnded()) event.preventDefault()
  })

  editor.view.focus()
  // Hooks for tests and for poking at the document from the console.
  window.tandem = { doc, ydoc, ytext, provider, view: editor.view, undoManager }
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
  try {
    start(doc)
  } catch (err) {
    console.error(err)
    showStatus('offline', { word: 'Not connected', detail: '' })
    showError(`The editor could not start: ${err?.message ?? err}`)
  }
}

main()
