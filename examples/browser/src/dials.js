// Dials: how many WebRTC dials through the relay a page has under way at
// once. Each is an ICE, DTLS and SCTP handshake on both tabs' main
// threads; a page that joined a crowd dialled every member of its stripe
// at once (8 in the 10-tab crowd, and every other tab dialled it too), and
// on a busy machine all of them overran the 5 s dial timeout together
// ("signal timed out", 7-9 s as the timers fired late), so that the page
// reached nobody for 10-15 s and took what they held from the origin.
// Queued, a dial's timeout starts when it starts, and most finish within
// it.

// DialQueue runs dial jobs, at most limit at once (default 2), in the
// order asked. A job asked for a key whose job is queued or under way
// is not run again: the caller gets that job's promise. Not safe to share
// between pages; one Mesh owns one.
export class DialQueue {
  constructor ({ limit = 2 } = {}) {
    this.limit = limit
    this.running = 0
    this.waiting = [] // [{job, resolve, reject}] in the order asked
    this.pending = new Map() // key -> the promise of its job
  }

  // run runs job() (which returns a promise) once a place is free and
  // returns its promise; for a key already queued or under way, that
  // job's promise.
  run (key, job) {
    const had = this.pending.get(key)
    if (had != null) return had
    const p = new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject })
    }).finally(() => { this.pending.delete(key) })
    this.pending.set(key, p)
    this.next()
    return p
  }

  // busy is the number of jobs under way and queued.
  get busy () { return this.running + this.waiting.length }

  next () {
    while (this.running < this.limit && this.waiting.length > 0) {
      const w = this.waiting.shift()
      this.running++
      Promise.resolve()
        .then(w.job)
        .then(w.resolve, w.reject)
        .finally(() => {
          this.running--
          this.next()
        })
    }
  }
}
