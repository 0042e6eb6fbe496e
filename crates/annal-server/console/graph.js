// The correlation graph: every event one correlation id tied together, drawn as its
// causation DAG in SVG. A node's column is its depth (the longest chain of causes within
// the correlation above it); edges run from cause to effect; every node links to the
// event. The same events follow as a table, for keyboards and screen readers.

import { readAll } from './api.js';
import { eventTable, h, s, time } from './ui.js';

const MAX = 2000;
const W = 210;
const H = 54;
const GAP_X = 50;
const GAP_Y = 16;

export async function render(main, { arg, signal }) {
  main.append(h('h1', {}, `Correlation ${arg}`));
  const { events, truncated } = await readAll({ correlation_id: arg }, MAX, null, signal);
  if (!events.length) { main.append(h('p', {}, 'No events carry this correlation id (that this token may see).')); return null; }
  main.append(h('p', {}, `${events.length} events${truncated ? ` (the first ${MAX})` : ''}, from ${time(events[0].recorded_at)} to ${time(events[events.length - 1].recorded_at)}.`));

  const byId = new Map(events.map((e) => [e.event_id, e]));
  const depth = new Map();
  // Events come in commit order, so a cause (committed earlier) has its depth already.
  for (const e of events) {
    const cause = e.causation_id && byId.get(e.causation_id);
    depth.set(e.event_id, cause ? (depth.get(cause.event_id) ?? 0) + 1 : 0);
  }
  const columns = [];
  for (const e of events) {
    const d = depth.get(e.event_id);
    (columns[d] = columns[d] || []).push(e);
  }
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((e, y) => pos.set(e.event_id, { x: x * (W + GAP_X) + 4, y: y * (H + GAP_Y) + 4 })));
  const width = columns.length * (W + GAP_X);
  const height = Math.max(...columns.map((c) => c.length)) * (H + GAP_Y) + 8;

  const svg = s('svg', { id: 'graph', class: 'graph', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': `causation graph of ${events.length} events` },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
      s('path', { d: 'M0,0L10,5L0,10z', class: 'arrowhead' }))));
  for (const e of events) {
    const cause = e.causation_id && byId.get(e.causation_id);
    if (!cause) continue;
    const a = pos.get(cause.event_id);
    const b = pos.get(e.event_id);
    const x1 = a.x + W; const y1 = a.y + H / 2; const x2 = b.x; const y2 = b.y + H / 2;
    const mid = (x1 + x2) / 2;
    svg.append(s('path', { class: 'edge', d: `M${x1},${y1}C${mid},${y1} ${mid},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
  }
  for (const e of events) {
    const p = pos.get(e.event_id);
    const orphan = e.causation_id && !byId.has(e.causation_id);
    svg.append(s('a', { href: `#/event/${e.event_id}`, class: 'node', 'data-type': e.event_type },
      s('title', {}, `#${e.position} ${e.event_type} on ${e.aggregate_id} by ${e.user_id}`),
      s('rect', { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
      s('text', { x: p.x + 8, y: p.y + 20, class: 'node-type' }, clip(e.event_type, 24)),
      s('text', { x: p.x + 8, y: p.y + 38, class: 'node-meta' }, clip(`#${e.position} ${e.aggregate_id} · ${e.user_id}${orphan ? ' · cause elsewhere' : ''}`, 32))));
  }
  main.append(h('div', { class: 'graph-box' }, svg));
  main.append(h('h2', {}, 'The same events'), eventTable(events));
  return null;
}

function clip(t, n) { return t.length > n ? `${t.slice(0, n - 1)}…` : t; }
