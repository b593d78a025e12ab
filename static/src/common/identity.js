// Who you are in Tandem: the display name others see next to your cursor, remembered in this
// browser, and a colour derived from that name so the same person has the same colour everywhere.

export const NAME_KEY = 'tandem.name'
export const MAX_NAME_LENGTH = 40

function storage () {
  try {
    return window.localStorage
  } catch {
    return null // storage disabled: names last for this page only
  }
}

// Trims and shortens a typed name; returns '' when nothing usable is left.
export function cleanName (raw) {
  return String(raw ?? '').replace(/\s+/g, ' ').trim().slice(0, MAX_NAME_LENGTH)
}

// The remembered name, or null on a first visit.
export function storedName () {
  const name = cleanName(storage()?.getItem(NAME_KEY))
  return name === '' ? null : name
}

export function rememberName (name) {
  try {
    storage()?.setItem(NAME_KEY, name)
  } catch {
    // quota or privacy mode: keep the name for this page only
  }
}

// A name for someone who has not picked one yet.
export function guestName () {
  const n = new Uint16Array(1)
  crypto.getRandomValues(n)
  return `Guest ${1000 + (n[0] % 9000)}`
}

// A stable hue (0–359) from a name: FNV-1a over its UTF-16 code units.
function hueOf (name) {
  let h = 0x811c9dc5
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h % 360
}

function hslToHex (h, s, l) {
  const a = s * Math.min(l, 1 - l)
  const channel = (n) => {
    const k = (n + h / 30) % 12
    const v = l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))
    return Math.round(v * 255).toString(16).padStart(2, '0')
  }
  return `#${channel(0)}${channel(8)}${channel(4)}`
}

// The colours used for a person's caret (`color`) and selection highlight (`colorLight`).
// Dark enough for white label text, light variant translucent so text stays readable.
export function coloursFor (name) {
  const color = hslToHex(hueOf(name), 0.7, 0.42)
  return { color, colorLight: `${color}33` }
}

// The awareness `user` field for a name, in the shape y-codemirror.next reads.
export const userFor = (name) => ({ name, ...coloursFor(name) })

// The awareness `user` field for a person named by an access token: their colour when the token
// gives one (#rgb or #rrggbb), otherwise the one derived from the name.
export function tokenUserFor ({ name, color }) {
  if (typeof color !== 'string' || !/^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$/.test(color)) return userFor(name)
  const full = color.length === 4 ? `#${[...color.slice(1)].map((c) => c + c).join('')}` : color
  return { name, color: full, colorLight: `${full}33` }
}
