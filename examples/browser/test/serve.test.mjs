// node --test: how the page sends the blocks it serves (src/serve.js).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { base64 } from 'multiformats/bases/base64'
import { cidBytes, sendReply } from '../src/serve.js'

const blk = (n) => ({ prefix: Uint8Array.from([1, 0x55, 0x12, 0x20]), data: new Uint8Array(n) })

test('a block the peer cancelled is not sent, before or at its turn', async () => {
  const wanted = new Set(['a', 'b', 'c'])
  const written = []
  const log = []
  const res = await sendReply({ blocks: [['a', blk(1)], ['b', blk(2)], ['c', blk(3)]], presences: [{ cid: 'x', type: 1 }] }, {
    wanted: (k) => wanted.has(k),
    write: async (blocks, presences, atTurn) => {
      // The peer cancels b while a is written, and c while c waits for its turn.
      if (blocks[0]?.data.length === 1) wanted.delete('b')
      if (blocks[0]?.data.length === 3) wanted.delete('c')
      if (atTurn != null && !atTurn()) return false
      written.push([blocks.map((b) => b.data.length), presences.length])
      return true
    },
    onSent: (k, n) => log.push(`sent ${k} ${n}`),
    onSkipped: (k, n) => log.push(`skipped ${k} ${n}`)
  })
  assert.deepEqual(res, { sent: 1, skipped: 2 })
  assert.deepEqual(written, [[[1], 1]]) // the presences went with the first block
  assert.deepEqual(log, ['sent a 1', 'skipped b 2', 'skipped c 3'])
})

test('presences go alone when no block is sent', async () => {
  const written = []
  await sendReply({ blocks: [['a', blk(1)]], presences: [{ cid: 'x', type: 1 }] }, {
    wanted: () => false,
    write: async (blocks, presences) => { written.push([blocks.length, presences.length]); return true }
  })
  assert.deepEqual(written, [[0, 1]])
})

test('a failed first write says nothing was written; a later one counts the failure', async () => {
  const fail = async () => { throw new Error('reset') }
  await assert.rejects(sendReply({ blocks: [['a', blk(1)]] }, { write: fail }), (err) => err.written === 0)
  const failed = []
  let k = 0
  await assert.rejects(sendReply({ blocks: [['a', blk(1)], ['b', blk(2)]] }, {
    write: async () => { if (k++ > 0) throw new Error('reset'); return true },
    onFailed: (key, n) => failed.push(`${key} ${n}`)
  }), (err) => err.written === 1)
  assert.deepEqual(failed, ['b 2'])
})

test('each block is written with its CID, for the HAVE sent ahead of it', async () => {
  for (const codec of [0x55, 0x70]) {
    const c = CID.createV1(codec, await sha256.digest(Uint8Array.from([codec])))
    const key = base64.encode(c.multihash.bytes) // Helia's message key
    const prefix = Uint8Array.from([1, codec, 0x12, 0x20])
    assert.ok(CID.decode(cidBytes(key, prefix)).equals(c))
    let got
    await sendReply({ blocks: [[key, { prefix, data: new Uint8Array(3) }]] }, { write: async (_b, _p, _w, cid) => { got = cid; return true } })
    assert.ok(CID.decode(got).equals(c))
  }
})
