// Browse and search: the log with every filter GET /v1/events takes (types, aggregate
// id prefix, correlation, causation, user, principal, time), a page at a time
// (the position to start after is in the address, so the back button pages back; without
// filters the newest page is one click away),
// export of the whole result as NDJSON (each event's bytes as the server sent them) or
// CSV, and a live tail of matching events that can be paused.

import { get, rawMembers, readAll, subscribe } from './api.js';
import { download, eventTable, field, h, problem, values } from './ui.js';

const FILTERS = ['event_type', 'aggregate_type', 'aggregate_id_prefix', 'correlation_id', 'causation_id', 'user_id', 'principal', 'since', 'until'];
const PAGE = 50;
const EXPORT_MAX = 100000;

function filtersOf(params) {
  const f = {};
  for (const k of FILTERS) if (params[k]) f[k] = params[k];
  return f;
}

export async function render(main, { params, signal }) {
  const filters = filtersOf(params);
  const after = Number(params.after || 0);
  main.append(h('h1', {}, 'Events'));
  const form = h('form', { class: 'filters', 'aria-label': 'Filters', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/events?${new URLSearchParams(values(form))}`;
  } },
  field('Event type', 'event_type', filters.event_type, { placeholder: 'PaymentReceived,…' }),
  field('Aggregate type', 'aggregate_type', filters.aggregate_type),
  field('Aggregate id prefix', 'aggregate_id_prefix', filters.aggregate_id_prefix, { placeholder: 'family_' }),
  field('Correlation', 'correlation_id', filters.correlation_id),
  field('Causation', 'causation_id', filters.causation_id),
  field('User', 'user_id', filters.user_id),
  field('Principal', 'principal', filters.principal, { placeholder: 'token name' }),
  field('Since', 'since', filters.since, { placeholder: '2024-09-01' }),
  field('Until', 'until', filters.until, { placeholder: '2024-10-01T00:00:00Z' }),
  field('After position', 'after', params.after, { inputmode: 'numeric' }),
  h('button', { type: 'submit' }, 'Search'));
  main.append(form);

  const live = liveTail(filters, signal);
  main.append(live.section);

  const page = await get('/v1/events', { ...filters, after_position: after, limit: PAGE }, signal);
  const results = h('section', { 'aria-labelledby': 'results' },
    h('h2', { id: 'results' }, page.events.length
      ? `Positions ${page.events[0].position}–${page.events[page.events.length - 1].position}`
      : 'No matching events'));
  if (page.events.length) results.append(eventTable(page.events));
  const more = new URLSearchParams({ ...filters, after: page.next_after_position });
  // The newest page: positions are contiguous, so without filters it starts PAGE before
  // the head (a limited token's head is its types' last event).
  const newest = Object.keys(filters).length ? null : Math.max(0, (await get('/v1/head', {}, signal)).position - PAGE);
  results.append(h('p', { class: 'pager' },
    after > 0 ? h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); history.back(); } }, '← Back') : null,
    page.next_after_position != null ? h('a', { href: `#/events?${more}`, id: 'next-page' }, 'Next page →') : null,
    newest != null && newest > after ? h('a', { href: `#/events?after=${newest}`, id: 'newest' }, 'Newest ⇥') : null,
    h('button', { type: 'button', onclick: () => exportAll(filters, 'ndjson', results, signal) }, 'Export NDJSON'),
    h('button', { type: 'button', onclick: () => exportAll(filters, 'csv', results, signal) }, 'Export CSV')));
  main.append(results);
  return live.stop;
}

// The live tail: off until asked; while paused, arrivals wait and are counted.
function liveTail(filters, signal) {
  const rows = h('div', { id: 'tail-rows' });
  const status = h('span', { id: 'tail-status', role: 'status', class: 'muted' }, 'off');
  let controller = null;
  let paused = false;
  let waiting = [];
  let shown = [];
  const toggle = h('button', { type: 'button', id: 'tail-toggle', 'aria-pressed': 'false', onclick: () => (controller ? stop() : start()) }, 'Start live tail');
  const pause = h('button', { type: 'button', id: 'tail-pause', disabled: true, 'aria-pressed': 'false', onclick: () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) { shown = waiting.concat(shown).slice(0, 200); waiting = []; draw(); }
    status.textContent = paused ? 'paused' : 'live';
  } }, 'Pause');

  function draw() {
    rows.replaceChildren(shown.length ? eventTable(shown) : h('p', { class: 'muted' }, 'Waiting for new events…'));
  }
  async function start() {
    controller = new AbortController();
    signal.addEventListener('abort', () => controller && controller.abort());
    toggle.textContent = 'Stop live tail';
    toggle.setAttribute('aria-pressed', 'true');
    pause.disabled = false;
    status.textContent = 'connecting…';
    draw();
    try {
      const head = await get('/v1/head', filters.aggregate_type ? { aggregate_type: filters.aggregate_type } : {}, controller.signal);
      await subscribe({ ...filters, after_position: head.position }, (e) => {
        if (paused) { waiting.unshift(e); status.textContent = `paused, ${waiting.length} waiting`; return; }
        shown.unshift(e);
        shown = shown.slice(0, 200);
        draw();
      }, controller.signal, () => { status.textContent = paused ? 'paused' : 'live'; });
    } catch (e) {
      if (e.name !== 'AbortError') rows.replaceChildren(problem(e));
    }
  }
  function stop() {
    if (controller) controller.abort();
    controller = null;
    toggle.textContent = 'Start live tail';
    toggle.setAttribute('aria-pressed', 'false');
    pause.disabled = true;
    status.textContent = 'off';
  }
  const section = h('section', { 'aria-labelledby': 'tail' },
    h('h2', { id: 'tail' }, 'Live tail'), h('p', {}, toggle, ' ', pause, ' ', status), rows);
  return { section, stop };
}

async function exportAll(filters, kind, box, signal) {
  const note = h('p', { role: 'status', class: 'muted' }, 'Exporting…');
  box.append(note);
  try {
    const { events, truncated } = await readAll(filters, EXPORT_MAX, (got) => { note.textContent = `Exporting… ${got.length} events`; }, signal);
    const text = kind === 'ndjson' ? events.map((e) => e.raw).join('\n') + (events.length ? '\n' : '') : csv(events);
    download(`annal-events.${kind}`, text, kind === 'ndjson' ? 'application/x-ndjson' : 'text/csv');
    note.textContent = `Exported ${events.length} events${truncated ? ` (the first ${EXPORT_MAX}; annal export takes the rest)` : ''}.`;
  } catch (e) {
    if (e.name !== 'AbortError') note.replaceWith(problem(e));
  }
}

// The CSV export's columns.
const COLUMNS = ['position', 'event_id', 'event_type', 'event_version', 'aggregate_type', 'aggregate_id',
  'aggregate_version', 'recorded_at', 'user_id', 'correlation_id', 'causation_id', 'data', 'metadata', 'hash',
  'subjects', 'personal'];
// Members kept as their JSON text (a personal part byte for byte, or its erased marker).
const AS_TEXT = new Set(['data', 'metadata', 'subjects', 'personal']);

// The events as CSV (exported for the console's browser tests).
export function csv(events) {
  const cell = (v) => {
    const t = v == null ? '' : String(v);
    return /[",\n\r]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
  };
  const lines = [COLUMNS.join(',')];
  for (const e of events) {
    const raw = rawMembers(e.raw);
    lines.push(COLUMNS.map((c) => cell(AS_TEXT.has(c) ? raw[c] : e[c])).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}
