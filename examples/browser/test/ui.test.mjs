// node --test: the page's UI helpers (src/ui.js).
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { coalesce, trimList } from '../src/ui.js'

test('coalesce runs fn once for the calls before its timer fires', () => {
  const timers = []
  let runs = 0
  const f = coalesce(() => { runs++ }, 250, (fn, ms) => timers.push({ fn, ms }))
  for (let k = 0; k < 50; k++) f() // 50 counter changes within 250 ms
  assert.equal(timers.length, 1)
  assert.equal(timers[0].ms, 250)
  assert.equal(runs, 0)
  timers[0].fn()
  assert.equal(runs, 1)
  f() // after the run: a new one is pending
  assert.equal(timers.length, 2)
  timers[1].fn()
  assert.equal(runs, 2)
})

test('trimList keeps the newest max lines', () => {
  const items = []
  const list = {
    get childElementCount () { return items.length },
    get lastElementChild () { const it = items[items.length - 1]; return { remove: () => items.pop(), it } }
  }
  for (let k = 0; k < 205; k++) { items.unshift(k); trimList(list, 200) } // prepend, as the log does
  assert.equal(items.length, 200)
  assert.equal(items[0], 204)
  assert.equal(items[199], 5)
})
