// The console's only way to the log: the /v1 HTTP API, with the signed-in token.
// Every read goes through here, so roles and type limits apply to all the console shows.
// Event payloads are kept as the server sent them (rawMembers, rawItems) wherever the
// console shows or exports them byte for byte.

const KEY = 'annal.token';

export function token() { return sessionStorage.getItem(KEY) || ''; }
export function setToken(t) { if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY); }

// A problem document (RFC 9457) or a transport failure, as one error type.
export class ApiError extends Error {
  constructor(status, type, detail) {
    super(detail || type || `HTTP ${status}`);
    this.status = status; this.type = type || 'error'; this.detail = detail || '';
  }
}

function headers(extra) {
  const h = Object.assign({ accept: 'application/json' }, extra || {});
  const t = token();
  if (t) h.authorization = `Bearer ${t}`;
  return h;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// GET path?params: { json, text } (text: the body exactly as sent).
export async function getRaw(path, params, signal) {
  let res;
  try {
    res = await fetch(path + query(params), { headers: headers(), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', `the server did not answer: ${e.message}`);
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!res.ok) {
    throw new ApiError(res.status, json && json.type, json && json.detail || text.slice(0, 200));
  }
  return { json, text };
}

export async function get(path, params, signal) {
  return (await getRaw(path, params, signal)).json;
}

// Pages of GET /v1/events, each event with its raw text, until `max` events or the end.
// onPage(events) is called after each page (for progress).
export async function readAll(filters, max, onPage, signal) {
  const out = [];
  let after = Number(filters.after_position || 0);
  for (;;) {
    const limit = Math.min(1000, max - out.length);
    if (limit <= 0) return { events: out, truncated: true };
    const { json, text } = await getRaw('/v1/events', { ...filters, after_position: after, limit }, signal);
    const raws = rawItems(text, 'events');
    json.events.forEach((e, i) => { e.raw = raws[i]; out.push(e); });
    if (onPage) onPage(out);
    if (json.next_after_position == null) return { events: out, truncated: false };
    after = json.next_after_position;
  }
}

// Every event of one aggregate, by version (at most `max`).
export async function readStream(id, max, signal) {
  const out = [];
  let from = 1;
  while (out.length < max) {
    const { json, text } = await getRaw(`/v1/streams/${encodeURIComponent(id)}`, { from_version: from, limit: 1000 }, signal);
    const raws = rawItems(text, 'events');
    json.events.forEach((e, i) => { e.raw = raws[i]; out.push(e); });
    if (json.next_from_version == null) return { events: out, truncated: false };
    from = json.next_from_version;
  }
  return { events: out, truncated: true };
}

// Live events from GET /v1/subscribe (Server-Sent Events read through fetch, because
// EventSource cannot send the Authorization header). Calls onEvent(event) for each;
// onOpen() once the server has accepted the subscription; resolves when the stream ends
// or `signal` aborts; rejects with ApiError on refusal.
export async function subscribe(params, onEvent, signal, onOpen) {
  let res;
  try {
    res = await fetch('/v1/subscribe' + query(params), { headers: headers({ accept: 'text/event-stream' }), signal });
  } catch (e) {
    if (e.name === 'AbortError') return;
    throw new ApiError(0, 'unreachable', e.message);
  }
  if (!res.ok) {
    const text = await res.text();
    let p = {};
    try { p = JSON.parse(text); } catch { p = {}; }
    throw new ApiError(res.status, p.type, p.detail || text);
  }
  if (onOpen) onOpen();
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data = [];
  let kind = 'message';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (data.length && kind === 'message') {
            const text = data.join('\n');
            const e = JSON.parse(text);
            e.raw = text;
            onEvent(e);
          } else if (data.length && kind === 'error') {
            throw new ApiError(503, 'subscription_error', data.join('\n'));
          }
          data = []; kind = 'message';
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
        } else if (line.startsWith('event:')) {
          kind = line.slice(6).trim();
        }
      }
    }
  } catch (e) {
    if (e.name === 'AbortError') return;
    throw e;
  }
}

// --- Raw JSON: where a value starts and ends in a JSON text, without re-encoding it.

// The end (exclusive) of the JSON value starting at i (after whitespace).
function skipValue(s, i) {
  i = skipWs(s, i);
  const c = s[i];
  if (c === '"') return skipString(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    for (; i < s.length; i++) {
      const d = s[i];
      if (d === '"') { i = skipString(s, i) - 1; continue; }
      if (d === '{' || d === '[') depth++;
      else if (d === '}' || d === ']') { depth--; if (depth === 0) return i + 1; }
    }
    return s.length;
  }
  while (i < s.length && !',}] \t\r\n'.includes(s[i])) i++;
  return i;
}

function skipString(s, i) {
  for (i = i + 1; i < s.length; i++) {
    if (s[i] === '\\') i++;
    else if (s[i] === '"') return i + 1;
  }
  return s.length;
}

function skipWs(s, i) {
  while (i < s.length && ' \t\r\n'.includes(s[i])) i++;
  return i;
}

// The members of the JSON object `s` as name -> raw text of the value.
export function rawMembers(s) {
  const out = {};
  let i = skipWs(s, 0);
  if (s[i] !== '{') return out;
  i++;
  for (;;) {
    i = skipWs(s, i);
    if (s[i] !== '"') return out;
    const end = skipString(s, i);
    const name = JSON.parse(s.slice(i, end));
    i = skipWs(s, end);
    if (s[i] !== ':') return out;
    const start = skipWs(s, i + 1);
    const stop = skipValue(s, start);
    out[name] = s.slice(start, stop);
    i = skipWs(s, stop);
    if (s[i] !== ',') return out;
    i++;
  }
}

// The raw texts of the items of the array member `name` of the JSON object `s`.
export function rawItems(s, name) {
  const arr = rawMembers(s)[name];
  const out = [];
  if (!arr || arr[0] !== '[') return out;
  let i = skipWs(arr, 1);
  while (i < arr.length && arr[i] !== ']') {
    const stop = skipValue(arr, i);
    out.push(arr.slice(i, stop));
    i = skipWs(arr, stop);
    if (arr[i] === ',') i = skipWs(arr, i + 1);
  }
  return out;
}
