// One event: who, when, what; data and metadata pretty-printed, with the bytes exactly
// as stored one click away; its hash and its predecessor's; links to its cause, its
// effects (events whose causation is this event), its correlation, and what it corrects.

import { get, getRaw, rawMembers } from './api.js';
import { eventTable, h, link, occurred, problem, time } from './ui.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function render(main, { arg, signal }) {
  const { json: e, text } = await getRaw(`/v1/events/${encodeURIComponent(arg)}`, {}, signal);
  const raw = rawMembers(text);
  main.append(h('h1', {}, `${e.event_type} `, h('span', { class: 'muted' }, `#${e.position}`)));
  const meta = e.metadata && typeof e.metadata === 'object' ? e.metadata : {};
  const rows = [
    ['aggregate', [link.aggregate(e.aggregate_id), ` (${e.aggregate_type}) version ${e.aggregate_version}`]],
    ['event id', h('code', {}, e.event_id)],
    ['schema version', String(e.event_version)],
    ['recorded', time(e.recorded_at)],
    occurred(e) !== e.recorded_at ? ['occurred', time(occurred(e))] : null,
    ['user', link.user(e.user_id)],
    e.principal ? ['principal (token)', e.principal] : null,
    ['correlation', e.correlation_id ? link.correlation(e.correlation_id) : 'none'],
    ['caused by', e.causation_id ? (UUID.test(e.causation_id) ? h('span', { id: 'cause' }, link.event(e.causation_id, e.causation_id)) : e.causation_id) : 'none'],
    typeof meta.compensates === 'string' ? ['corrects', [link.event(meta.compensates, meta.compensates), meta.reason ? ` (${meta.reason})` : '']] : null,
    ['hash', h('code', { class: 'wrap', id: 'hash' }, e.hash)],
    ['previous hash', h('code', { class: 'wrap', id: 'prev-hash' }, '…')],
  ].filter(Boolean);
  main.append(h('dl', { class: 'facts' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])));
  previousHash(e, main.querySelector('#prev-hash'), signal);

  const pretty = h('div', { id: 'pretty' },
    h('h2', {}, 'Data'), h('pre', { id: 'data' }, JSON.stringify(e.data, null, 2)),
    e.personal ? [h('h2', {}, `Personal data (subjects: ${(e.subjects || []).join(', ')})`),
      h('pre', { id: 'personal' }, JSON.stringify(e.personal, null, 2))] : null,
    h('h2', {}, 'Metadata'), h('pre', {}, JSON.stringify(e.metadata, null, 2)));
  const exact = h('div', { id: 'raw', hidden: true },
    h('h2', {}, 'Data, as stored'), h('pre', { id: 'raw-data' }, raw.data),
    h('h2', {}, 'Metadata, as stored'), h('pre', {}, raw.metadata),
    h('h2', {}, 'The whole answer of GET /v1/events/', e.event_id), h('pre', { class: 'wrap' }, text));
  const toggle = h('button', { type: 'button', id: 'raw-toggle', 'aria-pressed': 'false', onclick: () => {
    const showRaw = exact.hidden;
    exact.hidden = !showRaw; pretty.hidden = showRaw;
    toggle.textContent = showRaw ? 'Pretty-printed' : 'Raw bytes';
    toggle.setAttribute('aria-pressed', String(showRaw));
  } }, 'Raw bytes');
  main.append(h('p', {}, toggle), pretty, exact);

  const effects = h('section', { id: 'effects', 'aria-labelledby': 'eff' }, h('h2', { id: 'eff' }, 'Effects: events caused by this one'));
  main.append(effects);
  try {
    const caused = await get('/v1/events', { causation_id: e.event_id, limit: 100 }, signal);
    effects.append(caused.events.length ? eventTable(caused.events) : h('p', { class: 'muted' }, 'None.'));
  } catch (err) {
    if (err.name !== 'AbortError') effects.append(problem(err));
  }
  const corrected = await get('/v1/streams/' + encodeURIComponent(e.aggregate_id), { from_version: e.aggregate_version, limit: 1000 }, signal)
    .then((p) => p.events.filter((x) => x.metadata && x.metadata.compensates === e.event_id))
    .catch(() => []);
  if (corrected.length) {
    main.append(h('p', { class: 'warn', id: 'corrected-by' }, 'Corrected later by ', corrected.map((c) => link.event(c.event_id, `${c.event_type} (v${c.aggregate_version})`))));
  }
  return null;
}

async function previousHash(e, el, signal) {
  if (e.position <= 1) { el.textContent = 'none: the first event'; return; }
  try {
    const page = await get('/v1/events', { after_position: e.position - 2, limit: 1 }, signal);
    const prev = page.events[0];
    el.textContent = prev && prev.position === e.position - 1
      ? prev.hash
      : `position ${e.position - 1} is not visible to this token`;
  } catch (err) {
    if (err.name !== 'AbortError') el.textContent = `unknown (${err.detail || err.message})`;
  }
}
