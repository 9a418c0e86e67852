// Launches Debian's Chromium headless with the flags this machine needs
// (see shared INTEROP notes): no sandbox as root, no background networking,
// a fresh profile.
import { chromium } from 'playwright-core';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function launch(extraArgs = []) {
  const userDataDir = mkdtempSync(join(tmpdir(), 'meshcdn-chromium-'));
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      ...extraArgs,
    ],
  });
}

// The flags WebRTC needs in headless Chromium on loopback (see INTEROP):
// without them no ICE candidate is gathered and dials time out.
export const webrtcArgs = ['--allow-loopback-in-peer-connection', '--use-fake-ui-for-media-stream'];

// launchBrowser starts Chromium for pages that must not share storage: each
// browser.newContext() is a fresh profile (Cache API, IndexedDB).
export async function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
      ...webrtcArgs, ...extraArgs,
    ],
  });
}
