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
import { base64 } from 'multiformats/bases/base64'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import * as wire from './announce.js'
import { announceFetch, capHedges, capMove, capWindow, originJoin, pickPeer } from './gate.js'
import { ASSUMED_LEAF_MS, MAX_MEMBERS, Stripe, askOf, cancelOnOrigin, clocks, crowdOf, heard, originLeaf, originRank, ownLeft, reaskLeaf, stall, stallOrder, waitOn, waitedPace } from './stripe.js'
import { Lan } from './lan.js'
import { originFetch } from './origin.js'
import { QuotaStore, concat } from './store.js'
import * as summaryWire from './summary.js'
import { verify } from './verify.js'
import { sendReply } from './serve.js'
import { Wants, encodeReply } from './wants.js'
import { DialQueue } from './dials.js'

export const CHUNK = 1 << 20 // unixfs-v1-2025: 1 MiB raw leaves
export const MAX_LINKS = 1024
export const FETCHING_TTL = 120 // s, announce.FetchingTTL
const RAW = 0x55
const DAG_PB = 0x70

export const defaults = {
  quota: 256 << 20, // bytes the page keeps
  peerTimeout: 200, // ms peers get for a block before the origin is asked as well
  stallTimeout: 2000, // ms a leaf may take once peers have delivered, before hedging
  capMax: 15_000, // ms a leaf waits at most on a peer that keeps delivering other blocks, before hedging
  ttl: 180, // s, HAVE ttl: 3 x summaryInterval
  summaryInterval: 60_000, // ms, ±10%
  concurrency: 4, // leaves in flight per fetch from peers
  originConcurrency: 2, // leaves in flight per fetch from the origin
  dialTimeout: 5000, // ms, each attempt from its start (dialPeer)
  maxDialing: 4, // dials under way at once (dials.js)
  summaryWait: 2000, // ms start() waits for the seed's summary
  maxDials: 4, // providers dialled at once for a fetch
  stripeWindow: 16, // leaves of a striped fetch asked of peers at once
  maxMembers: MAX_MEMBERS, // other stripe members counted (and dialled) for a fetch: Go's cap, see stripe.js
  fetchRepeat: 1000, // ms between FETCH announcements of a root while fetching it
  giveUp: 30_000, // ms a striped fetch without the origin waits at most with no block from anyone
  peerTimeMax: 8000 // ms a striped fetch gives a peer at most to offer a leaf (stripe.js overdue's peerTimeout)
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
    this.fetchers = new Map() // root -> Map(peer -> expiry ms): the last message was a FETCH
    this.fetching = new Set() // roots this page announced FETCH of and is fetching
    this.rates = new Map() // author -> {tokens, at}
    this.stats = {
      peerBytes: 0, originBytes: 0, localBytes: 0, servedBytes: 0, duplicateBytes: 0,
      peers: {}, fetches: [], badBlocks: 0,
      // What this page put on the wire over bitswap (wants.js): want-blocks,
      // cancels, messages, replies (block and presence messages sent on
      // its own stream), failed sends; served: bytes of blocks whose send
      // finished, by peer; duplicates: bytes that arrived unwanted, by peer.
      wants: { wantBlocks: 0, wantHaves: 0, cancels: 0, messages: 0, replies: 0, sendErrors: 0 },
      // duplicateCauses: those bytes again by why their want had ended
      // (wants.js duplicateCause).
      served: {}, serveErrors: 0, duplicates: {}, duplicateCauses: {}, peerBlockMs: [],
      // Serving: blocks not sent because the peer cancelled while they
      // waited their turn; serveMs, from a peer's want-block to the block
      // written (wants.js: sent but lowWater); blockSendMs, the block's
      // own turn (from its write); dontHaves, DONT_HAVEs received.
      // cancelMs, what a CANCEL waited to be written (wants.js).
      serveSkipped: 0, serveSkippedBytes: 0, serveMs: [], blockSendMs: [], dontHaves: 0, cancelMs: [],
      // dials: WebRTC dials to peers through the relay that connected and
      // that failed (dialPeer, each attempt).
      // log: the last 200 attempts, [peer (its last 6 characters), ms
      // since start, ms taken, 'ok' or the error, whether p was connected
      // (by its own dial to this page) when the attempt ended].
      dials: { ok: 0, failed: 0, errors: {}, log: [] }, // errors: failed dials by message
      summary: { asked: 0, answered: 0, roots: 0, holders: 0, ms: null, error: null },
      announce: { sent: 0, received: 0, rejected: 0, ignored: 0 }
    }
    this.store = new QuotaStore({ quota: this.cfg.quota, cacheName, onDrop: (roots) => this.publish(wire.DROP, roots) })
    this.seed = null // the multiaddr of the seed we are connected to
    this.seedConnectedAt = null // Date.now() when that connection opened: the page joined the mesh
    this.keeping = new Set() // block puts under way (keep)
    this.dials = new DialQueue({ limit: this.cfg.maxDialing }) // dialPeer's dials
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
    const helia = createHeliaLight({ blockstore: this.store })
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
    this.startWants()
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
    if (this.seeds.length > 0) {
      const conn = await this.connectSeed()
      this.wants.warm(conn.remotePeer.toString())
      // Learn at once what the mesh holds: the seed's answer, not its
      // gossip, which reaches a new neighbour only after subscriptions
      // are exchanged (and a page's first fetch starts before that).
      await Promise.race([this.askSummary(conn.remotePeer), delay(this.cfg.summaryWait, new AbortController().signal)])
    }
    this.summary() // (the seed's answer also gave lan.js its addresses: one request)
  }

  emit (type) { this.dispatchEvent(new Event(type)) }

  jitter (d) { return d * (0.9 + 0.2 * Math.random()) }

  tick () {
    this.summary()
    this.timer = setTimeout(() => this.tick(), this.jitter(this.cfg.summaryInterval))
  }

  // connectSeed dials the seeds' addresses in order of preference until one
  // works. A round that fails is tried again with twice the timeout, three
  // rounds in all: on a busy machine a WebTransport handshake took more
  // than the 5 s of the first round.
  async connectSeed () {
    const errs = []
    for (let round = 0; round < 3; round++) {
      for (const a of this.seeds) {
        try {
          const conn = await this.libp2p.dial(a, { signal: AbortSignal.timeout(this.cfg.dialTimeout * 2 ** round) })
          this.seed = a
          this.seedConn = conn
          this.seedConnectedAt = Date.now()
          this.log(`connected to seed over ${conn.remoteAddr}`)
          return conn
        } catch (err) {
          errs.push(`${a} (round ${round + 1}): ${err.message}`)
        }
      }
    }
    throw new Error(`meshcdn: no seed address worked: ${errs.join('; ')}`)
  }

  async stop () {
    clearTimeout(this.timer)
    clearInterval(this.sweeper)
    this.wants?.stop()
    await this.helia?.stop()
  }

  // --- bitswap: what the page sends ---

  // startWants puts the page's own want sender (wants.js) beside Helia's
  // bitswap, and counts served bytes only for sends that finished: Helia
  // counts a block as sent even when writing it failed.
  startWants () {
    const bitswap = this.helia.blockBrokers.find((b) => b.name === 'bitswap').bitswap
    this.bitswap = bitswap
    this.outstanding = new Map() // peer -> wants in flight from this page
    this.peerMs = new Map() // peer -> what a block has taken from it (EWMA, ms)
    this.lastBlockFrom = new Map() // peer -> when it last delivered a block (performance.now())
    this.lastHaveFrom = new Map() // peer -> when it last said HAVE of a block this page asked for
    this.askedFor = new Map() // CID string -> the peers asked for it (a want under way)
    this.comingAt = new Map() // CID string -> when a peer asked said HAVE (the block is on its way)
    this.wants = new Wants({
      bitswap,
      libp2p: this.libp2p,
      log: this.log,
      onCount: (what, p, n = 1, cause) => {
        if (what === 'duplicateCause') {
          this.stats.duplicateCauses[cause] = (this.stats.duplicateCauses[cause] ?? 0) + n
          return
        }
        if (what === 'blockSendMs' || what === 'cancelMs') {
          keepLast(this.stats[what], Math.round(n))
          return
        }
        if (what === 'duplicateBytes') {
          this.stats.duplicateBytes += n
          this.stats.duplicates[p] = (this.stats.duplicates[p] ?? 0) + n
        } else {
          this.stats.wants[what] += n
        }
        this.emit('stats')
      }
    })
    // When each peer's want-block arrived (serveTime).
    this.wantAt = new Map() // `${peer} ${key}` -> performance.now()
    bitswap.network.addEventListener('bitswap:message', (e) => {
      const p = e.detail.connection.remotePeer.toString()
      for (const en of e.detail.message.wantlist?.entries ?? []) {
        let k
        try { k = `${p} ${base64.encode(CID.decode(en.cid).multihash.bytes)}` } catch { continue }
        if (en.cancel) this.wantAt.delete(k)
        else if (en.wantType !== 1 && !this.wantAt.has(k)) this.wantAt.set(k, performance.now())
      }
      if (this.wantAt.size > 10_000) this.wantAt.clear()
    })
    const send = bitswap.network.sendMessage.bind(bitswap.network)
    bitswap.network.sendMessage = async (peerId, message, options = {}) => {
      const p = peerId.toString()
      // Blocks and presences go on the page's long-lived stream to the
      // peer (wants.js), one message per block; Helia's network opens a
      // stream per message (over WebRTC a data channel per block). A
      // message with wants, or a peer reached only through a relay, goes
      // Helia's way.
      if (message.wantlist.size === 0 && await this.reply(peerId, p, message)) return
      let failed = false
      const onProgress = (evt) => {
        if (evt.type === 'bitswap:send-wantlist:error') failed = true
        options.onProgress?.(evt)
      }
      try {
        await send(peerId, message, { ...options, onProgress })
      } catch (err) {
        failed = true
        throw err
      } finally {
        let n = 0
        for (const b of message.blocks?.values() ?? []) n += b.data.byteLength
        this.served(p, n, failed)
      }
    }
  }

  // served counts n bytes of blocks sent to p (a send that failed counts
  // as a serve error, not as bytes).
  served (p, n, failed) {
    if (n === 0) return
    if (failed) this.stats.serveErrors++
    else {
      this.stats.servedBytes += n
      this.stats.served[p] = (this.stats.served[p] ?? 0) + n
    }
    this.emit('stats')
  }

  // reply sends a reply message of Helia's bitswap (blocks, presences) to
  // p on the page's own stream to it, a message per block (serve.js),
  // counting each block written, and reports whether it did; false when
  // nothing was written (the caller sends the rest Helia's way). A block
  // p has cancelled by the time its turn comes is not sent (Helia's
  // ledger put it in the message before the cancel came). A failure after
  // a block went out throws.
  async reply (peerId, p, message) {
    const ledger = this.bitswap.peerWantLists?.ledgerMap?.get(peerId)
    try {
      await sendReply({ blocks: [...message.blocks], presences: [...message.blockPresences.values()] }, {
        // A block goes with a HAVE ahead of it: p knows it is coming.
        write: (blocks, presences, wanted, cid) => this.wants.reply(p, encodeReply({ blocks, presences }), {
          block: blocks.length > 0,
          wanted,
          have: cid == null ? undefined : encodeReply({ presences: [{ cid, type: 'HaveBlock' }] })
        }),
        // Helia's ledger keys wants by the multihash in base64 without the
        // multibase prefix its messages' keys carry.
        wanted: (key) => ledger == null || ledger.wants.has(key.slice(1)),
        onSkipped: (key, n) => {
          message.blocks.delete(key)
          this.stats.serveSkipped++
          this.stats.serveSkippedBytes += n
        },
        onSent: (key, n) => {
          message.blocks.delete(key)
          this.served(p, n, false)
          this.serveTime(p, key)
        },
        onFailed: (_key, n) => this.served(p, n, true)
      })
    } catch (err) {
      if (err.written === 0) return false
      throw err
    }
    return true
  }

  // serveTime records what a block served to p took from the arrival of
  // p's want to its write (stats.serveMs, the crowd test's figures).
  serveTime (p, key) {
    const k = `${p} ${key}`
    const t = this.wantAt.get(k)
    if (t == null) return
    this.wantAt.delete(k)
    keepLast(this.stats.serveMs, Math.round(performance.now() - t))
  }

  // preconnect dials up to maxDials of the holders a summary named, in the
  // background: a WebRTC connection through the relay takes a few hundred
  // ms, which the page's first fetch should not wait for.
  preconnect (holders) {
    const pick = [...holders].sort(() => Math.random() - 0.5).slice(0, this.cfg.maxDials)
    for (const p of pick) this.dialPeer(p).catch(() => {})
  }

  // --- the summary request ---

  // askSummary asks the seed what it and the peers it knows hold
  // (summary.js) and records the answer in the provider table.
  async askSummary (seed) {
    const t0 = performance.now()
    this.stats.summary.asked++
    try {
      const { ttl, groups } = await summaryWire.ask(this.libp2p, this.name, seed)
      const exp = Date.now() + Math.min(ttl, 3600) * 1000
      const me = this.libp2p.peerId.toString()
      for (const g of groups) {
        const p = g.peer ?? seed.toString()
        if (p === me) continue
        if (g.peer != null) {
          this.stats.summary.holders++
        }
        for (const r of g.roots) {
          const k = r.toString()
          if (!this.table.has(k)) this.table.set(k, new Map())
          const ps = this.table.get(k)
          ps.set(p, Math.max(ps.get(p) ?? 0, exp))
          this.stats.summary.roots++
        }
      }
      this.stats.summary.answered++
      this.stats.summary.ms = Math.round(performance.now() - t0)
      this.lan?.heard({ ttl, groups }, seed.toString()) // desktop apps' LAN addresses (lan.js)
      this.log(`summary: ${groups.length} holders in ${this.stats.summary.ms} ms`)
      this.emit('providers')
      this.preconnect(groups.filter((g) => g.peer != null && g.peer !== me).map((g) => g.peer))
    } catch (err) {
      this.stats.summary.error = err.message
      this.log(`summary: ${err.message}`)
    }
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
      if (m.kind === wire.DROP) {
        this.table.get(k)?.delete(p)
        this.fetchers.get(k)?.delete(p)
        continue
      }
      // HAVE and FETCH: a provider. FETCH: also fetching it (a stripe
      // member, stripe.js), until a HAVE, a DROP or its ttl ends it.
      const exp = Date.now() + Math.min(m.ttl, 3600) * 1000
      if (!this.table.has(k)) this.table.set(k, new Map())
      this.table.get(k).set(p, exp)
      if (m.kind === wire.FETCH) {
        if (!this.fetchers.has(k)) this.fetchers.set(k, new Map())
        this.fetchers.get(k).set(p, exp)
      } else {
        this.fetchers.get(k)?.delete(p)
      }
    }
    this.emit('providers')
  }

  sweep () {
    const now = Date.now()
    for (const t of [this.table, this.fetchers]) {
      for (const [k, ps] of t) {
        for (const [p, exp] of ps) if (exp <= now) ps.delete(p)
        if (ps.size === 0) t.delete(k)
      }
    }
  }

  // fetchersOf lists the peers that announced they are fetching root
  // (FETCH, version 2) and have not said HAVE or DROP of it since.
  fetchersOf (root) {
    const now = Date.now()
    return [...(this.fetchers.get(root.toString()) ?? new Map())].filter(([, exp]) => exp > now).map(([p]) => p)
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

  async publish (kind, roots, ttl = this.cfg.ttl) {
    if (roots.length === 0 || this.libp2p == null) return 0
    let recipients = 0
    for (const data of wire.encode(kind, ttl, roots)) {
      try {
        const res = await this.libp2p.services.pubsub.publish(this.topic, data)
        recipients = Math.max(recipients, res.recipients.length)
        this.stats.announce.sent++
        this.log(`announce: ${{ [wire.HAVE]: 'HAVE', [wire.DROP]: 'DROP', [wire.FETCH]: 'FETCH' }[kind]} of ${roots.length} roots to ${res.recipients.length} peers`)
      } catch (err) {
        this.log(`announce: ${err.message}`) // no peer yet: the summary on join repeats it
      }
    }
    return recipients
  }

  // summary announces what the page holds (HAVE) and what it is fetching
  // (FETCH): a tab that joins while others fetch learns of them as
  // fetchers, not only as providers from the seed's summary answer.
  summary () {
    this.publish(wire.FETCH, [...this.fetching].map((k) => CID.parse(k)), FETCHING_TTL)
    return this.publish(wire.HAVE, this.store.heldRoots())
  }

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

  // isTab reports whether p is a browser: this page reaches other tabs over
  // WebRTC (through a relay's signalling), Go nodes and Kubo over
  // WebTransport, WebRTC-direct or WebSockets.
  isTab (p) {
    return this.libp2p.getConnections().some((c) => c.remotePeer.toString() === p && /\/webrtc(\/|$)/.test(c.remoteAddr.toString()))
  }

  // connected reports a connection to p that can carry blocks (a relayed,
  // limited one only signals WebRTC).
  connected (p) { return this.libp2p.getConnections().some((c) => c.remotePeer.toString() === p && c.limits == null) }

  // dialPeer connects to a provider: directly if the peer store knows an
  // address, else through the seed's relay with WebRTC (browser peers).
  // Dials wait in dials (dials.js): at most maxDialing at once, one per
  // peer (a second call for a peer being dialled shares that dial).
  async dialPeer (p) {
    if (this.connected(p)) return true
    const t0 = performance.now()
    return this.dials.run(p, () => this.dialNow(p, t0))
  }

  // dialNow is dialPeer's dial, in its turn; t0 is when it was asked for.
  async dialNow (p, t0) {
    if (this.connected(p)) return true // it dialled this page meanwhile
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
      await this.dialGone(p)
      const t1 = performance.now()
      try {
        await this.libp2p.dial(a, { signal: AbortSignal.timeout(this.cfg.dialTimeout) })
        // What a dial through the relay takes (an EWMA, ms): how long a
        // striped fetch waits for a member or holder to connect.
        const ms = performance.now() - t0
        this.dialMs = this.dialMs == null ? ms : 0.7 * this.dialMs + 0.3 * ms
        this.stats.dials.ok++
        this.noteDial(p, t1, 'ok')
        return true
      } catch (err) {
        this.stats.dials.failed++
        const msg = `${err.name}: ${err.message}`.replace(/12D3Koo\w+/g, 'P').slice(0, 100)
        this.stats.dials.errors[msg] = (this.stats.dials.errors[msg] ?? 0) + 1
        this.noteDial(p, t1, msg)
        this.log(`dial ${a}: ${err.message}`)
      }
      if (this.connected(p)) return true
    }
    return this.connected(p)
  }

  // dialGone waits (up to a dial timeout, polling every 50 ms) until
  // libp2p's dial queue holds no dial to p: a dial to a peer still there
  // (one that timed out and is still being torn down) joins it and fails
  // with it, within milliseconds; most second attempts did so.
  async dialGone (p) {
    const until = performance.now() + this.cfg.dialTimeout
    while (performance.now() < until && this.libp2p.getDialQueue().some((d) => d.peerId?.toString() === p)) {
      await delay(50, new AbortController().signal)
    }
  }

  // noteDial keeps one dial attempt to p, begun at t1, in stats.dials.log.
  noteDial (p, t1, result) {
    const now = performance.now()
    const log = this.stats.dials.log
    log.push([p.slice(-6), Math.round(t1), Math.round(now - t1), result, this.connected(p)])
    if (log.length > 200) log.shift()
  }

  connections () {
    return this.libp2p.getConnections().map((c) => ({ peer: c.remotePeer.toString(), addr: c.remoteAddr.toString(), limited: c.limits != null, direction: c.direction }))
  }

  // --- content ---

  // loadManifest fetches a manifest (format version 1, see the Go manifest
  // package) and checks every inner node against its CID.
  async loadManifest (url) {
    let res
    try {
      res = await originFetch(url) // timeouts, Retry-After (origin.js)
    } catch (err) {
      throw new Error(`meshcdn: manifest ${url}: ${err.message}`, { cause: err })
    }
    const j = JSON.parse(new TextDecoder().decode(res.bytes))
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
  // race by the hedge rule of originGate), else from the origin at once. It
  // returns the bytes and the fetch's accounting.
  async fetchAsset (asset, { keepBytes = true } = {}) {
    asset = { ...asset, cid: typeof asset.cid === 'string' ? CID.parse(asset.cid) : asset.cid }
    const root = asset.cid
    const rec = { path: asset.path ?? null, cid: root.toString(), size: asset.size ?? null, peerBytes: 0, originBytes: 0, localBytes: 0, peers: {}, ms: 0, ttfbMs: null, leaves: 0, origin: 'none', originJoins: {} }
    const t0 = performance.now()
    let fetching = false
    let repeat = null
    this.store.active.add(root.toString())
    try {
      const provs = this.store.holds(root) ? [] : this.providers(root)
      const usePeers = await this.reachProviders(provs, asset.url != null)
      rec.providers = provs
      if (!usePeers && asset.url == null && !this.store.holds(root)) {
        throw new Error(`meshcdn: ${root}: ${provs.length === 0 ? 'no provider known' : 'no provider reachable'} and no origin URL`)
      }
      fetching = this.announceFetching(root, provs, asset)
      // A fetch announced (FETCH) is a member of the root's stripe: it
      // takes its own leaves from the origin and the others' from the
      // members (getLeavesStriped). It repeats the announcement while it
      // fetches, so that tabs joining meanwhile learn it is fetching.
      if (fetching) repeat = setInterval(() => this.publish(wire.FETCH, [root], FETCHING_TTL), this.cfg.fetchRepeat)
      const state = { t0, peerDelivered: false, lastPeer: 0, firstPeerAt: 0, peerBytes: 0, peerBlocks: 0, provs, blockWaiters: new Set(), root, striped: fetching, announcedAt: fetching ? performance.now() : null }
      state.firstPeer = new Promise((resolve) => { state.onPeer = () => { state.firstPeerAt ||= performance.now(); resolve() } })
      // Inner nodes the manifest does not carry come from peers; they are
      // not file bytes, so they are not counted.
      const peerBlock = async (c) => (await this.fromPeers(c, AbortSignal.timeout(30_000), provs)).bytes
      const { inner, leaves } = await this.leaves(asset, peerBlock)
      rec.leaves = leaves.length
      const parts = new Array(leaves.length)
      if (state.striped) await this.getLeavesStriped(leaves, asset, rec, state, parts)
      else await this.getLeaves(leaves, asset, usePeers, rec, state, parts)
      clearInterval(repeat)
      rec.striped = state.striped ? { members: state.stripe?.members.length ?? 0, maxMembers: state.maxMembers ?? 0 } : null
      const size = parts.reduce((n, p) => n + p.length, 0)
      if (asset.size != null && size !== asset.size) throw new Error(`meshcdn: ${root}: got ${size} bytes, the manifest says ${asset.size}`)
      rec.size = size
      rec.ms = Math.round(performance.now() - t0)
      rec.originLeafMs = this.originLeafMs == null ? null : Math.round(this.originLeafMs)
      rec.paceMs = Math.round(this.paceOf(provs) ?? 0) || null
      rec.origin = rec.originBytes > 0 ? (rec.peerBytes > 0 ? 'peers+origin' : 'origin') : (rec.peerBytes > 0 ? 'peers' : 'local')
      await this.kept() // every block of the file is in the store before its root is marked
      const wasHeld = this.store.holds(root)
      this.fetching.delete(root.toString())
      if (await this.store.markRoot(root, [...inner, ...leaves])) {
        if (!wasHeld) await this.publish(wire.HAVE, [root])
      }
      this.store.touch(root)
      this.stats.fetches.push(rec)
      this.emit('stats')
      fetching = false
      return { bytes: keepBytes ? concat(parts) : null, stats: rec }
    } finally {
      clearInterval(repeat)
      this.fetching.delete(root.toString())
      if (fetching) this.publish(wire.DROP, [root]) // told the mesh, and failed
      this.store.active.delete(root.toString())
    }
  }

  // announceFetching tells the mesh of a root this page starts to fetch
  // (a FETCH, version 2, ttl FETCHING_TTL, 120 s: Go nodes and other tabs
  // count the page in the root's stripe) when gate.js's announceFetch
  // says so: from the origin with no provider known, as the Go side's
  // AnnounceFetches does, or from tabs when the seed does not hold it.
  // Peers wanting it meanwhile ask this page, whose bitswap keeps their
  // wants and sends each block as it arrives (DONT_HAVE first, once), so
  // that a crowd shares what its tabs fetch while they fetch it, and the
  // fetch then takes its share of the stripe (getLeavesStriped). It
  // reports whether it did; the fetch sends DROP if it then fails.
  announceFetching (root, provs, asset) {
    const seed = this.seedConn?.remotePeer.toString() ?? null
    if (!announceFetch({ held: this.store.holds(root), provs, fetchers: this.fetchersOf(root), seed, canOrigin: asset.url != null })) return false
    this.fetching.add(root.toString())
    this.publish(wire.FETCH, [root], FETCHING_TTL)
    return true
  }

  // reachProviders connects to up to maxDials providers (those connected
  // first) and reports whether peers take part in the fetch. Dialling
  // counts against the peer timeout: a provider that has gone (a closed
  // tab) must not delay the origin. Without an origin it waits for the
  // dials; with one, peers still dialling stay in the race and the origin
  // joins by the hedge rule.
  async reachProviders (provs, canOrigin) {
    if (provs.length === 0) return false
    if (provs.some((p) => this.connected(p))) return true
    const pick = [...provs].sort(() => Math.random() - 0.5).slice(0, this.cfg.maxDials)
    const anyDial = new Promise((resolve) => {
      let left = pick.length
      for (const p of pick) {
        this.dialPeer(p).then((ok) => { if (ok) resolve(true); else if (--left === 0) resolve(false) })
      }
    })
    if (!canOrigin) return anyDial
    return Promise.race([anyDial, delay(this.cfg.peerTimeout, new AbortController().signal).then(() => true)])
  }

  // getLeaves fills parts with the fetch's leaves. Without peers the
  // origin takes them all, concurrency at once. With peers the leaves are
  // split, not raced, so that no byte is sent twice: peers take them from
  // the front (one at a time until a peer has delivered: the first block
  // decides), the origin from the back while its gate is open (originGate:
  // no first block within peerTimeout, peers stalled, or peers slower than
  // half the origin), originConcurrency at once. A leaf goes to both only
  // as a hedge: when the peer asked has not delivered it within
  // stallTimeout (or 3 times what a block takes from the slowest
  // provider, if longer), when no peer can be asked, or when nothing is left for
  // the origin and peers have not delivered a first block (a one-leaf
  // file).
  async getLeaves (leaves, asset, usePeers, rec, state, parts) {
    const q = { front: 0, back: leaves.length, inflight: new Map() } // i -> hedge()
    const take = async (i, how, why) => {
      if (why != null) {
        rec.originJoins[why] = (rec.originJoins[why] ?? 0) + 1
        this.noteJoin(rec, why, state, [...q.inflight.keys()].flatMap((j) => [...(this.askedFor.get(leaves[j].toString()) ?? [])]))
      }
      parts[i] = await this.leaf(leaves[i], i, asset, how, rec, state, q)
      if (i === 0) rec.ttfbMs ??= Math.round(performance.now() - state.t0)
    }
    const n = (k) => Array.from({ length: Math.min(k, leaves.length) }, (_, j) => j)
    if (!usePeers) {
      await Promise.all(n(this.cfg.concurrency).map(async () => { while (q.front < q.back) await take(q.front++, 'origin') }))
      return
    }
    const peerWorker = async (k) => {
      while (q.front < q.back) {
        // One leaf until a peer has delivered (the first block decides),
        // unless a provider has shown its pace to this page already.
        if (k > 0 && !state.peerDelivered && this.paceOf(state.provs) == null) { await Promise.race([state.firstPeer, delay(50, new AbortController().signal)]); continue }
        await take(q.front++, 'peers')
      }
    }
    const done = new AbortController()
    const originWorker = async () => {
      for (;;) {
        let why
        try { why = await this.originGate(state, q, done.signal) } catch { return }
        if (q.front < q.back) { await take(--q.back, 'origin', why); continue }
        // Nothing left to split: a leaf still waiting on peers that have
        // not delivered a first block gets the origin as well.
        // Not one a peer said is on its way (HAVE).
        if (!state.peerDelivered) {
          for (const [i, hedge] of q.inflight) if (!this.comingAt.has(leaves[i].toString()) && hedge('first')) break
        }
        return
      }
    }
    const origin = asset.url == null ? [] : n(this.cfg.originConcurrency).map(originWorker)
    await Promise.all(n(this.cfg.concurrency).map(peerWorker))
    done.abort()
    await Promise.all(origin)
  }

  // stripeOf is the stripe of a striped fetch now (stripe.js): the peers
  // announcing a fetch of its root, and this page once the others can
  // have heard of its own announcement (peerTimeout after it). Members new
  // to the fetch become its providers and are dialled.
  stripeOf (state, now) {
    const h = heard(state.announcedAt, now, this.cfg.peerTimeout)
    const me = this.libp2p.peerId.toString()
    const crowd = crowdOf(this.fetchersOf(state.root), me, this.cfg.maxMembers)
    const key = `${h.heard} ${[...crowd].sort().join(' ')}`
    if (state.stripe == null || state.stripeKey !== key) {
      state.stripe = new Stripe(state.root.bytes, me, crowd, h.heard)
      state.stripeKey = key
      state.maxMembers = Math.max(state.maxMembers ?? 0, state.stripe.members.length)
      for (const p of crowd) {
        if (state.provs.includes(p)) continue
        state.provs.push(p)
        this.dialPeer(p).catch(() => {})
      }
    }
    state.heardAt = h.heard ? state.announcedAt + this.cfg.peerTimeout : null
    return { stripe: state.stripe, at: h.at }
  }

  // getLeavesStriped fills parts with the leaves of a fetch this page
  // announced (FETCH), the Go fetch package's way: every leaf of a window
  // (stripeWindow from the first missing one) is asked of peers, the
  // owner first when another member owns it (its bitswap sends the block
  // when it has it), and the origin takes, in file order and
  // originConcurrency at once (concurrency when alone with nobody to ask),
  // the leaves stripe.js's rules give it: its own share of the stripe at
  // once, another member's when it is overdue, any when it is alone. The
  // first verified copy wins; the other request is cancelled. StripedFetch
  // (below) carries the rules out.
  async getLeavesStriped (leaves, asset, rec, state, parts) {
    await new StripedFetch(this, leaves, asset, rec, state, parts).run()
  }

  // local returns leaf c from the store (null if it is not there), counted
  // as local bytes of the fetch rec.
  local (c, rec) {
    const b = this.store.block(c)
    if (b != null) {
      rec.localBytes += b.length
      this.stats.localBytes += b.length
    }
    return b
  }

  // leaf gets one leaf: local, or from the source given ('peers' or
  // 'origin'). A leaf asked of peers is raced by the origin only as a hedge
  // (see getLeaves): then the first verified copy wins and is counted, the
  // other request is cancelled (a CANCEL on the wire to peers, an aborted
  // HTTP request to the origin), and a copy that still arrives is counted
  // as duplicate bytes.
  async leaf (c, i, asset, how, rec, state, q) {
    const local = this.local(c, rec)
    if (local != null) return local
    const canOrigin = asset.url != null
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
    let hedge = () => false
    const hedged = new Promise((resolve) => {
      hedge = (why) => {
        if (!canOrigin || q.inflight.get(i) !== hedge) return false
        q.inflight.delete(i)
        rec.originJoins[why] = (rec.originJoins[why] ?? 0) + 1
        this.noteJoin(rec, why, state, this.askedFor.get(c.toString()) ?? [])
        resolve()
        return true
      }
    })
    if (how === 'peers') {
      q.inflight.set(i, hedge)
      let sender = null
      const ctl = {}
      const fromPeers = this.fromPeers(c, peerAbort.signal, state.provs, () => { state.held = true }, null, () => {}, ctl)
      fromPeers.catch(() => { if (!won) hedge('peers failed') })
      racers.push(fromPeers
        .then((r) => {
          sender = r.sender
          state.peerDelivered = true
          state.lastPeer = performance.now()
          state.peerBytes += r.bytes.length
          state.peerBlocks++
          state.onPeer()
          for (const fn of [...state.blockWaiters]) fn()
          originAbort.abort()
          return r
        })
        .then(claim('peer', () => sender)))
      this.capLoop(c, rec, state, ctl, hedge, originAbort.signal)
    }
    if (canOrigin) {
      racers.push((how === 'origin' ? Promise.resolve() : hedged)
        .then(() => this.fromOrigin(c, i, asset, originAbort.signal))
        .then((r) => { peerAbort.abort('origin'); return r })
        .then(claim('origin', () => null)))
    }
    try {
      return await Promise.any(racers)
    } catch (err) {
      throw new Error(`meshcdn: leaf ${i} (${c}) of ${asset.cid}: ${err.errors?.map((e) => e.message).join('; ') ?? err.message}`)
    } finally {
      q.inflight.delete(i)
      peerAbort.abort()
      originAbort.abort()
    }
  }

  // capLoop gives leaf c, asked of peers, the origin as well (hedge('cap'))
  // when its peer has not delivered within capWindow, unless a peer asked
  // for it is still delivering to this page (gate.js, capHedges): then the
  // window is waited again, up to capMax in all. A leaf asked only of tabs
  // moves to a holder that serves this page first (capMove, through ctl,
  // fromPeers's control). The originGate's stall and slow rules still give
  // the origin other leaves when peers fall behind. signal ends the loop.
  capLoop (c, rec, state, ctl, hedge, signal) {
    const slowest = Math.max(this.peerBlockMs ?? 0, ...state.provs.map((p) => this.peerMs.get(p) ?? 0))
    const win = capWindow(this.cfg.stallTimeout, slowest)
    const asked = performance.now()
    const key = c.toString()
    const cap = () => delay(win, signal).then(() => {
      const askedOf = [...(this.askedFor.get(key) ?? [])]
      // A block said to be on its way (HAVE) counts as delivering.
      const lastBlocks = askedOf.map((p) => this.lastBlockFrom.get(p) ?? -Infinity)
      lastBlocks.push(this.comingAt.get(key) ?? -Infinity)
      if (!capHedges({ now: performance.now(), asked, win, capMax: this.cfg.capMax, lastBlocks })) return cap()
      const to = capMove({ asked: askedOf, coming: this.comingAt.has(key), serving: this.servingOf(state).by })
      if (to != null && ctl.move?.(to)) {
        this.noteJoin(rec, 'move', state, [to])
        return cap()
      }
      hedge('cap')
    }, () => {})
    cap()
  }

  // noteJoin notes an origin join of an unstriped fetch in rec.joins, for
  // the crowd test's figures: why, ms into the fetch, who had the wants
  // then (S the seed, T tabs), the pace and origin leaf time the gate saw,
  // and ms since the seed last sent this page a block.
  noteJoin (rec, why, state, asked) {
    const seed = this.seedConn?.remotePeer.toString()
    const who = [...new Set(asked)].map((p) => p === seed ? 'S' : 'T').sort().join('') || '-'
    const ms = (v) => v == null ? '-' : Math.round(v)
    const now = performance.now()
    rec.joins ??= []
    rec.joins.push(`${why}@${ms(now - state.t0)}${who} p${ms(this.paceOf(state.provs))} o${ms(this.originLeafMs)} s${ms(seed == null || !this.lastBlockFrom.has(seed) ? null : now - this.lastBlockFrom.get(seed))}`)
  }

  // originGate resolves, with the reason, when the origin may take a leaf
  // of a fetch that peers take part in, by the rules of gate.js's
  // originJoin (the Go fetch package's). It is asked again before every
  // leaf the origin takes, so the origin stops taking leaves when peers
  // keep up again. It rejects when signal aborts (the peers took the last
  // leaf).
  async originGate (state, q, signal) {
    for (;;) {
      signal.throwIfAborted()
      const now = performance.now()
      const { why, at } = originJoin({
        now,
        t0: state.t0,
        peerDelivered: state.peerDelivered,
        held: state.held === true,
        firstPeerAt: state.firstPeerAt,
        lastPeer: state.lastPeer,
        peerBlocks: state.peerBlocks,
        peerBytes: state.peerBytes,
        pace: this.paceOf(state.provs),
        typicalPace: state.provs.some((p) => this.connected(p)) ? this.peerBlockMs ?? null : null,
        originLeafMs: this.originLeafMs,
        peerTimeout: this.cfg.peerTimeout,
        concurrency: this.cfg.concurrency,
        leafBytes: CHUNK,
        servingAt: this.servingOf(state).at,
        stallTimeout: this.cfg.stallTimeout
      })
      if (why != null) return why
      let wake
      const block = new Promise((resolve) => { wake = resolve; state.blockWaiters.add(wake) })
      try {
        await Promise.race([delay(at - now, signal), block])
      } finally {
        state.blockWaiters.delete(wake)
      }
    }
  }

  // servingOf finds the holders of a fetch's root that serve this page:
  // connected providers not fetching the root themselves (the seed, in a
  // crowd) that have sent it a block or HAVE, for any fetch. It returns
  // the latest such time (at, or null) and, by, the holder fastest to
  // deliver to this page of those that did within stallTimeout (or null).
  servingOf (state) {
    const fetching = new Set(this.fetchersOf(state.root))
    const now = performance.now()
    let at = null
    let by = null
    for (const p of state.provs) {
      if (fetching.has(p) || !this.connected(p)) continue
      const t = Math.max(this.lastBlockFrom.get(p) ?? -Infinity, this.lastHaveFrom.get(p) ?? -Infinity)
      if (t === -Infinity) continue
      if (at == null || t > at) at = t
      if (now - t < this.cfg.stallTimeout && (by == null || (this.peerMs.get(p) ?? Infinity) < (this.peerMs.get(by) ?? Infinity))) by = p
    }
    return { at, by }
  }

  // paceOf is what a block has taken (EWMA, ms) from the fastest of the
  // connected providers that have delivered to this page, or null.
  paceOf (provs) {
    let best = null
    for (const p of provs) {
      const ms = this.peerMs.get(p)
      if (ms != null && (best == null || ms < best) && this.connected(p)) best = ms
    }
    return best
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

  // choosePeer picks the provider to ask for a block: a connected one (not
  // only through a relay) not asked yet, that would deliver it first: the
  // fewest (wants of this page in flight + 1) x (what a block has taken
  // from it, an EWMA; a peer not measured yet counts as the page's typical
  // peer, the EWMA over all of them, so that it gets tried once the
  // measured ones have wants in flight: counted as the fastest, as before,
  // every new holder drew the first wants of every fetch, and a tab slow on
  // WebRTC let the origin in), ties broken for the seed, else at random so
  // that a crowd spreads over holders (gate.js, pickPeer).
  choosePeer (provs, asked) {
    const ok = provs.filter((p) => !asked.has(p) && this.connected(p))
    return pickPeer({ ok, outstanding: this.outstanding, peerMs: this.peerMs, typical: this.peerBlockMs ?? 100, seed: this.seedConn?.remotePeer.toString() ?? null, rand: Math.random })
  }

  // fromPeers gets a block over bitswap from the providers, checked by its
  // multihash (below); sender is the peer that delivered it. One provider
  // is asked at a time (want-block); the next is asked when one answers
  // DONT_HAVE or a provider connects while none could be asked (providers
  // still being dialled are asked once connected).
  //
  // A HAVE from a peer asked means the block is on its way (a page serving
  // it says so as it starts to send it): comingAt notes when, for the
  // hedges, and onHave() tells the fetch. The want then ends at the other
  // peers asked that have not said HAVE (wants.js only), and no more are
  // asked unless those left are gone: a peer asked that got the block
  // meanwhile would send a copy in vain (in the 10-tab crowd, a third of
  // the WebRTC bytes that arrived unwanted came from peers asked that had
  // not begun to send when another's copy came, and as many again from
  // peers sending at the same time).
  //
  // prefer, a provider (a stripe member that owns the leaf), is asked
  // first when it is connected.
  //
  // ctl, if given, gets move(p): ask p and end the want at the others
  // asked (none of which said HAVE), for capMove; false if it cannot.
  async fromPeers (c, signal, provs, onHave = () => {}, prefer = null, onDontHave = () => {}, ctl = null) {
    const h = this.wants.want(c, {
      signal,
      onHave: (p) => {
        this.comingAt.set(c.toString(), performance.now())
        this.lastHaveFrom.set(p, performance.now())
        coming = true
        for (const q of h.only(p)) {
          mine.delete(q)
          this.outstanding.set(q, this.outstanding.get(q) - 1)
        }
        onHave()
      },
      // DONT_HAVE: ask the next provider too, unless a block is on its
      // way. The want stays where it is: a peer still fetching the content
      // (it announced it as it started) sends the block when it has it;
      // the hedge covers the others.
      onDontHave: (p) => { this.stats.dontHaves++; onDontHave(p); if (!coming) askNext() }
    })
    let coming = false
    const mine = new Set() // peers asked and counted in outstanding
    this.askedFor.set(c.toString(), h.asked)
    const askNext = () => {
      const p = prefer != null && !h.asked.has(prefer) && this.connected(prefer) ? prefer : this.choosePeer(provs, h.asked)
      if (p == null) return false
      mine.add(p)
      this.outstanding.set(p, (this.outstanding.get(p) ?? 0) + 1)
      h.ask([p])
      return true
    }
    if (ctl != null) {
      ctl.move = (p) => {
        if (coming || h.asked.has(p) || !this.connected(p)) return false
        mine.add(p)
        this.outstanding.set(p, (this.outstanding.get(p) ?? 0) + 1)
        h.ask([p])
        for (const q of h.only(p)) {
          mine.delete(q)
          this.outstanding.set(q, this.outstanding.get(q) - 1)
        }
        return true
      }
    }
    const onPeers = () => { if (h.asked.size === 0 || [...h.asked].every((p) => !this.connected(p))) askNext() }
    this.addEventListener('peers', onPeers)
    try {
      const asked = performance.now()
      askNext()
      const { bytes, sender } = await h.result
      this.lastBlockFrom.set(sender, performance.now())
      const ms = Math.round(performance.now() - asked)
      this.peerBlockMs = this.peerBlockMs == null ? ms : 0.8 * this.peerBlockMs + 0.2 * ms
      const prev = this.peerMs.get(sender)
      this.peerMs.set(sender, prev == null ? ms : 0.7 * prev + 0.3 * ms)
      keepLast(this.stats.peerBlockMs, ms) // from want-block to the block, for the crowd test's figures
      // No second hash here: Helia's bitswap hashed the bytes as they
      // arrived (with the hash function the sender's prefix names) and
      // made the block's CID from that digest, and the want took it only
      // because that multihash equals the wanted one (wants.js). Hashing
      // again cost every block another trip through crypto.subtle.
      this.keep(c, bytes) // stores it and tells bitswap: peers wanting it get it
      return { bytes, sender }
    } finally {
      this.removeEventListener('peers', onPeers)
      if (this.askedFor.get(c.toString()) === h.asked) this.askedFor.delete(c.toString())
      this.comingAt.delete(c.toString())
      h.cancel()
      for (const p of mine) this.outstanding.set(p, this.outstanding.get(p) - 1)
    }
  }

  // keep puts a fetched, verified block into the store (which also tells
  // bitswap, so that peers wanting it get it) without holding up the
  // fetch: Helia's blockstore put took 1.5-3 ms a block in Chromium, on
  // the path of every leaf and of the first byte. kept() waits for the
  // puts begun so far (fetchAsset, before it marks the root held); a
  // failed put fails that wait.
  keep (c, bytes) {
    const p = this.helia.blockstore.put(c, bytes)
    this.keeping.add(p)
    p.catch((err) => this.log(`store: ${c}: ${err.message}`)).finally(() => this.keeping.delete(p))
  }

  async kept () { await Promise.all([...this.keeping]) }

  async fromOrigin (c, i, asset, signal) {
    const start = i * CHUNK
    const headers = {}
    if (asset.cid.code !== RAW) headers.Range = `bytes=${start}-${start + CHUNK - 1}`
    const t = performance.now()
    // Timeouts on the headers and a trickling body, and 429/503 asked
    // again after Retry-After (origin.js): a browser's fetch has none.
    const res = await originFetch(asset.url, { headers, signal })
    let bytes = res.bytes
    if (res.status === 200 && asset.cid.code !== RAW) bytes = bytes.subarray(start, start + CHUNK) // Range ignored
    if (!await verify(c, bytes)) {
      this.stats.badBlocks++
      throw new Error(`origin bytes ${start}+${bytes.length} do not match leaf ${c}`)
    }
    signal.throwIfAborted()
    // What an origin leaf takes, for originGate's 'slow' rule (an EWMA).
    const ms = performance.now() - t
    this.originLeafMs = this.originLeafMs == null ? ms : 0.7 * this.originLeafMs + 0.3 * ms
    this.keep(c, bytes) // also tells bitswap: peers wanting it get it
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

// keepLast appends v to the sample list, which keeps the last 1000.
function keepLast (list, v) {
  list.push(v)
  if (list.length > 1000) list.shift()
}

function delay (ms, signal) {
  return new Promise((resolve, reject) => {
    if (ms <= 0) return resolve()
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason) }, { once: true })
  })
}

// StripedFetch is one striped fetch (Mesh.getLeavesStriped): a loop that
// looks at the fetch every 100 ms at most, or when a block, a provider or
// a peer comes, and carries out stripe.js's rules for each leaf of the
// window: ask it of peers (askOf), restart that want (reaskLeaf), ask the
// origin (originLeaf). Not safe for concurrent use: one fetch runs it.
class StripedFetch {
  constructor (mesh, leaves, asset, rec, state, parts) {
    this.m = mesh
    this.leaves = leaves
    this.asset = asset
    this.rec = rec
    this.state = state
    this.parts = parts
    this.canOrigin = asset.url != null
    // Per leaf: asked (first asked of peers), peerAt (last asked), capFrom,
    // the peer and origin requests' aborts, peerFailed, reasking, and the
    // peers that answered DONT_HAVE.
    this.L = leaves.map(() => ({ asked: null, capFrom: null, peer: null, origin: null, peerFailed: false, dontHave: new Set() }))
    state.connectedAt = new Map() // member -> when this fetch first saw it connected
    this.left = leaves.length
    this.originBusy = 0
    this.lastProgress = performance.now()
    this.failure = null
    this.wake = () => {}
    this.poke = () => this.wake()
  }

  async run () {
    const { m, state } = this
    m.addEventListener('providers', this.poke)
    m.addEventListener('peers', this.poke)
    try {
      while (this.left > 0) {
        const now = performance.now()
        if (this.failure != null && now - this.lastProgress > 5 * m.cfg.stallTimeout) throw this.failure
        const v = this.round(now)
        for (let i = v.lowest; i < v.end; i++) if (this.parts[i] == null) this.step(i, v)
        if (v.stall.stalled) for (const i of stallOrder(v.lowest, v.end)) if (this.parts[i] == null) this.stallLeaf(i, v)
        if (v.reasked) state.reaskAt = now + v.interval
        if (this.left === 0) break
        if (v.stall.at != null) v.next = Math.min(v.next, v.stall.at)
        if ((!this.canOrigin || state.originDead != null) && now - this.lastProgress > m.cfg.giveUp && this.originBusy === 0) {
          throw this.failure ?? new Error(`meshcdn: ${state.root}: no block from any source for ${m.cfg.giveUp} ms`)
        }
        const wait = Math.max(1, Math.min(v.next, now + 100) - now)
        await new Promise((resolve) => {
          const t = setTimeout(resolve, wait)
          this.wake = () => { clearTimeout(t); this.wake = () => {}; resolve() }
        })
        if (this.failure != null && state.provs.every((p) => !m.connected(p)) && this.left > 0) throw this.failure
      }
    } finally {
      m.removeEventListener('providers', this.poke)
      m.removeEventListener('peers', this.poke)
      for (const l of this.L) {
        l.peer?.abort()
        l.origin?.abort()
      }
    }
  }

  // round is what the fetch knows now, for this round's steps: the stripe,
  // the window, the holders, the clocks (stripe.js clocks), whether peers
  // have stalled, the leaf the page waits on; next collects when to look
  // again, reasked whether a want was asked again.
  round (now) {
    const { m, state } = this
    const { stripe, at: heardAt } = m.stripeOf(state, now)
    const lowest = this.parts.findIndex((p) => p == null)
    // A holder: a provider known not to be fetching the root (it may
    // still be being dialled).
    const fetchers = m.fetchersOf(state.root)
    const holders = new Set(state.provs.filter((p) => !stripe.has(p) && !fetchers.includes(p)))
    const leaf = m.originLeafMs ?? ASSUMED_LEAF_MS
    const slowestMs = Math.max(m.peerBlockMs ?? 0, ...state.provs.map((p) => m.peerMs.get(p) ?? 0))
    const c = clocks(m.cfg, { peerBlockMs: m.peerBlockMs, dialMs: m.dialMs, slowestMs })
    for (const p of stripe.members) if (!state.connectedAt.has(p) && m.connected(p)) state.connectedAt.set(p, now)
    const v = {
      ...c,
      now,
      stripe,
      lowest,
      end: Math.min(this.leaves.length, lowest + m.cfg.stripeWindow),
      holders,
      holder: holders.size > 0,
      holderUp: [...holders].some((p) => m.connected(p)),
      leaf,
      interval: Math.max(m.cfg.peerTimeout, leaf), // between re-asks
      limit: stripe.alone() && holders.size === 0 ? m.cfg.concurrency : m.cfg.originConcurrency,
      stall: stall({ now, since: Math.max(state.lastPeer, state.heardAt ?? state.t0), stallWin: c.stallWin, canOrigin: this.canOrigin }),
      next: heardAt ?? now + 100,
      reasked: false
    }
    v.held = (i) => this.held(i, holders)
    const own = ownLeft(stripe, lowest, this.leaves.length, (i) => this.parts[i] == null && !v.held(i))
    const w = waitOn({ leaf: state.waitLeaf, at: state.waitAt }, { own, alone: stripe.alone(), lowest, now })
    state.waitLeaf = w.leaf
    state.waitAt = w.at
    return v
  }

  // held reports whether leaf i is held: a peer said HAVE of it (its block
  // is on the way), or a connected holder of the root (its HAVE of the
  // root says it holds every block) was asked for it and did not say
  // DONT_HAVE: it is queued there.
  held (i, holders) {
    const { m } = this
    const k = this.leaves[i].toString()
    return m.comingAt.has(k) ||
      [...(m.askedFor.get(k) ?? [])].some((p) => holders.has(p) && !this.L[i].dontHave.has(p) && m.connected(p))
  }

  // step carries out the rules for leaf i, still missing, in round v: the
  // store, then peers (asked, or asked again), then the origin.
  step (i, v) {
    const { m, state } = this
    const l = this.L[i]
    const c = this.leaves[i]
    if (l.asked == null) {
      const local = m.local(c, this.rec)
      if (local != null) {
        this.parts[i] = local
        this.left--
        return
      }
      this.askPeers(i, v.stripe)
    }
    if (l.cancelled) return // the origin has it (askOrigin)
    const r = reaskLeaf({
      stripe: v.stripe,
      i,
      asking: l.peer != null,
      asked: m.askedFor.get(c.toString()) ?? new Set(),
      candidates: state.provs,
      dontHave: l.dontHave,
      holders: v.holders,
      held: v.held(i),
      coming: m.comingAt.has(c.toString()),
      connected: (p) => m.connected(p),
      isTab: (p) => m.isTab(p),
      peerAt: l.peerAt,
      reaskAt: state.reaskAt ?? 0,
      now: v.now,
      interval: v.interval
    })
    if (r.again != null) {
      l.reasking = true
      l.peer.abort(`reask ${r.again}`)
      if (r.again === 'stale') {
        l.dontHave.clear()
        v.reasked = true
      }
      this.askPeers(i, v.stripe)
    } else if (r.at != null) v.next = Math.min(v.next, r.at)
    const d = this.originRule(i, v, false)
    if (d == null) return
    if (d.capFrom != null) l.capFrom = d.capFrom
    if (d.why != null) this.askOrigin(i, d.why)
    else if (d.at != null) v.next = Math.min(v.next, d.at)
  }

  // stallLeaf asks the origin for leaf i, still missing, if the stall rule
  // lets it in (and no other rule has: step went first). A stalled fetch
  // offers the rule the window's leaves from the last (stripe.js
  // stallOrder).
  stallLeaf (i, v) {
    const d = this.originRule(i, v, true)
    if (d?.why === 'stall') this.askOrigin(i, d.why)
  }

  // originRule is stripe.js originLeaf's answer for leaf i in round v
  // (null: the origin is not asked now whatever the rules say: no origin,
  // it has the leaf, it failed, or it is busy); stalled says whether the
  // stall rule is in it.
  originRule (i, v, stalled) {
    const { m, state } = this
    const l = this.L[i]
    const c = this.leaves[i]
    if (!this.canOrigin || l.cancelled || l.origin != null || state.originDead != null || this.originBusy >= v.limit) return null
    const owner = v.stripe.owner(i)
    const k = c.toString()
    return originLeaf({
      ...v,
      i,
      asked: l.asked,
      capFrom: l.capFrom,
      ownerAt: owner === v.stripe.self ? null : state.connectedAt.get(owner),
      heardAt: state.heardAt,
      held: v.held(i),
      heldAt: m.comingAt.get(k) ?? null,
      ownerActive: Math.max(m.lastBlockFrom.get(owner) ?? -Infinity, m.lastHaveFrom.get(owner) ?? -Infinity) >= v.now - v.peerTime - v.leaf,
      waitSince: state.waitLeaf === i ? state.waitAt : null,
      rank: originRank(v.stripe, v.lowest, i, m.cfg.originConcurrency),
      stalled,
      capMax: m.cfg.capMax,
      lastBlocks: [...[...(m.askedFor.get(k) ?? [])].map((p) => m.lastBlockFrom.get(p) ?? -Infinity), m.comingAt.get(k) ?? -Infinity]
    })
  }

  // done takes leaf i's first verified copy and cancels the other request;
  // a later copy counts as duplicate bytes.
  done (i, bytes, source, sender) {
    const { m, rec, state } = this
    if (this.parts[i] != null) {
      m.stats.duplicateBytes += bytes.length
      return
    }
    this.parts[i] = bytes
    this.left--
    this.lastProgress = performance.now()
    m.count(rec, source, sender, bytes.length)
    if (i === 0) rec.ttfbMs ??= Math.round(performance.now() - state.t0)
    this.L[i].peer?.abort(source)
    this.L[i].origin?.abort()
    this.poke()
  }

  // askPeers asks peers for leaf i: its owner first when another member
  // owns it (askOf), then (on DONT_HAVE) the other providers one at a
  // time: a holder, or a member that took it as a backup, sends it.
  // (Asking only the owner and the holders gave more overdue leaves in
  // the 10-tab crowd.)
  askPeers (i, stripe) {
    const { m, state } = this
    const l = this.L[i]
    l.peer = new AbortController()
    l.asked ??= performance.now()
    l.peerAt = performance.now()
    m.fromPeers(this.leaves[i], l.peer.signal, state.provs, this.poke, askOf(stripe, i), (p) => l.dontHave.add(p))
      .then((r) => {
        state.peerDelivered = true
        state.lastPeer = performance.now()
        state.peerBytes += r.bytes.length
        state.peerBlocks++
        this.done(i, r.bytes, 'peer', r.sender)
      }, () => { l.peerFailed = this.parts[i] == null && !l.reasking && !l.cancelled; l.reasking = false; this.poke() })
  }

  // gaveUp notes, when the origin takes leaf i because peers were too
  // slow (why: overdue, stall, cap), what its want has stood at a
  // connected peer since it was last asked: the page's peer time is at
  // least that (stripe.js waitedPace).
  gaveUp (i, why) {
    const { m } = this
    const l = this.L[i]
    if (!/^(overdue|stall|cap)/.test(why) || l.peer == null || l.peer.signal.aborted || l.peerAt == null) return
    if (![...(m.askedFor.get(this.leaves[i].toString()) ?? [])].some((p) => m.connected(p))) return
    m.peerBlockMs = waitedPace(m.peerBlockMs, performance.now() - l.peerAt)
  }

  // askOrigin asks the origin for leaf i (why: the rule that let it in).
  // The want at the peers asked for it ends now unless one said HAVE
  // (stripe.js cancelOnOrigin); it is asked of them again if the origin
  // fails.
  askOrigin (i, why) {
    const { m, rec, state } = this
    const l = this.L[i]
    l.origin = new AbortController()
    this.originBusy++
    rec.originJoins[why] = (rec.originJoins[why] ?? 0) + 1
    this.gaveUp(i, why)
    if (cancelOnOrigin({ asking: l.peer != null && !l.peer.signal.aborted, coming: m.comingAt.has(this.leaves[i].toString()) })) {
      l.cancelled = true
      l.peer.abort(`origin ${why}`)
    }
    m.fromOrigin(this.leaves[i], i, this.asset, l.origin.signal)
      .then((r) => this.done(i, r.bytes, 'origin', null), (err) => {
        if (this.parts[i] == null && !l.origin.signal.aborted) {
          this.failure = err
          state.originDead = err
          if (l.cancelled) {
            l.cancelled = false
            this.askPeers(i, state.stripe)
          }
        }
      })
      .finally(() => { this.originBusy--; this.poke() })
  }
}
