// node pages.mjs: drives browser pages for the Go tests, one JSON command a
// line on stdin, one JSON reply a line on stdout:
//   {"id":1,"op":"open","page":"A","url":"http://..."}  opens a page in a
//       context of its own and waits for window.meshcdnReady
//   {"id":2,"op":"eval","page":"A","js":"return 1+1"}   runs an async
//       function body in the page and replies with its JSON value
//   {"id":3,"op":"reload","page":"A"}  reloads a page (same context, so
//       its Cache API survives) and waits for window.meshcdnReady
//   {"id":4,"op":"closepage","page":"A"}  closes a page (a tab going away)
//   {"id":5,"op":"screenshot","page":"A","path":"/tmp/x.png"}
//   {"id":6,"op":"close"}
// Replies: {"id":1,"ok":true,"value":...} or {"id":1,"ok":false,"error":"..."}.
// Page console lines go to stderr, prefixed with the page's name.
import { createInterface } from 'node:readline';
import { launchBrowser } from './browser.mjs';

const browser = await launchBrowser();
const pages = new Map();
const reply = (o) => process.stdout.write(JSON.stringify(o) + '\n');

async function run(cmd) {
  switch (cmd.op) {
    case 'open': {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      page.on('console', (m) => process.stderr.write(`[page ${cmd.page}] ${m.text()}\n`));
      page.on('pageerror', (e) => process.stderr.write(`[page ${cmd.page}] error: ${e.message}\n`));
      pages.set(cmd.page, page);
      await page.goto(cmd.url);
      await page.waitForFunction(() => window.meshcdnReady !== undefined);
      await page.evaluate(() => window.meshcdnReady);
      return page.evaluate(() => window.meshcdnStats());
    }
    case 'eval': {
      const page = pages.get(cmd.page);
      if (!page) throw new Error(`no page ${cmd.page}`);
      return page.evaluate(`(async () => { ${cmd.js} })()`);
    }
    case 'reload': {
      const page = pages.get(cmd.page);
      if (!page) throw new Error(`no page ${cmd.page}`);
      await page.reload();
      await page.waitForFunction(() => window.meshcdnReady !== undefined);
      await page.evaluate(() => window.meshcdnReady);
      return page.evaluate(() => window.meshcdnStats());
    }
    case 'closepage': {
      const page = pages.get(cmd.page);
      if (!page) throw new Error(`no page ${cmd.page}`);
      pages.delete(cmd.page);
      await page.context().close();
      return null;
    }
    case 'screenshot': {
      const page = pages.get(cmd.page);
      if (!page) throw new Error(`no page ${cmd.page}`);
      await page.screenshot({ path: cmd.path, fullPage: true });
      return null;
    }
    case 'close':
      await browser.close();
      return null;
    default:
      throw new Error(`unknown op ${cmd.op}`);
  }
}

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let cmd;
  try {
    cmd = JSON.parse(line);
    const value = await run(cmd);
    reply({ id: cmd.id, ok: true, value: value ?? null });
    if (cmd.op === 'close') break;
  } catch (err) {
    reply({ id: cmd?.id ?? 0, ok: false, error: String(err?.stack ?? err) });
  }
}
await browser.close().catch(() => {});
process.exit(0);
