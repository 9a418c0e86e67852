// The summary request, version 1, implemented from the text of the Go
// announce package's doc.go ("Summary request, version 1"): a page asks its
// seed at once what the seed and the peers it knows hold, instead of
// waiting for their gossip.
import { base58btc } from 'multiformats/bases/base58'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

export const VERSION = 1
export const OTHERS = 0x01 // flag: also list other holders (asked of seeds)
export const MAX_SIZE = 1 << 20
export const MAX_HOLDERS = 64
export const MAX_ADDRS = 8
export const TIMEOUT = 10_000 // ms, DefaultSummaryTimeout

export const protocol = (name) => `/meshcdn/${name}/summary/1`

export const request = (flags = OTHERS) => Uint8Array.of(VERSION, flags & 0xff)

// decode reads an answer: {ttl, groups: [{peer, addrs, roots}]}, where peer
// is null for the answering peer's own group and otherwise the holder's
// peer ID as a string; addrs are binary multiaddrs (Uint8Array). It throws
// on anything the doc says to drop whole.
export function decode (data) {
  if (data.length > MAX_SIZE) throw new Error('summary: answer too long')
  if (data.length < 3) throw new Error('summary: truncated header')
  if (data[0] !== VERSION) throw new Error(`summary: version ${data[0]}`)
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const ttl = v.getUint16(1)
  if (ttl === 0) throw new Error('summary: ttl 0')
  const need = (off, n) => { if (off + n > data.length) throw new Error('summary: truncated') }
  const groups = []
  const seen = new Set()
  let off = 3
  while (off < data.length) {
    const p = data[off]
    if (p > 64) throw new Error(`summary: peer ID length ${p}`)
    need(off + 1, p)
    let peer = null
    if (p === 0) {
      if (groups.length > 0) throw new Error('summary: own group not first')
    } else {
      const bin = data.subarray(off + 1, off + 1 + p)
      let mh
      try { mh = Digest.decode(bin) } catch (err) { throw new Error(`summary: bad peer ID: ${err.message}`) }
      if (mh.code !== 0x00 && mh.code !== 0x12) throw new Error(`summary: bad peer ID hash 0x${mh.code.toString(16)}`)
      peer = base58btc.baseEncode(bin)
      if (seen.has(peer)) throw new Error(`summary: holder ${peer} listed twice`)
      seen.add(peer)
      if (seen.size > MAX_HOLDERS) throw new Error('summary: too many holders')
    }
    off += 1 + p
    need(off, 1)
    const a = data[off++]
    if (a > MAX_ADDRS || (p === 0 && a !== 0)) throw new Error(`summary: ${a} addresses`)
    const addrs = []
    for (let i = 0; i < a; i++) {
      need(off, 2)
      const m = v.getUint16(off)
      if (m < 1 || m > 1024) throw new Error(`summary: address length ${m}`)
      need(off + 2, m)
      addrs.push(data.slice(off + 2, off + 2 + m))
      off += 2 + m
    }
    need(off, 2)
    const n = v.getUint16(off)
    off += 2
    if (n === 0) throw new Error('summary: group with 0 roots')
    const roots = []
    const rs = new Set()
    for (let i = 0; i < n; i++) {
      need(off, 1)
      const l = data[off]
      if (l < 1 || l > 64) throw new Error(`summary: CID length ${l}`)
      need(off + 1, l)
      let c
      try { c = CID.decode(data.subarray(off + 1, off + 1 + l)) } catch (err) { throw new Error(`summary: bad CID: ${err.message}`) }
      if (c.version !== 1 || c.multihash.code !== 0x12 || c.multihash.digest.length !== 32) throw new Error(`summary: root ${c} is not a sha2-256 CIDv1`)
      const s = c.toString()
      if (!rs.has(s)) { rs.add(s); roots.push(c) }
      off += 1 + l
    }
    groups.push({ peer, addrs, roots })
  }
  return { ttl, groups }
}

// ask opens a summary stream to peer over libp2p, sends the request and
// reads the answer to its end (at most MAX_SIZE bytes, TIMEOUT in all).
export async function ask (libp2p, name, peer, { flags = OTHERS, signal } = {}) {
  const sig = signal != null ? AbortSignal.any([signal, AbortSignal.timeout(TIMEOUT)]) : AbortSignal.timeout(TIMEOUT)
  const stream = await libp2p.dialProtocol(peer, protocol(name), { signal: sig })
  try {
    stream.send(request(flags))
    await stream.close({ signal: sig }) // our write side: the request is whole
    const parts = []
    let n = 0
    for await (const chunk of stream) {
      const b = chunk.subarray() // Uint8Array or Uint8ArrayList
      n += b.length
      if (n > MAX_SIZE) throw new Error('summary: answer too long')
      parts.push(b)
      sig.throwIfAborted()
    }
    const out = new Uint8Array(n)
    let off = 0
    for (const p of parts) { out.set(p, off); off += p.length }
    return decode(out)
  } catch (err) {
    stream.abort(err)
    throw err
  }
}
