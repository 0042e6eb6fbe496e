// Audit: who did what. Events by user and time (and optionally aggregate type), with
// counts per event type and the events themselves, laid out to print as a report.

import { readAll } from './api.js';
import { eventTable, field, h, time, values } from './ui.js';

const MAX = 100000;
const LISTED = 500;

export async function render(main, { params, me, signal }) {
  main.append(h('h1', {}, 'Audit'));
  const form = h('form', { class: 'filters noprint', 'aria-label': 'Who and when', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/audit?${new URLSearchParams(values(form))}`;
  } },
  field('User', 'user_id', params.user_id, { required: true, placeholder: 'sarah' }),
  field('Since', 'since', params.since, { placeholder: '2024-09-01' }),
  field('Until', 'until', params.until),
  field('Aggregate type', 'aggregate_type', params.aggregate_type),
  h('button', { type: 'submit' }, 'Report'));
  main.append(form);
  if (!params.user_id) return null;

  const filters = { user_id: params.user_id, since: params.since, until: params.until, aggregate_type: params.aggregate_type };
  const progress = h('p', { role: 'status', class: 'muted noprint' }, 'Reading…');
  main.append(progress);
  const { events, truncated } = await readAll(filters, MAX, (got) => { progress.textContent = `Reading… ${got.length} events`; }, signal);
  progress.remove();

  const counts = new Map();
  for (const e of events) counts.set(e.event_type, (counts.get(e.event_type) || 0) + 1);
  const sorted = [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const range = [params.since ? `since ${params.since}` : '', params.until ? `until ${params.until}` : ''].filter(Boolean).join(', ');
  main.append(h('section', { class: 'report', 'aria-labelledby': 'rep' },
    h('h2', { id: 'rep' }, `What ${params.user_id} did${range ? `, ${range}` : ''}`),
    h('p', {}, `${events.length} events${truncated ? ` (the first ${MAX})` : ''}`,
      events.length ? `, from ${time(events[0].recorded_at)} to ${time(events[events.length - 1].recorded_at)}` : '',
      `. Report by ${me.name || 'an anonymous caller'}, ${time(new Date().toISOString())}.`,
      me.aggregate_types ? ` Limited to ${me.aggregate_types.join(', ')}.` : ''),
    h('table', { id: 'counts' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'event type'), h('th', { scope: 'col', class: 'num' }, 'count'))),
      h('tbody', {}, sorted.map(([t, n]) => h('tr', {}, h('td', {}, t), h('td', { class: 'num' }, String(n)))))),
    h('p', { class: 'noprint' }, h('button', { type: 'button', id: 'print', onclick: () => window.print() }, 'Print report')),
    h('h3', {}, events.length > LISTED ? `The first ${LISTED} events` : 'The events'),
    eventTable(events.slice(0, LISTED))));
  return null;
}
