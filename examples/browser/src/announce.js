// The announce wire format, implemented from the text of the Go announce
// package's doc.go (github.com/meshcdn/meshcdn/announce): HAVE and DROP in
// version 1, FETCH (the author is fetching the roots) in version 2.
import { CID } from 'multiformats/cid'

export const VERSION = 1
export const VERSION_FETCH = 2
export const HAVE = 1
export const DROP = 2
export const FETCH = 3
export const MAX_MESSAGE_SIZE = 16384
// 6-byte header, then 37 bytes per sha2-256 root: at most 442 roots.
export const MAX_ROOTS = Math.floor((MAX_MESSAGE_SIZE - 6) / 37)

export const topic = (name) => `/meshcdn/${name}/announce/1`

// ValidName: 1-63 of a-z, 0-9 and '-'.
export const validName = (name) => /^[a-z0-9-]{1,63}$/.test(name)

export class UnknownVersionError extends Error {}

// versionOf is the version a kind is sent in: FETCH in 2, HAVE and DROP in 1.
const versionOf = (kind) => kind === FETCH ? VERSION_FETCH : VERSION

// encode returns one message per MAX_ROOTS roots (deduplicated).
export function encode (kind, ttl, roots) {
  if (kind !== HAVE && kind !== DROP && kind !== FETCH) throw new Error(`announce: bad kind ${kind}`)
  if (kind !== DROP && (ttl < 1 || ttl > 65535)) throw new Error('announce: HAVE and FETCH need a ttl of 1..65535 s')
  if (kind === DROP) ttl = 0
  const seen = new Set()
  const uniq = []
  for (const r of roots) {
    const s = r.toString()
    if (!seen.has(s)) { seen.add(s); uniq.push(r) }
  }
  const out = []
  for (let i = 0; i < uniq.length; i += MAX_ROOTS) {
    const part = uniq.slice(i, i + MAX_ROOTS)
    const bins = part.map((r) => { checkRoot(r); return r.bytes })
    const size = 6 + bins.reduce((n, b) => n + 1 + b.length, 0)
    const data = new Uint8Array(size)
    const v = new DataView(data.buffer)
    data[0] = versionOf(kind)
    data[1] = kind
    v.setUint16(2, ttl)
    v.setUint16(4, part.length)
    let off = 6
    for (const b of bins) {
      data[off] = b.length
      data.set(b, off + 1)
      off += 1 + b.length
    }
    out.push(data)
  }
  return out
}

function checkRoot (c) {
  if (c.version !== 1) throw new Error(`announce: root ${c} is not a CIDv1`)
  if (c.multihash.code !== 0x12 || c.multihash.digest.length !== 32) throw new Error(`announce: root ${c} is not sha2-256`)
  if (c.bytes.length < 1 || c.bytes.length > 64) throw new Error(`announce: root ${c} is too long`)
}

// decode returns {kind, ttl, roots} or throws: UnknownVersionError for a
// version other than 1 and 2 (ignore the message), Error for anything
// malformed, a kind of the other version included (reject it).
export function decode (data) {
  if (data.length > MAX_MESSAGE_SIZE) throw new Error('announce: message too long')
  if (data.length < 1) throw new Error('announce: empty message')
  if (data[0] !== VERSION && data[0] !== VERSION_FETCH) throw new UnknownVersionError(`announce: version ${data[0]}`)
  if (data.length < 6) throw new Error('announce: truncated header')
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const kind = data[1]
  const ttl = v.getUint16(2)
  const count = v.getUint16(4)
  if ((kind !== HAVE && kind !== DROP && kind !== FETCH) || versionOf(kind) !== data[0]) throw new Error(`announce: bad kind ${kind} in version ${data[0]}`)
  if (kind !== DROP && ttl === 0) throw new Error('announce: HAVE or FETCH with ttl 0')
  if (kind === DROP && ttl !== 0) throw new Error('announce: DROP with a ttl')
  if (count === 0) throw new Error('announce: count 0')
  let off = 6
  const roots = []
  const seen = new Set()
  for (let i = 0; i < count; i++) {
    if (off >= data.length) throw new Error('announce: truncated')
    const len = data[off]
    if (len === 0 || len > 64) throw new Error(`announce: CID length ${len}`)
    if (off + 1 + len > data.length) throw new Error('announce: truncated CID')
    const bin = data.subarray(off + 1, off + 1 + len)
    let c
    try {
      c = CID.decode(bin) // throws on trailing bytes and bad varints
    } catch (err) {
      throw new Error(`announce: bad CID: ${err.message}`)
    }
    checkRoot(c)
    if (!equalBytes(c.bytes, bin)) throw new Error('announce: non-minimal CID encoding')
    const s = c.toString()
    if (!seen.has(s)) { seen.add(s); roots.push(c) }
    off += 1 + len
  }
  if (off !== data.length) throw new Error('announce: trailing bytes')
  return { kind, ttl, roots }
}

function equalBytes (a, b) {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
