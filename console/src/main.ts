/** Start-up, sign-in and routing (#/, #/account/{id}, #/incidents, #/users). */
import { onIdTokenChanged, signInWithEmailAndPassword, signOut, type User } from 'firebase/auth';
import { accountView } from './account.ts';
import { atLeast, type Ctx, type Role, type View } from './app.ts';
import { h } from './dom.ts';
import { loadFirebase, plainError, type Fb } from './firebase.ts';
import { fleetView } from './fleet.ts';
import { incidentsView } from './incidents.ts';
import { Store } from './store.ts';
import { usersView } from './users.ts';

const main = document.getElementById('main')!;
const nav = document.getElementById('nav')!;
const who = document.getElementById('who')!;
const notice = document.getElementById('notice')!;

function notify(text: string, kind: 'ok' | 'error' = 'ok'): void {
  notice.textContent = text;
  notice.dataset.kind = kind;
  notice.setAttribute('role', kind === 'error' ? 'alert' : 'status');
}

let view: View | null = null;
let ctx: Ctx | null = null;

function show(v: View, focus = false): void {
  view?.destroy();
  view = v;
  main.replaceChildren(v.el);
  if (focus) main.focus({ preventScroll: true });
}

function route(focus = true): void {
  if (!ctx) return;
  const hash = location.hash.replace(/^#\/?/, '');
  const [section, arg] = hash.split('/');
  for (const a of nav.querySelectorAll('a')) {
    if (a.getAttribute('href') === `#/${section ?? ''}` || (a.getAttribute('href') === '#/' && !section)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (section === 'account' && arg) show(accountView(ctx, decodeURIComponent(arg)), focus);
  else if (section === 'incidents') show(incidentsView(ctx), focus);
  else if (section === 'users' && atLeast(ctx, 'admin')) show(usersView(ctx), focus);
  else show(fleetView(ctx), focus);
}

function signInForm(fb: Fb, message = ''): void {
  view?.destroy();
  view = null;
  nav.replaceChildren();
  who.replaceChildren();
  const email = h('input', { id: 'email', type: 'email', autocomplete: 'username', required: true });
  const password = h('input', { id: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message);
  const btn = h('button', { type: 'submit' }, 'Sign in');
  const form = h(
    'form',
    { class: 'card form signin', 'aria-labelledby': 'signin-h' },
    h('h2', { id: 'signin-h' }, 'Sign in'),
    h('label', { for: 'email' }, 'Email', email),
    h('label', { for: 'password' }, 'Password', password),
    error,
    btn,
    fb.emulated ? h('p', { class: 'muted' }, `Emulators (project ${fb.projectId}): the demo users are printed by npm run dev.`) : null,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    btn.disabled = true;
    error.textContent = '';
    try {
      await signInWithEmailAndPassword(fb.auth, email.value.trim(), password.value);
    } catch (err) {
      error.textContent = plainError(err);
      btn.disabled = false;
    }
  });
  main.replaceChildren(form);
  email.focus();
}

async function start(): Promise<void> {
  let fb: Fb;
  try {
    fb = await loadFirebase();
  } catch (err) {
    main.replaceChildren(h('p', { class: 'error', role: 'alert' }, (err as Error).message));
    return;
  }
  let store: Store | null = null;
  let current: { uid: string; role: string | null } | null = null;
  onIdTokenChanged(fb.auth, async (user: User | null) => {
    if (!user) {
      store?.stop();
      store = null;
      ctx = null;
      current = null;
      signInForm(fb);
      return;
    }
    const token = await user.getIdTokenResult();
    const claim = token.claims.role;
    const role = claim === 'viewer' || claim === 'operator' || claim === 'admin' ? (claim as Role) : null;
    if (current && current.uid === user.uid && current.role === role) return; // a plain refresh
    current = { uid: user.uid, role };
    store?.stop();
    store = null;
    const out = h('button', { type: 'button', class: 'link', onclick: () => void signOut(fb.auth) }, 'Sign out');
    who.replaceChildren(h('span', { id: 'whoami' }, `${user.email ?? user.uid} · `, h('strong', { id: 'role' }, role ?? 'no role')), ' ', out);
    if (!role) {
      ctx = null;
      nav.replaceChildren();
      view?.destroy();
      view = null;
      main.replaceChildren(h('p', { class: 'warn', role: 'alert' }, 'Your user has no role yet, so there is nothing to show. Ask an admin to grant you one (viewer, operator or admin), then sign in again.'));
      return;
    }
    store = new Store(fb);
    store.start();
    ctx = { fb, store, role, uid: user.uid, notify };
    nav.replaceChildren(h('a', { href: '#/' }, 'Fleet'), h('a', { href: '#/incidents' }, 'Incidents'));
    if (role === 'admin') nav.append(h('a', { href: '#/users' }, 'Users'));
    route(false);
  });
  window.addEventListener('hashchange', () => route());
}

void start();
