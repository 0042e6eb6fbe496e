// Small DOM helpers shared by the views: building elements (text is always set as text,
// never parsed as HTML), links between views, one-line summaries, downloads.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

const SVG = 'http://www.w3.org/2000/svg';
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c !== undefined && c !== null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const link = {
  event: (id, text) => h('a', { href: `#/event/${encodeURIComponent(id)}` }, text || short(id)),
  aggregate: (id, text) => h('a', { href: `#/aggregate/${encodeURIComponent(id)}` }, text || id),
  correlation: (id) => h('a', { href: `#/correlation/${encodeURIComponent(id)}` }, id),
  user: (id) => h('a', { href: `#/audit?user_id=${encodeURIComponent(id)}` }, id),
};

export function short(id) { return String(id).slice(0, 8); }

// "2024-10-20 14:03:11" from an RFC 3339 time (UTC, as stored).
export function time(t) { return t ? String(t).replace('T', ' ').replace(/\.\d+/, '').replace('Z', ' UTC') : ''; }

// When the event happened in the domain: metadata.occurred_at if the writer gave one,
// else when it was recorded.
export function occurred(e) {
  const m = e.metadata && typeof e.metadata === 'object' ? e.metadata : {};
  return typeof m.occurred_at === 'string' ? m.occurred_at : e.recorded_at;
}

// One line of an event's data (with its personal part's members, or `$erased`, after
// them, as aggregates read it): its members as name=value, cut to about 160 characters.
export function summary(e) {
  const p = e.personal;
  const d = p && typeof p === 'object' && e.data && typeof e.data === 'object' && !Array.isArray(e.data)
    ? { ...e.data, ...p } : e.data;
  let line;
  if (d && typeof d === 'object' && !Array.isArray(d)) {
    line = Object.entries(d).map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
  } else {
    line = JSON.stringify(d);
  }
  return line.length > 160 ? `${line.slice(0, 159)}…` : line;
}

export function problem(err) {
  const text = err && err.status
    ? `${err.status} ${err.type}: ${err.detail}`
    : `Error: ${err && err.message ? err.message : err}`;
  return h('p', { class: 'error', role: 'alert' }, text);
}

export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h('a', { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export function field(label, name, value, attrs) {
  return h('label', {}, label, h('input', Object.assign({ name, value: value || '' }, attrs || {})));
}

// The form's non-empty fields as an object.
export function values(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (String(v).trim() !== '') out[k] = String(v).trim();
  return out;
}

export function bytes(n) {
  if (n == null) return 'unknown';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// A table of events: position, time, type, aggregate, user, correlation, summary.
export function eventTable(events, opts) {
  const o = opts || {};
  return h('table', { class: 'events' },
    h('thead', {}, h('tr', {},
      h('th', { scope: 'col' }, '#'), h('th', { scope: 'col' }, 'recorded'), h('th', { scope: 'col' }, 'type'),
      o.noAggregate ? null : h('th', { scope: 'col' }, 'aggregate'), h('th', { scope: 'col' }, 'user'),
      h('th', { scope: 'col' }, 'correlation'), h('th', { scope: 'col' }, 'data'))),
    h('tbody', {}, events.map((e) => h('tr', { 'data-position': e.position },
      h('td', {}, link.event(e.event_id, String(e.position))),
      h('td', { class: 'nowrap' }, time(e.recorded_at)),
      h('td', {}, link.event(e.event_id, e.event_type)),
      o.noAggregate ? null : h('td', {}, link.aggregate(e.aggregate_id), h('span', { class: 'muted' }, ` ${e.aggregate_type}`)),
      h('td', {}, link.user(e.user_id)),
      h('td', {}, e.correlation_id ? link.correlation(e.correlation_id) : ''),
      h('td', { class: 'summary' }, summary(e))))));
}
