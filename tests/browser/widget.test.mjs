// The widget page in a real browser: Debian's chromium, headless, driven by
// playwright-core (no downloaded browser). Run by
// tests/integration/widget_browser.py, which starts PostgreSQL, the daemon
// and amisim (holding a simulated missed call back until a second AMI
// client logs in: that login is our "now ring" button) and passes:
//   MCD_WIDGET_URL   http://127.0.0.1:PORT
//   MCD_WIDGET_TOKEN a token of employee ivanov
//   MCD_AMI_PORT, MCD_AMI_USER, MCD_AMI_SECRET  the amisim to release
//   MCD_CLIENT_NAME  the client the caller's phone belongs to
//   MCD_ARTIFACTS    where screenshots and seen.json go
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set (run through tests/integration/widget_browser.py)`);
  return v;
};
const URL_BASE = env('MCD_WIDGET_URL');
const TOKEN = env('MCD_WIDGET_TOKEN');
const CLIENT = env('MCD_CLIENT_NAME');
const ARTIFACTS = env('MCD_ARTIFACTS');
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--no-first-run', '--disable-sync'];

// Logs in to amisim as a second AMI client: the simulated call starts then.
function releaseCall() {
  return new Promise((resolve, reject) => {
    const s = net.connect(Number(env('MCD_AMI_PORT')), '127.0.0.1');
    let buf = '';
    let sent = false;
    s.setEncoding('utf8');
    s.setTimeout(10000, () => reject(new Error('amisim did not answer the login')));
    s.on('error', reject);
    s.on('data', (d) => {
      buf += d;
      if (!sent && buf.includes('\r\n')) {
        sent = true;
        s.write(`Action: Login\r\nUsername: ${env('MCD_AMI_USER')}\r\nSecret: ${env('MCD_AMI_SECRET')}\r\nEvents: off\r\n\r\n`);
      }
      if (buf.includes('Response: Success')) { s.setTimeout(0); resolve(s); }
      if (buf.includes('Response: Error')) reject(new Error('amisim refused the login'));
    });
  });
}

test('the widget shows the ringing card, then the missed-call appeal; tabs share one stream', async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mcd-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    locale: 'ru-RU',
    viewport: { width: 1100, height: 700 },
  });
  let ami = null;
  const errors = [];
  const streams = [];
  try {
    const page = context.pages()[0] ?? await context.newPage();
    for (const p of [page]) p.on('pageerror', (e) => errors.push(String(e)));
    context.on('request', (r) => { if (r.url().includes('/v1/events')) streams.push(r.url()); });

    await page.goto(`${URL_BASE}/widget/?token=${TOKEN}`);
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 20000 });
    assert.ok(!page.url().includes('token='), 'the token is taken out of the address bar');
    assert.equal(await page.locator('h1').textContent(), 'Входящие звонки', 'Russian labels for ru-RU');

    // A second tab of the same site follows the first tab's stream.
    const page2 = await context.newPage();
    page2.on('pageerror', (e) => errors.push(String(e)));
    await page2.goto(`${URL_BASE}/widget/`); // token from localStorage
    await page2.locator('#conn[data-state="live"]').waitFor({ timeout: 20000 });

    ami = await releaseCall();
    const popup = page.locator('.popup', { hasText: CLIENT });
    await popup.waitFor({ timeout: 30000 });
    const state = await popup.locator('.state').textContent();
    await page.screenshot({ path: path.join(ARTIFACTS, 'widget-ringing.png'), animations: 'disabled' });
    await page2.locator('.popup', { hasText: CLIENT }).waitFor({ timeout: 10000 });

    // The call is missed: the appeal appears in today's list with its number.
    const appeal = page.locator('.appeal:not(.call-only)', { hasText: CLIENT });
    await appeal.waitFor({ timeout: 60000 });
    const number = (await appeal.locator('.number').textContent()).trim();
    assert.match(number, /\S/, 'the appeal shows its number');
    await page2.locator('.appeal', { hasText: number }).waitFor({ timeout: 10000 });
    const missedPopup = await page.locator('.popup.missed', { hasText: CLIENT }).count();

    // Language switch.
    await page.selectOption('#lang', 'en');
    assert.equal(await page.locator('h1').textContent(), 'Incoming calls');
    assert.match(await appeal.locator('.deadline').textContent(), /due in|overdue by|no deadline/);
    await page.screenshot({ path: path.join(ARTIFACTS, 'widget-appeal.png'), animations: 'disabled' });

    assert.equal(streams.length, 1, `one event stream for both tabs (got ${streams.length})`);
    assert.deepEqual(errors, [], 'no script errors');
    fs.writeFileSync(path.join(ARTIFACTS, 'seen.json'),
      JSON.stringify({ number, ringing_state: state, missed_popup: missedPopup }));
  } finally {
    if (ami) ami.destroy();
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
});
