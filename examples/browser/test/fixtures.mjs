// Fixtures shared by the tests: the summary answer of announce/doc.go's
// example ("Summary request, version 1").

// hex reads bytes written as hex digits, spaces and newlines ignored.
export const hex = (s) => Uint8Array.from(s.replace(/\s+/g, '').match(/../g).map((b) => parseInt(b, 16)))

// answer is the documented example answer: the seed's own group (one raw
// root) and another holder's (one address, one dag-pb root).
export const answer = hex(`01 00b4
  00 00 0001
  24 01 55 1220 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03
  26 0024080112204cb5abf6ad79fbf5abbccafcc269d85cd2651ed4b885b5869f241aedf0a5ba29
  01 0008 047f000001060fa1
  0001
  24 01 70 1220 e258d248fda94c63753607f7c4494ee0fcbe92f1a76bfdac795c9d84101eb317`)
