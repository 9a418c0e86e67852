// node --test: the page's own want sender. The wire bytes are checked with
// @helia/bitswap's protobuf codec (what Helia peers decode; Go's boxo reads
// the same schema); the sending rules with a stand-in for libp2p that keeps
// what each peer was sent, and Helia's want list's events.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { BitswapMessage as Message, BlockPresenceType, WantType } from '../node_modules/@helia/bitswap/dist/src/pb/message.js'
import { Wants, encodeWantlist, encodeReply, WANT_BLOCK, WANT_HAVE } from '../src/wants.js'

const cidOf = async (s) => CID.createV1(0x55, await sha256.digest(new TextEncoder().encode(s)))

test('encodeWantlist writes what Helia decodes', async () => {
  const a = await cidOf('a')
  const b = await cidOf('b')
  const c = await cidOf('c')
  const m = Message.decode(encodeWantlist([
    { cid: a, wantType: WANT_BLOCK, sendDontHave: true },
    { cid: b, cancel: true },
    { cid: c, wantType: WANT_HAVE }
  ]))
  const e = m.wantlist.entries
  assert.equal(e.length, 3)
  assert.deepEqual(CID.decode(e[0].cid).toString(), a.toString())
  assert.equal(e[0].wantType ?? WantType.WantBlock, WantType.WantBlock) // proto3: 0 is not written
  assert.equal(e[0].sendDontHave, true)
  assert.equal(e[0].cancel ?? false, false)
  assert.equal(e[1].cancel, true)
  assert.deepEqual(CID.decode(e[1].cid).toString(), b.toString())
  assert.equal(e[2].wantType, WantType.WantHave)
  assert.equal(m.wantlist.full ?? false, false)
  assert.equal(Message.decode(encodeWantlist([], true)).wantlist.full, true)
})

// fakeNet is libp2p as Wants uses it: connections whose streams record the
// length-prefixed messages written on them.
//
// With channels, each stream has a data channel as @libp2p/webrtc's have
// (channel.bufferedAmount grows by what is sent; drain(p) empties it and
// fires bufferedamountlow), kept in channels by peer.
function fakeNet (peers, { channels = false } = {}) {
  const sent = new Map(peers.map((p) => [p, []]))
  const chans = new Map()
  let streams = 0
  const conn = (p) => ({
    remotePeer: { toString: () => p },
    limits: null,
    status: 'open',
    newStream: async () => {
      streams++
      const st = new EventTarget()
      Object.assign(st, {
        status: 'open',
        writeStatus: 'writable',
        closeRead: async () => {},
        close: async () => { st.status = 'closed' },
        abort () { this.status = 'aborted' },
        send (frame) {
          let n = 0; let shift = 0; let i = 0
          for (; ; i++) { n += (frame[i] & 0x7f) * 2 ** shift; shift += 7; if (frame[i] < 0x80) break }
          assert.equal(frame.length, i + 1 + n)
          sent.get(p).push(Message.decode(frame.subarray(i + 1)))
          if (st.channel != null) st.channel.bufferedAmount += frame.length
          return true
        }
      })
      if (channels) {
        st.channel = Object.assign(new EventTarget(), { bufferedAmount: 0, bufferedAmountLowThreshold: 0 })
        chans.set(p, st.channel)
      }
      return st
    }
  })
  const drain = (p) => {
    const ch = chans.get(p)
    ch.bufferedAmount = 0
    ch.dispatchEvent(new Event('bufferedamountlow'))
  }
  return { sent, streams: () => streams, drain, libp2p: { getConnections: () => peers.map(conn) } }
}

const entries = (msgs) => msgs.flatMap((m) => m.wantlist.entries.map((e) => `${e.cancel ? 'cancel' : e.wantType === WantType.WantHave ? 'have' : 'block'} ${CID.decode(e.cid)}`))
const tick = () => new Promise((resolve) => setTimeout(resolve, 10))

test('want-block only to the peers asked; CANCEL to those that did not deliver', async () => {
  const { sent, libp2p } = fakeNet(['P1', 'P2', 'P3'])
  const wantList = new EventTarget()
  const counts = {}
  const cancelMs = []
  let clock = 0
  const w = new Wants({
    bitswap: { wantList },
    libp2p,
    now: () => clock,
    onCount: (what, _p, n = 1) => {
      if (what === 'cancelMs') cancelMs.push(n)
      else counts[what] = (counts[what] ?? 0) + n
    }
  })
  const c = await cidOf('leaf')
  const h = w.want(c)
  h.ask(['P1'])
  await tick()
  h.ask(['P2'])
  await tick()
  assert.deepEqual(entries(sent.get('P1')), [`block ${c}`])
  assert.deepEqual(entries(sent.get('P2')), [`block ${c}`])
  assert.deepEqual(entries(sent.get('P3')), [])
  const block = new Uint8Array([1, 2, 3])
  wantList.dispatchEvent(new CustomEvent('block', { detail: { cid: c, sender: { toString: () => 'P2' }, block } }))
  const r = await h.result
  assert.equal(r.sender, 'P2')
  assert.deepEqual(r.bytes, block)
  await tick()
  assert.deepEqual(entries(sent.get('P1')), [`block ${c}`, `cancel ${c}`])
  assert.deepEqual(entries(sent.get('P2')), [`block ${c}`]) // it delivered: its want is gone
  // P1's copy, sent before the cancel reached it, is counted as waste.
  wantList.dispatchEvent(new CustomEvent('block', { detail: { cid: c, sender: { toString: () => 'P1' }, block } }))
  assert.deepEqual(counts, { wantBlocks: 2, cancels: 1, messages: 3, duplicateBytes: 3, duplicateCause: 3 })
  assert.deepEqual(cancelMs, [0]) // written at once: nothing else was going to P1
  w.stop()
})

test('a duplicate is counted with why its want ended', async () => {
  const { libp2p } = fakeNet(['P1', 'P2', 'P3'])
  const wantList = new EventTarget()
  const causes = []
  const w = new Wants({ bitswap: { wantList }, libp2p, onCount: (what, p, n, cause) => { if (what === 'duplicateCause') causes.push(`${p} ${n} ${cause}`) } })
  const peer = (id) => ({ toString: () => id })
  const block = (c, id) => wantList.dispatchEvent(new CustomEvent('block', { detail: { cid: c, sender: peer(id), block: new Uint8Array(5) } }))
  const have = (c, id) => wantList.dispatchEvent(new CustomEvent('presence', { detail: { cid: c, sender: peer(id), has: true } }))
  // P1 said HAVE (its send was under way), P2 did not; P3 delivered.
  const c = await cidOf('raced')
  const h = w.want(c)
  h.ask(['P1', 'P2', 'P3'])
  have(c, 'P1')
  block(c, 'P3')
  await h.result
  block(c, 'P1')
  block(c, 'P2')
  // P3 said DONT_HAVE, then got the block and sent it as the origin won.
  const f = await cidOf('lacked')
  const ac0 = new AbortController()
  const g0 = w.want(f, { signal: ac0.signal })
  g0.ask(['P3'])
  wantList.dispatchEvent(new CustomEvent('presence', { detail: { cid: f, sender: peer('P3'), has: false } }))
  ac0.abort('origin')
  await assert.rejects(g0.result)
  block(f, 'P3')
  // The origin won: the want was aborted with that reason.
  const d = await cidOf('origin won')
  const ac = new AbortController()
  const g = w.want(d, { signal: ac.signal })
  g.ask(['P1'])
  ac.abort('origin')
  await assert.rejects(g.result)
  block(d, 'P1')
  block(d, 'P2') // never asked
  const e = await cidOf('never wanted')
  block(e, 'P3')
  assert.deepEqual(causes, ['P1 5 block, sending', 'P2 5 block, cancel late', 'P3 5 origin, cancel late after DONT_HAVE', 'P1 5 origin, cancel late', 'P2 5 not asked', 'P3 5 not asked'])
  w.stop()
})

test('only: a HAVE ends the want at the peers that did not say HAVE', async () => {
  const { sent, libp2p } = fakeNet(['P1', 'P2', 'P3', 'P4'])
  const wantList = new EventTarget()
  const w = new Wants({ bitswap: { wantList }, libp2p })
  const peer = (id) => ({ toString: () => id })
  const c = await cidOf('coming')
  const h = w.want(c)
  h.ask(['P1', 'P2', 'P3'])
  await tick()
  wantList.dispatchEvent(new CustomEvent('presence', { detail: { cid: c, sender: peer('P2'), has: true } }))
  h.ask(['P4']) // not gone out yet when only comes: nothing goes to P4
  assert.deepEqual(h.only('P1').sort(), ['P3', 'P4'])
  await tick()
  assert.deepEqual(entries(sent.get('P1')), [`block ${c}`])
  assert.deepEqual(entries(sent.get('P2')), [`block ${c}`]) // it is sending: a CANCEL would not stop it
  assert.deepEqual(entries(sent.get('P3')), [`block ${c}`, `cancel ${c}`])
  assert.deepEqual(entries(sent.get('P4')), [])
  assert.deepEqual([...h.asked].sort(), ['P1', 'P2'])
  h.ask(['P3']) // asked again (the HAVE's sender went away)
  await tick()
  assert.deepEqual(entries(sent.get('P3')), [`block ${c}`, `cancel ${c}`, `block ${c}`])
  h.cancel()
  await assert.rejects(h.result)
  assert.deepEqual(h.only('P1'), [])
  w.stop()
})

test('an abort sends CANCEL; a want cancelled before it went out sends nothing', async () => {
  const { sent, libp2p } = fakeNet(['P1'])
  const wantList = new EventTarget()
  const w = new Wants({ bitswap: { wantList }, libp2p })
  const c = await cidOf('x')
  const d = await cidOf('y')
  const ac = new AbortController()
  const h = w.want(c, { signal: ac.signal })
  h.ask(['P1'])
  await tick()
  ac.abort()
  await assert.rejects(h.result)
  const h2 = w.want(d)
  h2.ask(['P1'])
  h2.cancel() // same turn: the want never left
  await assert.rejects(h2.result)
  await tick()
  assert.deepEqual(entries(sent.get('P1')), [`block ${c}`, `cancel ${c}`])
  assert.equal(w.isWanted(c), false)
  w.stop()
})

test('encodeReply writes blocks and presences Helia decodes', async () => {
  const a = await cidOf('a')
  const b = await cidOf('b')
  const data = new Uint8Array(3 << 20).map((_, i) => i % 251)
  const prefix = Uint8Array.from([1, 0x55, 0x12, 0x20])
  const m = Message.decode(encodeReply({
    blocks: [{ prefix, data }],
    presences: [{ cid: a.bytes, type: BlockPresenceType.DoNotHaveBlock }, { cid: b.bytes, type: BlockPresenceType.HaveBlock }]
  }))
  assert.equal(m.blocks.length, 1)
  assert.deepEqual(m.blocks[0].prefix, prefix)
  assert.deepEqual(m.blocks[0].data, data)
  assert.equal(m.blockPresences.length, 2)
  assert.equal(CID.decode(m.blockPresences[0].cid).toString(), a.toString())
  assert.equal(m.blockPresences[0].type, BlockPresenceType.DoNotHaveBlock)
  assert.equal(CID.decode(m.blockPresences[1].cid).toString(), b.toString())
  assert.equal(m.blockPresences[1].type ?? BlockPresenceType.HaveBlock, BlockPresenceType.HaveBlock)
  assert.equal(m.wantlist, undefined)
})

test('replies and wants to a peer share one stream, in order', async () => {
  const net = fakeNet(['P1'])
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p })
  const c = await cidOf('x')
  const data = Uint8Array.from([1, 2, 3])
  await w.reply('P1', encodeReply({ blocks: [{ prefix: Uint8Array.from([1, 0x55, 0x12, 0x20]), data }] }))
  w.want(c).ask(['P1'])
  await tick()
  await w.reply('P1', encodeReply({ blocks: [{ prefix: Uint8Array.from([1, 0x55, 0x12, 0x20]), data }] }))
  const msgs = net.sent.get('P1')
  assert.equal(msgs.length, 3)
  assert.deepEqual(msgs[0].blocks[0].data, data)
  assert.deepEqual(entries([msgs[1]]), [`block ${c}`])
  assert.deepEqual(msgs[2].blocks[0].data, data)
  assert.equal(net.streams(), 1)
  await assert.rejects(w.reply('P9', encodeReply({ blocks: [] })), /not connected/)
})

test('a stream idle for idleMs is replaced before the next message', async () => {
  const net = fakeNet(['P1'])
  let t = 0
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p, idleMs: 8000, now: () => t })
  const msg = encodeReply({ blocks: [{ prefix: Uint8Array.from([1, 0x55, 0x12, 0x20]), data: Uint8Array.from([7]) }] })
  await w.reply('P1', msg)
  t += 7000
  await w.reply('P1', msg)
  assert.equal(net.streams(), 1) // written 7 s after the last write: the same stream
  t += 8001
  await w.reply('P1', msg)
  assert.equal(net.streams(), 2) // idle for more than 8 s: a new one
  assert.equal(net.sent.get('P1').length, 3)
})

const block = (n) => encodeReply({ blocks: [{ prefix: Uint8Array.from([1, 0x55, 0x12, 0x20]), data: new Uint8Array(n).fill(n % 251) }] })

test('blocks go out one at a time across peers; one cancelled while it waited is not sent', async () => {
  const net = fakeNet(['P1', 'P2', 'P3'], { channels: true })
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p, lowWater: 1000 })
  let p2Wants = true
  const r1 = w.reply('P1', block(5000), { block: true, wanted: () => true })
  const r2 = w.reply('P2', block(5001), { block: true, wanted: () => p2Wants })
  const r3 = w.reply('P3', block(5002), { block: true, wanted: () => true })
  await tick()
  // P1's block is in its data channel, more than lowWater of it unsent:
  // its turn goes on, the others wait.
  assert.equal(net.sent.get('P1').length, 1)
  assert.equal(net.sent.get('P2').length, 0)
  assert.equal(net.sent.get('P3').length, 0)
  p2Wants = false // P2's CANCEL came while its block waited
  net.drain('P1')
  assert.equal(await r1, true)
  assert.equal(await r2, false)
  await tick()
  assert.equal(net.sent.get('P2').length, 0)
  assert.equal(net.sent.get('P3').length, 1)
  net.drain('P3')
  assert.equal(await r3, true)
})

test('wants and presences do not wait for a block\'s turn', async () => {
  const net = fakeNet(['P1', 'P2'], { channels: true })
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p, lowWater: 1000 })
  const r1 = w.reply('P1', block(5000), { block: true })
  const r2 = w.reply('P2', block(5001), { block: true })
  await tick()
  assert.equal(net.sent.get('P2').length, 0) // its block waits for P1's turn
  const c = await cidOf('y')
  w.want(c).ask(['P2'])
  const dontHave = w.reply('P2', encodeReply({ presences: [{ cid: c.bytes, type: 'DoNotHaveBlock' }] }))
  await tick()
  // The want and the presence went out before P2's block.
  await dontHave
  assert.equal(net.sent.get('P2').length, 2)
  assert.deepEqual(entries([net.sent.get('P2')[0]]), [`block ${c}`])
  assert.equal(net.sent.get('P2')[1].blockPresences.length, 1)
  net.drain('P1')
  assert.equal(await r1, true)
  assert.equal(await r2, true)
  assert.equal(net.sent.get('P2').length, 3)
  assert.equal(net.sent.get('P2')[2].blocks.length, 1)
})

test('a turn ends after drainMs when the channel never drains', async () => {
  const net = fakeNet(['P1', 'P2'], { channels: true })
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p, lowWater: 1000, drainMs: 30 })
  const r1 = w.reply('P1', block(5000), { block: true })
  const r2 = w.reply('P2', block(5001), { block: true })
  assert.equal(await r1, true)
  assert.equal(await r2, true)
  assert.equal(net.sent.get('P2').length, 1)
})

test('a HAVE goes just ahead of its block when the block\'s turn comes, not before; none for a block skipped', async () => {
  const net = fakeNet(['P1', 'P2'], { channels: true })
  const w = new Wants({ bitswap: { wantList: new EventTarget() }, libp2p: net.libp2p, lowWater: 1000 })
  const c = await cidOf('z')
  const have = encodeReply({ presences: [{ cid: c.bytes, type: 'HaveBlock' }] })
  const r1 = w.reply('P1', block(5000), { block: true })
  const r2 = w.reply('P2', block(5001), { block: true, have })
  const r3 = w.reply('P2', block(5002), { block: true, have, wanted: () => false })
  await tick()
  assert.equal(net.sent.get('P2').length, 0) // not while P1's block has the turn
  net.drain('P1')
  await r1
  await r2
  assert.equal(await r3, false)
  const m = net.sent.get('P2')
  assert.equal(m.length, 2)
  assert.equal(m[0].blockPresences[0].type, BlockPresenceType.HaveBlock)
  assert.deepEqual(CID.decode(m[0].blockPresences[0].cid).toString(), c.toString())
  assert.equal(m[1].blocks.length, 1)
})

test('want: HAVE from a peer asked is heard (onHave), DONT_HAVE as before', async () => {
  const { libp2p } = fakeNet(['P1', 'P2'])
  const wantList = new EventTarget()
  const w = new Wants({ bitswap: { wantList }, libp2p })
  const c = await cidOf('h')
  const heard = []
  const h = w.want(c, { onHave: (p) => heard.push(`have ${p}`), onDontHave: (p) => heard.push(`dont ${p}`) })
  h.ask(['P1'])
  const pres = (p, has) => wantList.dispatchEvent(Object.assign(new Event('presence'), { detail: { cid: c, sender: { toString: () => p }, has } }))
  pres('P1', true)
  pres('P2', true) // not asked: not heard
  pres('P1', false)
  assert.deepEqual(heard, ['have P1', 'dont P1'])
  h.cancel()
  await h.result.catch(() => {})
})
