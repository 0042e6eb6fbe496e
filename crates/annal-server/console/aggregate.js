// An aggregate's timeline and time travel. The timeline lists its events by version:
// who, when, type and a one-line summary; a compensating event is linked to the event it
// reverses (and that one marked as reversed); an event stored with an older schema
// version than the aggregate's later events of the same type is marked as upcast on
// read. The slider (or a date) picks a point: the events up to it are shown, the rest
// dimmed, with the step's change; the state at that point where the server has a state
// function for the type (GET /v1/streams/{id}/state: the state, and which members the
// step changed), else the latest snapshot at or below it (by tag).

import { get, readStream } from './api.js';
import { field, h, link, occurred, problem, summary, time, values } from './ui.js';

const MAX = 10000;

export async function render(main, { arg, params, signal }) {
  main.append(h('h1', {}, arg ? `Aggregate ${arg}` : 'Aggregate'));
  const form = h('form', { class: 'filters', onsubmit: (ev) => {
    ev.preventDefault();
    const v = values(form);
    if (v.id) location.hash = `#/aggregate/${encodeURIComponent(v.id)}`;
  } }, field('Aggregate id', 'id', arg, { required: true }), h('button', { type: 'submit' }, 'Open'));
  main.append(form);
  if (!arg) return null;

  const { events, truncated } = await readStream(arg, MAX, signal);
  if (!events.length) { main.append(h('p', {}, 'No events.')); return null; }
  const last = events[events.length - 1];
  main.append(h('p', {}, `${last.aggregate_type}, version ${last.aggregate_version}, ${events.length} events`,
    truncated ? ` (the first ${MAX} shown)` : ''));

  const byId = new Map(events.map((e) => [e.event_id, e]));
  const reversedBy = new Map();
  for (const e of events) {
    const c = e.metadata && e.metadata.compensates;
    if (typeof c === 'string') reversedBy.set(c, e);
  }
  const newest = new Map();
  for (const e of events) newest.set(e.event_type, Math.max(newest.get(e.event_type) || 0, e.event_version));

  // Time travel: the point is a version (from the address, or the date given).
  let point = Number(params.v) || last.aggregate_version;
  if (params.at) {
    const at = params.at;
    const upto = events.filter((e) => occurred(e).slice(0, at.length) <= at);
    point = upto.length ? upto[upto.length - 1].aggregate_version : 0;
  }
  point = Math.max(0, Math.min(point, last.aggregate_version));
  const first = events[0].aggregate_version - 1;

  const slider = h('input', { type: 'range', id: 'travel', min: first, max: last.aggregate_version, value: point, step: 1, 'aria-describedby': 'travel-label' });
  const label = h('output', { id: 'travel-label', for: 'travel' });
  const dateForm = h('form', { class: 'inline', onsubmit: (ev) => {
    ev.preventDefault();
    const at = values(dateForm).at;
    if (at) location.hash = `#/aggregate/${encodeURIComponent(arg)}?at=${encodeURIComponent(at)}`;
  } }, field('As of date', 'at', params.at, { placeholder: '2024-09-20', id: 'travel-date' }), h('button', { type: 'submit', id: 'travel-go' }, 'Go'));
  const state = h('div', { id: 'state' });
  main.append(h('section', { class: 'travel', 'aria-labelledby': 'tt' },
    h('h2', { id: 'tt' }, 'Time travel'),
    h('p', {}, h('label', { for: 'travel' }, 'Version '), slider, ' ', label), dateForm,
    field('Snapshot tag', 'tag', params.tag, { id: 'snapshot-tag', placeholder: 'the aggregate\'s snapshot tag' }),
    state));

  const items = events.map((e) => {
    const comp = e.metadata && e.metadata.compensates;
    const target = typeof comp === 'string' ? byId.get(comp) : null;
    const reverser = reversedBy.get(e.event_id);
    const old = e.event_version < newest.get(e.event_type);
    return h('li', { 'data-version': e.aggregate_version, class: reverser ? 'reversed' : '' },
      h('span', { class: 'ver' }, `v${e.aggregate_version}`), ' ',
      h('span', { class: 'nowrap' }, time(occurred(e))), ' ',
      link.event(e.event_id, e.event_type), ' ',
      h('span', { class: 'muted' }, 'by '), link.user(e.user_id), ' ',
      old ? h('span', { class: 'badge', title: 'stored with an older schema; readers upcast it' }, `schema v${e.event_version}, upcast`) : null,
      target ? h('span', { class: 'badge comp' }, '↩ reverses ', link.event(target.event_id, `v${target.aggregate_version} ${target.event_type}`)) : null,
      typeof comp === 'string' && !target ? h('span', { class: 'badge comp' }, '↩ reverses ', link.event(comp)) : null,
      reverser ? h('span', { class: 'badge warn' }, 'reversed by ', link.event(reverser.event_id, `v${reverser.aggregate_version}`)) : null,
      h('div', { class: 'summary' }, summary(e)));
  });
  main.append(h('section', { 'aria-labelledby': 'tl' }, h('h2', { id: 'tl' }, 'Timeline'), h('ol', { class: 'timeline', id: 'timeline' }, items)));

  let snapshotCall = null;
  const show = () => {
    const v = Number(slider.value);
    const at = events.find((e) => e.aggregate_version === v);
    label.textContent = at ? `${v} of ${last.aggregate_version}: ${time(occurred(at))}` : `${v}: before the first event`;
    items.forEach((li) => li.classList.toggle('future', Number(li.dataset.version) > v));
    const upto = events.filter((e) => e.aggregate_version <= v);
    state.replaceChildren(
      h('h3', {}, `At version ${v}`),
      h('p', { id: 'travel-summary' }, upto.length
        ? `${upto.length} events: ${upto.map((e) => e.event_type).join(', ')}`
        : 'No events yet.'),
      at ? h('p', {}, 'This step: ', link.event(at.event_id, at.event_type), ` ${summary(at)}`) : null,
      h('div', { id: 'snapshot' }));
    const tag = document.getElementById('snapshot-tag')?.value.trim();
    if (snapshotCall) snapshotCall.abort();
    const call = new AbortController();
    snapshotCall = call;
    const box = state.querySelector('#snapshot');
    stateAt(arg, v, box, call.signal).then((shown) => {
      if (shown) return;
      if (tag && v > 0) {
        snapshot(arg, tag, v, upto, box, call.signal);
      } else {
        box.append(h('p', { class: 'muted' },
          'No state function is registered with this server for this type: the state is what the events above say. ',
          'Give a snapshot tag to see the latest snapshot at or below this version, and the events after it.'));
      }
    });
  };
  slider.addEventListener('input', show);
  main.querySelector('#snapshot-tag').addEventListener('change', show);
  show();
  return () => snapshotCall && snapshotCall.abort();
}

// The state at version v and what changed since v - 1, from the server's state function
// for this type; false if it has none (404 not_found, as annal serve answers).
async function stateAt(id, v, box, signal) {
  const path = `/v1/streams/${encodeURIComponent(id)}/state`;
  try {
    const [now, before] = await Promise.all([
      get(path, { version: v }, signal),
      v > 0 ? get(path, { version: v - 1 }, signal) : Promise.resolve({ state: {} }),
    ]);
    const cur = now.state && typeof now.state === 'object' ? now.state : { value: now.state };
    const prev = before.state && typeof before.state === 'object' ? before.state : { value: before.state };
    const changed = Object.keys(cur).filter((k) => JSON.stringify(cur[k]) !== JSON.stringify(prev[k]));
    box.append(h('h3', {}, `State at version ${now.version}`),
      h('p', { id: 'state-changed' }, changed.length ? `Changed by this step: ${changed.join(', ')}` : 'Nothing changed in this step.'),
      h('table', { id: 'state-table' }, h('tbody', {}, Object.keys(cur).map((k) => h('tr', { class: changed.includes(k) ? 'changed' : '' },
        h('th', { scope: 'row' }, k),
        h('td', { class: 'mono wrap' }, JSON.stringify(cur[k])),
        h('td', { class: 'mono wrap muted' }, changed.includes(k) && v > 0 ? `was ${JSON.stringify(prev[k])}` : ''))))));
    return true;
  } catch (e) {
    if (e.name === 'AbortError') return true;
    if (e.status === 404) return false;
    box.append(problem(e));
    return true;
  }
}

async function snapshot(id, tag, v, upto, box, signal) {
  try {
    const snap = await get(`/v1/streams/${encodeURIComponent(id)}/snapshots/latest`, { tag, at_or_below: v }, signal);
    const after = upto.filter((e) => e.aggregate_version > snap.version);
    box.append(h('h3', {}, `Snapshot at version ${snap.version} (${tag})`), h('pre', {}, JSON.stringify(snap.state, null, 2)),
      h('p', {}, after.length ? `Then ${after.length} events: ${after.map((e) => e.event_type).join(', ')}` : 'No events after it.'));
  } catch (e) {
    if (e.name === 'AbortError') return;
    box.append(e.status === 404 ? h('p', { class: 'muted' }, `No snapshot tagged ${tag} at or below version ${v}.`) : problem(e));
  }
}
