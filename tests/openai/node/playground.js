// Drives the gateway's web playground in headless Chromium (Debian's /usr/bin/chromium, through the
// pinned playwright-core): sends a message, watches the reply stream in and the TTFT/KV figures appear,
// reloads and continues the same session, then saves a screenshot. Prints what it saw as JSON.
// Usage: node playground.js '{"url": "http://127.0.0.1:8000/", "screenshot": "/tmp/playground.png"}'
'use strict';
const { chromium } = require('playwright-core');

async function main() {
  const args = JSON.parse(process.argv[2]);
  const browser = await chromium.launch({ executablePath: args.chromium || '/usr/bin/chromium', args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
    const errors = [];
    page.on('pageerror', e => errors.push(String(e)));
    page.on('requestfailed', r => { if (!r.url().startsWith(args.url)) errors.push('outside request: ' + r.url()); });
    await page.goto(args.url);
    await page.waitForFunction(() => document.getElementById('model').textContent.includes('context'));

    // Records the reply's length at every change: more than a couple of distinct lengths = it streamed.
    // The download is throttled (24 KB/s) while a reply streams: the test model writes a whole reply in
    // about 100 ms, and when the browser reads it all in one go the page rightly renders it once, which
    // says nothing about streaming (seen once in CI: lengths [0, 307]).
    const cdp = await page.context().newCDPSession(page);
    const throttle = bytesPerSecond => cdp.send('Network.emulateNetworkConditions',
      { offline: false, latency: 0, downloadThroughput: bytesPerSecond, uploadThroughput: -1 });
    const send = async text => {
      await throttle(24 * 1024);
      await page.evaluate(() => {
        window.lengths = [];
        new MutationObserver(() => {
          const replies = document.querySelectorAll('.msg.assistant .text');
          if (replies.length) window.lengths.push(replies[replies.length - 1].textContent.length);
        }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true });
      });
      const before = await page.locator('.msg.assistant').count();
      await page.fill('#input', text);
      await page.click('#send');
      await page.waitForFunction(n => document.querySelectorAll('.msg.assistant').length > n && !document.getElementById('send').disabled, before, { timeout: 60000 });
      await throttle(-1);
      return page.evaluate(() => ({
        lengths: [...new Set(window.lengths)],
        ttft: document.getElementById('ttft').textContent,
        tps: document.getElementById('tps').textContent,
        kv: document.getElementById('kv').textContent,
        session: document.getElementById('session').textContent,
        error: document.getElementById('error').textContent,
        replies: [...document.querySelectorAll('.msg.assistant .text')].map(e => e.textContent),
      }));
    };
    await page.fill('#policy', 'sink_window(4,60)');
    const first = await send(args.message || 'Once upon a time there was a cat.');
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent.includes('context'));
    const restored = await page.evaluate(() => ({
      session: document.getElementById('session').textContent,
      messages: document.querySelectorAll('.msg').length,
    }));
    const second = await send('The cat saw a bird.');
    await page.screenshot({ path: args.screenshot, fullPage: true });
    process.stdout.write(JSON.stringify({ first, restored, second, errors }));
  } finally {
    await browser.close();
  }
}

main().catch(e => { console.error(e.stack || String(e)); process.exit(1); });
