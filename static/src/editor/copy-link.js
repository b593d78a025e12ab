// The "Copy link" button of Tandem's editor: puts the document's address on the clipboard so it
// can be sent to someone to edit together, with a fallback where the clipboard API is missing
// (plain http on a LAN address is not a secure context).

function copyWithSelection (text) {
  const area = document.createElement('textarea')
  area.value = text
  area.setAttribute('readonly', '')
  area.style.position = 'fixed'
  area.style.opacity = '0'
  document.body.append(area)
  area.select()
  let ok = false
  try {
    ok = document.execCommand('copy')
  } catch {
    ok = false
  }
  area.remove()
  return ok
}

async function copy (text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text)
      return true
    } catch {
      // permission refused: try the older way
    }
  }
  return copyWithSelection(text)
}

export function setUpCopyLink (button, url) {
  const label = button.textContent
  let timer = 0
  button.addEventListener('click', async () => {
    const ok = await copy(url)
    if (!ok) {
      window.prompt('Copy this link to share the document:', url)
      return
    }
    button.textContent = 'Link copied'
    button.dataset.copied = 'true'
    clearTimeout(timer)
    timer = setTimeout(() => {
      button.textContent = label
      delete button.dataset.copied
    }, 2000)
  })
}
