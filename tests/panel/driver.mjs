// Drives the Heapwatch panel in headless Chromium for tests/panel.rs.
//
// Usage: node driver.mjs '<json config>'
//   config: { scenario, url, outDir, userDataDir, chromium, expectUser, allowedPrefix }
// Talks to the Rust test over stdio: prints `STOP` and waits for `STOPPED`, prints `START`
// and waits for `STARTED` (the test restarts the add-on in between). Prints `OK` at the
// end; any failure exits non-zero with the reason on stderr.

import { chromium } from 'playwright-core';
import { readFile, mkdir, rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';

const cfg = JSON.parse(process.argv[2]);
const WAIT = 20000;

const lines = createInterface({ input: process.stdin });
const waiting = [];
lines.on('line', (l) => {
  const w = waiting.shift();
  if (w) w(l.trim());
});
function ask(what, answer) {
  return new Promise((resolve, reject) => {
    waiting.push((l) => (l === answer ? resolve() : reject(new Error(`wanted ${answer}, got ${l}`))));
    console.log(what);
  });
}

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`);
}

const problems = [];

async function main() {
  await mkdir(cfg.outDir, { recursive: true });
  await rm(cfg.userDataDir, { recursive: true, force: true });
  const context = await chromium.launchPersistentContext(cfg.userDataDir, {
    executablePath: cfg.chromium,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
    acceptDownloads: true,
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.setDefaultTimeout(WAIT);
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content Security Policy|Refused to/.test(m.text())) {
        // The reconnect scenario expects failed socket connections while the add-on is down.
        if (!/WebSocket connection to .* failed/.test(m.text())) problems.push(`console: ${m.text()}`);
      }
    });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('request', (r) => {
      if (!r.url().startsWith(cfg.allowedPrefix) && !r.url().startsWith(cfg.allowedPrefix.replace(/^http/, 'ws'))) {
        problems.push(`request outside the add-on's prefix: ${r.url()}`);
      }
    });
    page.on('requestfailed', (r) => {
      const why = r.failure()?.errorText || '';
      // A download ends its request as "aborted" in Chromium; sockets fail while the add-on is down.
      if (r.url().includes('/ws') || (r.url().includes('api/report') && why.includes('ABORTED'))) return;
      problems.push(`request failed: ${r.url()} ${why}`);
    });
    await page.goto(cfg.url);
    await live(page);
    await scenarios[cfg.scenario](page);
    check(problems.length === 0, `no console errors, CSP violations or stray requests:\n${problems.join('\n')}`);
  } finally {
    await context.close();
  }
  console.log('OK');
  process.exit(0);
}

async function live(page) {
  await page.waitForFunction(() => document.body.dataset.conn === 'live');
  await page.waitForFunction(() => !document.querySelector('#tile-rss .value').textContent.includes('—'));
}

async function text(page, sel) {
  return (await page.locator(sel).textContent()).trim();
}

async function shoot(page, name, opts = {}) {
  await page.screenshot({ path: `${cfg.outDir}/${name}.png`, fullPage: true, ...opts });
}

async function downloadReport(page) {
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#report')]);
  check(/^heapwatch-report-\d{8}T\d{6}Z\.json$/.test(download.suggestedFilename()), `file name ${download.suggestedFilename()}`);
  const report = JSON.parse(await readFile(await download.path(), 'utf8'));
  check(report.report === 'heapwatch' && report.format === 1, 'report header');
  check(typeof report.server_version === 'string', 'report version');
  check(report.settings && report.settings.log_level, 'report settings');
  check(report.system.process.rss_bytes > 0, 'report system totals');
  check(report.allocator && 'current_bytes' in report.allocator, 'report allocator totals');
  check(Array.isArray(report.logs.lines) && report.logs.lines.length > 0, 'report log lines');
  check(report.logs.lines.some((l) => l.includes('heapwatch')), 'report logs are the add-on\'s');
  return report;
}

// Screenshots in light and dark, at desktop and phone width (no sideways scrolling there),
// named `<prefix>-light`, `-dark`, `-phone-dark`, `-phone-light`; back to desktop after.
async function themesAndPhone(page, prefix) {
  await page.mouse.move(0, 0);
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  await page.emulateMedia({ colorScheme: 'light' });
  await shoot(page, `${prefix}-light`);
  await page.emulateMedia({ colorScheme: 'dark' });
  await shoot(page, `${prefix}-dark`);
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 0, `no sideways scrolling at phone width (${overflow}px too wide)`);
  await shoot(page, `${prefix}-phone-dark`);
  await page.emulateMedia({ colorScheme: 'light' });
  await shoot(page, `${prefix}-phone-light`);
  await page.setViewportSize({ width: 1280, height: 900 });
}

async function waitForPoints(page, n) {
  await page.waitForFunction((k) => Number(document.getElementById('chart').dataset.points) >= k, n);
}

async function tabTo(page, id, max = 40) {
  for (let i = 0; i < max; i += 1) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((want) => document.activeElement && document.activeElement.id === want, id)) return;
  }
  throw new Error(`#${id} cannot be reached with Tab`);
}

// Makes the add-on allocate for real: opens `n` more sessions from the page, one every
// 75 ms, each subscribed to the stream, and keeps them open. `window.opening` settles
// once all are open.
async function holdSessions(page, n) {
  await page.evaluate((count) => {
    const url = new URL('ws', document.baseURI);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    window.heldSockets = window.heldSockets || [];
    window.opening = (async () => {
      for (let i = 0; i < count; i += 1) {
        await new Promise((resolve, reject) => {
          const w = new WebSocket(url);
          w.onmessage = () => {
            w.onmessage = null;
            w.send(JSON.stringify({ message_id: `held${i}`, command: 'debug/memory_subscribe', args: { interval_s: 60 } }));
            resolve();
          };
          w.onerror = () => reject(new Error('extra socket failed'));
          window.heldSockets.push(w);
        });
        await new Promise((r) => setTimeout(r, 75));
      }
    })();
  }, n);
}

// "+1.5 MiB", "−512 B", "±0" as bytes.
function toBytes(t) {
  const m = /^([+−-]?)([\d.]+) (B|KiB|MiB|GiB|TiB)$/.exec(t.trim());
  if (!m) return 0;
  return (m[1] === '−' || m[1] === '-' ? -1 : 1) * Number(m[2]) * 1024 ** ['B', 'KiB', 'MiB', 'GiB', 'TiB'].indexOf(m[3]);
}

// What the page asked the add-on for: every `debug/memory_snapshot`'s arguments, in order,
// on any socket the page opens from now on.
function recordSnapshotArgs(page) {
  const sent = [];
  page.on('websocket', (ws) => ws.on('framesent', (f) => {
    try {
      const m = JSON.parse(f.payload);
      if (m.command === 'debug/memory_snapshot') sent.push(m.args);
    } catch {
      // not JSON: not ours
    }
  }));
  return sent;
}

// Each snapshot row as the user sees it: the evidence line, the Suspect badge, the
// Blocks and Growth cells.
async function evidenceRows(page) {
  return page.locator('#rows tr.row').evaluateAll((rs) => rs.map((r) => {
    const badge = r.querySelector('.badge.suspect');
    return {
      site: r.querySelector('.site .fn').textContent.trim(),
      evidence: r.querySelector('.evidence') ? r.querySelector('.evidence').textContent : null,
      badge: badge ? badge.textContent : null,
      badgeTitle: badge ? badge.title : null,
      marked: r.classList.contains('suspect'),
      blocks: r.querySelectorAll('td.num')[2].textContent,
      diff: r.querySelector('td.diff').textContent,
    };
  }));
}

// The retention words after the count: `4 new, none freed · baseline kept all 3 · leak
// score 2.0`, every number's noun in the right number.
const RETENTION = '(none new|1 new, (none freed|already freed)|[\\d,]+ new, (none freed|all freed|[\\d,]+ of them freed))'
  + ' · (none in the baseline|baseline kept its 1|baseline kept both|baseline kept all (?![12]\\b)[\\d,]+|the 1 from the baseline freed|both from the baseline freed|all (?![12] )[\\d,]+ from the baseline freed|[\\d,]+ of the baseline’s [\\d,]+ freed)'
  + ' · leak score -?\\d+\\.\\d';

// Checks each row's evidence line: the count's noun agrees with the number ("1 block",
// "2 blocks"; "1 sample", "2 samples"), exact mode has no ±, sampled mode does; in a
// compare of one session the retention words follow. Returns the counts seen.
function checkEvidence(rows, { exact, compared }) {
  const unit = exact ? 'block' : 'sample';
  const count = `(1 ${unit}|(?!1 )[\\d,]+ ${unit}s)`;
  const want = new RegExp(`^${exact ? '' : '±[\\d.]+ (B|KiB|MiB|GiB) · '}${count}${compared ? ` · ${RETENTION}` : ''}$`);
  const seen = [];
  for (const r of rows) {
    check(r.evidence !== null && want.test(r.evidence), `${r.site}: the evidence line reads ${JSON.stringify(r.evidence)}, wanted ${want}`);
    const n = r.evidence.replace(/^±[^·]*· /, '').split(' ')[0];
    if (exact) check(n === r.blocks, `${r.site}: exact mode counts every block (${n} of ${r.blocks})`);
    check(!/(^|\D)1 (blocks|samples)\b/.test(r.evidence), `${r.site}: singular for one: ${r.evidence}`);
    seen.push(n);
  }
  return seen;
}

const scenarios = {
  // Through the ingress proxy, tracker not needed: header, cards, chart, report,
  // keyboard, themes, phone width, and reconnecting after the add-on restarts.
  async ingress(page) {
    check((await text(page, '#version')).startsWith('version '), 'version shown');
    check((await text(page, '#user')) === cfg.expectUser, `user shown: ${await text(page, '#user')}`);
    check((await text(page, '#conn-text')) === 'Live', 'live');
    const base = await page.evaluate(() => document.baseURI);
    check(base === cfg.url, `base ${base} is the ingress prefix ${cfg.url}`);
    const tracking = await text(page, '#tracking');
    check(tracking.startsWith('Tracking:'), `tracking state: ${tracking}`);
    // The leak verdict: three windows, a verdict badge (a fresh add-on has too little data).
    await page.waitForFunction(() => document.querySelectorAll('#trend-rows tr').length === 3);
    const windows = await page.locator('#trend-rows th').allTextContents();
    check(windows.join(',') === '15m,1h,6h', `trend windows ${windows}`);
    const verdict = await page.getAttribute('#trend-verdict', 'data-verdict');
    check(verdict === 'insufficient_data', `a new add-on has too little data: ${verdict}`);
    check((await text(page, '#trend-verdict')) === 'Not enough data yet', 'verdict in words');
    const waits = await page.locator('#trend-rows td').allTextContents();
    check(waits.length === 6 && waits.every((w) => /^ready in \d+ (min|h)$/.test(w.trim())), `windows say when they are ready: ${waits}`);
    check(/^ready in 6 h$/.test(waits[4].trim()) || /^ready in 3 h$/.test(waits[4].trim()), `the 6 h window needs three hours: ${waits[4]}`);
    if (tracking === 'Tracking: off') {
      check(await page.isVisible('#start-tracking'), 'Start tracking offered');
      check(await page.isVisible('#exports-off'), 'the exports say they need tracking');
      check((await page.getAttribute('#export-profile', 'aria-disabled')) === 'true', 'and are disabled');
    }
    check(/\d (B|KiB|MiB|GiB)$/.test(await text(page, '#tile-rss .value')), 'RSS in human units');
    check(/of .* total/.test(await text(page, '#tile-host .sub')), 'host total');
    await waitForPoints(page, 3);
    check(await page.locator('#chart-svg path.line.rss').count() === 1, 'RSS line drawn');
    const href = await page.evaluate(() => document.getElementById('report').href);
    check(href.startsWith(`${cfg.url}api/report`), `report link under the prefix: ${href}`);
    const report = await downloadReport(page);
    check(report.trend && Array.isArray(report.trend.windows) && report.trend.windows.length === 3, 'report carries the trend');
    check(report.settings.api_token === null || report.settings.api_token === '**redacted**', 'token redacted');

    // Without the Supervisor (no SUPERVISOR_TOKEN) the Host view says it is off and how
    // to turn it on.
    check((await page.getAttribute('#tab-self', 'aria-selected')) === 'true', 'the add-on view first');
    await page.click('#tab-host');
    await page.waitForSelector('#host-off', { state: 'visible' });
    check(/SUPERVISOR_TOKEN/.test(await text(page, '#host-off-reason')), `why it is off: ${await text(page, '#host-off-reason')}`);
    check(/manager/.test(await text(page, '#host-off')), 'how to turn it on');
    check(await page.isHidden('#view-self'), 'one view at a time');
    await shoot(page, 'ingress-host-off');
    await page.click('#tab-self');
    check(await page.isVisible('#view-self'), 'back to the add-on view');

    // Keyboard only: the controls are reachable with Tab.
    await page.locator('body').focus();
    await tabTo(page, 'take-snapshot');
    await tabTo(page, 'save-baseline');

    await themesAndPhone(page, 'ingress');

    // The add-on restarts: the panel says it is reconnecting, then comes back by itself.
    await ask('STOP', 'STOPPED');
    await page.waitForFunction(() => document.body.dataset.conn !== 'live');
    await page.waitForSelector('#reconnect', { state: 'visible' });
    check(/Reconnecting/.test(await text(page, '#reconnect-text')), 'reconnect banner');
    await shoot(page, 'ingress-reconnecting', { fullPage: false });
    const before = Number(await page.getAttribute('#chart', 'data-points'));
    await ask('START', 'STARTED');
    await page.waitForFunction(() => document.body.dataset.conn === 'live', null, { timeout: 30000 });
    await page.waitForSelector('#reconnect', { state: 'hidden' });
    await waitForPoints(page, before + 2);
  },

  // The Host view against the Supervisor stand-in (a poll every 20 ms stands for a
  // minute): Zigbee2MQTT leaks 30 MiB/h, Frigate grows since its restart at 20 h, Core
  // restarted at 3 h, the rest do not grow.
  async host(page) {
    check((await page.getAttribute('#tab-host', 'aria-selected')) === 'false', 'the add-on view first');
    // Let a simulated day pass (steady growth is only "rising" before), then come back
    // to the Host view by its address.
    await page.waitForTimeout(30500);
    await page.goto(`${cfg.url}#host`);
    check((await page.getAttribute('#tab-host', 'aria-selected')) === 'true', '#host opens the Host view');
    await page.reload();
    await live(page);
    check((await page.getAttribute('#tab-host', 'aria-selected')) === 'true', 'and keeps it on a reload');
    check(await page.isHidden('#view-self'), 'one view at a time');
    await page.waitForSelector('#host-rows tr.host-row[data-verdict="growing"]', { timeout: 30000 });
    const rows = await page.locator('#host-rows tr.host-row').count();
    check(rows === 13, `Core, the Supervisor, five plugins and six add-ons: ${rows} rows`);
    const growing = await page.locator('#host-rows tr.host-row[data-verdict="growing"]').evaluateAll((rs) => rs.map((r) => r.dataset.slug));
    check(growing.join() === '45df7312_zigbee2mqtt', `only the leak grows: ${growing}`);
    const banner = await text(page, '#host-banner-text');
    check(/^Growing: Zigbee2MQTT: \+\d+ MiB\/h for \d+ h$/.test(banner), `the banner names it: ${banner}`);
    check(/1 growing/.test(await text(page, '#tab-host')), 'the tab counts it');
    const rising = await page.locator('#host-rows tr.host-row[data-verdict="rising"]').evaluateAll((rs) => rs.map((r) => r.dataset.slug));
    check(rising.join() === 'ccab4aaf_frigate', `growth since a recent restart is rising: ${rising}`);
    check(/^Rising for less than a day: Frigate\./.test(await text(page, '#host-rising')), 'and said so');
    check(/^Rising\? \+/.test(await page.locator('#host-rows tr.host-row[data-slug="ccab4aaf_frigate"] .chip.verdict').textContent()), 'a rising badge');
    const leak = page.locator('#host-rows tr.host-row[data-slug="45df7312_zigbee2mqtt"]');
    const rate = await leak.locator('.chip.verdict').textContent();
    const m = /^\+([\d.]+) MiB\/h$/.exec(rate.trim());
    check(m && Math.abs(Number(m[1]) - 30) <= 6, `its slope is within 20% of 30 MiB/h: ${rate}`);
    check(/host memory full in/.test(await leak.locator('.growth-cell').textContent()), 'time until the host runs out');
    check(await leak.locator('svg.spark path').count() === 1, 'a 24 h sparkline');
    const stopped = page.locator('#host-rows tr.host-row[data-slug="local_old"]');
    check(/stopped/.test(await stopped.locator('.where').textContent()), 'a stopped add-on says so');
    check((await stopped.locator('td.num').first().textContent()) === '—', 'and has no memory');

    // Sorted by size, largest first; then by growth, the leak first.
    const sizes = async () => page.locator('#host-rows tr.host-row td.num:nth-of-type(1)').evaluateAll((tds) => tds.map((td) => td.textContent));
    const toBytes = (t) => {
      const [v, u] = t.replace('−', '-').split(' ');
      return u ? Number(v) * 1024 ** ['B', 'KiB', 'MiB', 'GiB'].indexOf(u) : -1;
    };
    const bySize = (await sizes()).map(toBytes);
    check(bySize.every((v, i) => i === 0 || bySize[i - 1] >= v), `largest first: ${bySize}`);
    check((await page.getAttribute('#host-sort-size', 'aria-sort')) === 'descending', 'sorted by size');
    await page.click('#host-sort-growth button');
    check((await page.getAttribute('#host-sort-growth', 'aria-sort')) === 'descending', 'sorted by growth');
    const order = await page.locator('#host-rows tr.host-row').evaluateAll((rs) => rs.slice(0, 2).map((r) => r.dataset.slug));
    check(order.join() === '45df7312_zigbee2mqtt,ccab4aaf_frigate', `the leak first, then the rising one: ${order}`);

    // Core's row opens by keyboard: seven days with its restart marked.
    const core = page.locator('#host-rows tr.host-row[data-slug="core"] button.expand');
    await core.focus();
    await page.keyboard.press('Enter');
    check((await core.getAttribute('aria-expanded')) === 'true', 'expanded');
    const detail = page.locator('#host-rows tr.detail[data-slug="core"]');
    await page.waitForFunction(() => Number(document.querySelector('#host-rows tr.detail[data-slug="core"] .host-chart').dataset.points) > 0);
    check((await detail.locator('.segmented [aria-checked="true"]').textContent()) === '7 days', 'seven days first');
    check(await detail.locator('svg line.restart').count() === 1, 'the restart is marked');
    check(/1 restart marked/.test(await detail.locator('.host-chart-note').textContent()), 'and said');
    check(await detail.locator('svg path.line').count() === 1, 'the memory line');
    check((await page.locator('#host-rows tr.host-row[data-slug="core"]').getAttribute('data-verdict')) !== 'growing', 'a restart is not growth');
    // The last 24 hours: the polled points, not averages.
    await detail.locator('.segmented button[data-window="24h"]').click();
    await page.waitForFunction(() => {
      const d = document.querySelector('#host-rows tr.detail[data-slug="core"]');
      return d.querySelector('[data-window="24h"]').getAttribute('aria-checked') === 'true' && Number(d.querySelector('.host-chart').dataset.points) > 100;
    });

    await themesAndPhone(page, 'host');

    // The Supervisor starts refusing (the add-on's role was lowered): the panel says so
    // and keeps what it had.
    await ask('FORBID', 'FORBIDDEN');
    await page.waitForSelector('#host-error', { state: 'visible', timeout: 30000 });
    const err = await text(page, '#host-error-text');
    check(/403/.test(err) && /role|manager/i.test(err), `the refusal in words: ${err}`);
    check(await page.locator('#host-rows tr.host-row').count() === 13, 'the table stays');
    await shoot(page, 'host-forbidden', { fullPage: false });
  },

  // Through the ingress proxy with the tracker: start tracking, baseline, real growth,
  // compare, the table, keyboard expansion, the report with the diff.
  async tracking(page) {
    const sent = recordSnapshotArgs(page);
    // The chart starts from the add-on's own history (a sample every 100 ms here), not
    // empty: a reload shows what the server kept.
    await page.waitForTimeout(1500);
    await page.reload();
    await live(page);
    const fromServer = Number(await page.getAttribute('#chart', 'data-points'));
    check(fromServer >= 10, `the chart starts from the server's history: ${fromServer} points`);
    check(await page.isVisible('#start-tracking'), 'tracking starts off');
    await page.click('#start-tracking');
    await page.waitForFunction(() => !/off|…/.test(document.getElementById('tracking').textContent));
    check(await page.isHidden('#start-tracking'), 'Start tracking hidden once on');
    // The live stream can report tracking on before the snapshot that started it replies
    // (it symbolizes): the note comes with that reply.
    await page.waitForSelector('#note', { state: 'visible', timeout: 10000 }).catch(() => {});
    check(await page.isVisible('#note'), 'the lazy-enable note is shown');
    const note = await text(page, '#note-text');
    check(/Save baseline/.test(note) && /Compare/.test(note), `the note names the panel's buttons: ${note}`);
    check(!/debug\/memory_snapshot|save_as|compare_with/.test(note), `not the API's words: ${note}`);

    // Save a baseline by keyboard alone.
    await page.focus('#baseline-name');
    await page.keyboard.type('before');
    await page.keyboard.press('Enter');
    await page.waitForSelector('.baseline-name:text-is("before")');
    check(/taken/.test(await text(page, '.baseline .secondary')), 'baseline shows when it was taken');

    // Make the add-on allocate for real: hold a few dozen more sessions, each streaming.
    // One by one, 75 ms apart, so the trend's checkpoints (every 300 ms here) see steady
    // growth rather than one step.
    await holdSessions(page, 40);
    // While they are still opening, a snapshot refreshes the trend card: the sessions'
    // sites have grown at every recent checkpoint.
    await page.waitForTimeout(2400);
    await page.click('#take-snapshot');
    await page.waitForSelector('#growing-sites li', { timeout: 15000 });
    check(!(await page.isHidden('#growing-title')), 'growing sites are titled');
    const rate = await text(page, '#growing-sites > li:first-child .growth');
    check(/^\+.*\/h$/.test(rate), `a growth rate per hour: ${rate}`);
    await page.evaluate(() => window.opening);
    await page.waitForTimeout(500);

    await page.selectOption('#compare-with', 'before');
    await page.click('#take-snapshot');
    // The table from the first snapshot is already showing: wait for the compared one.
    await page.waitForFunction(
      () => /compared with “before”/.test(document.getElementById('snapshot-meta').textContent),
      null,
      { timeout: 30000 },
    );
    await page.waitForSelector('#table:not([hidden]) tbody tr.row');
    check(/compared with “before”/.test(await text(page, '#snapshot-meta')), 'compared');
    // A compare shows leak suspects first, unless asked otherwise.
    check(await page.isVisible('#order'), 'the Order control shows once a baseline is chosen');
    check((await page.inputValue('#order')) === 'suspects', 'leak suspects by default');
    check((await text(page, '#order-label')).startsWith('Order'), 'the control is labelled');
    const asked = sent[sent.length - 1];
    check(asked.compare_with === 'before' && asked.order === 'suspects', `asked for suspects: ${JSON.stringify(asked)}`);
    check(/leak suspects first/.test(await text(page, '#snapshot-meta')), `the order said: ${await text(page, '#snapshot-meta')}`);
    const first = page.locator('tbody tr.row').first();
    check(await first.evaluate((r) => r.classList.contains('growth')), 'the top row is growth, highlighted');
    check((await first.locator('td.diff').first().textContent()).startsWith('+'), 'growth is positive');

    // How much of the heap the table covers, in one line.
    check(/% of the heap/.test(await text(page, '#coverage')), `the coverage line: ${await text(page, '#coverage')}`);
    // Expand the top row by keyboard.
    await first.locator('button.expand').focus();
    await page.keyboard.press('Enter');
    check((await first.locator('button.expand').getAttribute('aria-expanded')) === 'true', 'expanded');
    const frames = await page.locator('tbody tr.detail:not([hidden]) ol.traceback > li').count();
    check(frames >= 1, 'the traceback is shown');
    const folded = page.locator('tbody tr.detail:not([hidden]) ol.traceback > li.library details');
    if (await folded.count()) {
      check(!(await folded.first().evaluate((d) => d.open)), 'library frames start folded');
      await folded.first().locator('summary').click();
      check(await folded.first().evaluate((d) => d.open), 'and open on a click');
      check(/library frames? (inside|between)/.test(await folded.first().locator('summary').textContent()), 'said as library frames');
    }

    // The evidence under each site, in exact mode: blocks (no ±, the sizes are exact) and
    // what became of them since the baseline. The planted growth (the held sessions) only
    // accumulates: it is a suspect, marked in words, with the score explained.
    const suspects = await evidenceRows(page);
    for (const r of suspects) console.log(`evidence: ${r.badge || '-'} ${r.site} ${r.diff} | ${r.evidence}`);
    checkEvidence(suspects, { exact: true, compared: true });
    check(await page.isVisible('#evidence-help'), 'the evidence is explained');
    check(/leak score/.test(await text(page, '#evidence-help')) && /only accumulate/.test(await text(page, '#evidence-help')), `in words: ${await text(page, '#evidence-help')}`);
    check(suspects.every((r) => r.diff.startsWith('+')), 'the suspects order shows only growth');
    const marked = suspects.filter((r) => r.badge);
    check(marked.length >= 1, 'the planted growth is a suspect');
    check(marked.every((r) => r.badge === 'Suspect' && r.marked && /leak score/.test(r.badgeTitle)), 'a Suspect badge in words, its score explained');
    check(suspects.findIndex((r) => !r.badge) === -1 || suspects.slice(suspects.findIndex((r) => !r.badge)).every((r) => !r.badge), 'suspects first');
    check(marked.some((r) => / new, none freed · /.test(r.evidence)), `a suspect's new blocks are not freed: ${marked.map((r) => r.evidence).join(' | ')}`);
    check(await page.isHidden('#suspects-note'), 'no "no suspects" note when there are some');
    const held = marked.filter((r) => /^heapwatch::(http::upgrade|ws::session)::/.test(r.site));
    check(held.length >= 1 && held.every((r) => /^[\d,]+ blocks · [\d,]+ new, none freed · /.test(r.evidence)),
      `the held sessions' sites are suspects, their new blocks all alive: ${held.map((r) => `${r.site}: ${r.evidence}`).join(' | ')}`);

    // Largest change, by keyboard: asked for at once, every row (growth and shrink) back.
    await page.focus('#compare-with');
    await tabTo(page, 'order', 3);
    await page.keyboard.press('ArrowDown');
    await page.waitForFunction(() => /largest change first/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });
    check(sent[sent.length - 1].order === 'change' && sent[sent.length - 1].compare_with === 'before', `re-asked with order=change: ${JSON.stringify(sent[sent.length - 1])}`);
    const byChange = await evidenceRows(page);
    checkEvidence(byChange, { exact: true, compared: true });
    const changes = byChange.map((r) => Math.abs(toBytes(r.diff)));
    check(changes.every((v, i) => i === 0 || changes[i - 1] >= v * 0.999), `largest change first: ${byChange.map((r) => r.diff)}`);
    check(byChange.some((r) => r.badge), 'suspects keep their badge in any order');
    // The site that grew most is the add-on's own code, its name qualified.
    const topGrowth = byChange.filter((r) => r.diff.startsWith('+')).sort((a, b) => toBytes(b.diff) - toBytes(a.diff))[0];
    check(/^<?heapwatch::/.test(topGrowth.site), `the top growth is in the add-on's own code: ${topGrowth.site}`);
    // Growth only.
    await page.selectOption('#order', 'growth');
    await page.waitForFunction(() => /only what grew/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });
    check(sent[sent.length - 1].order === 'growth', 'asked for growth');
    check((await evidenceRows(page)).every((r) => r.diff.startsWith('+')), 'growth only');
    await page.selectOption('#order', 'suspects');
    await page.waitForFunction(() => /leak suspects first/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });

    const report = await downloadReport(page);
    check(report.trend && Array.isArray(report.trend.windows) && report.trend.windows.length === 3, 'report carries the trend');
    check(report.snapshot && report.snapshot.compared_with === 'before', 'report carries the diff');
    check(report.snapshot.order === 'suspects', `the report in the order shown: ${report.snapshot.order}`);
    const grown = report.snapshot.top_allocators;
    check(grown[0].size_diff_bytes > 0, 'something grew');
    // The report is a moment later than the table, so allow the top few (whose scores
    // are close) to trade places.
    const site = (await first.locator('.fn').first().textContent()).trim();
    const reportSites = grown.slice(0, 5).map((r) => r.traceback[0].replace(/ \([^()]*\)$/, ''));
    check(reportSites.includes(site), `the table's top suspect (${site}) is among the report's (${reportSites.join(', ')})`);

    // The exports, through the ingress prefix: a differential flame graph against the
    // chosen baseline, the pprof profile, folded stacks, the metrics.
    check(await page.isHidden('#exports-off'), 'exports offered once tracking is on');
    const exportsFound = {};
    for (const id of ['export-flamegraph', 'export-profile', 'export-folded', 'export-metrics']) {
      const href = await page.evaluate((i) => document.getElementById(i).href, id);
      check(href.startsWith(cfg.url), `${id} under the prefix: ${href}`);
      const r = await page.request.get(href);
      check(r.status() === 200, `${id} answers ${r.status()}`);
      exportsFound[id] = { href, type: r.headers()['content-type'], body: await r.body() };
    }
    check(/baseline=before/.test(exportsFound['export-flamegraph'].href), 'the flame graph compares with the chosen baseline');
    check(/image\/svg\+xml/.test(exportsFound['export-flamegraph'].type), 'an SVG');
    const gz = exportsFound['export-profile'].body;
    check(gz[0] === 0x1f && gz[1] === 0x8b, 'a gzipped profile');
    check(/ \d+ \d+$/m.test(exportsFound['export-folded'].body.toString()), 'folded stacks with before and after');
    check(/^# (HELP|TYPE) heapwatch_/m.test(exportsFound['export-metrics'].body.toString()), 'Prometheus text');
    check((await page.getAttribute('#export-flamegraph', 'target')) === '_blank', 'the flame graph opens in a new tab');

    await themesAndPhone(page, 'tracking');
    // The snapshot card alone, suspects first, in both themes and at phone width.
    const card = page.locator('section.snapshot');
    for (const [scheme, width] of [['light', 1280], ['dark', 1280], ['dark', 390]]) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.setViewportSize({ width, height: 900 });
      await card.screenshot({ path: `${cfg.outDir}/tracking-suspects-${width === 390 ? 'phone-' : ''}${scheme}.png` });
    }
    await page.emulateMedia({ colorScheme: 'light' });

    // Fill the eight baselines, then try a ninth, at phone width and at desktop width: the
    // error shows under the Save button, in view, in words that say what to do.
    await page.setViewportSize({ width: 1280, height: 900 });
    await page.evaluate(() => {
      // Record every moment a button waits on the add-on (its spinner state).
      window.sawWorking = [];
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.target.getAttribute('aria-busy') === 'true') window.sawWorking.push(r.target.id);
        }
      }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['aria-busy'] });
    });
    for (let i = 2; i <= 8; i += 1) {
      await page.fill('#baseline-name', `b${i}`);
      await page.click('#save-baseline');
      await page.waitForSelector(`.baseline-name:text-is("b${i}")`);
    }
    check(await page.evaluate(() => window.sawWorking.includes('save-baseline')), 'Save baseline shows that it is working');
    for (const [width, height, name] of [[390, 844, 'phone'], [1280, 900, 'desktop']]) {
      await page.setViewportSize({ width, height });
      await page.fill('#baseline-name', 'ninth');
      await page.click('#save-baseline');
      await page.waitForSelector('#baseline-error', { state: 'visible' });
      const err = await text(page, '#baseline-error');
      check(/at most 8 baselines/.test(err) && /Drop/.test(err), `the ninth baseline's error says what to do: ${err}`);
      check(!/drop_baseline|precondition_failed/.test(err), `in the panel's words, not the API's: ${err}`);
      const box = await page.locator('#baseline-error').boundingBox();
      check(box && box.y >= 0 && box.y + box.height <= height, `the error is in view at ${name} width (${JSON.stringify(box)})`);
      check(await page.isHidden('#error'), 'not in the banner at the top');
      await shoot(page, `baseline-error-${name}`, { fullPage: false });
      await page.fill('#baseline-name', '');
    }
    // Dropping one makes room: the next save works and the error goes.
    await page.click('button[aria-label="Drop baseline b8"]');
    await page.waitForFunction(() => !document.querySelector('.baseline-name') || ![...document.querySelectorAll('.baseline-name')].some((e) => e.textContent === 'b8'));
    await page.fill('#baseline-name', 'ninth');
    await page.click('#save-baseline');
    await page.waitForSelector('.baseline-name:text-is("ninth")');
    check(await page.isHidden('#baseline-error'), 'the error is gone once it worked');

    // Drop the baseline.
    await page.click('button[aria-label="Drop baseline before"]');
    await page.waitForFunction(() => ![...document.querySelectorAll('.baseline-name')].some((e) => e.textContent === 'before'));
  },

  // Served at `/` with no proxy and no prefix.
  async root(page) {
    check((await text(page, '#conn-text')) === 'Live', 'live');
    check(await page.isHidden('#user'), 'no user without ingress');
    const base = await page.evaluate(() => document.baseURI);
    check(base === cfg.url, `base ${base}`);
    await waitForPoints(page, 2);
    const href = await page.evaluate(() => document.getElementById('report').href);
    check(href.startsWith(`${cfg.url}api/report`), `report link: ${href}`);
    await downloadReport(page);
    // Sampled tracking (the default mode): the coverage line says the sizes are estimates
    // and what would give exact ones.
    await page.click('#start-tracking');
    await page.waitForSelector('#coverage', { state: 'visible', timeout: 30000 });
    const first = await text(page, '#coverage');
    check(/Tracking started just now/.test(first) && /take another snapshot/.test(first), `the coverage line when tracking starts: ${first}`);
    // The innermost frame, for those who want the library's allocation site.
    await page.selectOption('#group-by', 'innermost');
    await page.click('#take-snapshot');
    await page.waitForFunction(() => /grouped by innermost/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });
    const coverage = await text(page, '#coverage');
    check(/sampl/i.test(coverage) && /exact/.test(coverage), `the sampled-mode coverage line: ${coverage}`);
    await shoot(page, 'root-light');
  },

  // Sampled mode (one sample per 64 KiB, seeded) through the ingress proxy: the evidence
  // under each site in words (± one standard error, the samples behind it, singular and
  // plural right), and a compare with nothing accumulated yet: no suspects, said plainly.
  async evidence(page) {
    await page.click('#start-tracking');
    await page.waitForFunction(() => /Tracking: sampled/.test(document.getElementById('tracking').textContent));
    await holdSessions(page, 40);
    await page.evaluate(() => window.opening);
    // Sampled evidence under each site: ± one standard error, and the samples behind it
    // (once something is sampled and still alive).
    // Which sites hold one sample depends on where the sampling points fell among the
    // server's own threads: until both forms are on screen, hold a few more sessions and
    // take another snapshot (new allocations, new samples).
    const bothForms = (rows) => rows.some((r) => /· 1 sample$/.test(r.evidence))
      && rows.some((r) => /· \d+ samples$/.test(r.evidence));
    let plain = [];
    for (let i = 0; i < 30 && !bothForms(plain); i += 1) {
      if (i > 0) {
        await holdSessions(page, 5);
        await page.evaluate(() => window.opening);
        await page.waitForTimeout(200);
      }
      await page.click('#take-snapshot');
      await page.waitForFunction(() => !document.body.classList.contains('busy'));
      plain = await evidenceRows(page);
      if (plain.length) checkEvidence(plain, { exact: false, compared: false });
    }
    check(plain.length > 0, 'something was sampled');
    for (const r of plain) console.log(`evidence: ${r.site} | ${r.evidence}`);
    // Sessions' sites hold from one sample to about ten: both forms are on screen.
    check(bothForms(plain), `"1 sample" and "N samples" both shown: ${plain.map((r) => r.evidence).join(' | ')}`);
    check(/standard error/.test(await text(page, '#evidence-help')), 'the ± explained');
    check(await page.isHidden('#order-label'), 'no Order control without a baseline');

    // A baseline and a compare straight after: nothing has had time to accumulate (a
    // suspect needs about nine samples born and kept, some 576 KiB here), so the suspects
    // view says there are none, in words.
    await page.fill('#baseline-name', 'now');
    await page.click('#save-baseline');
    await page.waitForSelector('.baseline-name:text-is("now")');
    await page.click('button[aria-label="Compare with now"]');
    await page.waitForFunction(() => /compared with “now”: leak suspects first/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });
    check((await page.inputValue('#order')) === 'suspects', 'leak suspects by default');
    await page.waitForSelector('#suspects-note', { state: 'visible' });
    const none = await text(page, '#suspects-note');
    check(/^No leak suspects yet: (no site’s samples only accumulate\. .*compare again\.|nothing grew since “now”\.)$/.test(none), `no suspects, said plainly: ${none}`);
    const grown = await evidenceRows(page);
    for (const r of grown) console.log(`evidence: ${r.site} ${r.diff} | ${r.evidence}`);
    check(grown.every((r) => !r.badge && !r.marked), 'no Suspect badge');
    checkEvidence(grown, { exact: false, compared: true });
    check(grown.length === 0 || (await page.isVisible('#table')), 'what grew is still shown');
    await shoot(page, 'evidence-no-suspects');
    await themesAndPhone(page, 'evidence');

    // A baseline from another tracking session carries no retention (its samples cannot
    // be matched). The add-on cannot restart tracking without restarting, which forgets
    // its baselines, so here the page's socket runs through a route that blanks the
    // retention of compare replies; everything else is the add-on's own answer.
    await page.routeWebSocket(/\/ws$/, (ws) => {
      const server = ws.connectToServer();
      server.onMessage((m) => {
        let msg = null;
        try {
          msg = JSON.parse(m);
        } catch {
          // not JSON: passed on as it came
        }
        if (msg && msg.result && msg.result.compared_with && Array.isArray(msg.result.top_allocators)) {
          for (const r of msg.result.top_allocators) r.retention = null;
          ws.send(JSON.stringify(msg));
        } else {
          ws.send(m);
        }
      });
    });
    await page.reload();
    await live(page);
    // The reload closed the held sessions: hold twice as many, so the sessions' sites grow.
    await holdSessions(page, 80);
    await page.evaluate(() => window.opening);
    await page.selectOption('#compare-with', 'now');
    await page.click('#take-snapshot');
    await page.waitForFunction(() => /compared with “now”: leak suspects first/.test(document.getElementById('snapshot-meta').textContent), null, { timeout: 30000 });
    await page.waitForSelector('#suspects-note', { state: 'visible' });
    const across = await text(page, '#suspects-note');
    check(/^The leak-suspects order needs a baseline saved in this tracking session: “now” is from an earlier one/.test(across), `says why there are no suspects: ${across}`);
    const cross = await evidenceRows(page);
    check(cross.length > 0 && cross.every((r) => r.diff.startsWith('+')), 'what grew is shown');
    checkEvidence(cross, { exact: false, compared: false });
    check(!/leak score/.test(await text(page, '#evidence-help')), 'no score to explain without retention');
    await shoot(page, 'evidence-other-session');
  },
};

main().catch((e) => {
  console.error(e.stack || String(e));
  if (problems.length) console.error(problems.join('\n'));
  process.exit(1);
});
