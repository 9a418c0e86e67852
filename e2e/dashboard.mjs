// node dashboard.mjs URL SCREENSHOT
// Loads the demo's dashboard, reads its figures twice, a second apart, and
// prints them as JSON; saves a screenshot after the second reading.
import { launch } from './browser.mjs';

const [url, shot] = process.argv.slice(2);
const ctx = await launch();
try {
  const page = await ctx.newPage();
  await page.goto(url);
  const read = () => page.evaluate(() => ({
    offload: document.getElementById('offload').textContent,
    peer: document.getElementById('peer').textContent,
    origin: document.getElementById('origin').textContent,
    nodes: document.getElementById('nodes').textContent,
    rows: document.querySelectorAll('#rows tr').length,
  }));
  await page.waitForFunction(() => document.getElementById('offload').textContent !== '-');
  const first = await read();
  await page.waitForTimeout(1500);
  const second = await read();
  await page.screenshot({ path: shot, fullPage: true });
  console.log(JSON.stringify({ first, second }));
} finally {
  await ctx.close();
}
