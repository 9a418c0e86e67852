// UI helpers for the page (main.js), apart so that node tests them.

// coalesce returns a function that runs fn once, ms after the first call
// that found no run pending: the calls in between are one run. The page
// re-rendered its tables on every counter change and every announcement
// heard (tens a second in a 10-tab crowd), each a style and layout pass
// on the main thread that also serves blocks and signals WebRTC.
// setTimer is setTimeout but in tests.
export function coalesce (fn, ms, setTimer = setTimeout) {
  let pending = false
  return () => {
    if (pending) return
    pending = true
    setTimer(() => {
      pending = false
      fn()
    }, ms)
  }
}

// trimList removes the last children of list (a DOM element, or anything
// with childElementCount and lastElementChild.remove()) beyond max: the
// page's log keeps its newest max lines.
export function trimList (list, max) {
  while (list.childElementCount > max) list.lastElementChild.remove()
}
