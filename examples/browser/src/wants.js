// Wants: what this page asks of peers over bitswap, sent by the page itself
// instead of through @helia/bitswap's want list, which (4.0.19) broadcasts
// every want-block to every connected peer and never puts a cancel on the
// wire (its want-list.js skips cancel entries), so every peer asked sent
// the block even after another copy had arrived.
//
// Here a want-block goes only to the peers the caller names; when the want
// ends (the block arrived from anyone, the origin won, or the caller gave
// up) a CANCEL goes to every peer asked that has not delivered. Messages to
// one peer go in order on one long-lived /ipfs/bitswap/1.2.0 stream (a new
// stream per message may be read out of order by the receiver: a cancel
// overtaking its want leaves the want standing). The messages are plain
// bitswap 1.2.0 protobuf (Go's boxo, Kubo and Helia read them); blocks and
// presences still arrive through Helia's bitswap, whose want list emits a
// 'block' event for every block received and 'presence' for HAVE and
// DONT_HAVE, which is what this listens to.
export const BITSWAP_120 = '/ipfs/bitswap/1.2.0'
export const WANT_BLOCK = 0
export const WANT_HAVE = 1

// encodeWantlist encodes a bitswap Message holding only a wantlist:
// entries [{cid, cancel?, wantType?, sendDontHave?}], priority 1.
//
//	Message { Wantlist wantlist = 1 }
//	Wantlist { repeated Entry entries = 1; bool full = 2 }
//	Entry { bytes block = 1; int32 priority = 2; bool cancel = 3;
//	        WantType wantType = 4; bool sendDontHave = 5 }
export function encodeWantlist (entries, full = false) {
  const list = []
  for (const e of entries) {
    const ent = [...field(1, 2), ...varint(e.cid.bytes.length), ...e.cid.bytes, ...field(2, 0), 1]
    if (e.cancel) ent.push(...field(3, 0), 1)
    if (!e.cancel && e.wantType === WANT_HAVE) ent.push(...field(4, 0), 1)
    if (!e.cancel && e.sendDontHave) ent.push(...field(5, 0), 1)
    list.push(...field(1, 2), ...varint(ent.length), ...ent)
  }
  if (full) list.push(...field(2, 0), 1)
  return Uint8Array.from([...field(1, 2), ...varint(list.length), ...list])
}

function field (n, wire) { return varint((n << 3) | wire) }

// encodeReply encodes a bitswap Message holding blocks and block presences
// (what a peer that was asked sends back): blocks [{prefix, data}],
// presences [{cid (bytes), type ('HaveBlock', 'DoNotHaveBlock' or 0, 1)}].
// Blocks are copied into one buffer once (a 1 MiB block through an array
// of numbers, as encodeWantlist does, would cost milliseconds).
//
//	Message { repeated Block payload = 3; repeated BlockPresence blockPresences = 4 }
//	Block { bytes prefix = 1; bytes data = 2 }
//	BlockPresence { bytes cid = 1; BlockPresenceType type = 2 } // Have = 0, DontHave = 1
export function encodeReply ({ blocks = [], presences = [] }) {
  const parts = []
  for (const b of blocks) {
    const inner = [...field(1, 2), ...varint(b.prefix.length), ...b.prefix, ...field(2, 2), ...varint(b.data.length)]
    parts.push(Uint8Array.from([...field(3, 2), ...varint(inner.length + b.data.length), ...inner]), b.data)
  }
  for (const p of presences) {
    const dont = p.type === 1 || p.type === 'DoNotHaveBlock'
    const inner = [...field(1, 2), ...varint(p.cid.length), ...p.cid, ...(dont ? [...field(2, 0), 1] : [])]
    parts.push(Uint8Array.from([...field(4, 2), ...varint(inner.length), ...inner]))
  }
  return join(parts)
}

// frame prefixes a message with its length (a varint), as bitswap streams
// carry them.
export function frame (msg) { return join([Uint8Array.from(varint(msg.length)), msg]) }

function join (parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let off = 0
  for (const p of parts) { out.set(p, off); off += p.length }
  return out
}

export function varint (n) {
  const out = []
  while (n >= 0x80) { out.push((n % 0x80) | 0x80); n = Math.floor(n / 0x80) }
  out.push(n)
  return out
}

const key = (c) => c.multihash.bytes.join(',') // bitswap keys blocks by multihash

export class Wants {
  // bitswap is @helia/bitswap's Bitswap (its wantList emits what arrives);
  // libp2p the node. onCount(what, peer, n = 1) counts wantBlocks,
  // wantHaves, cancels, messages, replies (reply messages written),
  // blockSendMs (n: what a block's turn took, from its write to its data
  // channel holding at most lowWater of it), sendErrors,
  // duplicateBytes (blocks that arrived when nobody here wanted them any
  // more), duplicateCause (the same bytes again, with a fourth
  // argument: why, see duplicateCause) and cancelMs (n: what a CANCEL
  // waited, from the want's end to its write: behind the message being
  // written to that peer, a block maybe).
  //
  // A stream idle for idleMs (default 8 s) is closed and a new one opened
  // for the next message: a Helia receiver aborts a bitswap stream that
  // brought no message for 10 s (its messageReceiveTimeout), and a block
  // written just as it does would be lost. now is the clock (ms; tests
  // pass their own).
  //
  // Blocks this page serves go out one at a time across all peers
  // (uploadSlots, default 1), in the order their turns came: a block's turn
  // ends once its data channel has sent all but lowWater bytes (default
  // 256 KiB) of it, or after drainMs (default 5 s). Handed to the data
  // channel at once, as before, every block asked of a tab went into the
  // channels' buffers within milliseconds of its want (10-17 ms median in
  // the crowd test), so a tab serving several tabs sent them all at once,
  // each at a share of its upload, and a CANCEL came too late to stop any
  // of them. In turn, a block still waiting is checked (wanted) when its
  // turn comes and not sent if the peer has cancelled it. Wants and
  // presences never wait for a turn: they go before a block waiting.
  constructor ({ bitswap, libp2p, onCount = () => {}, log = () => {}, idleMs = 8000, now = () => performance.now(), uploadSlots = 1, lowWater = 256 << 10, drainMs = 5000 }) {
    this.uploadSlots = uploadSlots
    this.lowWater = lowWater
    this.drainMs = drainMs
    this.slotsUsed = 0
    this.slotWaiters = [] // [{p, q}] in the order they asked for a turn
    this.bitswap = bitswap
    this.libp2p = libp2p
    this.idleMs = idleMs
    this.now = now
    this.onCount = onCount
    this.log = log
    this.active = new Map() // key -> {cid, asked: Set(peer), done}
    this.queues = new Map() // peer -> {pending: Map(key -> entry), busy, stream}
    this.waiters = new Map() // key -> Set(fn(detail))
    this.presence = new Map() // key -> Set(fn(detail))
    this.ended = new Map() // key -> {why, asked, haves}: wants ended lately (duplicateCause)
    this.onBlock = (e) => {
      // A block nobody here waits for was sent in vain: a duplicate.
      if (this.dispatch(this.waiters, e.detail)) return
      const p = e.detail.sender.toString()
      const n = e.detail.block.length
      this.onCount('duplicateBytes', p, n)
      this.onCount('duplicateCause', p, n, this.duplicateCause(key(e.detail.cid), p))
    }
    this.onPresence = (e) => { if (e.detail.block == null) this.dispatch(this.presence, e.detail) }
    bitswap.wantList.addEventListener('block', this.onBlock)
    bitswap.wantList.addEventListener('presence', this.onPresence)
  }

  stop () {
    this.bitswap.wantList.removeEventListener('block', this.onBlock)
    this.bitswap.wantList.removeEventListener('presence', this.onPresence)
    for (const q of this.queues.values()) q.stream?.abort(new Error('stopped'))
    this.queues.clear()
  }

  dispatch (map, detail) {
    const fns = map.get(key(detail.cid))
    if (fns == null) return false
    for (const fn of [...fns]) fn(detail)
    return true
  }

  // duplicateCause says why a block with key k came from p when nobody
  // here wanted it any more: 'not asked' (p was not asked for it by a want
  // lately ended), or why its want ended ('block': another copy came;
  // 'origin', 'reask', ...: the signal's reason; 'cancel') and whether p
  // had said HAVE of it by then ('sending': its send was under way, which
  // no CANCEL stops) or not ('cancel late': it started before the CANCEL
  // reached it; 'cancel late after DONT_HAVE' if it had said it lacked
  // the block: it got it later).
  duplicateCause (k, p) {
    const e = this.ended.get(k)
    if (e == null || !e.asked.has(p)) return 'not asked'
    return `${e.why}, ${e.haves.has(p) ? 'sending' : e.dontHaves.has(p) ? 'cancel late after DONT_HAVE' : 'cancel late'}`
  }

  // isWanted reports whether a block is still wanted here (a block arriving
  // that is not was sent in vain: a duplicate).
  isWanted (c) { return this.active.has(key(c)) }

  // get asks peers (peer ID strings) for block c with want-block and
  // resolves with {bytes, sender} from the first that sends it. ask(peers)
  // on the returned handle adds peers later (a peer hedge); the want ends
  // (CANCEL to those asked that have not delivered) when it resolves, when
  // signal aborts, or on cancel(). onDontHave(peer) hears DONT_HAVE,
  // onHave(peer) HAVE from a peer asked (a page serving the block says
  // HAVE as it starts to send it: it is on its way).
  want (c, { signal, onDontHave, onHave } = {}) {
    const k = key(c)
    if (this.active.has(k)) throw new Error(`wants: ${c} is already wanted`)
    // asked: the peers the want stands at; all: every peer asked; haves,
    // dontHaves: those that said HAVE, DONT_HAVE.
    const w = { cid: c, asked: new Set(), all: new Set(), haves: new Set(), dontHaves: new Set(), sender: null, done: false }
    this.active.set(k, w)
    let resolve, reject
    w.result = new Promise((res, rej) => { resolve = res; reject = rej })
    const onBlock = (d) => {
      if (w.done) return
      w.sender = d.sender.toString()
      finish('block')
      resolve({ bytes: d.block, sender: w.sender })
    }
    const onPres = (d) => {
      const p = d.sender.toString()
      if (w.all.has(p)) (d.has ? w.haves : w.dontHaves).add(p)
      if (!w.asked.has(p)) return
      if (d.has) onHave?.(p)
      else onDontHave?.(p)
    }
    const finish = (why) => {
      if (w.done) return
      w.done = true
      this.active.delete(k)
      this.ended.delete(k)
      this.ended.set(k, { why, asked: w.all, haves: w.haves, dontHaves: w.dontHaves })
      if (this.ended.size > 4096) this.ended.delete(this.ended.keys().next().value)
      this.waiters.get(k)?.delete(onBlock)
      if (this.waiters.get(k)?.size === 0) this.waiters.delete(k)
      this.presence.get(k)?.delete(onPres)
      if (this.presence.get(k)?.size === 0) this.presence.delete(k)
      signal?.removeEventListener('abort', onAbort)
      for (const p of w.asked) if (p !== w.sender) this.enqueue(p, { cid: c, cancel: true })
    }
    const onAbort = () => { finish(typeof signal.reason === 'string' ? signal.reason : 'abort'); reject(signal.reason ?? new Error('want aborted')) }
    if (!this.waiters.has(k)) this.waiters.set(k, new Set())
    this.waiters.get(k).add(onBlock)
    if (!this.presence.has(k)) this.presence.set(k, new Set())
    this.presence.get(k).add(onPres)
    if (signal?.aborted) onAbort()
    else signal?.addEventListener('abort', onAbort, { once: true })
    return {
      result: w.result,
      asked: w.asked,
      ask: (peers) => {
        if (w.done) return
        for (const p of peers) {
          if (w.asked.has(p)) continue
          w.asked.add(p)
          w.all.add(p)
          this.enqueue(p, { cid: c, wantType: WANT_BLOCK, sendDontHave: true })
        }
      },
      // only ends the want at every peer it stands at but p and those that
      // said HAVE: a CANCEL goes to each (nothing, if the want had not gone
      // out yet), and ask may ask them again. For when p said HAVE: its
      // block is on its way (a page says so as it starts to send it), and
      // another peer that gets the block meanwhile would send a copy in
      // vain.
      // It returns the peers it ended the want at.
      only: (p) => {
        const out = []
        if (w.done) return out
        for (const q of [...w.asked]) {
          if (q === p || w.haves.has(q)) continue
          w.asked.delete(q)
          out.push(q)
          this.enqueue(q, { cid: c, cancel: true })
        }
        return out
      },
      cancel: () => { if (!w.done) { finish('cancel'); reject(new Error('want cancelled')) } }
    }
  }

  // enqueue adds an entry to a peer's next message. A cancel of a want not
  // yet sent removes the want instead: nothing goes on the wire.
  enqueue (p, entry) {
    if (entry.cancel) entry.at = this.now()
    const q = this.queue(p)
    const k = key(entry.cid)
    const prev = q.pending.get(k)
    if (entry.cancel && prev != null && !prev.cancel) q.pending.delete(k)
    else q.pending.set(k, entry)
    if (!q.busy) this.flush(p, q)
  }

  queue (p) {
    let q = this.queues.get(p)
    if (q == null) { q = { pending: new Map(), replies: [], busy: false, stream: null }; this.queues.set(p, q) }
    return q
  }

  // reply sends a message of blocks and presences (encodeReply) to p on
  // the same long-lived stream as this page's wants, instead of on a new
  // stream per message as @helia/bitswap's network does: over WebRTC every
  // new stream is a new data channel, whose opening costs a round trip and
  // the receiver's setup, on the path of every block a tab serves. It
  // resolves once the message is written, and rejects when it could not be
  // (no direct connection to p, or the stream failed twice): the caller
  // may then send it another way. Wants waiting for p go first.
  //
  // A reply carrying a block (block: true) waits for its turn among the
  // blocks sent to all peers (see the constructor); when its turn comes,
  // wanted() (if given) says whether p still wants it, and if not it is
  // not written and the promise resolves false; else true once written.
  //
  // have, if given, is a message (a HAVE presence of the block) written
  // just before the block when its turn comes: it reaches p at once, the
  // block after it (hundreds of ms over WebRTC in a crowd), so p knows
  // that the block is on its way and does not ask the origin for it.
  reply (p, msg, { block = false, wanted, have } = {}) {
    const q = this.queue(p)
    const done = new Promise((resolve, reject) => q.replies.push({ frame: frame(msg), block, wanted, have: have == null ? null : frame(have), resolve, reject }))
    if (!q.busy) this.flush(p, q)
    return done
  }

  // turn asks for a block's turn for p's queue; it reports whether q has
  // it now (else flush is called again when it comes).
  turn (p, q) {
    if (q.hasTurn) return true
    if (!q.waitingTurn) {
      q.waitingTurn = true
      this.slotWaiters.push({ p, q })
      this.grant()
    }
    return q.hasTurn === true
  }

  grant () {
    while (this.slotsUsed < this.uploadSlots && this.slotWaiters.length > 0) {
      const { p, q } = this.slotWaiters.shift()
      q.waitingTurn = false
      q.hasTurn = true
      this.slotsUsed++
      if (!q.busy) this.flush(p, q)
    }
  }

  release (q) {
    if (!q.hasTurn) return
    q.hasTurn = false
    this.slotsUsed--
    this.grant()
  }

  // drained resolves once st's data channel (WebRTC) holds at most
  // lowWater bytes not yet sent, or after drainMs; at once for streams
  // without one (their send backpressure is all there is).
  async drained (st) {
    const ch = st?.channel
    if (ch == null || typeof ch.bufferedAmount !== 'number' || ch.bufferedAmount <= this.lowWater) return
    if (!(ch.bufferedAmountLowThreshold >= this.lowWater)) ch.bufferedAmountLowThreshold = this.lowWater
    await new Promise((resolve) => {
      const done = () => {
        clearTimeout(t)
        ch.removeEventListener('bufferedamountlow', done)
        ch.removeEventListener('close', done)
        resolve()
      }
      const t = setTimeout(done, this.drainMs)
      ch.addEventListener('bufferedamountlow', done)
      ch.addEventListener('close', done)
      if (ch.bufferedAmount <= this.lowWater) done()
    })
  }

  async flush (p, q) {
    q.busy = true
    try {
      await Promise.resolve() // gather what this turn of the event loop adds
      while (q.pending.size > 0 || q.replies.length > 0) {
        if (q.pending.size > 0) {
          const entries = [...q.pending.values()]
          q.pending.clear()
          await this.send(p, q, entries)
          continue
        }
        // A block waits for its turn (flush runs again when it comes);
        // presences behind it go meanwhile.
        let at = 0
        if (q.replies[0].block && !this.turn(p, q)) {
          at = q.replies.findIndex((r) => !r.block)
          if (at < 0) break
        }
        const [r] = q.replies.splice(at, 1)
        try {
          if (r.wanted != null && !r.wanted()) {
            r.resolve(false)
            continue
          }
          const t = this.now()
          if (r.have != null) await this.write(p, q, r.have)
          await this.write(p, q, r.frame)
          if (r.block) {
            await this.drained(q.stream)
            this.onCount('blockSendMs', p, this.now() - t)
          }
          this.onCount('replies', p)
          r.resolve(true)
        } catch (err) {
          r.reject(err)
        } finally {
          if (r.block) this.release(q)
        }
      }
    } finally {
      q.busy = false
    }
  }

  // warm opens the stream to p ahead of the first want (a protocol
  // negotiation less on the first block's path).
  warm (p) {
    const q = this.queue(p)
    if (q.busy) return
    q.busy = true
    this.open(p, q).catch((err) => this.log(`wants: to ${p}: ${err.message}`)).finally(() => {
      q.busy = false
      if (q.pending.size > 0 || q.replies.length > 0) this.flush(p, q)
    })
  }

  async open (p, q) {
    if (q.stream != null && this.now() - q.lastWrite > this.idleMs) {
      const old = q.stream
      q.stream = null
      old.close().catch((err) => old.abort(err)) // what was written still arrives
    }
    if (q.stream != null && q.stream.status === 'open' && q.stream.writeStatus === 'writable') return
    const conn = this.libp2p.getConnections().find((c) => c.remotePeer.toString() === p && c.limits == null && c.status === 'open')
    if (conn == null) throw new Error('not connected (or only through a relay)')
    const st = await conn.newStream(BITSWAP_120, { signal: AbortSignal.timeout(5000) })
    st.addEventListener('close', () => { if (q.stream === st) q.stream = null })
    st.closeRead().catch(() => {}) // nothing comes back on it: answers come on the peer's streams
    q.stream = st
    q.lastWrite = this.now()
  }

  async send (p, q, entries) {
    try {
      await this.write(p, q, frame(encodeWantlist(entries)))
    } catch (err) {
      this.onCount('sendErrors', p)
      this.log(`wants: to ${p}: ${err.message}`)
      return
    }
    for (const e of entries) {
      this.onCount(e.cancel ? 'cancels' : e.wantType === WANT_HAVE ? 'wantHaves' : 'wantBlocks', p)
      if (e.cancel) this.onCount('cancelMs', p, this.now() - e.at)
    }
    this.onCount('messages', p)
  }

  // write puts one framed message on p's stream, opening it if need be; a
  // stream that fails is dropped and the write tried once more on a new
  // one.
  async write (p, q, bytes) {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.open(p, q)
        q.lastWrite = this.now()
        if (!q.stream.send(bytes)) await q.stream.onDrain({ signal: AbortSignal.timeout(10_000) })
        q.lastWrite = this.now()
        return
      } catch (err) {
        q.stream?.abort(err)
        q.stream = null
        if (attempt === 1) throw err
      }
    }
  }
}
