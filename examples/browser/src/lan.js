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
import * as summary from './summary.js'

const REFRESH_MIN_INTERVAL = 1000 // ms between two summary requests to the seed
const REFRESH_MAX_AGE = 60_000 // ms an answer is used before a dial asks again

// withAddrs is a summary answer as summary.js decodes it ({ ttl, groups },
// groups' addrs binary multiaddrs) with its addresses as multiaddrs, those
// that do not parse left out.
function withAddrs ({ ttl, groups }) {
  const parse = (a) => { try { return [multiaddr(a)] } catch { return [] } }
  return { ttl, groups: groups.map((g) => ({ ...g, addrs: g.addrs.flatMap(parse) })) }
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

// defaultPrefer is the LAN transport tried first: WebTransport where the
// browser has it.
function defaultPrefer () {
  return typeof globalThis.WebTransport === 'function' ? 'webtransport' : 'webrtc-direct'
}

// Lan learns the LAN addresses of the mesh's holders from the page's seed
// and dials them. mesh is the client (client.js): it uses mesh.name,
// mesh.libp2p, mesh.seedConn, mesh.table and mesh.emit.
export class Lan {
  // options: false (off), or { enabled, dialTimeout, prefer }; prefer is
  // the transport whose addresses of an app are tried first, the other's
  // after: 'webtransport' (the default where the browser has WebTransport)
  // or 'webrtc-direct' (the default elsewhere). Over WebTransport a 100
  // KiB block from an app on the LAN came in about half the time it took
  // over WebRTC-direct, whose streams go-libp2p sends 32 KiB at a time.
  constructor (mesh, options = {}) {
    const { enabled = true, dialTimeout = 5000, prefer = defaultPrefer() } = options === false ? { enabled: false } : (options ?? {})
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
    this.learn(withAddrs({ ttl, groups }), from)
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

  // ask asks the connected seed for its summary, others included
  // (summary.js: the request, its bounds and the answer's checks).
  async ask () {
    this.stats.asked++
    return withAddrs(await summary.ask(this.mesh.libp2p, this.mesh.name, this.mesh.seedConn.remotePeer))
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
  // (options.prefer).
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
