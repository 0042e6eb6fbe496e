// The console's shell: sign-in with an API token, the navigation, and a router over the
// location's hash (#/view/arg?params), so every page has an address, works with the
// back button, and a view's timers and streams stop when the user leaves it.

import { ApiError, get, setToken, token } from './api.js';
import { h, problem } from './ui.js';
import * as overview from './overview.js';
import * as browse from './browse.js';
import * as event from './event.js';
import * as aggregate from './aggregate.js';
import * as graph from './graph.js';
import * as audit from './audit.js';

const views = {
  '': overview, events: browse, event, aggregate, correlation: graph, audit,
};

const main = document.getElementById('main');
let me = null;
let leave = null;

function parse() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, q] = hash.split('?');
  const [view, ...rest] = path.split('/');
  return { view: view || '', arg: decodeURIComponent(rest.join('/')), params: Object.fromEntries(new URLSearchParams(q || '')) };
}

async function route() {
  if (leave) { leave(); leave = null; }
  const { view, arg, params } = parse();
  const v = views[view];
  for (const a of document.querySelectorAll('#nav a')) {
    const current = a.dataset.view === view || (view === 'event' && a.dataset.view === 'events');
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  main.replaceChildren();
  if (!v) { main.append(problem(new ApiError(404, 'not_found', `no view '${view}'`))); return; }
  const controller = new AbortController();
  leave = () => controller.abort();
  try {
    const cleanup = await v.render(main, { arg, params, me, signal: controller.signal });
    if (typeof cleanup === 'function') {
      const abort = leave;
      leave = () => { abort(); cleanup(); };
    }
  } catch (e) {
    if (e.name === 'AbortError') return;
    if (e.status === 401) { signIn('The token was refused; sign in again.'); return; }
    main.append(problem(e));
  }
  document.title = `${main.querySelector('h1')?.textContent || 'annal'} · annal console`;
}

function signIn(why) {
  if (leave) { leave(); leave = null; }
  setToken('');
  document.getElementById('who').textContent = '';
  document.getElementById('signout').hidden = true;
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'signin', onsubmit: async (ev) => {
    ev.preventDefault();
    setToken(input.value.trim());
    await start();
  } },
  h('h1', {}, 'Sign in'),
  why ? h('p', { class: 'error', role: 'alert' }, why) : null,
  h('label', { for: 'token' }, 'API token'), input,
  h('p', { id: 'token-help', class: 'muted' }, 'The console reads through the HTTP API with this token: it shows what the token may read, nothing more. The token is kept in this tab only.'),
  h('button', { type: 'submit' }, 'Sign in'));
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  try {
    me = await get('/v1/whoami');
  } catch (e) {
    if (e.status === 401) { signIn(token() ? 'That token was refused.' : ''); return; }
    main.replaceChildren(problem(e));
    return;
  }
  const limits = me.aggregate_types ? ` · only ${me.aggregate_types.join(', ')}` : '';
  document.getElementById('who').textContent = me.auth ? `${me.name} (${me.role}${limits})` : 'auth off';
  document.getElementById('signout').hidden = !me.auth;
  window.onhashchange = route;
  await route();
}

document.getElementById('skip').addEventListener('click', (ev) => { ev.preventDefault(); main.focus(); });
document.getElementById('signout').addEventListener('click', () => signIn(''));
start();
