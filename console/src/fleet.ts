/**
 * The fleet: every account with its live status, counts by phase, filters. Rows are keyed by
 * account id and updated cell by cell, so a snapshot about one account touches one row.
 */
import { statusLiveness } from '../../contract/src/liveness.ts';
import { atLeast, type Ctx, type View } from './app.ts';
import { h, setAttr, setText } from './dom.ts';
import { call } from './firebase.ts';
import { ago, isoTime, labelsText, millis, PHASE_WORDS, phaseTone, phaseWords } from './format.ts';
import { applied, fleetShown, rowCreated, statusRendered } from './probe.ts';
import type { Doc } from './store.ts';

interface Row {
  tr: HTMLTableRowElement;
  name: HTMLAnchorElement;
  id: HTMLElement;
  phase: HTMLElement;
  since: HTMLElement;
  why: HTMLElement;
  phone: HTMLElement;
  owner: HTMLElement;
  last: HTMLElement;
  labels: HTMLElement;
  flags: HTMLElement;
}

function cell(label: string, ...children: Array<Node | string>): HTMLTableCellElement {
  return h('td', { 'data-label': label }, ...children);
}

export function fleetView(ctx: Ctx): View {
  const { store } = ctx;
  const rows = new Map<string, Row>();
  const counts = h('p', { class: 'counts', id: 'fleet-counts', 'aria-live': 'polite' });
  const phaseChips = h('ul', { class: 'chips', 'aria-label': 'Accounts by phase' });
  const search = h('input', { type: 'search', id: 'f-search', placeholder: 'Name or id', autocomplete: 'off' });
  const phaseSel = h('select', { id: 'f-phase' }, h('option', { value: '' }, 'All phases'), ...Object.entries(PHASE_WORDS).map(([v, w]) => h('option', { value: v }, w)));
  const labelSel = h('select', { id: 'f-label' }, h('option', { value: '' }, 'All labels'));
  const tbody = h('tbody');
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const empty = h('p', { class: 'muted', hidden: true }, 'No accounts match.');
  const table = h(
    'table',
    { class: 'fleet', id: 'fleet' },
    h('caption', { class: 'sr-only' }, 'Accounts and their live status'),
    h('thead', {}, h('tr', {}, ...['Account', 'Phase', 'Since', 'Reason and message', 'Linked phone', 'Owner', 'Last disconnect', 'Labels'].map((t) => h('th', { scope: 'col' }, t)))),
    tbody,
  );
  const filters = h(
    'form',
    { class: 'filters', role: 'search', onsubmit: (e: Event) => e.preventDefault() },
    h('label', { for: 'f-search' }, 'Search', search),
    h('label', { for: 'f-phase' }, 'Phase', phaseSel),
    h('label', { for: 'f-label' }, 'Label', labelSel),
  );
  const el = h('section', { 'aria-labelledby': 'fleet-h' }, h('h2', { id: 'fleet-h' }, 'Fleet'), counts, phaseChips, error, filters, table, empty);
  if (atLeast(ctx, 'operator')) el.append(createForm(ctx));

  const now = () => Date.now();

  function makeRow(id: string): Row {
    const name = h('a', { href: `#/account/${encodeURIComponent(id)}` });
    const idEl = h('span', { class: 'mono muted' });
    const flags = h('span', { class: 'flags' });
    const r: Row = {
      tr: h('tr', { 'data-account': id }),
      name,
      id: idEl,
      phase: h('span', { class: 'phase' }),
      since: h('span'),
      why: h('span'),
      phone: h('span', { class: 'mono' }),
      owner: h('span', { class: 'mono' }),
      last: h('span'),
      labels: h('span'),
      flags,
    };
    r.tr.append(
      cell('Account', name, ' ', idEl, ' ', flags),
      cell('Phase', r.phase),
      cell('Since', r.since),
      cell('Reason', r.why),
      cell('Linked phone', r.phone),
      cell('Owner', r.owner),
      cell('Last disconnect', r.last),
      cell('Labels', r.labels),
    );
    // Keep rows ordered by id: insert before the first row with a larger id.
    const after = [...rows.keys()].filter((k) => k > id).sort()[0];
    tbody.insertBefore(r.tr, after ? rows.get(after)!.tr : null);
    rows.set(id, r);
    rowCreated();
    return r;
  }

  function updateRow(id: string): void {
    const account = store.accounts.get(id);
    let r = rows.get(id);
    if (!account) {
      if (r) {
        r.tr.remove();
        rows.delete(id);
      }
      return;
    }
    r ??= makeRow(id);
    const status = store.statuses.get(id);
    setText(r.name, String(account.displayName ?? id));
    setText(r.id, id);
    const phase = status?.phase as string | undefined;
    const live = statusLiveness(status as never, status?.owner ? (store.reconcilers.get(status.owner.instanceId) as never) : null, now());
    const stale = Boolean(status) && !live.live;
    setText(r.phase, phaseWords(phase));
    setAttr(r.phase, 'data-tone', phaseTone(phase));
    setAttr(r.tr, 'data-phase', phase ?? null);
    const sinceMs = millis(status?.since);
    setText(r.since, ago(sinceMs));
    setAttr(r.since, 'title', isoTime(sinceMs) || null);
    setText(r.why, status ? `${status.reason}: ${status.message}` : '—');
    setText(r.phone, (status?.linkedPhoneMasked as string | null) ?? '—');
    setText(r.owner, status?.owner ? `${status.owner.instanceId} (epoch ${status.owner.epoch})` : '—');
    const ld = status?.lastDisconnect as { reason?: string; code?: number | null; at?: unknown } | null | undefined;
    setText(r.last, ld ? `${ld.reason}${ld.code !== null && ld.code !== undefined ? ` (${ld.code})` : ''}, ${ago(millis(ld.at))}` : '—');
    setText(r.labels, labelsText(account.labels));
    const incidents = store.openIncidentsOf(id).length;
    const deleting = Boolean(account.deleteRequestedAt);
    const flagText = [
      incidents ? `⚠ ${incidents} open incident${incidents > 1 ? 's' : ''}` : '',
      stale && !live.live ? `stale: ${live.reason === 'ReconcilerSilent' ? `reconciler unreachable since ${ago(live.sinceMillis)}` : live.reason === 'NoOwner' ? 'no reconciler drives it' : 'no status yet'}` : '',
      deleting ? 'being deleted' : '',
    ].filter(Boolean).join(' · ');
    setText(r.flags, flagText);
    setAttr(r.tr, 'data-incident', incidents ? 'open' : null);
    setAttr(r.tr, 'data-stale', stale ? (live.live ? null : live.reason) : null);
    filterRow(id, r, account, status);
  }

  function filterRow(id: string, r: Row, account: Doc, status: Doc | undefined): void {
    const q = search.value.trim().toLowerCase();
    const p = phaseSel.value;
    const l = labelSel.value;
    const labels = (account.labels ?? {}) as Record<string, string>;
    const show =
      (!q || id.includes(q) || String(account.displayName ?? '').toLowerCase().includes(q)) &&
      (!p || status?.phase === p) &&
      (!l || labelsText(labels).split(', ').includes(l));
    if (r.tr.hidden === show) r.tr.hidden = !show;
  }

  function updateSummary(): void {
    const total = store.accounts.size;
    const byPhase = new Map<string, number>();
    for (const id of store.accounts.keys()) {
      const phase = (store.statuses.get(id)?.phase as string | undefined) ?? 'none';
      byPhase.set(phase, (byPhase.get(phase) ?? 0) + 1);
    }
    setText(counts, `${byPhase.get('connected') ?? 0}/${total} connected`);
    const chips = [...byPhase.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([p, n]) => `${p}:${n}`).join('|');
    if (phaseChips.dataset.key !== chips) {
      phaseChips.dataset.key = chips;
      phaseChips.replaceChildren(...[...byPhase.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([p, n]) => h('li', { class: 'phase', 'data-tone': phaseTone(p === 'none' ? undefined : p) }, `${phaseWords(p === 'none' ? undefined : p)}: ${n}`)));
    }
    const labels = new Set<string>();
    for (const a of store.accounts.values()) for (const s of labelsText(a.labels).split(', ')) if (s) labels.add(s);
    const key = [...labels].sort().join('\n');
    if (labelSel.dataset.key !== key) {
      labelSel.dataset.key = key;
      const current = labelSel.value;
      labelSel.replaceChildren(h('option', { value: '' }, 'All labels'), ...[...labels].sort().map((v) => h('option', { value: v }, v)));
      labelSel.value = labels.has(current) ? current : '';
    }
    error.hidden = !store.error;
    setText(error, store.error ?? '');
    empty.hidden = [...rows.values()].some((r) => !r.tr.hidden) || !store.loaded.accounts;
    if (store.loaded.accounts && store.loaded.statuses) fleetShown();
  }

  function refilter(): void {
    for (const [id, r] of rows) filterRow(id, r, store.accounts.get(id)!, store.statuses.get(id));
    updateSummary();
  }
  search.addEventListener('input', refilter);
  phaseSel.addEventListener('change', refilter);
  labelSel.addEventListener('change', refilter);

  for (const id of store.accounts.keys()) updateRow(id);
  updateSummary();
  const off = store.subscribe((c) => {
    const t0 = performance.now();
    const ids = c.all ? new Set([...store.accounts.keys(), ...rows.keys()]) : new Set([...c.accounts, ...c.statuses]);
    for (const id of ids) updateRow(id);
    for (const id of c.statuses) {
      const s = store.statuses.get(id);
      if (s && rows.has(id)) statusRendered(id, String(s.phase), millis(s.updatedAt));
    }
    updateSummary();
    applied(performance.now() - t0);
  });
  // "Since" reads "12 s ago": a local clock re-words it (no server traffic).
  const tick = setInterval(() => {
    for (const id of rows.keys()) updateRow(id);
  }, 15_000);
  return {
    el,
    destroy() {
      off();
      clearInterval(tick);
    },
  };
}

function createForm(ctx: Ctx): HTMLElement {
  const id = h('input', { id: 'c-id', name: 'accountId', required: true, pattern: '[a-z0-9][a-z0-9_\\-]{0,39}', autocomplete: 'off', 'aria-describedby': 'c-id-help' });
  const name = h('input', { id: 'c-name', name: 'displayName', required: true, maxlength: 80, autocomplete: 'off' });
  const method = h('select', { id: 'c-method', name: 'linkMethod' }, h('option', { value: 'qr' }, 'QR code'), h('option', { value: 'pairingCode' }, 'Pairing code'));
  const phone = h('input', { id: 'c-phone', name: 'phoneNumber', type: 'tel', autocomplete: 'off', placeholder: '+14155550123' });
  const labels = h('input', { id: 'c-labels', name: 'labels', autocomplete: 'off', placeholder: 'team=sales, site=lisbon' });
  const submit = h('button', { type: 'submit', 'data-action': 'create' }, 'Create account');
  const form = h(
    'form',
    { class: 'card form', id: 'create-form', 'aria-labelledby': 'create-h' },
    h('h3', { id: 'create-h' }, 'New account'),
    h('label', { for: 'c-id' }, 'Account id', id),
    h('small', { id: 'c-id-help', class: 'muted' }, 'Lowercase letters, digits, "-" and "_", e.g. wa-31.'),
    h('label', { for: 'c-name' }, 'Display name', name),
    h('label', { for: 'c-method' }, 'Link by', method),
    h('label', { for: 'c-phone' }, 'Phone number (needed for a pairing code)', phone),
    h('label', { for: 'c-labels' }, 'Labels', labels),
    submit,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const data: Record<string, unknown> = { accountId: id.value.trim(), displayName: name.value };
    if (method.value === 'pairingCode') data.linkMethod = 'pairingCode';
    if (phone.value.trim()) data.phoneNumber = phone.value.trim();
    if (labels.value.trim()) {
      data.labels = Object.fromEntries(
        labels.value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
          .map((s) => {
            const i = s.indexOf('=');
            return i < 0 ? [s, ''] : [s.slice(0, i).trim(), s.slice(i + 1).trim()];
          }),
      );
    }
    submit.disabled = true;
    try {
      await call(ctx.fb, 'createAccount', data);
      ctx.notify(`Account ${data.accountId} created.`);
      location.hash = `#/account/${encodeURIComponent(String(data.accountId))}`;
    } catch (err) {
      ctx.notify(`Creating the account failed. ${(err as Error).message}`, 'error');
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}
