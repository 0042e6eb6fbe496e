// Audit: who did what. Events by user or principal (the token that authenticated them)
// and time, optionally of some aggregate types or ids: the counts per event type over
// the whole range (one GET /v1/events/counts, however many events), then the first
// events themselves, laid out to print as a report.

import { get, readAll } from './api.js';
import { eventTable, field, h, time, values } from './ui.js';

const LISTED = 500;
const KEYS = ['user_id', 'principal', 'since', 'until', 'aggregate_type', 'aggregate_id_prefix'];

export async function render(main, { params, me, signal }) {
  main.append(h('h1', {}, 'Audit'));
  const form = h('form', { class: 'filters noprint', 'aria-label': 'Who and when', onsubmit: (ev) => {
    ev.preventDefault();
    location.hash = `#/audit?${new URLSearchParams(values(form))}`;
  } },
  field('User', 'user_id', params.user_id, { placeholder: 'sarah' }),
  field('Principal', 'principal', params.principal, { placeholder: 'token name' }),
  field('Since', 'since', params.since, { placeholder: '2024-09-01' }),
  field('Until', 'until', params.until),
  field('Aggregate type', 'aggregate_type', params.aggregate_type),
  field('Aggregate id prefix', 'aggregate_id_prefix', params.aggregate_id_prefix),
  h('button', { type: 'submit' }, 'Report'));
  main.append(form);
  if (!params.user_id && !params.principal) {
    main.append(h('p', { class: 'muted' }, 'Name a user, a principal, or both.'));
    return null;
  }

  const filters = {};
  for (const k of KEYS) if (params[k]) filters[k] = params[k];
  const progress = h('p', { role: 'status', class: 'muted noprint' }, 'Counting…');
  main.append(progress);
  const [counted, listed] = await Promise.all([
    get('/v1/events/counts', filters, signal),
    readAll(filters, LISTED, null, signal),
  ]);
  progress.remove();
  const events = listed.events;
  const sorted = Object.entries(counted.counts).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const who = [params.user_id, params.principal ? `principal ${params.principal}` : ''].filter(Boolean).join(' as ');
  const range = [params.since ? `since ${params.since}` : '', params.until ? `until ${params.until}` : ''].filter(Boolean).join(', ');
  main.append(h('section', { class: 'report', 'aria-labelledby': 'rep' },
    h('h2', { id: 'rep' }, `What ${who} did${range ? `, ${range}` : ''}`),
    h('p', {}, h('span', { id: 'total' }, `${counted.total} events`), ` up to position ${counted.up_to_position}`,
      events.length ? `, from ${time(events[0].recorded_at)}` : '',
      `. Report by ${me.name || 'an anonymous caller'}, ${time(new Date().toISOString())}.`,
      me.aggregate_types ? ` Limited to ${me.aggregate_types.join(', ')}.` : ''),
    h('table', { id: 'counts' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'event type'), h('th', { scope: 'col', class: 'num' }, 'count'))),
      h('tbody', {}, sorted.map(([t, n]) => h('tr', {}, h('td', {}, t), h('td', { class: 'num' }, String(n)))))),
    h('p', { class: 'noprint' }, h('button', { type: 'button', id: 'print', onclick: () => window.print() }, 'Print report')),
    h('h3', {}, counted.total > events.length ? `The first ${events.length} events` : 'The events'),
    eventTable(events)));
  return null;
}
