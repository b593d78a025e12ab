// Access to a document in Tandem's editor. On a server with access control, an application
// opens the editor with a document token in the page URL (/d/{doc}?token=…); the page asks the
// server what the token allows (GET /api/docs/{doc}/access) before it connects, and asks again
// when the server ends the session. An open server needs no token and answers "write".

const TOKEN_KEY = 'tandem.token:'

export class AccessDenied extends Error {
  constructor (detail, status) {
    super(detail)
    this.name = 'AccessDenied'
    this.status = status // 401 or 403
  }
}

function tabStorage () {
  try {
    return window.sessionStorage
  } catch {
    return null
  }
}

// The token this page was opened with, or null. A token in the URL is kept for this tab only
// (so a reload still works) and taken out of the address bar, so it is not copied, bookmarked or
// shown on screen; it stays in the URL when this tab cannot keep it.
export function takeToken (doc) {
  const url = new URL(window.location.href)
  const fromUrl = url.searchParams.get('token')
  const storage = tabStorage()
  if (fromUrl === null) {
    try {
      return storage?.getItem(TOKEN_KEY + doc) || null
    } catch {
      return null
    }
  }
  try {
    storage.setItem(TOKEN_KEY + doc, fromUrl)
    url.searchParams.delete('token')
    window.history.replaceState(window.history.state, '', url.pathname + url.search + url.hash)
  } catch {
    // no storage for this tab: leave the token where a reload finds it
  }
  return fromUrl === '' ? null : fromUrl
}

const HEX = /^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/

function tokenUser (user) {
  const name = typeof user?.name === 'string' ? user.name.replace(/\s+/g, ' ').trim() : ''
  if (name === '') return null
  const color = typeof user.color === 'string' && HEX.test(user.color) ? user.color : null
  return { name, color }
}

// What the server allows on `doc` with `token` (null for none):
//   { access: 'read' | 'write', auth: boolean, user: { name, color } | null, expiresAt: Date | null }
// Rejects with AccessDenied (and the server's reason) when the server refuses (401, 403), and with
// another error when it cannot be asked or answers something else: worth asking again.
export async function checkAccess (doc, token) {
  const headers = { accept: 'application/json' }
  // The header rather than ?token=: one place fewer where the token ends up in a log.
  if (token) headers.authorization = `Bearer ${token}`
  const res = await fetch(`/api/docs/${encodeURIComponent(doc)}/access`, { headers, cache: 'no-store' })
  if (res.status === 401 || res.status === 403) {
    let problem = null
    try {
      problem = await res.json()
    } catch {
      // no problem JSON: say what the status means
    }
    const fallback = res.status === 401 ? 'no valid access token' : 'this token does not give access to this document'
    throw new AccessDenied(problem?.detail || problem?.title || fallback, res.status)
  }
  if (!res.ok) throw new Error(`the access check answered HTTP ${res.status}`)
  const body = await res.json()
  if (body?.access !== 'read' && body?.access !== 'write') throw new Error('the access check answered something unreadable')
  const expiresAt = body.expires_at ? new Date(body.expires_at) : null
  return {
    access: body.access,
    auth: body.auth === true,
    user: tokenUser(body.user),
    expiresAt: expiresAt && !Number.isNaN(expiresAt.getTime()) ? expiresAt : null
  }
}

// A server's reason ("the token was revoked") as a sentence.
export function reasonSentence (detail) {
  const text = String(detail ?? '').trim()
  if (text === '') return ''
  return text[0].toUpperCase() + text.slice(1) + (/[.!?]$/.test(text) ? '' : '.')
}
