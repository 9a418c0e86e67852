// node --test: the wire format against the examples in announce/doc.go.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import * as wire from '../src/announce.js'

const hex = (s) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g).map((b) => parseInt(b, 16)))
const a = CID.parse('bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am')
const b = CID.parse('bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4')
const have = hex(`01 01 00b4 0002
  24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
  24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317`)
const drop = hex(`01 02 0000 0001
  24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03`)
const fetch = hex(`02 03 0078 0001
  24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317`)

test('encode gives the documented bytes', () => {
  assert.deepEqual(wire.encode(wire.HAVE, 180, [a, b, a]), [have])
  assert.equal(have.length, 80)
  assert.deepEqual(wire.encode(wire.DROP, 0, [a]), [drop])
  assert.equal(drop.length, 43)
  assert.deepEqual(wire.encode(wire.FETCH, 120, [b]), [fetch])
})

test('decode reads the documented bytes', () => {
  const h = wire.decode(have)
  assert.equal(h.kind, wire.HAVE)
  assert.equal(h.ttl, 180)
  assert.deepEqual(h.roots.map(String), [a.toString(), b.toString()])
  assert.deepEqual(wire.decode(drop).roots.map(String), [a.toString()])
  const f = wire.decode(fetch)
  assert.equal(f.kind, wire.FETCH)
  assert.equal(f.ttl, 120)
  assert.deepEqual(f.roots.map(String), [b.toString()])
})

test('decode rejects what the doc says to reject', () => {
  const bad = {
    trailing: new Uint8Array([...drop, 0]),
    truncated: drop.subarray(0, 20),
    count0: hex('01 01 00b4 0000'),
    kind: hex('01 03 0000 0001').slice(),
    haveTTL0: new Uint8Array([1, 1, 0, 0, ...drop.subarray(4)]),
    dropTTL: new Uint8Array([1, 2, 0, 1, ...drop.subarray(4)]),
    len0: hex('01 01 00b4 0001 00'),
    tooLong: new Uint8Array(16385).fill(1),
    // A kind in the other version (doc.go: reject).
    fetchInV1: new Uint8Array([1, 3, ...fetch.subarray(2)]),
    haveInV2: new Uint8Array([2, 1, ...have.subarray(2)]),
    dropInV2: new Uint8Array([2, 2, ...drop.subarray(2)]),
    fetchTTL0: new Uint8Array([2, 3, 0, 0, ...fetch.subarray(4)])
  }
  for (const [name, data] of Object.entries(bad)) {
    assert.throws(() => wire.decode(data), (err) => !(err instanceof wire.UnknownVersionError), name)
  }
  assert.throws(() => wire.decode(new Uint8Array([3, 1, 0, 1])), wire.UnknownVersionError)
  assert.throws(() => wire.decode(new Uint8Array([0, 1, 0, 1])), wire.UnknownVersionError)
})

test('long lists split at 442 roots', async () => {
  const { sha256 } = await import('multiformats/hashes/sha2')
  const roots = []
  for (let i = 0; i < 443; i++) roots.push(CID.createV1(0x55, await sha256.digest(new Uint8Array([i & 255, i >> 8]))))
  const msgs = wire.encode(wire.HAVE, 180, roots)
  assert.equal(msgs.length, 2)
  assert.equal(msgs[0].length, 6 + 442 * 37)
  assert.ok(msgs[0].length <= wire.MAX_MESSAGE_SIZE)
})
