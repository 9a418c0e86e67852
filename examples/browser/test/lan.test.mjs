// node --test: what the page learns from its seed and what it may dial
// (src/lan.js), against announce/doc.go's summary example.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { base64url } from 'multiformats/bases/base64'
import { sha256 } from 'multiformats/hashes/sha2'
import { CID } from 'multiformats/cid'
import { multiaddr } from '@multiformats/multiaddr'
import { Lan, localAddr } from '../src/lan.js'
import { answer } from './fixtures.mjs'

const rawRoot = 'bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am'
const pbRoot = 'bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4'
const other = '12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp'
const hash = base64url.encode((await sha256.digest(new Uint8Array([1]))).bytes)
const hash2 = base64url.encode((await sha256.digest(new Uint8Array([2]))).bytes)

test('localAddr accepts only private or loopback WebRTC-direct and WebTransport with certhash', () => {
  const cases = [
    [`/ip4/10.1.2.3/udp/4002/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip4/192.168.1.20/udp/51000/quic-v1/webtransport/certhash/${hash}/certhash/${hash2}`, 'webtransport'],
    [`/ip4/172.16.0.1/udp/1/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip4/172.31.255.1/udp/1/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip4/127.0.0.1/udp/1/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip6/fd12::5/udp/1/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip6/::1/udp/1/webrtc-direct/certhash/${hash}`, 'webrtc-direct'],
    [`/ip4/172.32.0.1/udp/1/webrtc-direct/certhash/${hash}`, null], // public
    [`/ip4/192.169.0.1/udp/1/webrtc-direct/certhash/${hash}`, null],
    [`/ip4/8.8.8.8/udp/1/webrtc-direct/certhash/${hash}`, null],
    [`/ip6/2001:db8::1/udp/1/webrtc-direct/certhash/${hash}`, null],
    ['/ip4/10.1.2.3/udp/4002/webrtc-direct', null], // no certhash
    ['/ip4/10.1.2.3/udp/4002/quic-v1/webtransport', null],
    ['/ip4/10.1.2.3/tcp/4001', null],
    ['/ip4/10.1.2.3/udp/4001/quic-v1', null],
    ['/ip4/10.1.2.3/tcp/4003/ws', null],
    [`/dns4/printer.local/udp/1/webrtc-direct/certhash/${hash}`, null],
    [`/ip4/10.1.2.3/udp/4002/webrtc-direct/certhash/${hash}/p2p/${other}/p2p-circuit`, null]
  ]
  for (const [a, want] of cases) assert.equal(localAddr(a), want, a)
})

// fakeMesh is the part of the client Lan uses; dial records what is dialled.
function fakeMesh () {
  const dialled = []
  return {
    name: 'm',
    table: new Map(),
    emit () {},
    seedConn: null,
    libp2p: {
      peerId: { toString: () => 'me' },
      dial: async (a) => { dialled.push(a.toString()); return { remoteAddr: a, limits: null } }
    },
    dialled
  }
}

const root = CID.parse(rawRoot)
const lanA = `/ip4/10.0.0.5/udp/4100/webrtc-direct/certhash/${hash}`
const lanAwt = `/ip4/10.0.0.5/udp/4101/quic-v1/webtransport/certhash/${hash}/certhash/${hash2}`
const seedAnswer = (addrsA) => ({
  ttl: 180,
  groups: [
    { peer: null, addrs: [], roots: [root] },
    { peer: 'A', addrs: addrsA, roots: [root] },
    { peer: 'B', addrs: [`/ip4/203.0.113.7/udp/1/webrtc-direct/certhash/${hash}`, '/ip4/10.0.0.6/tcp/4001'], roots: [root] }
  ]
})

test('learn records holders and only their dialable LAN addresses; dial uses exactly those', async () => {
  const m = fakeMesh()
  const lan = new Lan(m)
  const loop = `/ip4/127.0.0.1/udp/4100/webrtc-direct/certhash/${hash}`
  lan.learn(seedAnswer([loop, lanAwt, '/ip4/10.0.0.5/tcp/4001', lanA]), 'seed')
  assert.deepEqual([...m.table.get(rawRoot).keys()].sort(), ['A', 'B', 'seed'])
  assert.deepEqual(lan.candidates('A'), [lanA, lanAwt, loop]) // LAN first, WebRTC-direct first
  const wt = new Lan(fakeMesh(), { prefer: 'webtransport' })
  wt.learn(seedAnswer([loop, lanAwt, '/ip4/10.0.0.5/tcp/4001', lanA]), 'seed')
  assert.deepEqual(wt.candidates('A'), [lanAwt, lanA, loop]) // LAN first, WebTransport first
  assert.deepEqual(lan.candidates('B'), []) // public or not browser-dialable
  assert.deepEqual(lan.candidates('C'), []) // never listed
  assert.equal(await lan.dial('A'), true)
  assert.deepEqual(m.dialled, [`${lanA}/p2p/A`])
  assert.equal(await lan.dial('B'), false)
  assert.equal(await lan.dial('C'), false) // no seed connection: nothing to ask, nothing dialled
  assert.deepEqual(m.dialled, [`${lanA}/p2p/A`])
  assert.deepEqual(lan.stats.dials.map((d) => [d.peer, d.ok]), [['A', true]])
})

test('turned off, the page neither learns addresses nor dials', async () => {
  const m = fakeMesh()
  const lan = new Lan(m, false)
  lan.learn(seedAnswer([lanA]), 'seed')
  assert.deepEqual(lan.candidates('A'), [])
  assert.equal(await lan.dial('A'), false)
  assert.equal(await lan.refresh(), false)
  assert.deepEqual(m.dialled, [])
})

test('a relayed or limited connection does not count as direct', async () => {
  const m = fakeMesh()
  m.libp2p.dial = async (a) => ({ remoteAddr: a, limits: { bytes: 1 } })
  const lan = new Lan(m)
  lan.learn(seedAnswer([lanA]), 'seed')
  assert.equal(await lan.dial('A'), false)
})

test('refresh asks the seed once, shares the request, and never waits', async () => {
  const m = fakeMesh()
  let asks = 0
  m.seedConn = { remotePeer: { toString: () => 'seed' } }
  m.libp2p.dialProtocol = async (peer, proto) => {
    asks++
    assert.equal(peer, m.seedConn.remotePeer)
    assert.equal(proto, '/meshcdn/m/summary/1')
    const sent = []
    return {
      send: (b) => { sent.push(...b); return true },
      close: async () => assert.deepEqual(sent, [1, 1]), // version 1, others too
      abort () {},
      async * [Symbol.asyncIterator] () { yield answer.subarray(0, 50); yield answer.subarray(50) }
    }
  }
  const lan = new Lan(m)
  const [a, b] = await Promise.all([lan.refresh(), lan.refresh()])
  assert.equal(a, true)
  assert.equal(b, true)
  assert.equal(asks, 1)
  assert.deepEqual([...m.table.get(rawRoot).keys()], ['seed']) // the seed's own root
  assert.deepEqual([...m.table.get(pbRoot).keys()], [other])
  assert.deepEqual(lan.candidates(other), []) // its one address is plain TCP
  const t0 = Date.now()
  assert.equal(await lan.dial('unknown'), false) // asked a moment ago: no new request, no wait
  assert.ok(Date.now() - t0 < 100)
  assert.equal(asks, 1)
  assert.deepEqual(m.dialled, [])
})

test('after a failed LAN dial the next one asks the seed again', async () => {
  const m = fakeMesh()
  m.libp2p.dial = async (a) => { m.dialled.push(a.toString()); throw new Error('unreachable') }
  let asks = 0
  m.seedConn = { remotePeer: { toString: () => 'seed' } }
  m.libp2p.dialProtocol = async () => { asks++; throw new Error('no stream') }
  const lan = new Lan(m)
  lan.learn(seedAnswer([lanA]), 'seed')
  lan.lastAsk = 0
  assert.equal(await lan.dial('A'), false) // fresh entry: no request, one dial
  assert.equal(asks, 0)
  assert.equal(await lan.dial('A'), false) // marked stale: asks first
  assert.equal(asks, 1)
  assert.deepEqual(m.dialled, [`${lanA}/p2p/A`, `${lanA}/p2p/A`])
})

test('heard: the page\'s own summary answer gives the addresses, and no request of lan.js follows', async () => {
  const m = fakeMesh()
  let asks = 0
  m.seedConn = { remotePeer: { toString: () => 'seed' } }
  m.libp2p.dialProtocol = async () => { asks++; throw new Error('no stream') }
  const lan = new Lan(m)
  const bin = (a) => multiaddr(a).bytes
  // As summary.js decodes an answer: binary addresses, one of them garbage.
  lan.heard({ ttl: 180, groups: [{ peer: null, addrs: [], roots: [root] }, { peer: 'A', addrs: [bin(lanA), Uint8Array.of(0xff, 0xff), bin('/ip4/10.0.0.5/tcp/4001')], roots: [root] }] }, 'seed')
  assert.deepEqual(lan.candidates('A'), [lanA])
  assert.deepEqual([...m.table.get(rawRoot).keys()].sort(), ['A', 'seed'])
  assert.equal(await lan.dial('A'), true)
  assert.equal(await lan.dial('B'), false) // unknown, but the seed was just asked: no request
  assert.equal(asks, 0)
  assert.equal(lan.stats.asked, 0)
  assert.deepEqual(m.dialled, [`${lanA}/p2p/A`])
  const off = new Lan(fakeMesh(), false)
  off.heard({ ttl: 180, groups: [{ peer: 'A', addrs: [bin(lanA)], roots: [root] }] }, 'seed')
  assert.deepEqual(off.candidates('A'), [])
})

test('concurrent dials of one peer share one', async () => {
  const m = fakeMesh()
  let release
  const gate = new Promise((resolve) => { release = resolve })
  m.libp2p.dial = async (a) => { m.dialled.push(a.toString()); await gate; return { remoteAddr: a, limits: null } }
  const lan = new Lan(m)
  lan.learn(seedAnswer([lanA]), 'seed')
  const both = Promise.all([lan.dial('A'), lan.dial('A')])
  release()
  assert.deepEqual(await both, [true, true])
  assert.deepEqual(m.dialled, [`${lanA}/p2p/A`])
  assert.equal(await lan.dial('A'), true) // a later dial is a new one
  assert.equal(m.dialled.length, 2)
})
