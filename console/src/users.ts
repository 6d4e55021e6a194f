/** Admins grant and revoke roles (setUserRole). There is no listing callable: name the user. */
import type { Ctx, View } from './app.ts';
import { h } from './dom.ts';
import { call } from './firebase.ts';

export function usersView(ctx: Ctx): View {
  const who = h('input', { id: 'u-who', required: true, autocomplete: 'off', 'aria-describedby': 'u-help' });
  const role = h(
    'select',
    { id: 'u-role' },
    h('option', { value: 'viewer' }, 'viewer: sees status'),
    h('option', { value: 'operator' }, 'operator: acts on accounts'),
    h('option', { value: 'admin' }, 'admin: also deletes and manages roles'),
    h('option', { value: '' }, 'no role: revoke access'),
  );
  const btn = h('button', { type: 'submit', 'data-action': 'setRole' }, 'Set role');
  const form = h(
    'form',
    { class: 'card form', id: 'role-form' },
    h('label', { for: 'u-who' }, 'User (email or uid)', who),
    h('small', { id: 'u-help', class: 'muted' }, 'Granting by email needs a verified address; otherwise use the uid. Nobody changes their own role. Taking a role away also signs the user out of the callables at once.'),
    h('label', { for: 'u-role' }, 'Role', role),
    btn,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const v = who.value.trim();
    const data = { ...(v.includes('@') ? { email: v } : { uid: v }), role: role.value || null };
    btn.disabled = true;
    try {
      const r = await call<{ uid: string; role: string | null }>(ctx.fb, 'setUserRole', data);
      ctx.notify(r.role ? `${v} is now ${r.role}.` : `${v} has no role any more.`);
    } catch (err) {
      ctx.notify(`Setting the role failed. ${(err as Error).message}`, 'error');
    } finally {
      btn.disabled = false;
    }
  });
  const el = h('section', { 'aria-labelledby': 'users-h' }, h('h2', { id: 'users-h' }, 'Users and roles'), form);
  return { el, destroy: () => undefined };
}
