// node --test: the summary request's answer against the example in
// announce/doc.go ("Summary request, version 1").
import { test } from 'node:test'
import assert from 'node:assert/strict'
import * as summary from '../src/summary.js'
import { answer, hex } from './fixtures.mjs'


test('the request is the documented two bytes', () => {
  assert.deepEqual(summary.request(), Uint8Array.of(1, 1))
  assert.equal(summary.protocol('office'), '/meshcdn/office/summary/1')
})

test('decode reads the documented answer', () => {
  assert.equal(answer.length, 133)
  const { ttl, groups } = summary.decode(answer)
  assert.equal(ttl, 180)
  assert.equal(groups.length, 2)
  assert.equal(groups[0].peer, null)
  assert.deepEqual(groups[0].roots.map(String), ['bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am'])
  assert.equal(groups[1].peer, '12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp')
  assert.deepEqual(groups[1].addrs, [hex('047f000001060fa1')]) // /ip4/127.0.0.1/tcp/4001
  assert.deepEqual(groups[1].roots.map(String), ['bafybeihcldjer7njjrrxknqh67cestxa7s7jf4nhnp62y6k4twcbahvtc4'])
  assert.deepEqual(summary.decode(hex('01 00b4')).groups, []) // holds nothing
})

test('decode drops what the doc says to drop', () => {
  const other = answer.subarray(34) // the other holder's group alone
  const bad = {
    version: new Uint8Array([2, ...answer.subarray(1)]),
    ttl0: new Uint8Array([1, 0, 0, ...answer.subarray(3)]),
    truncated: answer.subarray(0, 120),
    trailing: new Uint8Array([...answer, 0]),
    ownNotFirst: new Uint8Array([1, 0, 0xb4, ...other, ...answer.subarray(3, 34)]),
    twice: new Uint8Array([...answer, ...other]),
    zeroRoots: hex('01 00b4 00 00 0000'),
    badPeer: new Uint8Array([1, 0, 0xb4, 3, 0xff, 0xff, 0xff, 0, 0, 1, ...answer.subarray(8, 45)]),
    cidLen0: hex('01 00b4 00 00 0001 00'),
    ownAddrs: hex('01 00b4 00 01 0001 01 0001'),
    tooLong: new Uint8Array(summary.MAX_SIZE + 1)
  }
  for (const [name, data] of Object.entries(bad)) assert.throws(() => summary.decode(data), Error, name)
})
