// node --test: the page's dial queue (src/dials.js).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { DialQueue } from '../src/dials.js'

// gate is a job that starts when run and ends when its test says so.
function gate (log, name) {
  let open
  const done = new Promise((resolve) => { open = resolve })
  const job = () => { log.push(`start ${name}`); return done.then((v) => { log.push(`end ${name}`); return v }) }
  return { job, open }
}

const tick = () => new Promise((resolve) => setImmediate(resolve))

test('at most limit dials at once, the others in the order asked', async () => {
  const log = []
  const q = new DialQueue({ limit: 2 })
  const g = ['a', 'b', 'c', 'd'].map((n) => gate(log, n))
  const ps = g.map((x, k) => q.run(`p${k}`, x.job))
  await tick()
  assert.deepEqual(log, ['start a', 'start b'])
  assert.equal(q.busy, 4)
  g[1].open(true)
  await tick()
  assert.deepEqual(log, ['start a', 'start b', 'end b', 'start c'])
  g[0].open(false)
  await tick()
  assert.deepEqual(log.slice(4), ['end a', 'start d'])
  g[2].open(true)
  g[3].open(true)
  assert.deepEqual(await Promise.all(ps), [false, true, true, true])
  assert.equal(q.busy, 0)
})

test('a dial asked for a peer already queued or under way is shared, not run again', async () => {
  const log = []
  const q = new DialQueue({ limit: 1 })
  const a = gate(log, 'a')
  const b = gate(log, 'b')
  const b2 = gate(log, 'b again')
  const pa = q.run('A', a.job)
  const pb = q.run('B', b.job)
  const pb2 = q.run('B', b2.job) // queued: shares B's
  assert.equal(pb2, pb)
  await tick()
  const pa2 = q.run('A', gate(log, 'a again').job) // under way: shares A's
  assert.equal(pa2, pa)
  a.open('a')
  b.open('b')
  assert.deepEqual(await Promise.all([pa, pa2, pb, pb2]), ['a', 'a', 'b', 'b'])
  assert.deepEqual(log, ['start a', 'end a', 'start b', 'end b'])
  // Once it has ended, the peer is dialled again when asked.
  const c = gate(log, 'b later')
  const pc = q.run('B', c.job)
  await tick()
  c.open('later')
  assert.equal(await pc, 'later')
})

test('a dial that fails frees its place; its callers get the error', async () => {
  const q = new DialQueue({ limit: 1 })
  const p1 = q.run('A', async () => { throw new Error('signal timed out') })
  const p2 = q.run('A', async () => 'not run')
  const p3 = q.run('B', async () => 'b')
  await assert.rejects(p1, /signal timed out/)
  await assert.rejects(p2, /signal timed out/)
  assert.equal(await p3, 'b')
})

// What a dial's timeout measures: a dial queued behind others starts its
// clock only when it starts (the caller's AbortSignal.timeout is made in
// the job). Queued dials are not all started at once.
test('a queued dial starts only when a place is free', async () => {
  const started = []
  const q = new DialQueue({ limit: 2 })
  const gs = []
  for (let k = 0; k < 8; k++) {
    const g = gate([], k)
    gs.push(g)
    q.run(`p${k}`, () => { started.push(k); return g.job() })
  }
  await tick()
  assert.deepEqual(started, [0, 1])
  for (const g of gs) g.open(true)
  for (let k = 0; k < 8; k++) await tick()
  assert.deepEqual(started, [0, 1, 2, 3, 4, 5, 6, 7])
})
