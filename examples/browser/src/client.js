// The meshcdn browser client: a js-libp2p node with Helia's bitswap that
// joins a mesh through a seed, announces what it holds (HAVE/DROP), fetches
// assets by CID racing peers against the origin, verifies every block,
// keeps what it fetched within a byte quota and serves it to others.
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { withBitswap } from '@helia/bitswap'
import { withLibp2pLight } from '@helia/libp2p'
import * as dagPB from '@ipld/dag-pb'
import { circuitRelayTransport } from '@libp2p/circuit-relay-v2'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import { gossipsub, TopicValidatorResult } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { webRTC, webRTCDirect } from '@libp2p/webrtc'
import { webSockets } from '@libp2p/websockets'
import { webTransport } from '@libp2p/webtransport'
import { multiaddr } from '@multiformats/multiaddr'
import { createHeliaLight } from 'helia'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as wire from './announce.js'
import { Lan } from './lan.js'
import { QuotaStore, concat } from './store.js'
import { verify } from './verify.js'

export const CHUNK = 1 << 20 // unixfs-v1-2025: 1 MiB raw leaves
export const MAX_LINKS = 1024
const RAW = 0x55
const DAG_PB = 0x70

export const defaults = {
  quota: 256 << 20, // bytes the page keeps
  peerTimeout: 200, // ms peers get for a block before the origin is asked as well
  stallTimeout: 2000, // ms a leaf may take once peers have delivered, before hedging
  ttl: 180, // s, HAVE ttl: 3 x summaryInterval
  summaryInterval: 60_000, // ms, ±10%
  concurrency: 4, // leaves in flight per fetch
  dialTimeout: 5000
}

// rank orders seed addresses: WebTransport, then WebRTC-direct, then
// WebSockets (the last resort: ws:// is mixed content on an https page).
export function rank (addr) {
  const s = addr.toString()
  if (s.includes('/webtransport')) return 0
  if (s.includes('/webrtc-direct')) return 1
  if (s.includes('/wss') || s.includes('/tls/ws')) return 2
  if (s.includes('/ws')) return 3
  return 9
}

// Metrics is the small part of libp2p's Metrics interface Helia's bitswap
// uses: its counter of block bytes sent to peers is what this page served.
function metrics (onServed) {
  const noop = { update () {}, increment () {}, decrement () {}, reset () {}, timer () { return () => {} } }
  return {
    registerMetric: () => noop,
    registerMetricGroup: () => noop,
    registerCounterGroup: () => noop,
    registerHistogram: () => noop,
    registerHistogramGroup: () => noop,
    registerSummary: () => noop,
    registerSummaryGroup: () => noop,
    registerCounter: (name) => name === 'helia_bitswap_sent_data_bytes_total'
      ? { increment: (n = 1) => onServed(n), reset () {} }
      : noop,
    trackMultiaddrConnection () {},
    trackProtocolStream () {},
    createTrace: () => undefined,
    traceFunction: (_name, fn) => fn
  }
}

export async function createMesh (opts) {
  const m = new Mesh(opts)
  m.lan = new Lan(m, opts?.lan) // direct dials to desktop apps on the LAN (lan.js)
  await m.start()
  return m
}

export class Mesh extends EventTarget {
  constructor ({ name, seeds = [], quota, peerTimeout, stallTimeout, ttl, summaryInterval, cacheName, log } = {}) {
    super()
    if (!wire.validName(name)) throw new Error(`meshcdn: bad mesh name ${JSON.stringify(name)}`)
    this.name = name
    this.topic = wire.topic(name)
    this.seeds = seeds.map((s) => multiaddr(s)).sort((a, b) => rank(a) - rank(b))
    this.cfg = { ...defaults }
    for (const [k, v] of Object.entries({ quota, peerTimeout, stallTimeout, ttl, summaryInterval })) if (v != null) this.cfg[k] = v
    this.log = log ?? (() => {})
    this.table = new Map() // root -> Map(peer -> expiry ms)
    this.rates = new Map() // author -> {tokens, at}
    this.stats = {
      peerBytes: 0, originBytes: 0, localBytes: 0, servedBytes: 0, duplicateBytes: 0,
      peers: {}, fetches: [], badBlocks: 0,
      announce: { sent: 0, received: 0, rejected: 0, ignored: 0 }
    }
    this.store = new QuotaStore({ quota: this.cfg.quota, cacheName, onDrop: (roots) => this.publish(wire.DROP, roots) })
    this.seed = null // the multiaddr of the seed we are connected to
  }

  // identity returns the page's key, kept in localStorage so that the peer
  // ID survives reloads: what others' tables say this page holds stays true.
  async identity () {
    const slot = `meshcdn-key-${this.name}`
    try {
      const saved = localStorage.getItem(slot)
      if (saved != null) return privateKeyFromProtobuf(Uint8Array.from(atob(saved), (c) => c.charCodeAt(0)))
    } catch {}
    const key = await generateKeyPair('Ed25519')
    try { localStorage.setItem(slot, btoa(String.fromCharCode(...privateKeyToProtobuf(key)))) } catch {}
    return key
  }

  async start () {
    await this.store.open()
    const privateKey = await this.identity()
    const helia = createHeliaLight({
      blockstore: this.store,
      metrics: metrics((n) => { this.stats.servedBytes += n; this.emit('stats') })
    })
    withLibp2pLight(helia, {
      privateKey,
      addresses: { listen: ['/p2p-circuit', '/webrtc'] },
      transports: [webTransport(), webRTCDirect(), webRTC(), webSockets(), circuitRelayTransport()],
      connectionEncrypters: [noise()],
      streamMuxers: [yamux()],
      // js-libp2p's browser build refuses loopback and ws:// dials; a mesh
      // on one machine (tests, the demo) needs them.
      connectionGater: { denyDialMultiaddr: async () => false },
      services: {
        identify: identify(),
        ping: ping(),
        pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
      }
    })
    withBitswap(helia)
    await helia.start()
    this.helia = helia
    this.libp2p = helia.libp2p
    const ps = this.libp2p.services.pubsub
    ps.topicValidators.set(this.topic, (_from, msg) => this.validate(msg))
    ps.addEventListener('message', (e) => this.receive(e.detail))
    ps.addEventListener('subscription-change', (e) => {
      if (e.detail.subscriptions.some((s) => s.topic === this.topic && s.subscribe)) this.summarySoon()
    })
    ps.addEventListener('gossipsub:graft', (e) => { if (e.detail.topic === this.topic) this.summarySoon() })
    ps.subscribe(this.topic)
    this.libp2p.addEventListener('connection:open', () => this.emit('peers'))
    this.libp2p.addEventListener('connection:close', () => this.emit('peers'))
    this.timer = setTimeout(() => this.tick(), this.jitter(this.cfg.summaryInterval))
    this.sweeper = setInterval(() => this.sweep(), 1000)
    if (this.seeds.length > 0) await this.connectSeed()
    this.lan?.start()
    this.summary()
  }

  emit (type) { this.dispatchEvent(new Event(type)) }

  jitter (d) { return d * (0.9 + 0.2 * Math.random()) }

  tick () {
    this.summary()
    this.timer = setTimeout(() => this.tick(), this.jitter(this.cfg.summaryInterval))
  }

  // connectSeed dials the seeds' addresses in order of preference until one
  // works.
  async connectSeed () {
    const errs = []
    for (const a of this.seeds) {
      try {
        const conn = await this.libp2p.dial(a, { signal: AbortSignal.timeout(this.cfg.dialTimeout) })
        this.seed = a
        this.seedConn = conn
        this.log(`connected to seed over ${conn.remoteAddr}`)
        return conn
      } catch (err) {
        errs.push(`${a}: ${err.message}`)
      }
    }
    throw new Error(`meshcdn: no seed address worked: ${errs.join('; ')}`)
  }

  async stop () {
    clearTimeout(this.timer)
    clearInterval(this.sweeper)
    await this.helia?.stop()
  }

  // --- announcements ---

  validate (msg) {
    if (msg.type !== 'signed' || msg.from == null) return TopicValidatorResult.Reject
    if (msg.data.length > wire.MAX_MESSAGE_SIZE) return TopicValidatorResult.Reject
    try {
      wire.decode(msg.data)
    } catch (err) {
      if (err instanceof wire.UnknownVersionError) return TopicValidatorResult.Ignore
      this.stats.announce.rejected++
      return TopicValidatorResult.Reject
    }
    // PeerBurst 64, PeerRate 4/s, as the Go validator.
    const a = msg.from.toString()
    const now = Date.now()
    const r = this.rates.get(a) ?? { tokens: 64, at: now }
    r.tokens = Math.min(64, r.tokens + (now - r.at) * 4 / 1000)
    r.at = now
    this.rates.set(a, r)
    if (r.tokens < 1) { this.stats.announce.ignored++; return TopicValidatorResult.Ignore }
    r.tokens--
    return TopicValidatorResult.Accept
  }

  receive (msg) {
    if (msg.topic !== this.topic || msg.type !== 'signed') return
    let m
    try { m = wire.decode(msg.data) } catch { return }
    const p = msg.from.toString()
    if (p === this.libp2p.peerId.toString()) return
    this.stats.announce.received++
    for (const r of m.roots) {
      const k = r.toString()
      if (m.kind === wire.HAVE) {
        if (!this.table.has(k)) this.table.set(k, new Map())
        this.table.get(k).set(p, Date.now() + Math.min(m.ttl, 3600) * 1000)
      } else {
        this.table.get(k)?.delete(p)
      }
    }
    this.emit('providers')
  }

  sweep () {
    const now = Date.now()
    for (const [k, ps] of this.table) {
      for (const [p, exp] of ps) if (exp <= now) ps.delete(p)
      if (ps.size === 0) this.table.delete(k)
    }
  }

  providers (root) {
    const now = Date.now()
    return [...(this.table.get(root.toString()) ?? new Map())].filter(([, exp]) => exp > now).map(([p]) => p)
  }

  // waitProvider resolves with the providers of root once one is known.
  waitProvider (root, timeout = 10_000) {
    root = typeof root === 'string' ? CID.parse(root) : root
    return new Promise((resolve, reject) => {
      const check = () => {
        const ps = this.providers(root)
        if (ps.length === 0) return false
        this.removeEventListener('providers', check)
        clearTimeout(t)
        resolve(ps)
        return true
      }
      const t = setTimeout(() => {
        this.removeEventListener('providers', check)
        reject(new Error(`meshcdn: no provider of ${root} within ${timeout} ms`))
      }, timeout)
      if (!check()) this.addEventListener('providers', check)
    })
  }

  // waitStats resolves once pred(stats) holds, re-checking on every change
  // of the counters (bitswap counts a block as served after its stream
  // closes, a moment after the receiver has it).
  waitStats (pred, timeout = 10_000) {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!pred(this.stats)) return false
        this.removeEventListener('stats', check)
        clearTimeout(t)
        resolve(this.stats)
        return true
      }
      const t = setTimeout(() => {
        this.removeEventListener('stats', check)
        reject(new Error(`meshcdn: counters did not reach the expected state within ${timeout} ms: ${JSON.stringify({ ...this.stats, fetches: undefined })}`))
      }, timeout)
      if (!check()) this.addEventListener('stats', check)
    })
  }

  async publish (kind, roots) {
    if (roots.length === 0 || this.libp2p == null) return 0
    let recipients = 0
    for (const data of wire.encode(kind, this.cfg.ttl, roots)) {
      try {
        const res = await this.libp2p.services.pubsub.publish(this.topic, data)
        recipients = Math.max(recipients, res.recipients.length)
        this.stats.announce.sent++
        this.log(`announce: ${kind === wire.HAVE ? 'HAVE' : 'DROP'} of ${roots.length} roots to ${res.recipients.length} peers`)
      } catch (err) {
        this.log(`announce: ${err.message}`) // no peer yet: the summary on join repeats it
      }
    }
    return recipients
  }

  summary () { return this.publish(wire.HAVE, this.store.heldRoots()) }

  // summarySoon sends a summary when a peer joins the topic, at most one
  // every 500 ms.
  summarySoon () {
    if (this.pending) return
    const wait = Math.max(0, (this.lastSummary ?? 0) + 500 - Date.now())
    this.pending = setTimeout(() => {
      this.pending = null
      this.lastSummary = Date.now()
      this.summary()
    }, wait)
  }

  // --- peers ---

  connected (p) { return this.libp2p.getConnections().some((c) => c.remotePeer.toString() === p) }

  // dialPeer connects to a provider: directly if the peer store knows an
  // address, else through the seed's relay with WebRTC (browser peers).
  async dialPeer (p) {
    if (this.connected(p)) return true
    if (await this.lan?.dial(p)) return true // a desktop app on the LAN (lan.js)
    const tries = []
    if (this.seed != null) {
      const relay = this.seed.toString().includes('/p2p/') ? this.seed.toString() : `${this.seed}/p2p/${this.seedConn.remotePeer}`
      tries.push(multiaddr(`${relay}/p2p-circuit/webrtc/p2p/${p}`))
    }
    // WebRTC signalled through the relay failed to finish in 5 s once in
    // about thirty runs on a busy machine ("signal timed out"); a second
    // attempt is cheap next to the origin it saves.
    for (const a of [...tries, ...tries]) {
      try {
        await this.libp2p.dial(a, { signal: AbortSignal.timeout(this.cfg.dialTimeout) })
        return true
      } catch (err) {
        this.log(`dial ${a}: ${err.message}`)
      }
      if (this.connected(p)) return true
    }
    return this.connected(p)
  }

  connections () {
    return this.libp2p.getConnections().map((c) => ({ peer: c.remotePeer.toString(), addr: c.remoteAddr.toString(), limited: c.limits != null, direction: c.direction }))
  }

  // --- content ---

  // loadManifest fetches a manifest (format version 1, see the Go manifest
  // package) and checks every inner node against its CID.
  async loadManifest (url) {
    const res = await fetch(url)
    if (!res.ok) throw new Error(`meshcdn: manifest ${url}: HTTP ${res.status}`)
    const j = await res.json()
    if (j.version !== 1) throw new Error(`meshcdn: manifest version ${j.version}`)
    if (j.profile !== 'unixfs-v1-2025') throw new Error(`meshcdn: manifest profile ${j.profile}`)
    const base = new URL('.', new URL(url, location.href))
    const assets = []
    for (const a of j.assets) {
      const cid = CID.parse(a.cid)
      const nodes = []
      for (const b64 of a.nodes ?? []) {
        const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0))
        const c = CID.createV1(DAG_PB, await sha256.digest(bytes))
        nodes.push({ cid: c, bytes })
      }
      if (cid.code === DAG_PB && (nodes.length === 0 || !nodes[0].cid.equals(cid))) throw new Error(`meshcdn: manifest: ${a.path}: the first node is not the root`)
      assets.push({ path: a.path, cid, size: a.size, type: a.type, nodes, url: new URL(a.path.split('/').map(encodeURIComponent).join('/'), base).toString() })
    }
    return { url, assets, lookup: (p) => assets.find((a) => a.path === p) }
  }

  // leaves walks the file's DAG in order. Inner nodes come from the
  // manifest (already checked) or from peers, and are kept in the store so
  // that this page can serve the whole file.
  async leaves (asset, getBlock) {
    if (asset.cid.code === RAW) return { inner: [], leaves: [asset.cid] }
    if (asset.cid.code !== DAG_PB) throw new Error(`meshcdn: unsupported codec of ${asset.cid}`)
    const given = new Map((asset.nodes ?? []).map((n) => [n.cid.toString(), n.bytes]))
    const inner = []
    const leaves = []
    const walk = async (c) => {
      let bytes = given.get(c.toString()) ?? this.store.block(c)
      if (bytes == null) bytes = await getBlock(c)
      if (!this.store.has(c)) await this.store.put(c, bytes)
      inner.push(c)
      for (const l of dagPB.decode(bytes).Links) {
        if (l.Hash.code === RAW) leaves.push(l.Hash)
        else if (l.Hash.code === DAG_PB) await walk(l.Hash)
        else throw new Error(`meshcdn: unsupported link codec in ${c}`)
      }
    }
    await walk(asset.cid)
    return { inner, leaves }
  }

  // fetchAsset fetches an asset {cid, size?, nodes?, url?, path?}: from the
  // store, else from peers when a provider is known (the origin joins the
  // race after peerTimeout), else from the origin at once. It returns the
  // bytes and the fetch's accounting.
  async fetchAsset (asset, { keepBytes = true } = {}) {
    asset = { ...asset, cid: typeof asset.cid === 'string' ? CID.parse(asset.cid) : asset.cid }
    const root = asset.cid
    const rec = { path: asset.path ?? null, cid: root.toString(), size: asset.size ?? null, peerBytes: 0, originBytes: 0, localBytes: 0, peers: {}, ms: 0, ttfbMs: null, leaves: 0, origin: 'none' }
    const t0 = performance.now()
    this.store.active.add(root.toString())
    try {
      // Dialling a provider counts against the peer timeout: a provider
      // that has gone (a closed tab) must not delay the origin.
      const provs = this.store.holds(root) ? [] : this.providers(root)
      let usePeers = provs.some((p) => this.connected(p))
      if (!usePeers && provs.length > 0) {
        const anyDial = new Promise((resolve) => {
          let left = provs.length
          for (const p of provs) {
            this.dialPeer(p).then((ok) => { if (ok) resolve(true); else if (--left === 0) resolve(false) })
          }
        })
        // Without an origin, wait for the dials; with one, peers still
        // dialling stay in the race and the origin joins at peerTimeout.
        usePeers = asset.url == null ? await anyDial : await Promise.race([anyDial, delay(this.cfg.peerTimeout, new AbortController().signal).then(() => true)])
      }
      rec.providers = provs
      if (!usePeers && asset.url == null && !this.store.holds(root)) {
        throw new Error(`meshcdn: ${root}: ${provs.length === 0 ? 'no provider known' : 'no provider reachable'} and no origin URL`)
      }
      const state = { t0, peerDelivered: false }
      state.firstPeer = new Promise((resolve) => { state.onPeer = resolve })
      // Inner nodes the manifest does not carry come from peers; they are
      // not file bytes, so they are not counted.
      const peerBlock = async (c) => (await this.fromPeers(c, AbortSignal.timeout(30_000))).bytes
      const { inner, leaves } = await this.leaves(asset, peerBlock)
      rec.leaves = leaves.length
      const parts = new Array(leaves.length)
      let next = 0
      const worker = async () => {
        while (next < leaves.length) {
          const i = next++
          parts[i] = await this.leaf(leaves[i], i, asset, usePeers, rec, state)
          if (rec.ttfbMs == null && i === 0) rec.ttfbMs = Math.round(performance.now() - t0)
        }
      }
      // The first leaf goes alone: peers get the whole link for the block
      // that decides whether the origin joins (1 MiB over WebRTC takes
      // about 80 ms; four at once would pass the 200 ms peer timeout).
      if (usePeers && leaves.length > 1) {
        next = 1
        parts[0] = await this.leaf(leaves[0], 0, asset, usePeers, rec, state)
        rec.ttfbMs = Math.round(performance.now() - t0)
      }
      await Promise.all(Array.from({ length: Math.min(this.cfg.concurrency, leaves.length) }, worker))
      const size = parts.reduce((n, p) => n + p.length, 0)
      if (asset.size != null && size !== asset.size) throw new Error(`meshcdn: ${root}: got ${size} bytes, the manifest says ${asset.size}`)
      rec.size = size
      rec.ms = Math.round(performance.now() - t0)
      rec.origin = rec.originBytes > 0 ? (rec.peerBytes > 0 ? 'peers+origin' : 'origin') : (rec.peerBytes > 0 ? 'peers' : 'local')
      const wasHeld = this.store.holds(root)
      if (await this.store.markRoot(root, [...inner, ...leaves])) {
        if (!wasHeld) await this.publish(wire.HAVE, [root])
      }
      this.store.touch(root)
      this.stats.fetches.push(rec)
      this.emit('stats')
      return { bytes: keepBytes ? concat(parts) : null, stats: rec }
    } finally {
      this.store.active.delete(root.toString())
    }
  }

  // leaf gets one leaf: local, or the race of peers and origin. Peers get
  // peerTimeout from the fetch's start to deliver a first block; once they
  // have, a leaf is hedged only after stallTimeout. The first verified copy
  // wins and is counted; a later copy counts as duplicate bytes.
  async leaf (c, i, asset, usePeers, rec, state) {
    const local = this.store.block(c)
    if (local != null) {
      rec.localBytes += local.length
      this.stats.localBytes += local.length
      return local
    }
    const canOrigin = asset.url != null
    if (!usePeers && !canOrigin) throw new Error(`meshcdn: no provider of ${asset.cid} and no origin URL`)
    const peerAbort = new AbortController()
    const originAbort = new AbortController()
    const racers = []
    let won = false
    const claim = (source, sender) => ({ bytes }) => {
      if (won) {
        this.stats.duplicateBytes += bytes.length
        throw new Error('lost the race')
      }
      won = true
      this.count(rec, source, sender(), bytes.length)
      return bytes
    }
    const leafStart = performance.now()
    if (usePeers) {
      let sender = null
      racers.push(this.fromPeers(c, peerAbort.signal)
        .then((r) => { sender = r.sender; state.peerDelivered = true; state.onPeer(); originAbort.abort(); return r })
        .then(claim('peer', () => sender)))
    }
    if (canOrigin) {
      racers.push(this.originGate(state, leafStart, usePeers, originAbort.signal)
        .then(() => this.fromOrigin(c, i, asset, originAbort.signal))
        .then((r) => { peerAbort.abort(); return r })
        .then(claim('origin', () => null)))
    }
    try {
      return await Promise.any(racers)
    } catch (err) {
      throw new Error(`meshcdn: leaf ${i} (${c}) of ${asset.cid}: ${err.errors?.map((e) => e.message).join('; ') ?? err.message}`)
    } finally {
      peerAbort.abort()
      originAbort.abort()
    }
  }

  // originGate resolves when the origin should join a leaf's race.
  async originGate (state, leafStart, usePeers, signal) {
    if (!usePeers) return
    const first = state.t0 + this.cfg.peerTimeout - performance.now()
    await Promise.race([delay(first, signal), state.firstPeer])
    signal.throwIfAborted()
    if (!state.peerDelivered) return
    await delay(leafStart + this.cfg.stallTimeout - performance.now(), signal)
  }

  count (rec, source, sender, n) {
    if (source === 'peer') {
      rec.peerBytes += n
      rec.peers[sender] = (rec.peers[sender] ?? 0) + n
      this.stats.peerBytes += n
      this.stats.peers[sender] = (this.stats.peers[sender] ?? 0) + n
    } else {
      rec.originBytes += n
      this.stats.originBytes += n
    }
  }

  // fromPeers gets a block over bitswap and verifies it; sender is the peer
  // that delivered it.
  async fromPeers (c, signal) {
    let sender = null
    const parts = []
    for await (const p of this.helia.blockstore.get(c, {
      signal,
      onProgress: (e) => { if (e.type === 'bitswap:block' && e.detail.cid.equals(c)) sender = e.detail.sender.toString() }
    })) parts.push(p)
    const bytes = concat(parts)
    if (!await verify(c, bytes)) {
      this.stats.badBlocks++
      await this.store.delete(c)
      throw new Error(`block ${c} from ${sender} failed verification`)
    }
    if (sender == null) throw new Error(`block ${c} was stored by another source first`)
    return { bytes, sender }
  }

  async fromOrigin (c, i, asset, signal) {
    const start = i * CHUNK
    const headers = {}
    if (asset.cid.code !== RAW) headers.Range = `bytes=${start}-${start + CHUNK - 1}`
    const res = await fetch(asset.url, { headers, signal })
    if (!res.ok) throw new Error(`origin ${asset.url}: HTTP ${res.status}`)
    let bytes = new Uint8Array(await res.arrayBuffer())
    if (res.status === 200 && asset.cid.code !== RAW) bytes = bytes.subarray(start, start + CHUNK) // Range ignored
    if (!await verify(c, bytes)) {
      this.stats.badBlocks++
      throw new Error(`origin bytes ${start}+${bytes.length} do not match leaf ${c}`)
    }
    signal.throwIfAborted()
    await this.helia.blockstore.put(c, bytes) // also tells bitswap: wants resolve, peers may ask
    return { bytes }
  }

  // importBytes adds a file as the unixfs-v1-2025 profile does (1 MiB raw
  // leaves, balanced dag-pb nodes of at most 1024 links), keeps it and
  // announces its root. The CID equals Kubo's and meshcdn's for the same
  // bytes.
  async importBytes (data, { announce = true } = {}) {
    const blocks = []
    let level = []
    for (let off = 0; off < data.length || off === 0; off += CHUNK) {
      const chunk = data.slice(off, off + CHUNK)
      const cid = CID.createV1(RAW, await sha256.digest(chunk))
      blocks.push([cid, chunk])
      level.push({ cid, tsize: chunk.length, fsize: chunk.length })
      if (data.length === 0) break
    }
    while (level.length > 1) {
      const up = []
      for (let k = 0; k < level.length; k += MAX_LINKS) {
        const kids = level.slice(k, k + MAX_LINKS)
        const fsize = kids.reduce((n, l) => n + l.fsize, 0)
        const bytes = dagPB.encode(dagPB.prepare({
          Data: unixfsFile(fsize, kids.map((l) => l.fsize)),
          Links: kids.map((l) => ({ Hash: l.cid, Name: '', Tsize: l.tsize }))
        }))
        const cid = CID.createV1(DAG_PB, await sha256.digest(bytes))
        blocks.push([cid, bytes])
        up.push({ cid, tsize: bytes.length + kids.reduce((n, l) => n + l.tsize, 0), fsize })
      }
      level = up
    }
    const root = level[0].cid
    for (const [c, b] of blocks) await this.helia.blockstore.put(c, b)
    await this.store.markRoot(root, blocks.map(([c]) => c))
    if (announce) await this.publish(wire.HAVE, [root])
    this.emit('stats')
    return root
  }
}

// unixfsFile encodes a UnixFS Data message of type File as boxo writes it:
// Type (1) = 2, filesize (3), blocksizes (4, one field per child).
function unixfsFile (filesize, blocksizes) {
  const out = [0x08, 0x02, 0x18, ...varint(filesize)]
  for (const b of blocksizes) out.push(0x20, ...varint(b))
  return new Uint8Array(out)
}

function varint (n) {
  const out = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  out.push(n)
  return out
}

function delay (ms, signal) {
  return new Promise((resolve, reject) => {
    if (ms <= 0) return resolve()
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
  })
}
