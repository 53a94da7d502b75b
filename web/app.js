// Heapwatch panel: live memory figures, a 15-minute chart, snapshots and baselines; and
// the Host view: every add-on's, Core's and the Supervisor's memory with a verdict each.
//
// Everything talks to the add-on over one WebSocket at `ws` relative to the page (so it
// works under Home Assistant's ingress prefix and at `/`), except the report, which is a
// plain relative download link. The socket reconnects by itself with backoff.
'use strict';

(() => {
  const WINDOW_MS = 15 * 60 * 1000;
  const STREAM_INTERVAL_S = 2;
  // The trend moves once a minute by default; refreshing four times as often is cheap.
  const TREND_REFRESH_MS = 15000;
  const RECONNECT_MIN_MS = 1000;
  const RECONNECT_MAX_MS = 15000;
  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);

  // ---- formatting -------------------------------------------------------------------

  function bytes(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return '—';
    let v = Math.abs(n);
    let u = 0;
    while (v >= 1024 && u < UNITS.length - 1) {
      v /= 1024;
      u += 1;
    }
    const digits = u === 0 || v >= 100 ? 0 : 1;
    return `${n < 0 ? '−' : ''}${v.toFixed(digits)} ${UNITS[u]}`;
  }

  function signedBytes(n) {
    if (!n) return '±0';
    return n > 0 ? `+${bytes(n)}` : bytes(n);
  }

  function signedCount(n) {
    if (!n) return '±0';
    return n > 0 ? `+${n.toLocaleString()}` : `−${Math.abs(n).toLocaleString()}`;
  }

  // `1 sample`, `2 samples`, `1,024 blocks`.
  function plural(n, one, many) {
    return `${n.toLocaleString()} ${n === 1 ? one : many || `${one}s`}`;
  }

  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString();
  }

  function ago(iso) {
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    if (!Number.isFinite(s)) return '';
    if (s < 45) return 'just now';
    if (s < 90 * 60) return `${Math.round(s / 60)} min ago`;
    if (s < 36 * 3600) return `${Math.round(s / 3600)} h ago`;
    return `${Math.round(s / 86400)} d ago`;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // ---- the connection ---------------------------------------------------------------

  class Connection {
    constructor(handlers) {
      this.handlers = handlers;
      this.ws = null;
      this.nextId = 1;
      this.pending = new Map();
      this.streams = new Map();
      this.attempt = 0;
      this.timer = null;
    }

    socketUrl() {
      // document.baseURI is the page itself, or the ingress base the server put in <base>.
      const u = new URL('ws', document.baseURI);
      u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return u.href;
    }

    connect() {
      clearTimeout(this.timer);
      this.timer = null;
      this.handlers.state('connecting', this.attempt);
      let ws;
      try {
        ws = new WebSocket(this.socketUrl());
      } catch (e) {
        this.scheduleReconnect();
        return;
      }
      this.ws = ws;
      ws.addEventListener('message', (ev) => this.onMessage(ev));
      ws.addEventListener('close', (ev) => {
        if (this.ws !== ws) return;
        this.ws = null;
        this.failAll(new Error('the connection was lost'));
        this.handlers.closed(ev.code, ev.reason);
        this.scheduleReconnect();
      });
    }

    scheduleReconnect() {
      const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** this.attempt);
      this.attempt += 1;
      const at = Date.now() + delay;
      this.handlers.state('reconnecting', this.attempt, at);
      this.timer = setTimeout(() => this.connect(), delay);
    }

    retryNow() {
      if (this.ws) return;
      this.connect();
    }

    failAll(err) {
      for (const { reject } of this.pending.values()) reject(err);
      this.pending.clear();
      this.streams.clear();
    }

    onMessage(ev) {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (msg.event) {
        if (msg.event === 'server_info') {
          this.attempt = 0;
          this.handlers.state('live', 0);
          this.handlers.serverInfo(msg.data);
          return;
        }
        const stream = this.streams.get(msg.message_id);
        if (stream) stream(msg.data, msg.event);
        return;
      }
      const p = this.pending.get(msg.message_id);
      if (!p) return;
      this.pending.delete(msg.message_id);
      if ('result' in msg) p.resolve(msg.result);
      else {
        const err = new Error(msg.details || msg.error_code);
        err.code = msg.error_code;
        p.reject(err);
      }
    }

    call(command, args, onEvent) {
      return new Promise((resolve, reject) => {
        if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
          reject(new Error('not connected; reconnecting'));
          return;
        }
        const id = `p${this.nextId++}`;
        this.pending.set(id, { resolve, reject });
        if (onEvent) this.streams.set(id, onEvent);
        this.ws.send(JSON.stringify({ message_id: id, command, args: args || {} }));
      });
    }
  }

  // ---- state and rendering ----------------------------------------------------------

  const state = {
    samples: [], // { t, rss, heap }
    // Points further apart than this are not joined: the stream's, or the server
    // history's (a sample a minute) when the chart starts from it.
    gapMs: STREAM_INTERVAL_S * 1000 * 3,
    tracking: null,
    snapshot: null,
    baselines: [],
    busy: false,
    reorderPending: false,
  };

  function showBanner(id, text) {
    $(`${id}-text`).textContent = text;
    $(id).hidden = !text;
  }

  function showError(err) {
    showBanner('error', plainError(err));
  }

  // What went wrong, in a panel user's words: what to do next, not the API's names.
  function plainError(err, action) {
    const code = err && err.code;
    const msg = (err && err.message) || String(err);
    if (code === 'precondition_failed' && action === 'save') {
      const max = /at most (\d+)/.exec(msg);
      return `Heapwatch keeps at most ${max ? max[1] : 8} baselines, and all are in use. Drop one you no longer need (its Drop button, below), then save again.`;
    }
    if (code === 'not_found' && ['compare', 'reorder', 'drop'].includes(action)) {
      return 'That baseline is gone (the add-on restarted, or it was dropped elsewhere). Save a new one to compare with later.';
    }
    if (code === 'invalid_args') return `The add-on did not accept that: ${msg}`;
    if (code === 'unavailable' || code === 'rate_limited') return `The add-on is busy with another request. Try again in a moment. (${msg})`;
    if (/not connected|connection was lost/.test(msg)) return 'The connection to the add-on was lost. It reconnects by itself; try again once it says Live.';
    return msg;
  }

  // An inline error under the control the user acted on; scrolled into view.
  function showFieldError(id, text) {
    const e = $(id);
    e.textContent = text || '';
    e.hidden = !text;
    if (text) e.scrollIntoView({ block: 'nearest' });
  }

  // A button that waits on the add-on: a spinner, disabled, and told to screen readers.
  function setWorking(button, on) {
    if (!button) return;
    button.classList.toggle('working', on);
    button.setAttribute('aria-busy', String(on));
    if (on) button.disabled = true;
    else button.disabled = document.body.dataset.conn !== 'live' && button.hasAttribute('data-needs-socket');
  }

  let countdown = null;

  function setConn(kind, attempt, at) {
    document.body.dataset.conn = kind;
    const text = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…' }[kind];
    $('conn-text').textContent = text;
    $('conn').className = `chip conn ${kind}`;
    // Commands need the socket: their buttons wait for it.
    for (const b of document.querySelectorAll('[data-needs-socket]')) b.disabled = kind !== 'live';
    clearInterval(countdown);
    countdown = null;
    if (kind === 'live') {
      $('reconnect').hidden = true;
    } else if (kind === 'reconnecting') {
      const tick = () => {
        const secs = Math.max(1, Math.ceil((at - Date.now()) / 1000));
        showBanner('reconnect', `Connection to the add-on lost. Reconnecting in ${secs} s (attempt ${attempt})…`);
      };
      tick();
      countdown = setInterval(tick, 1000);
    } else if (attempt > 0) {
      showBanner('reconnect', `Connection to the add-on lost. Reconnecting now (attempt ${attempt})…`);
    }
  }

  function setTile(id, value, sub) {
    const tile = $(id);
    tile.querySelector('.value').textContent = value;
    if (sub !== undefined) tile.querySelector('.sub').textContent = sub;
  }

  function renderTracking(t) {
    state.tracking = t;
    const chip = $('tracking');
    if (!t) return;
    if (t.enabled) {
      const since = t.since ? ` since ${clock(t.since)}` : '';
      chip.textContent = `Tracking: ${t.mode}${since}`;
      chip.className = 'chip on';
    } else {
      chip.textContent = 'Tracking: off';
      chip.className = 'chip off';
    }
    $('start-tracking').hidden = !!t.enabled;
    // Exports answer only while tracking is on.
    $('exports-off').hidden = !!t.enabled;
    $('exports-scope').hidden = !t.enabled;
    for (const id of ['export-flamegraph', 'export-profile', 'export-folded']) {
      $(id).classList.toggle('disabled', !t.enabled);
      if (t.enabled) $(id).removeAttribute('aria-disabled');
      else $(id).setAttribute('aria-disabled', 'true');
    }
  }

  function renderStats(d) {
    const p = d.system.process;
    const h = d.system.host;
    const a = d.allocator;
    setTile('tile-rss', bytes(p.rss_bytes), `peak ${bytes(p.peak_rss_bytes)}`);
    const heapKnown = a.current_bytes > 0 || a.peak_bytes > 0;
    setTile('tile-heap', heapKnown ? bytes(a.current_bytes) : '—',
      heapKnown ? `${a.live_blocks.toLocaleString()} blocks, tracking or not` : 'allocator not instrumented');
    $('tile-peak').querySelector('.value').textContent = heapKnown ? bytes(a.peak_bytes) : '—';
    setTile('tile-host', bytes(h.available_bytes), `of ${bytes(h.total_bytes)} total`);
    setTile('tile-swap', h.swap_total_bytes ? bytes(h.swap_used_bytes) : 'none',
      h.swap_total_bytes ? `of ${bytes(h.swap_total_bytes)}` : 'no swap configured');
    const cg = d.system.cgroup;
    const limited = !!(cg && cg.limit_bytes);
    $('tile-cgroup').hidden = !limited;
    if (limited) setTile('tile-cgroup', bytes(cg.limit_bytes), `${bytes(cg.usage_bytes)} used`);
    if (d.tracking) renderTracking(d.tracking);
  }

  // The chart starts from the server's own history (kept across restarts), so a page
  // load shows the last 15 minutes, not an empty chart.
  async function loadHistory15m() {
    const h = await conn.call('debug/memory_history', { window: '15m' });
    state.gapMs = Math.max(STREAM_INTERVAL_S * 1000 * 3, h.sample_interval_s * 1000 * 3);
    const newest = state.samples.length ? state.samples[0].t : Infinity;
    const older = h.points.filter((p) => p[0] < newest).map(([t, rss, heap]) => ({ t, rss, heap }));
    state.samples = older.concat(state.samples);
    renderChart();
  }

  function addSample(d) {
    const t = Date.parse(d.sampled_at) || Date.now();
    state.samples.push({ t, rss: d.system.process.rss_bytes, heap: d.allocator.current_bytes });
    const cutoff = Date.now() - WINDOW_MS;
    while (state.samples.length && state.samples[0].t < cutoff) state.samples.shift();
    renderChart();
  }

  function niceStep(raw) {
    const exp = 1024 ** Math.max(0, Math.floor(Math.log(raw) / Math.log(1024)));
    const m = raw / exp;
    const nice = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1024].find((s) => s >= m) || 1024;
    return nice * exp;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  // Draws time series into `root` (an <svg>): a byte axis with round steps, time labels,
  // one path per series (broken where consecutive points are more than `gap` ms apart),
  // a dot on each series' newest point and dashed markers (restarts) at given times.
  // `box` gives the size. Returns the largest value drawn.
  function lineChart(box, root, opts) {
    const W = Math.max(280, box.clientWidth);
    const H = box.clientHeight || 220;
    const left = 64;
    const right = 12;
    const top = 10;
    const bottom = 26;
    root.setAttribute('viewBox', `0 0 ${W} ${H}`);
    root.replaceChildren();
    const { t0, t1, series, gap } = opts;
    const values = series.flatMap((s) => s.points.map((p) => p[1]));
    const max = Math.max(1, ...values);
    const step = niceStep(max / 4);
    const ymax = Math.ceil(max / step) * step;
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (W - left - right);
    const y = (v) => top + (1 - v / ymax) * (H - top - bottom);

    for (let v = 0; v <= ymax + 1; v += step) {
      root.append(svg('line', { class: 'grid', x1: left, x2: W - right, y1: y(v), y2: y(v) }));
      const label = svg('text', { class: 'axis', x: left - 8, y: y(v) + 4, 'text-anchor': 'end' });
      label.textContent = bytes(v);
      root.append(label);
    }
    opts.xLabels.forEach(([t, text], i) => {
      const last = i === opts.xLabels.length - 1;
      const label = svg('text', {
        class: 'axis', x: x(t), y: H - 6, 'text-anchor': i === 0 ? 'start' : last ? 'end' : 'middle',
      });
      label.textContent = text;
      root.append(label);
    });
    for (const t of opts.markers || []) {
      if (t < t0 || t > t1) continue;
      const mark = svg('line', { class: 'restart', x1: x(t), x2: x(t), y1: top, y2: H - bottom });
      const title = svg('title', {});
      title.textContent = `Restarted ${new Date(t).toLocaleString()}`;
      mark.append(title);
      root.append(mark);
    }
    for (const s of series) {
      if (!s.points.length) continue;
      let d = '';
      let prev = null;
      for (const [t, v] of s.points) {
        const cmd = prev !== null && t - prev <= gap ? 'L' : 'M';
        d += `${cmd}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
        prev = t;
      }
      root.append(svg('path', { class: `line ${s.cls}`, d }));
      const [lt, lv] = s.points[s.points.length - 1];
      root.append(svg('circle', { class: `dot ${s.cls}`, cx: x(lt), cy: y(lv), r: 3.5 }));
    }
    return max;
  }

  function renderChart() {
    const now = Date.now();
    const samples = state.samples;
    $('chart').dataset.points = String(samples.length);
    const series = [{ cls: 'rss', points: samples.map((s) => [s.t, s.rss]) }];
    if (samples.some((s) => s.heap > 0)) {
      series.push({ cls: 'heap', points: samples.filter((s) => s.heap > 0).map((s) => [s.t, s.heap]) });
    }
    lineChart($('chart'), $('chart-svg'), {
      t0: now - WINDOW_MS,
      t1: now,
      series,
      gap: state.gapMs,
      xLabels: [15, 10, 5, 0].map((m) => [now - m * 60000, m === 0 ? 'now' : `−${m} min`]),
    });
    if (samples.length) {
      const last = samples[samples.length - 1];
      $('chart-summary').textContent =
        `${samples.length} samples over the last 15 minutes; now process RSS ${bytes(last.rss)}, tracked heap ${last.heap ? bytes(last.heap) : 'unknown'}.`;
    }
  }

  function renderBaselines(list) {
    state.baselines = list || [];
    const ul = $('baseline-list');
    ul.replaceChildren();
    for (const b of state.baselines) {
      const taken = b.taken_at ? `taken ${clock(b.taken_at)} (${ago(b.taken_at)})` : 'taken before tracking started';
      ul.append(el('li', { class: 'baseline' },
        el('div', { class: 'baseline-text' },
          el('span', { class: 'baseline-name', text: b.name }),
          el('span', { class: 'secondary', text: taken, title: b.taken_at || '' })),
        el('div', { class: 'baseline-actions' },
          el('button', { type: 'button', text: 'Compare', 'aria-label': `Compare with ${b.name}`, onclick: (ev) => compareWith(b.name, ev.currentTarget) }),
          el('button', { type: 'button', class: 'danger', text: 'Drop', 'aria-label': `Drop baseline ${b.name}`, onclick: (ev) => dropBaseline(b.name, ev.currentTarget) }))));
    }
    $('baseline-empty').hidden = state.baselines.length > 0;
    const select = $('compare-with');
    const current = select.value;
    select.replaceChildren(el('option', { value: '', text: 'No baseline' }));
    for (const b of state.baselines) select.append(el('option', { value: b.name, text: b.name }));
    select.value = state.baselines.some((b) => b.name === current) ? current : '';
    showOrder();
    updateReportLink();
  }

  // The Order control applies to compares only: shown while a baseline is chosen.
  function showOrder() {
    $('order-label').hidden = !$('compare-with').value;
  }

  function updateReportLink() {
    const params = new URLSearchParams();
    const compare = $('compare-with').value;
    if (compare) {
      params.set('compare_with', compare);
      params.set('order', $('order').value);
    }
    params.set('group_by', $('group-by').value);
    $('report').setAttribute('href', `api/report?${params}`);
    // The exports: of the heap now, or against the baseline chosen under Compare with.
    const base = compare ? `?${new URLSearchParams({ baseline: compare })}` : '';
    $('export-flamegraph').setAttribute('href', `api/memory/flamegraph.svg${base}`);
    $('export-profile').setAttribute('href', 'api/memory/profile.pb.gz');
    $('export-folded').setAttribute('href', `api/memory/folded${base}`);
    $('exports-baseline-note').textContent = compare ? `, against the baseline “${compare}”` : '';
  }

  let rowSeq = 0;

  // A frame ({function, file, line} from the server) as function over place.
  function frameParts(frame) {
    const where = frame.file ? (frame.line ? `${frame.file}:${frame.line}` : frame.file) : '';
    return [el('span', { class: 'fn', text: frame.function }), where ? el('span', { class: 'where', text: where }) : null];
  }

  // Library frames (the standard library, crates, the tracker) folded into one line that
  // opens to show them.
  function libraryGroup(frames, what) {
    const crates = [...new Set(frames.map((f) => (f.function || '').split('::')[0].replace(/^</, '')).filter(Boolean))];
    const named = crates.slice(0, 3).join(', ') + (crates.length > 3 ? ', …' : '');
    return el('li', { class: 'library' },
      el('details', {},
        el('summary', { text: `${frames.length} library frame${frames.length === 1 ? '' : 's'} ${what}${named ? ` (${named})` : ''}` }),
        el('ol', { class: 'library-frames' }, ...frames.map((f) => el('li', {}, ...frameParts(f))))));
  }

  // The whole traceback as a list, allocation site first: the library frames the
  // allocation went through inside the site (`inner`) folded before it, and runs of
  // library frames further out folded too.
  function tracebackList(frames, attrs, inner) {
    const items = [];
    if (inner && inner.length) items.push(libraryGroup(inner, 'inside'));
    let run = [];
    const flush = () => {
      if (run.length) items.push(libraryGroup(run, 'between'));
      run = [];
    };
    frames.forEach((f, i) => {
      if (f.library && i > 0) {
        run.push(f);
        return;
      }
      flush();
      items.push(el('li', { class: i === 0 ? 'site-frame' : '' }, ...frameParts(f)));
    });
    flush();
    return el('ol', Object.assign({ class: 'traceback', 'aria-label': 'Traceback, allocation site first' }, attrs || {}), ...items);
  }

  // A button showing the site (the traceback's first frame) that expands `detail`
  // (which must carry an id) by mouse or keyboard.
  function expandToggle(frames, detail) {
    const toggle = el('button', {
      type: 'button', class: 'expand', 'aria-expanded': 'false', 'aria-controls': detail.id,
      title: 'Show the whole traceback',
    },
    el('span', { class: 'chevron', 'aria-hidden': 'true' }),
    el('span', { class: 'site' }, ...frameParts(frames[0] || { function: '(unknown)' })));
    toggle.addEventListener('click', () => {
      const open = toggle.getAttribute('aria-expanded') !== 'true';
      toggle.setAttribute('aria-expanded', String(open));
      detail.hidden = !open;
    });
    return toggle;
  }

  // ---- evidence: what the samples behind a row say ------------------------------------

  // How a compare's rows are ordered, in the words of the Order control and the meta line.
  const ORDER_TEXT = {
    suspects: 'leak suspects first',
    change: 'largest change first',
    growth: 'only what grew, largest first',
  };

  // What the leak score is, for the Suspect badge and each score shown.
  const SCORE_HELP = 'The leak score weighs the growth against how much this site’s memory came and went since the baseline: '
    + 'a leak’s blocks are only added (its score grows with the square root of their number), '
    + 'churn’s are added and freed in balance (score near 0). Growth with a score of 3 or more makes a suspect.';

  // What became of the samples (blocks, in exact mode) since the baseline, in words:
  // those born since and whether they were freed; the baseline's and whether they stayed.
  function retentionWords(t) {
    const born = t.new_alive + t.new_freed;
    let fresh;
    if (!born) fresh = 'none new';
    else if (!t.new_freed) fresh = `${born.toLocaleString()} new, none freed`;
    else if (!t.new_alive) fresh = born === 1 ? '1 new, already freed' : `${born.toLocaleString()} new, all freed`;
    else fresh = `${born.toLocaleString()} new, ${t.new_freed.toLocaleString()} of them freed`;
    const old = t.old_retained + t.old_freed;
    let kept;
    if (!old) kept = 'none in the baseline';
    else if (!t.old_freed) kept = { 1: 'baseline kept its 1', 2: 'baseline kept both' }[old] || `baseline kept all ${old.toLocaleString()}`;
    else if (!t.old_retained) kept = { 1: 'the 1 from the baseline freed', 2: 'both from the baseline freed' }[old] || `all ${old.toLocaleString()} from the baseline freed`;
    else kept = `${t.old_freed.toLocaleString()} of the baseline’s ${old.toLocaleString()} freed`;
    return [fresh, kept];
  }

  // A row's evidence line: `±1.1 MiB · 5 samples · 4 new, none freed · baseline kept all 3
  // · leak score 2.0` (sampled), `5 blocks · …` (exact: the sizes are exact, no ±).
  function evidenceText(r, exact) {
    const parts = [];
    if (!exact) parts.push(`±${bytes(r.std_error_bytes || 0)}`);
    parts.push(plural(r.samples || 0, exact ? 'block' : 'sample'));
    const t = r.retention;
    if (t) {
      parts.push(...retentionWords(t));
      parts.push(`leak score ${t.leak_score.toFixed(1)}`);
    }
    return parts.join(' · ');
  }

  // The site cell's second line: the Suspect badge (words, not colour alone) and the
  // evidence.
  function evidenceLine(r, exact) {
    if (r.samples === undefined) return null; // an add-on older than the evidence
    const t = r.retention;
    return el('div', { class: 'evidence-line' },
      t && t.suspect ? el('span', { class: 'badge suspect', title: `Leak suspect. ${SCORE_HELP}`, text: 'Suspect' }) : null,
      el('span', { class: 'evidence', title: t ? SCORE_HELP : null, text: evidenceText(r, exact) }));
  }

  // Under the table's controls: what the evidence means, and, in the suspects order, why
  // there are none when there are none.
  function renderEvidenceNotes(s, rows, compared, exact) {
    const order = s.order || 'change';
    const withRetention = rows.some((r) => r.retention);
    const unit = exact ? 'blocks' : 'samples';
    let help = '';
    if (compared && withRetention) {
      help = `Under each site: ${exact ? 'the blocks it holds' : 'the estimate’s uncertainty (±, one standard error), the samples it rests on'} and what became of them since “${s.compared_with}”. `
        + `A leak’s ${unit} only accumulate: the new ones stay, and so do the baseline’s. ${SCORE_HELP}`;
    } else if (rows.length && rows[0].samples !== undefined) {
      help = exact
        ? 'Under each site: how many blocks it holds (exact mode counts every block).'
        : 'Under each site: the estimate’s uncertainty (±, one standard error) and how many samples it rests on; few samples, wide margin.';
    }
    $('evidence-help').textContent = help;
    $('evidence-help').hidden = !help;
    let note = '';
    if (compared && order === 'suspects') {
      if (rows.length && !withRetention) {
        note = `The leak-suspects order needs a baseline saved in this tracking session: “${s.compared_with}” is from an earlier one, so what became of its ${unit} is not known. `
          + 'Below: what grew, largest first. Save a new baseline now and compare with it later.';
      } else if (!rows.some((r) => r.retention && r.retention.suspect)) {
        note = rows.length
          ? `No leak suspects yet: no site’s ${unit} only accumulate. The sites below grew, but their ${unit} also came and went, or are still too few to tell. Let the add-on run longer and compare again.`
          : `No leak suspects yet: nothing grew since “${s.compared_with}”.`;
      }
    }
    $('suspects-note').textContent = note;
    $('suspects-note').hidden = !note;
  }

  // The note for the snapshot that turned tracking on, naming the panel's own controls.
  const STARTED_NOTE = 'Tracking is on: it sees memory allocated from now on. Save a baseline (Baselines → Save baseline), use the add-on as you usually do, then press Compare next to the baseline to see what grew.';

  function renderSnapshot(s, justStarted) {
    state.snapshot = s;
    renderStats(s);
    renderBaselines(s.baselines || (s.baseline_names || []).map((name) => ({ name, taken_at: null })));
    const compared = s.compared_with !== null && s.compared_with !== undefined;
    if (compared) $('compare-with').value = s.compared_with;
    if (compared && ORDER_TEXT[s.order]) $('order').value = s.order;
    showOrder();
    updateReportLink();
    // In the server's order: a compare's is the one asked for under Order.
    const rows = [...s.top_allocators];
    const exact = !!(s.tracking && s.tracking.mode === 'exact');
    const meta = compared
      ? `Taken ${clock(s.taken_at)}, compared with “${s.compared_with}”: ${ORDER_TEXT[s.order] || ORDER_TEXT.change}.`
      : `Taken ${clock(s.taken_at)}, grouped by ${s.group_by}: largest first.`;
    // Nothing to show, said in the meta line (for suspects, the note below says it).
    let none = '';
    if (rows.length) none = '';
    else if (!compared) none = ' No allocations recorded yet.';
    else if (s.order === 'growth') none = ` Nothing grew since “${s.compared_with}”.`;
    else if (s.order !== 'suspects') none = ` Nothing changed since “${s.compared_with}”.`;
    $('snapshot-meta').textContent =
      `${meta}${s.tracking && s.tracking.estimated ? ' Sizes are sampled estimates.' : ''}${none}`;
    renderEvidenceNotes(s, rows, compared, exact);
    const table = $('table');
    table.hidden = rows.length === 0;
    table.classList.toggle('compared', compared);
    const body = $('rows');
    body.replaceChildren();
    for (const r of rows) {
      rowSeq += 1;
      const detailId = `tb-${rowSeq}`;
      const trend = !compared || r.size_diff_bytes === 0 ? '' : r.size_diff_bytes > 0 ? 'growth' : 'shrink';
      const detail = el('tr', { class: 'detail', id: detailId, hidden: true },
        el('td', { colspan: '5' }, tracebackList(r.frames, {}, r.inner_frames)));
      const toggle = expandToggle(r.frames, detail);
      const suspect = !!(r.retention && r.retention.suspect);
      body.append(
        el('tr', { class: `row ${trend}${suspect ? ' suspect' : ''}` },
          el('th', { scope: 'row' }, toggle, evidenceLine(r, exact)),
          el('td', { class: 'num', text: bytes(r.size_bytes) }),
          el('td', { class: `num diff diff-col ${trend}`, text: signedBytes(r.size_diff_bytes) }),
          el('td', { class: 'num wide', text: r.count.toLocaleString() }),
          el('td', { class: `num wide diff diff-col ${trend}`, text: signedCount(r.count_diff) })),
        detail);
    }
    // How much of the heap the table covers, and what would help.
    const cov = s.coverage;
    $('coverage').hidden = !(cov && cov.hint);
    $('coverage').textContent = cov && cov.hint ? cov.hint : '';
    if (justStarted) showBanner('note', STARTED_NOTE);
    else if (s.note) showBanner('note', s.note);
  }

  // ---- the trend verdict --------------------------------------------------------------

  const VERDICT_TEXT = {
    growing: 'Growing',
    stable: 'Stable',
    insufficient_data: 'Not enough data yet',
  };

  function perHour(n) {
    if (n === null || n === undefined) return '—';
    return `${signedBytes(Math.round(n))}/h`;
  }

  function renderTrend(t) {
    const badge = $('trend-verdict');
    badge.dataset.verdict = t.verdict;
    badge.textContent = VERDICT_TEXT[t.verdict] || t.verdict;
    const span = t.samples ? `${t.samples} sample${t.samples === 1 ? '' : 's'} since ${clock(t.oldest_sample_at)}` : 'no samples yet';
    $('trend-meta').textContent =
      `Memory is recorded every ${Math.round(t.sample_interval_s)} s (${span}). “Growing” means at least ${bytes(t.threshold_bytes_per_hour)} per hour, rising steadily.`;
    const body = $('trend-rows');
    body.replaceChildren();
    for (const w of t.windows) {
      // A window without enough samples says when it will have them.
      const ready = (a) => {
        const missing = (w.samples_needed || 0) - (a.points || 0);
        if (missing <= 0) return 'soon';
        const min = Math.ceil((missing * t.sample_interval_s) / 60);
        return min < 90 ? `ready in ${min} min` : `ready in ${Math.round(min / 60)} h`;
      };
      const cell = (a) => el('td', { class: `num verdict-${a.verdict}`, title: VERDICT_TEXT[a.verdict] || a.verdict },
        a.verdict === 'insufficient_data' ? ready(a) : perHour(a.slope_bytes_per_hour),
        a.verdict === 'growing' ? el('span', { class: 'sr-only', text: ' (growing)' }) : null);
      body.append(el('tr', {}, el('th', { scope: 'row', text: w.window }), cell(w.rss), cell(w.heap)));
    }
    const list = $('growing-sites');
    list.replaceChildren();
    for (const g of t.growing_sites) {
      rowSeq += 1;
      const id = `gs-${rowSeq}`;
      const detail = tracebackList(g.frames, { id, hidden: true }, g.inner_frames);
      const toggle = expandToggle(g.frames, detail);
      list.append(el('li', { class: 'growing-site' },
        el('div', { class: 'growing-head' }, toggle,
          el('span', { class: 'num growth', text: perHour(g.growth_bytes_per_hour) }),
          el('span', { class: 'num secondary', text: bytes(g.size_bytes) })),
        detail));
    }
    $('growing-title').hidden = t.growing_sites.length === 0;
  }

  async function refreshTrend() {
    if (!conn.ws) return;
    try {
      renderTrend(await conn.call('debug/memory_trend'));
    } catch (e) {
      if (conn.ws) showError(e);
    }
  }

  // ---- the host view: every add-on, Core, the Supervisor and the plugins --------------

  // While the Host view shows: refresh this often (or every poll, if the add-on polls
  // faster); hidden: once a minute, for the tab's "growing" badge.
  const HOST_REFRESH_MS = 15000;
  const HOST_BACKGROUND_MS = 60000;
  const HOST_WAITING_MS = 2000;
  const HOST_WINDOWS = [['24h', '24 hours'], ['7d', '7 days'], ['30d', '30 days'], ['90d', '90 days']];
  const HOST_SPAN_MS = { '24h': 864e5, '7d': 7 * 864e5, '30d': 30 * 864e5, '90d': 90 * 864e5 };
  const KIND_TEXT = { core: 'Home Assistant', supervisor: 'Supervisor', plugin: 'Plugin', addon: 'Add-on' };

  const host = {
    data: null,
    sort: 'size',
    // slug → the window its opened chart shows; the history last fetched for it.
    open: new Map(),
    histories: new Map(),
    timer: null,
    loading: false,
  };

  function hostVisible() {
    return !$('view-host').hidden;
  }

  function growthRate(n) {
    return `${signedBytes(Math.round(n))}/h`;
  }

  function sortedContainers(list) {
    const rows = [...list];
    const size = (c) => c.memory_bytes || 0;
    if (host.sort === 'growth') {
      // Growing first, then rising, each fastest first; then the rest by size.
      const rank = (c) => ({ growing: 2, rising: 1 }[c.verdict] || 0);
      const slope = (c) => (rank(c) ? c.slope_bytes_per_hour || 0 : 0);
      rows.sort((a, b) => rank(b) - rank(a) || slope(b) - slope(a) || size(b) - size(a));
    } else {
      rows.sort((a, b) => size(b) - size(a) || a.name.localeCompare(b.name));
    }
    return rows;
  }

  // A 24-hour sparkline: one polyline, scaled to its own range.
  function sparkline(c) {
    const pts = c.sparkline || [];
    const root = svg('svg', {
      class: `spark ${c.verdict}`, viewBox: '0 0 100 24', preserveAspectRatio: 'none', 'aria-hidden': 'true',
    });
    if (pts.length < 2) return root;
    const t0 = pts[0][0];
    const t1 = pts[pts.length - 1][0];
    const lo = Math.min(...pts.map((p) => p[1]));
    const hi = Math.max(...pts.map((p) => p[1]));
    const span = Math.max(hi - lo, hi * 0.05, 1);
    const d = pts.map(([t, v], i) => {
      const x = ((t - t0) / Math.max(1, t1 - t0)) * 100;
      const y = 22 - ((v - lo) / span) * 20;
      return `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`;
    }).join('');
    root.append(svg('path', { class: 'line', d }));
    return root;
  }

  function verdictCell(c) {
    const cell = el('td', { class: 'num growth-cell' });
    const chip = el('span', { class: 'chip verdict', 'data-verdict': c.verdict });
    if (c.verdict === 'growing') chip.textContent = growthRate(c.slope_bytes_per_hour);
    else if (c.verdict === 'rising') chip.textContent = `Rising? ${growthRate(c.slope_bytes_per_hour)}`;
    else chip.textContent = c.verdict === 'stable' ? 'Stable' : 'Not enough data yet';
    cell.append(chip);
    const notes = [];
    if (c.verdict === 'rising') notes.push('a day of history decides');
    if (c.verdict === 'growing' && c.hours_to_exhaustion !== null && c.hours_to_exhaustion !== undefined) {
      notes.push(`host memory full in ~${Math.round(c.hours_to_exhaustion)} h`);
    }
    if (c.sawtooth) notes.push('grew before each restart too');
    if (c.restarts_7d) notes.push(`${c.restarts_7d} restart${c.restarts_7d === 1 ? '' : 's'} in 7 days`);
    if (notes.length) cell.append(el('span', { class: 'cell-note', text: notes.join(' · ') }));
    return cell;
  }

  function nameButton(c, detail) {
    const sub = [KIND_TEXT[c.kind] || c.kind];
    if (c.version) sub.push(c.version);
    if (c.state && c.state !== 'started') sub.push(c.state);
    const toggle = el('button', {
      type: 'button', class: 'expand', 'aria-expanded': String(host.open.has(c.slug)), 'aria-controls': detail.id,
      title: 'Show its memory over time', 'data-slug': c.slug,
    },
    el('span', { class: 'chevron', 'aria-hidden': 'true' }),
    el('span', { class: 'site' },
      el('span', { class: 'host-name', text: c.name }),
      el('span', { class: 'where', text: sub.join(' · ') }),
      c.error ? el('span', { class: 'cell-error', text: c.error }) : null));
    toggle.addEventListener('click', () => {
      const open = toggle.getAttribute('aria-expanded') !== 'true';
      toggle.setAttribute('aria-expanded', String(open));
      detail.hidden = !open;
      if (open) {
        host.open.set(c.slug, host.open.get(c.slug) || '7d');
        loadHistory(c.slug);
      } else {
        host.open.delete(c.slug);
      }
    });
    return toggle;
  }

  function detailContent(c, id) {
    const windowName = host.open.get(c.slug) || '7d';
    const picker = el('div', { class: 'segmented', role: 'radiogroup', 'aria-label': `Time span for ${c.name}` },
      ...HOST_WINDOWS.map(([w, label]) => el('button', {
        type: 'button', role: 'radio', 'aria-checked': String(w === windowName), 'data-window': w, text: label,
        onclick: () => {
          host.open.set(c.slug, w);
          loadHistory(c.slug);
        },
      })));
    const windows = el('ul', { class: 'host-windows', 'aria-label': 'Verdict per window' },
      ...(c.windows || []).map((w) => el('li', { class: `verdict-${w.verdict}` },
        el('span', { class: 'secondary', text: w.window }),
        el('span', {
          text: w.verdict === 'insufficient_data' ? 'not enough data'
            : `${growthRate(w.slope_bytes_per_hour)}${w.verdict === 'growing' ? ' growing' : ''}`,
        }))));
    return el('td', { colspan: '5' },
      el('div', { class: 'host-detail' },
        picker,
        el('div', { class: 'chart host-chart', id: `${id}-chart`, 'data-points': '0' },
          svg('svg', { class: 'host-svg', role: 'img', 'aria-labelledby': `${id}-summary`, preserveAspectRatio: 'none' }),
          el('p', { class: 'sr-only', id: `${id}-summary`, text: 'Loading…' })),
        el('p', { class: 'secondary host-chart-note', id: `${id}-note`, text: 'Loading…' }),
        windows));
  }

  // Draws an opened row's chart from the history fetched for it.
  function drawHistory(slug) {
    const row = document.querySelector(`#host-rows tr.detail[data-slug="${CSS.escape(slug)}"]`);
    const h = host.histories.get(slug);
    if (!row || !h || row.hidden) return;
    const box = row.querySelector('.host-chart');
    const span = HOST_SPAN_MS[h.window] || HOST_SPAN_MS['7d'];
    const t1 = h.now_ms;
    const t0 = t1 - span;
    const restarts = h.restarts.map((r) => Date.parse(r)).filter(Number.isFinite);
    // The polled points are a poll apart (or more, when polls take longer than the
    // interval), the averages 15 minutes: break the line where several in a row are
    // missing (the add-on was stopped, or Heapwatch was).
    const deltas = h.points.slice(1).map((p, i) => p[0] - h.points[i][0]).sort((a, b) => a - b);
    const typical = deltas.length ? deltas[Math.floor(deltas.length / 2)] : 0;
    const step = Math.max(typical, h.averaged ? 15 * 60000 : (host.data ? host.data.poll.interval_s * 1000 : 60000));
    const days = span / 864e5;
    const labels = days <= 1
      ? [24, 18, 12, 6, 0].map((hrs) => [t1 - hrs * 36e5, hrs ? `−${hrs} h` : 'now'])
      : [days, Math.round((days * 2) / 3), Math.round(days / 3), 0].map((d) => [t1 - d * 864e5, d ? `−${d} d` : 'now']);
    lineChart(box, box.querySelector('svg'), {
      t0, t1, gap: step * 4, xLabels: labels, markers: restarts,
      series: [{ cls: 'host-line', points: h.points }],
    });
    box.dataset.points = String(h.points.length);
    box.dataset.restarts = String(restarts.filter((t) => t >= t0).length);
    const shown = HOST_WINDOWS.find(([w]) => w === h.window);
    const summary = h.points.length
      ? `${h.points.length} ${h.averaged ? '15-minute averages' : 'polls'} over the last ${shown ? shown[1] : h.window}; ${restarts.length} restart${restarts.length === 1 ? '' : 's'} marked.`
      : `No memory recorded in the last ${shown ? shown[1] : h.window} yet.`;
    row.querySelector('.sr-only').textContent = summary;
    row.querySelector('.host-chart-note').textContent =
      `${summary}${restarts.length ? ' Dashed lines are restarts: the verdict looks at memory since the last one.' : ''}`;
    for (const b of row.querySelectorAll('.segmented button')) b.setAttribute('aria-checked', String(b.dataset.window === h.window));
  }

  async function loadHistory(slug) {
    const windowName = host.open.get(slug) || '7d';
    try {
      const h = await conn.call('host/memory_history', { slug, window: windowName });
      if (host.open.get(slug) !== windowName) return; // another span was picked meanwhile
      host.histories.set(slug, h);
      drawHistory(slug);
    } catch (e) {
      const note = document.querySelector(`#host-rows tr.detail[data-slug="${CSS.escape(slug)}"] .host-chart-note`);
      if (note) note.textContent = `Could not load the history: ${e.message}`;
    }
  }

  function renderHost() {
    const d = host.data;
    if (!d) return;
    const badge = $('host-tab-badge');
    badge.hidden = !d.growing.length;
    badge.textContent = d.growing.length ? `${d.growing.length} growing` : '';
    $('host-off').hidden = d.enabled;
    $('host-card').hidden = !d.enabled;
    if (!d.enabled) {
      const why = d.off_reason || 'the Supervisor is not reachable';
      $('host-off-reason').textContent = `Off because ${why}.`;
      $('host-banner').hidden = true;
      return;
    }
    const more = d.growing.length > 1 ? ` (and ${d.growing.length - 1} more)` : '';
    showBanner('host-banner', d.banner ? `Growing: ${d.banner}${more}` : '');
    const names = (slugs) => slugs.map((s) => (d.containers.find((c) => c.slug === s) || { name: s }).name).join(', ');
    const rising = d.rising || [];
    $('host-rising').hidden = !rising.length;
    $('host-rising').textContent = rising.length
      ? `Rising for less than a day: ${names(rising)}. Not called a leak yet — memory that follows a daily rhythm rises for up to 12 hours too; a day of history decides.`
      : '';
    const p = d.poll;
    const took = p.last_duration_ms !== null && p.last_duration_ms !== undefined ? `, the last one took ${(p.last_duration_ms / 1000).toFixed(1)} s` : '';
    $('host-meta').textContent = p.polls
      ? `${d.containers.length} containers, polled every ${p.interval_s} s${took}`
      : 'Waiting for the first poll…';
    const err = p.error ? `The Supervisor could not be asked: ${p.error}. The table shows what was polled before.` : '';
    showBanner('host-error', err);
    $('host-empty').hidden = d.containers.length > 0;
    $('host-table').hidden = d.containers.length === 0;
    for (const [key, th] of [['size', $('host-sort-size')], ['growth', $('host-sort-growth')]]) {
      th.setAttribute('aria-sort', host.sort === key ? 'descending' : 'none');
    }
    const body = $('host-rows');
    const focused = document.activeElement && document.activeElement.closest('#host-rows') ? document.activeElement.dataset.slug : null;
    body.replaceChildren();
    sortedContainers(d.containers).forEach((c, i) => {
      const id = `host-${i}`;
      const detail = el('tr', { class: 'detail', id, 'data-slug': c.slug, hidden: !host.open.has(c.slug) }, detailContent(c, id));
      const toggle = nameButton(c, detail);
      const share = c.host_share !== null && c.host_share !== undefined ? `${(c.host_share * 100).toFixed(1)} %` : '—';
      body.append(
        el('tr', { class: `row host-row ${c.verdict === 'growing' ? 'growth' : ''}`, 'data-slug': c.slug, 'data-verdict': c.verdict },
          el('th', { scope: 'row' }, toggle),
          el('td', { class: 'num', text: c.memory_bytes !== null && c.memory_bytes !== undefined ? bytes(c.memory_bytes) : '—' }),
          el('td', { class: 'num wide', text: share }),
          el('td', { class: 'spark-col wide' }, sparkline(c)),
          verdictCell(c)),
        detail);
      if (focused === c.slug) toggle.focus();
    });
    for (const slug of host.open.keys()) {
      if (host.histories.has(slug)) drawHistory(slug);
      loadHistory(slug);
    }
  }

  async function refreshHost() {
    clearTimeout(host.timer);
    host.timer = null;
    if (!conn.ws || host.loading) return;
    host.loading = true;
    try {
      host.data = await conn.call('host/memory');
      renderHost();
    } catch (e) {
      if (conn.ws && hostVisible()) showBanner('host-error', `The host table could not be loaded: ${e.message}`);
    } finally {
      host.loading = false;
    }
    const d = host.data;
    if (!d || !d.enabled) return; // off until the add-on restarts (a reconnect asks again)
    let ms = HOST_BACKGROUND_MS;
    if (hostVisible()) ms = d.containers.length ? Math.min(HOST_REFRESH_MS, d.poll.interval_s * 1000) : HOST_WAITING_MS;
    host.timer = setTimeout(refreshHost, ms);
  }

  function showView(name, focus) {
    for (const v of ['self', 'host']) {
      const on = v === name;
      const tab = $(`tab-${v}`);
      tab.setAttribute('aria-selected', String(on));
      tab.tabIndex = on ? 0 : -1;
      $(`view-${v}`).hidden = !on;
    }
    if (focus) $(`tab-${name}`).focus();
    const hash = name === 'host' ? '#host' : '';
    if (location.hash !== hash) history.replaceState(null, '', `${location.pathname}${location.search}${hash}`);
    if (name === 'host') {
      renderHost();
      refreshHost();
    } else {
      renderChart();
    }
  }

  function onTabKey(ev) {
    const order = ['self', 'host'];
    const at = order.indexOf(ev.currentTarget.id.slice(4));
    const to = { ArrowRight: at + 1, ArrowLeft: at - 1, Home: 0, End: order.length - 1 }[ev.key];
    if (to === undefined) return;
    ev.preventDefault();
    showView(order[(to + order.length) % order.length], true);
  }

  // ---- actions ----------------------------------------------------------------------

  const conn = new Connection({
    state: setConn,
    closed: () => {},
    serverInfo: onServerInfo,
  });

  function snapshotArgs(extra) {
    const args = { group_by: $('group-by').value };
    const n = Number.parseInt($('top-n').value, 10);
    if (Number.isInteger(n)) args.top_n = Math.min(200, Math.max(1, n));
    const compare = $('compare-with').value;
    if (compare) {
      args.compare_with = compare;
      args.order = $('order').value;
    }
    return Object.assign(args, extra || {});
  }

  // Where an action's progress and error show: the button pressed and the error line
  // under its form.
  const ACTIONS = {
    snapshot: { button: 'take-snapshot', error: 'snapshot-error' },
    compare: { button: 'take-snapshot', error: 'snapshot-error' },
    save: { button: 'save-baseline', error: 'baseline-error' },
    drop: { button: null, error: 'baseline-error' },
    reorder: { button: null, error: 'snapshot-error' },
    start: { button: 'start-tracking', error: null },
  };

  async function snapshot(extra, action = 'snapshot', button = null) {
    if (state.busy) {
      // A new order picked while a snapshot runs: asked for once that one is in.
      if (action === 'reorder') state.reorderPending = true;
      return false;
    }
    state.busy = true;
    document.body.classList.add('busy');
    const where = ACTIONS[action] || ACTIONS.snapshot;
    const pressed = button || (where.button && $(where.button));
    setWorking(pressed, true);
    const wasTracking = !!(state.tracking && state.tracking.enabled);
    try {
      // The trend is asked for at the same moment: it describes the instant of the click,
      // not the end of a long snapshot.
      const trend = refreshTrend();
      const s = await conn.call('debug/memory_snapshot', snapshotArgs(extra));
      renderSnapshot(s, !wasTracking && s.tracking && s.tracking.enabled);
      $('error').hidden = true;
      for (const id of ['snapshot-error', 'baseline-error']) showFieldError(id, '');
      await trend;
      return true;
    } catch (e) {
      if (where.error) showFieldError(where.error, plainError(e, action));
      else showError(e);
      return false;
    } finally {
      state.busy = false;
      document.body.classList.remove('busy');
      setWorking(pressed, false);
      if (state.reorderPending) {
        state.reorderPending = false;
        reorder();
      }
    }
  }

  // The Order control re-asks at once when the table shows a compare in another order.
  function reorder() {
    const s = state.snapshot;
    const shown = s && s.compared_with !== null && s.compared_with !== undefined ? s.order : null;
    if ($('compare-with').value && shown !== $('order').value) snapshot(undefined, 'reorder');
    else updateReportLink();
  }

  function compareWith(name, button) {
    $('compare-with').value = name;
    snapshot(undefined, 'compare', button);
  }

  function dropBaseline(name, button) {
    const extra = { drop_baseline: name };
    if ($('compare-with').value === name) $('compare-with').value = '';
    snapshot(extra, 'drop', button);
  }

  async function onServerInfo(info) {
    $('version').textContent = `version ${info.server_version}`;
    const u = info.user;
    const who = u && (u.display_name || u.name || u.id);
    $('user').hidden = !who;
    $('user').textContent = who || '';
    // Baselines live in the add-on's memory: after a restart they are gone, so forget
    // them until the next snapshot lists what the server still has.
    renderBaselines([]);
    try {
      const sys = await conn.call('system/info');
      renderTracking(sys.tracking);
      await loadHistory15m();
      await conn.call('debug/memory_subscribe', { interval_s: STREAM_INTERVAL_S }, (data) => {
        renderStats(data);
        addSample(data);
      });
      await refreshTrend();
      refreshHost();
      if (sys.tracking.enabled) await snapshot();
    } catch (e) {
      if (conn.ws) showError(e);
    }
  }

  function init() {
    $('start-tracking').addEventListener('click', () => snapshot(undefined, 'start'));
    $('retry-now').addEventListener('click', () => conn.retryNow());
    $('note-close').addEventListener('click', () => { $('note').hidden = true; });
    $('error-close').addEventListener('click', () => { $('error').hidden = true; });
    $('reset-peak').addEventListener('click', async () => {
      setWorking($('reset-peak'), true);
      try {
        const a = await conn.call('debug/memory_reset_peak');
        $('tile-peak').querySelector('.value').textContent = a.peak_bytes ? bytes(a.peak_bytes) : '—';
      } catch (e) {
        showError(e);
      } finally {
        setWorking($('reset-peak'), false);
      }
    });
    $('snapshot-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      snapshot(undefined, $('compare-with').value ? 'compare' : 'snapshot');
    });
    $('baseline-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const name = $('baseline-name').value.trim();
      if (!name) return;
      snapshot({ save_as: name }, 'save').then((ok) => {
        if (ok && state.baselines.some((b) => b.name === name)) $('baseline-name').value = '';
      });
    });
    for (const id of ['export-flamegraph', 'export-profile', 'export-folded']) {
      $(id).addEventListener('click', (ev) => {
        if ($(id).getAttribute('aria-disabled') === 'true') ev.preventDefault();
      });
    }
    // The direct port's address as the user's browser knows the host (shown, not fetched).
    const direct = new URL('/metrics', location.href);
    direct.protocol = 'http:';
    direct.port = '8100';
    $('metrics-address').textContent = direct.href;
    $('group-by').addEventListener('change', updateReportLink);
    $('compare-with').addEventListener('change', () => {
      showOrder();
      updateReportLink();
    });
    $('order').addEventListener('change', reorder);
    new ResizeObserver(() => renderChart()).observe($('chart'));
    for (const v of ['self', 'host']) {
      $(`tab-${v}`).addEventListener('click', () => showView(v));
      $(`tab-${v}`).addEventListener('keydown', onTabKey);
    }
    for (const b of document.querySelectorAll('#host-table button.sort')) {
      b.addEventListener('click', () => {
        host.sort = b.dataset.sort;
        renderHost();
      });
    }
    new ResizeObserver(() => {
      for (const slug of host.open.keys()) drawHistory(slug);
    }).observe($('host-card'));
    // The view is in the address: a reload, a bookmark or Back keeps it.
    window.addEventListener('hashchange', () => showView(location.hash === '#host' ? 'host' : 'self'));
    if (location.hash === '#host') showView('host');
    setInterval(() => {
      if (state.baselines.length) renderBaselines(state.baselines);
    }, 30000);
    setInterval(refreshTrend, TREND_REFRESH_MS);
    renderChart();
    conn.connect();
  }

  init();
})();
