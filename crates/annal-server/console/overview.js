// Overview: head, events per second (a chart of the last minutes: the server's own
// samples of the head, then this page's), store size, backend, nodes; the last chain
// check with "verify now"; the latest digest; projections and consumer groups with
// their lag, errors highlighted; persistent subscriptions with lag and parked messages.
// A token limited to some types sees only its own head: the rest reads the whole log.

import { get } from './api.js';
import { bytes, h, problem, s, time } from './ui.js';

const SAMPLES = 150; // 5 minutes at one sample each 2 s

export async function render(main, { me, signal }) {
  main.append(h('h1', {}, 'Overview'));
  if (me.aggregate_types) {
    const head = await get('/v1/head', {}, signal);
    main.append(h('p', {}, `This token sees only aggregates of type ${me.aggregate_types.join(', ')}. `,
      'Their last event is at position ', h('strong', { id: 'head' }, String(head.position)), '.'));
    return null;
  }
  const info = await get('/v1/overview', {}, signal);
  const headEl = h('strong', { id: 'head' }, String(info.head));
  const rateEl = h('strong', { id: 'rate' }, '–');
  const chart = s('svg', { class: 'chart', viewBox: '0 0 300 60', role: 'img', 'aria-label': 'events per second' });
  main.append(h('section', { class: 'cards', 'aria-label': 'The store' },
    card('Head position', headEl),
    card('Events per second', rateEl, chart),
    card('Store size', h('strong', { id: 'size' }, bytes(info.store_bytes))),
    card('Backend', h('strong', {}, info.backend || 'unknown')),
    card('Nodes', h('strong', {}, info.nodes.join(', ')), h('span', { class: 'muted' }, ` annal ${info.version}`))));
  if (info.write_failure) main.append(h('p', { class: 'error', role: 'alert' }, `The store cannot write: ${info.write_failure}`));

  const verifyBox = h('div', { id: 'verify' });
  main.append(h('section', { 'aria-labelledby': 'integrity' }, h('h2', { id: 'integrity' }, 'Integrity'), verifyBox));
  showVerify(verifyBox, info.last_verify, me, signal);
  const digestBox = h('div', { id: 'digest' });
  verifyBox.after(digestBox);
  showDigest(digestBox, signal);

  const consumers = h('div', { id: 'consumers' });
  main.append(h('section', { 'aria-labelledby': 'cons' }, h('h2', { id: 'cons' }, 'Projections and consumer groups'), consumers));
  showConsumers(consumers, info.head, signal);

  const persistent = h('div', { id: 'persistent' });
  main.append(h('section', { 'aria-labelledby': 'pers' }, h('h2', { id: 'pers' }, 'Persistent subscriptions'), persistent));
  showPersistent(persistent, signal);

  // The server's samples (every 2 s for 5 minutes), then this page's own.
  const samples = (info.head_history || []).map((x) => ({ t: Date.parse(x.at), head: x.position }));
  if (!samples.length || samples[samples.length - 1].head !== info.head) samples.push({ t: Date.now(), head: info.head });
  while (samples.length > SAMPLES + 1) samples.shift();
  if (samples.length > 1) {
    const a = samples[samples.length - 2];
    const b = samples[samples.length - 1];
    rateEl.textContent = ((b.head - a.head) / Math.max(0.001, (b.t - a.t) / 1000)).toFixed(1);
    draw(chart, samples);
  }
  const timer = setInterval(async () => {
    try {
      const now = await get('/v1/head', {}, signal);
      samples.push({ t: Date.now(), head: now.position });
      if (samples.length > SAMPLES + 1) samples.shift();
      headEl.textContent = String(now.position);
      const a = samples[samples.length - 2];
      const b = samples[samples.length - 1];
      rateEl.textContent = ((b.head - a.head) / ((b.t - a.t) / 1000)).toFixed(1);
      draw(chart, samples);
    } catch (e) {
      if (e.name !== 'AbortError') rateEl.textContent = 'unreachable';
    }
  }, 2000);
  return () => clearInterval(timer);
}

function card(title, ...body) {
  return h('div', { class: 'card' }, h('div', { class: 'muted' }, title), ...body);
}

function draw(chart, samples) {
  const rates = [];
  for (let i = 1; i < samples.length; i++) {
    rates.push((samples[i].head - samples[i - 1].head) / Math.max(0.001, (samples[i].t - samples[i - 1].t) / 1000));
  }
  const top = Math.max(1, ...rates);
  const points = rates.map((r, i) => `${(i * 300) / SAMPLES},${58 - (r / top) * 54}`).join(' ');
  chart.replaceChildren(
    s('polyline', { points, fill: 'none', stroke: 'currentColor', 'stroke-width': 1.5 }),
    s('text', { x: 296, y: 10, 'text-anchor': 'end', 'font-size': 9 }, `max ${top.toFixed(0)}/s`));
}

function showVerify(box, last, me, signal) {
  box.replaceChildren();
  if (!last) {
    box.append(h('p', { id: 'verify-result' }, 'No chain check has run on this server since it started.'));
  } else {
    const r = last.report;
    const what = last.deep ? 'Deep check' : 'Chain check';
    if (r.ok) {
      box.append(h('p', { id: 'verify-result', class: 'ok', role: 'status' },
        `✔ ${what} passed: ${r.checked} events link to their predecessors (${time(last.at)}).`));
    } else {
      box.append(h('div', { id: 'verify-result', class: 'bad', role: 'alert' },
        h('strong', {}, `✘ ${what} FAILED at position ${r.first_bad_position ?? '?'}`),
        h('p', {}, r.reason || (r.storage || []).join('; ')),
        r.expected_hash ? h('p', { class: 'mono' }, `expected ${r.expected_hash}`, h('br'), `stored   ${r.stored_hash || ''}`) : null,
        h('p', {}, `${r.checked} events before it are intact (${time(last.at)}).`)));
    }
  }
  const run = async (deep) => {
    box.querySelectorAll('button').forEach((b) => { b.disabled = true; });
    box.append(h('p', { class: 'muted', role: 'status' }, 'Checking the chain…'));
    try {
      const report = await get('/v1/verify', deep ? { deep: true } : {}, signal);
      showVerify(box, { at: new Date().toISOString(), deep, report }, me, signal);
    } catch (e) {
      if (e.name === 'AbortError') return;
      showVerify(box, last, me, signal);
      box.append(problem(e));
    }
  };
  box.append(h('p', {},
    h('button', { type: 'button', id: 'verify-now', onclick: () => run(false) }, 'Verify now'),
    me.role === 'admin' ? h('button', { type: 'button', onclick: () => run(true) }, 'Deep verify') : null));
}

async function showDigest(box, signal) {
  try {
    const d = await get('/v1/digest', {}, signal);
    box.append(h('p', {}, 'Latest digest: position ', h('strong', {}, String(d.position)), ' ',
      h('code', { class: 'mono wrap' }, d.hash || '(empty log)'),
      h('span', { class: 'muted' }, ` taken ${time(d.taken_at)}. Keep it outside the store; annal verify --digest proves the log still holds it.`)));
  } catch (e) {
    if (e.name !== 'AbortError') box.append(problem(e));
  }
}

async function showConsumers(box, head, signal) {
  let list;
  try {
    list = (await get('/v1/checkpoints', {}, signal)).checkpoints;
  } catch (e) {
    if (e.name !== 'AbortError') box.append(problem(e));
    return;
  }
  if (!list.length) { box.append(h('p', { class: 'muted' }, 'No projection or consumer group has written a checkpoint.')); return; }
  const part = /^(.*)\.p(\d+)of(\d+)$/;
  box.append(h('table', {},
    h('thead', {}, h('tr', {}, ['name', 'kind', 'position', 'lag', 'status', 'errors', 'updated'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, list.map((c) => {
      const m = part.exec(c.name);
      const kind = c.source ? `tracks ${c.source}` : m ? `group ${m[1]}, partition ${m[2]} of ${m[3]}` : 'projection';
      const lag = c.source ? '–' : String(Math.max(0, head - c.position));
      const failing = c.error_count > 0 || c.status === 'faulted';
      return h('tr', { class: failing ? 'bad' : '' },
        h('td', {}, c.name), h('td', {}, kind), h('td', {}, String(c.position)), h('td', {}, lag),
        h('td', {}, c.status), h('td', {}, failing ? `${c.error_count}: ${c.last_error || ''}` : '0'),
        h('td', { class: 'nowrap' }, time(c.updated_at)));
    }))));
}

async function showPersistent(box, signal) {
  let groups;
  try {
    groups = (await get('/v1/persistent-subscriptions', {}, signal)).groups;
  } catch (e) {
    if (e.name !== 'AbortError') box.append(problem(e));
    return;
  }
  if (!groups.length) { box.append(h('p', { class: 'muted' }, 'No persistent subscription is defined (KurrentDB clients create them over gRPC).')); return; }
  box.append(h('table', { id: 'persistent-table' },
    h('thead', {}, h('tr', {}, ['source', 'group', 'status', '#consumers', '#checkpoint', '#lag', '#in flight', '#parked', 'strategy']
      .map((c) => (c[0] === '#' ? h('th', { scope: 'col', class: 'num' }, c.slice(1)) : h('th', { scope: 'col' }, c))))),
    h('tbody', {}, groups.map((g) => h('tr', { class: g.parked > 0 ? 'bad' : '' },
      h('td', {}, g.source), h('td', {}, g.group), h('td', {}, g.status), h('td', { class: 'num' }, String(g.consumers)),
      h('td', { class: 'num' }, g.checkpoint == null ? '–' : String(g.checkpoint)), h('td', { class: 'num' }, String(g.lag)),
      h('td', { class: 'num' }, String(g.in_flight)), h('td', { class: 'num' }, String(g.parked)), h('td', {}, g.strategy))))));
}
