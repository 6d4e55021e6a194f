/** Every incident, newest first, live; operators acknowledge open ones. */
import { collection, limit, onSnapshot, orderBy, query } from 'firebase/firestore';
import { incidentItem } from './account.ts';
import type { Ctx, View } from './app.ts';
import type { Doc } from './store.ts';
import { h, setText } from './dom.ts';

export function incidentsView(ctx: Ctx): View {
  const list = h('ul', { class: 'list', id: 'incidents' });
  const note = h('p', { class: 'muted' }, 'Loading…');
  const el = h('section', { 'aria-labelledby': 'inc-all-h' }, h('h2', { id: 'inc-all-h' }, 'Incidents'), note, list);
  const off = onSnapshot(
    query(collection(ctx.fb.db, 'incidents'), orderBy('lastSeenAt', 'desc'), limit(100)),
    (snap) => {
      const items = snap.docs.map((d) => ({ ...d.data(), id: d.id }) as Doc & { id: string });
      // Open ones first, each group newest first.
      items.sort((a, b) => Number(Boolean(b.open)) - Number(Boolean(a.open)));
      list.replaceChildren(...items.map((i) => incidentItem(ctx, i)));
      setText(note, items.length ? `${items.filter((i) => i.open).length} open, ${items.length} shown.` : 'No incidents.');
    },
    (err) => setText(note, `Incidents could not be loaded: ${err.message}`),
  );
  return { el, destroy: off };
}
