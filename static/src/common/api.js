// Tandem's JSON API as the list page uses it: list, create and delete documents. Every failure is
// turned into an ApiError whose message is a sentence a person can act on.

export class ApiError extends Error {
  constructor (message, { status = 0, type = null } = {}) {
    super(message)
    this.name = 'ApiError'
    this.status = status // 0 when the server could not be reached
    this.type = type
  }
}

const UNREACHABLE = "Can't reach the Tandem server. Check your connection and try again."

async function request (method, path, body) {
  let res
  try {
    res = await fetch(path, {
      method,
      headers: body === undefined ? { accept: 'application/json' } : { accept: 'application/json', 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store'
    })
  } catch {
    throw new ApiError(UNREACHABLE)
  }
  if (res.ok) {
    if (res.status === 204) return null
    try {
      return await res.json()
    } catch {
      throw new ApiError(`The server sent an unreadable answer (HTTP ${res.status}).`, { status: res.status })
    }
  }
  throw await problemOf(res)
}

// Reads an RFC 9457 problem body (type, title, status, detail) when there is one.
async function problemOf (res) {
  let problem = null
  try {
    const text = await res.text()
    problem = JSON.parse(text)
  } catch {
    // not JSON: fall back to the status line
  }
  const words = problem?.detail || problem?.title || defaultMessage(res.status)
  return new ApiError(words, { status: res.status, type: problem?.type ?? null })
}

function defaultMessage (status) {
  if (status === 404) return 'Not found.'
  if (status === 502 || status === 503 || status === 504) return UNREACHABLE
  if (status >= 500) return `The server had a problem (HTTP ${status}). Try again in a moment.`
  return `The server refused the request (HTTP ${status}).`
}

// One page of documents, ordered by id: { docs: [...], next_cursor: string|null }.
export function listDocs ({ cursor = null, limit = 100 } = {}) {
  const q = new URLSearchParams({ limit: String(limit) })
  if (cursor) q.set('cursor', cursor)
  return request('GET', `/api/docs?${q}`)
}

export async function createDoc (id) {
  try {
    return await request('POST', '/api/docs', { id })
  } catch (err) {
    if (err.status === 409) throw new ApiError(`A document named “${id}” already exists. Open it, or pick another name.`, err)
    throw err
  }
}

export async function deleteDoc (id) {
  try {
    return await request('DELETE', `/api/docs/${encodeURIComponent(id)}`)
  } catch (err) {
    if (err.status === 404) throw new ApiError(`“${id}” no longer exists; someone may have deleted it already.`, err)
    throw err
  }
}
