// Direct dials to desktop apps on the page's LAN (issue 14).
//
// A desktop app (a Go node in the app role) listens on WebRTC-direct and
// WebTransport on its own addresses (mesh.Config.BrowserTransports). A page
// on the same LAN learns those addresses from its seed and, when it wants
// content such an app holds, dials it directly; the blocks then come over
// that connection, never through the seed's relay.
//
// Where the addresses come from: the summary request of announce/doc.go
// (/meshcdn/<name>/summary/1, flag 0x01 "others too") sent to the seed the
// page is connected to. Its answer lists the holders the seed's provider
// table knows, which are peers that announced content in this mesh, with
// the addresses the seed knows for them (the addresses the peer itself gave
// the seed over identify). The holders' roots go into the page's provider
// table, as announce/doc.go says a browser does with its seeds' answers.
//
// What the page dials (localAddr): only an address given for a holder in
// such an answer, exactly as given, that is on a private or loopback IP
// (10/8, 172.16/12, 192.168/16, 127/8, fc00::/7, ::1) and is WebRTC-direct
// or WebTransport with a certificate hash and no relay hop. It never derives
// an address, scans a range or tries a port it was not told of. Other
// meshes' peers are never listed: a seed answers its own mesh's protocol
// from its own mesh's table.
//
// Turn it off with createMesh({ lan: false }) (the page: ?lan=off): the page
// then never asks for nor dials LAN addresses.
import { multiaddr } from '@multiformats/multiaddr'
import { base58btc } from 'multiformats/bases/base58'
import { CID } from 'multiformats/cid'

export const MAX_SUMMARY_SIZE = 1 << 20
const MAX_HOLDERS = 64
const MAX_ADDRS = 8
const REFRESH_MIN_INTERVAL = 1000 // ms between two summary requests to the seed
const REFRESH_MAX_AGE = 60_000 // ms an answer is used before a dial asks again

// decodeSummary reads a summary answer (announce/doc.go, "Summary request,
// version 1"). It returns { ttl, groups: [{ peer, addrs, roots }] }, peer
// being null for the answering peer's own group, or throws on anything the
// spec says to drop whole.
export function decodeSummary (data) {
  if (data.length > MAX_SUMMARY_SIZE) throw new Error('summary: too long')
  if (data.length < 3 || data[0] !== 1) throw new Error('summary: unknown version')
  const v = new DataView(data.buffer, data.byteOffset, data.byteLength)
  const need = (off, n) => { if (off + n > data.length) throw new Error('summary: truncated') }
  const ttl = v.getUint16(1)
  if (ttl === 0) throw new Error('summary: ttl 0')
  const groups = []
  const seen = new Set()
  let off = 3
  while (off < data.length) {
    const p = data[off++]
    if (p > 64) throw new Error('summary: peer ID too long')
    need(off, p)
    let peer = null
    if (p > 0) {
      peer = base58btc.baseEncode(data.subarray(off, off + p))
      if (seen.has(peer)) throw new Error('summary: holder listed twice')
      seen.add(peer)
      if (seen.size > MAX_HOLDERS) throw new Error('summary: too many holders')
    } else if (groups.length > 0) {
      throw new Error('summary: own group not first')
    }
    off += p
    need(off, 1)
    let na = data[off++]
    if (na > MAX_ADDRS || (p === 0 && na !== 0)) throw new Error('summary: bad address count')
    const addrs = []
    while (na-- > 0) {
      need(off, 2)
      const m = v.getUint16(off)
      if (m === 0 || m > 1024) throw new Error('summary: bad address length')
      need(off + 2, m)
      addrs.push(multiaddr(data.slice(off + 2, off + 2 + m)))
      off += 2 + m
    }
    need(off, 2)
    let n = v.getUint16(off)
    off += 2
    if (n === 0) throw new Error('summary: group without roots')
    const roots = []
    while (n-- > 0) {
      need(off, 1)
      const l = data[off]
      if (l === 0 || l > 64) throw new Error('summary: bad CID length')
      need(off + 1, l)
      const c = CID.decode(data.subarray(off + 1, off + 1 + l))
      if (c.version !== 1 || c.multihash.code !== 0x12 || c.multihash.size !== 32) throw new Error('summary: root not a CIDv1 sha2-256')
      roots.push(c)
      off += 1 + l
    }
    groups.push({ peer, addrs, roots })
  }
  return { ttl, groups }
}

// isLocalIP says whether an IP address (as a multiaddr shows it) is private
// or loopback: the only addresses this module dials.
export function isLocalIP (ip, family) {
  if (family === 'ip4') {
    const b = ip.split('.').map(Number)
    if (b.length !== 4 || b.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return false
    return b[0] === 10 || b[0] === 127 || (b[0] === 172 && b[1] >= 16 && b[1] <= 31) || (b[0] === 192 && b[1] === 168)
  }
  if (family === 'ip6') {
    const s = ip.toLowerCase()
    return s === '::1' || /^f[cd][0-9a-f]{0,2}:/.test(s)
  }
  return false
}

// localAddr returns the kind of a: 'webrtc-direct' or 'webtransport' when it
// is an address this module may dial (see the top of the file), else null.
export function localAddr (a) {
  const cs = multiaddr(a).getComponents()
  if (cs.length < 4 || !isLocalIP(cs[0].value, cs[0].name) || cs[1].name !== 'udp') return null
  const rest = cs.slice(2).map((c) => c.name)
  const hashes = (from) => rest.length > from && rest.slice(from).every((n) => n === 'certhash')
  if (rest[0] === 'webrtc-direct' && rest.length === 2 && hashes(1)) return 'webrtc-direct'
  if (rest[0] === 'quic-v1' && rest[1] === 'webtransport' && hashes(2)) return 'webtransport'
  return null
}

// Lan learns the LAN addresses of the mesh's holders from the page's seed
// and dials them. mesh is the client (client.js): it uses mesh.name,
// mesh.libp2p, mesh.seedConn, mesh.table and mesh.emit.
export class Lan {
  // options: false (off), or { enabled, dialTimeout, prefer }; prefer
  // 'webtransport' tries an app's WebTransport addresses before its
  // WebRTC-direct ones (default 'webrtc-direct').
  constructor (mesh, options = {}) {
    const { enabled = true, dialTimeout = 5000, prefer = 'webrtc-direct' } = options === false ? { enabled: false } : (options ?? {})
    this.mesh = mesh
    this.enabled = enabled !== false
    this.dialTimeout = dialTimeout
    this.prefer = prefer
    this.known = new Map() // peer -> { addrs: [string], at: ms }
    this.pending = null
    this.dialing = new Map() // peer -> its dial under way
    this.lastAsk = 0
    this.stats = { enabled: this.enabled, asked: 0, answers: 0, learned: 0, dials: [] }
  }

  // start asks the seed at once, so that a first fetch finds the addresses.
  // The page does not call it: its own summary request at join (client.js
  // askSummary, flag "others too") is the same request, and its answer
  // comes here through heard; asking again doubled every page load's
  // requests to the seed.
  start () {
    if (this.enabled) this.refresh().catch(() => {})
  }

  // heard takes an answer to a summary request the page sent itself
  // ({ ttl, groups }, with groups' addrs as binary multiaddrs, as
  // summary.js decodes them) from the seed `from`, as if this module had
  // asked: the holders' addresses are learned and no request of its own
  // follows within REFRESH_MIN_INTERVAL. Addresses that do not parse are
  // left out.
  heard ({ ttl, groups }, from) {
    if (!this.enabled) return
    this.lastAsk = Date.now()
    const parse = (a) => { try { return [multiaddr(a)] } catch { return [] } }
    this.learn({ ttl, groups: groups.map((g) => ({ ...g, addrs: g.addrs.flatMap(parse) })) }, from)
  }

  // refresh asks the connected seed for its summary, others included.
  // Concurrent callers share one request; within a second of the last one
  // it asks nothing and resolves false at once (a peer the seed did not
  // list a moment ago is no app it knows: dialPeer goes on to the relay
  // without waiting).
  refresh () {
    if (!this.enabled || this.mesh.seedConn == null) return Promise.resolve(false)
    if (this.pending != null) return this.pending
    if (Date.now() - this.lastAsk < REFRESH_MIN_INTERVAL) return Promise.resolve(false)
    this.lastAsk = Date.now()
    this.pending = this.ask()
      .then((answer) => { this.learn(answer, this.mesh.seedConn.remotePeer.toString()); return true })
      .catch((err) => { this.mesh.log?.(`lan: summary from the seed: ${err.message}`); return false })
      .finally(() => { this.pending = null })
    return this.pending
  }

  async ask () {
    this.stats.asked++
    const conn = this.mesh.seedConn
    const stream = await conn.newStream(`/meshcdn/${this.mesh.name}/summary/1`, { signal: AbortSignal.timeout(10_000) })
    stream.send(Uint8Array.of(1, 1))
    await stream.close()
    const parts = []
    let size = 0
    for await (const chunk of stream) {
      const b = chunk instanceof Uint8Array ? chunk : chunk.subarray()
      size += b.length
      if (size > MAX_SUMMARY_SIZE) { stream.abort(new Error('too long')); throw new Error('answer over 1 MiB') }
      parts.push(b)
    }
    const data = new Uint8Array(size)
    let off = 0
    for (const b of parts) { data.set(b, off); off += b.length }
    return decodeSummary(data)
  }

  // learn takes an answer of the seed `from`: its holders' roots go into
  // the provider table, their dialable LAN addresses into known.
  learn ({ ttl, groups }, from) {
    const now = Date.now()
    const expiry = now + Math.min(ttl, 3600) * 1000
    this.stats.answers++
    for (const g of groups) {
      const p = g.peer ?? from
      if (p === this.mesh.libp2p?.peerId?.toString()) continue
      for (const r of g.roots) {
        const k = r.toString()
        if (!this.mesh.table.has(k)) this.mesh.table.set(k, new Map())
        const ps = this.mesh.table.get(k)
        ps.set(p, Math.max(ps.get(p) ?? 0, expiry))
      }
      if (g.peer == null) continue
      // A holder without such addresses (another page, a remote app) is
      // remembered too, so that dialling it does not ask the seed again.
      const addrs = g.addrs.map(String).filter((a) => localAddr(a) != null)
      if (addrs.length > 0 && !(this.known.get(p)?.addrs.length > 0)) this.stats.learned++
      this.known.set(p, { addrs, at: now })
    }
    this.mesh.emit?.('providers')
  }

  // candidates lists where p may be dialled directly, in the order dial
  // tries them: LAN addresses before loopback ones (which reach p only when
  // it runs on the page's own machine), the preferred transport first
  // (WebRTC-direct unless options.prefer says otherwise).
  candidates (p) {
    const k = this.known.get(p)
    if (!this.enabled || k == null) return []
    const rank = (a) => {
      const [ip] = multiaddr(a).getComponents()
      const loopback = ip.value === '::1' || ip.value.startsWith('127.')
      return (loopback ? 2 : 0) + (localAddr(a) === this.prefer ? 0 : 1)
    }
    return [...k.addrs].sort((a, b) => rank(a) - rank(b))
  }

  // dial connects to provider p over the LAN if the seed gave a dialable
  // address for it; it resolves true once connected directly. Concurrent
  // callers for one peer share one dial: the page's preconnect at join and
  // its first fetch both dialled the app, and the second WebRTC-direct
  // handshake took 0.7 s.
  dial (p) {
    if (!this.enabled) return Promise.resolve(false)
    let d = this.dialing.get(p)
    if (d == null) {
      d = this.dialOnce(p).finally(() => this.dialing.delete(p))
      this.dialing.set(p, d)
    }
    return d
  }

  async dialOnce (p) {
    const k = this.known.get(p)
    if (k == null || Date.now() - k.at > REFRESH_MAX_AGE) await this.refresh()
    for (const a of this.candidates(p)) {
      const rec = { peer: p, addr: a, ok: false, ms: 0, remoteAddr: null }
      this.stats.dials.push(rec)
      const t0 = performance.now()
      try {
        const conn = await this.mesh.libp2p.dial(multiaddr(`${a}/p2p/${p}`), { signal: AbortSignal.timeout(this.dialTimeout) })
        rec.remoteAddr = conn.remoteAddr.toString()
        rec.ok = conn.limits == null && !rec.remoteAddr.includes('/p2p-circuit')
      } catch (err) {
        rec.error = err.message
      }
      rec.ms = Math.round(performance.now() - t0)
      this.mesh.log?.(`lan: dial ${a}: ${rec.ok ? `connected in ${rec.ms} ms` : rec.error ?? 'not direct'}`)
      if (rec.ok) return true
    }
    // Every address failed (the app may have restarted on new ports): the
    // next dial asks the seed again.
    const k2 = this.known.get(p)
    if (k2 != null && k2.addrs.length > 0) k2.at = 0
    return false
  }
}
