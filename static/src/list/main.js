// Tandem's document list (/): every document with when it was last edited and who is in it now,
// a box to create a document or open one by name, and deletion after an inline confirmation.

import '../common/base.css'
import './list.css'
import { listDocs, createDoc, deleteDoc } from '../common/api.js'
import { docNameProblem, editorPath } from '../common/docname.js'
import { relativeTime, exactTime, parseTime } from '../common/time.js'

const $ = (id) => document.getElementById(id)
const REFRESH_MS = 15000

let nextCursor = null
let pagesShown = 1
let loading = null
let tokensRequired = false

// ---------------------------------------------------------------- messages

function showError (text, action = null) {
  const box = $('error')
  const words = document.createElement('span')
  words.textContent = text
  box.replaceChildren(words)
  if (action) {
    const link = document.createElement('a')
    link.href = action.href
    link.textContent = action.label
    box.append(' ', link)
  }
  box.hidden = false
}

function hideError () {
  $('error').hidden = true
  $('error').replaceChildren()
}

// ---------------------------------------------------------------- rows

function formatSize (bytes) {
  if (!Number.isFinite(bytes)) return null
  if (bytes < 1000) return `${bytes} B`
  if (bytes < 1e6) return `${(bytes / 1e3).toFixed(1)} kB`
  return `${(bytes / 1e6).toFixed(1)} MB`
}

function peopleText (doc) {
  const people = Array.isArray(doc.people) ? doc.people.filter((p) => typeof p === 'string' && p !== '') : []
  const unique = [...new Set(people)]
  if (unique.length > 0) return `${unique.join(', ')} ${unique.length === 1 ? 'is' : 'are'} here now`
  const clients = Number(doc.clients) || 0
  if (clients > 0) return `${clients} ${clients === 1 ? 'person' : 'people'} here now`
  return 'nobody here now'
}

function timeElement (date) {
  const el = document.createElement('time')
  el.dateTime = date.toISOString()
  el.title = exactTime(date)
  el.textContent = relativeTime(date)
  return el
}

function docRow (doc) {
  const li = document.createElement('li')
  li.className = 'doc'
  li.dataset.docId = doc.id

  const link = document.createElement('a')
  link.className = 'doc-link'
  link.href = editorPath(doc.id)
  link.textContent = doc.id

  const meta = document.createElement('div')
  meta.className = 'doc-meta'
  const edited = parseTime(doc.updated_at) ?? parseTime(doc.created_at)
  if (edited) meta.append('Edited ', timeElement(edited))
  else meta.append('Never edited')
  const size = formatSize(doc.size)
  if (size) meta.append(` · ${size}`)
  const people = document.createElement('span')
  people.className = 'people'
  people.textContent = peopleText(doc)
  meta.append(' · ', people)

  const actions = document.createElement('div')
  actions.className = 'doc-actions'
  actions.append(deleteButton(doc.id, actions))

  li.append(link, actions, meta)
  return li
}

function deleteButton (id, actions) {
  const button = document.createElement('button')
  button.type = 'button'
  button.className = 'danger delete'
  button.textContent = 'Delete'
  button.setAttribute('aria-label', `Delete ${id}`)
  button.addEventListener('click', () => askToDelete(id, actions))
  return button
}

// Replaces the Delete button with "Delete for everyone? [Yes, delete] [Cancel]".
function askToDelete (id, actions) {
  const question = document.createElement('span')
  question.className = 'confirm-text'
  question.textContent = 'Delete for everyone?'
  const yes = document.createElement('button')
  yes.type = 'button'
  yes.className = 'danger confirm-delete'
  yes.textContent = 'Yes, delete'
  const no = document.createElement('button')
  no.type = 'button'
  no.className = 'cancel-delete'
  no.textContent = 'Cancel'
  no.addEventListener('click', () => actions.replaceChildren(deleteButton(id, actions)))
  yes.addEventListener('click', async () => {
    yes.disabled = no.disabled = true
    try {
      await deleteDoc(id)
      hideError()
    } catch (err) {
      showError(err.message)
    }
    await refresh()
  })
  actions.replaceChildren(question, yes, no)
  no.focus()
}

// With access control, listing and creating documents take an API key, which a browser does not
// have: documents are opened with the links an application hands out.
function showTokensRequired () {
  tokensRequired = true
  hideError()
  for (const id of ['doc-form', 'list-state', 'docs', 'more']) $(id).hidden = true
  $('tokens-required').hidden = false
}

// ---------------------------------------------------------------- loading

function showDocs (docs, append) {
  const list = $('docs')
  const rows = docs.filter((d) => d && typeof d.id === 'string').map(docRow)
  if (append) list.append(...rows)
  else list.replaceChildren(...rows)
  const n = list.children.length
  $('list-state').textContent = n === 0 ? 'No documents yet. Create one above.' : ''
  $('list-state').hidden = n !== 0
  $('more').hidden = nextCursor === null
}

async function loadPage (append) {
  const page = await listDocs({ cursor: append ? nextCursor : null })
  nextCursor = typeof page?.next_cursor === 'string' ? page.next_cursor : null
  showDocs(Array.isArray(page?.docs) ? page.docs : [], append)
}

// Reloads the first page (a periodic refresh leaves longer lists alone).
function refresh ({ quiet = false } = {}) {
  if (loading) return loading
  loading = (async () => {
    try {
      await loadPage(false)
      pagesShown = 1
      if (quiet && !$('error').dataset.fromForm) hideError()
    } catch (err) {
      if (err.status === 401) {
        showTokensRequired()
        return
      }
      if ($('docs').children.length === 0) {
        $('list-state').hidden = false
        $('list-state').textContent = "Couldn't load the documents."
      }
      showError(err.message)
    } finally {
      loading = null
    }
  })()
  return loading
}

async function showMore () {
  const button = $('more')
  button.disabled = true
  try {
    await loadPage(true)
    pagesShown++
  } catch (err) {
    showError(err.message)
  } finally {
    button.disabled = false
  }
}

// ---------------------------------------------------------------- create and open

function formError (text, action) {
  showError(text, action)
  $('error').dataset.fromForm = 'true'
  $('doc-name').setAttribute('aria-invalid', 'true')
  $('doc-name').focus()
}

function clearFormError () {
  if ($('error').dataset.fromForm) {
    delete $('error').dataset.fromForm
    hideError()
  }
  $('doc-name').removeAttribute('aria-invalid')
}

// The name in the box, or null after saying what is wrong with it.
function typedName () {
  const name = $('doc-name').value.trim()
  const problem = docNameProblem(name)
  if (problem) {
    formError(problem)
    return null
  }
  return name
}

async function create (event) {
  event.preventDefault()
  clearFormError()
  const name = typedName()
  if (name === null) return
  const button = $('create')
  button.disabled = true
  try {
    const doc = await createDoc(name)
    location.assign(editorPath(doc?.id ?? name))
  } catch (err) {
    const action = err.status === 409 ? { href: editorPath(name), label: `Open “${name}”` } : null
    formError(err.message, action)
    button.disabled = false
  }
}

function open () {
  clearFormError()
  const name = typedName()
  if (name !== null) location.assign(editorPath(name))
}

// ---------------------------------------------------------------- start

function main () {
  $('doc-form').addEventListener('submit', create)
  $('open').addEventListener('click', open)
  $('doc-name').addEventListener('input', clearFormError)
  $('more').addEventListener('click', showMore)
  refresh()
  // Someone answering "Delete for everyone?" keeps their row: no refresh under them.
  const idle = () => !tokensRequired && pagesShown === 1 && !document.querySelector('#docs .confirm-delete')
  setInterval(() => {
    if (document.visibilityState === 'visible' && idle()) refresh({ quiet: true })
    else for (const el of document.querySelectorAll('#docs time')) el.textContent = relativeTime(new Date(el.dateTime))
  }, REFRESH_MS)
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible' && idle()) refresh({ quiet: true })
  })
}

main()
