/**
 * One account, live: status, the link code (QR drawn on a canvas, replaced in place on rotation,
 * with its sequence and a countdown), actions through the callables, its outbox, incidents and
 * latest inbound threads.
 */
import QRCode from 'qrcode';
import { collection, documentId, limit, onSnapshot, orderBy, query, where, type Unsubscribe } from 'firebase/firestore';
import { statusLiveness } from '../../contract/src/liveness.ts';
import { atLeast, type Ctx, type View } from './app.ts';
import { clear, h, setAttr, setText } from './dom.ts';
import { call } from './firebase.ts';
import { ago, isoTime, labelsText, maskJid, millis, phaseTone, phaseWords } from './format.ts';
import type { Doc } from './store.ts';

const QR_CSS_PX = 400;

function denied(err: Error): boolean {
  return (err as { code?: string }).code === 'permission-denied';
}

export function accountView(ctx: Ctx, accountId: string): View {
  const { store, fb } = ctx;
  const unsub: Unsubscribe[] = [];
  const timers: ReturnType<typeof setInterval>[] = [];

  const title = h('h2', { id: 'acct-h' }, accountId);
  const phase = h('span', { class: 'phase', id: 'acct-phase' });
  const message = h('p', { id: 'acct-message' });
  const stale = h('p', { class: 'warn', id: 'acct-stale', hidden: true });
  const facts = h('dl', { class: 'facts' });
  const factEls = new Map<string, HTMLElement>();
  for (const label of ['Desired state', 'Since', 'Linked phone', 'Owner', 'Last disconnect', 'Labels', 'Link method']) {
    const dd = h('dd');
    factEls.set(label, dd);
    facts.append(h('dt', {}, label), dd);
  }
  const fact = (k: string, v: string) => setText(factEls.get(k)!, v);

  // ---- link code
  const canvas = h('canvas', { id: 'qr', role: 'img', 'aria-label': 'QR code to link a phone', width: QR_CSS_PX, height: QR_CSS_PX });
  canvas.style.width = `${QR_CSS_PX}px`;
  canvas.style.height = `${QR_CSS_PX}px`;
  const qrWrap = h('div', { class: 'qr-wrap', hidden: true }, canvas);
  const pairing = h('p', { class: 'pairing mono', id: 'pairing-code', hidden: true });
  const codeInfo = h('p', { id: 'qr-info', 'aria-live': 'off' });
  const codeNote = h('p', { id: 'qr-note', class: 'muted' }, 'Loading the link code…');
  const codeBox = h('section', { class: 'card', 'aria-labelledby': 'code-h' }, h('h3', { id: 'code-h' }, 'Link a phone'), codeNote, qrWrap, pairing, codeInfo);
  let qrDoc: Doc | null = null;
  let drawn = '';
  const countdown = () => {
    if (!qrDoc) return;
    const left = Math.max(0, Math.round(((millis(qrDoc.expiresAt) ?? 0) - Date.now()) / 1000));
    setText(codeInfo, `Code #${qrDoc.sequence} · ${left > 0 ? `expires in ${left} s` : 'expired: a new code follows, or request one'}`);
    setAttr(codeInfo, 'data-sequence', String(qrDoc.sequence));
  };
  timers.push(setInterval(countdown, 1000));
  unsub.push(
    // A query on the id, not doc(): for a document listener whose document does not exist yet,
    // the SDK records "absent as of <snapshot version>" on every snapshot of the stream, and
    // drops the document's creation if it arrives stamped earlier than that version ("Ignoring
    // outdated watch update"). The emulator can deliver the reconciler's first code after a
    // snapshot of the stream stamped later than the code's write (other listeners' changes, such
    // as the status written alongside it), so a view opened before the code was published missed
    // it until the next rotation, 60 s on. A query records no absence: a late creation still lands.
    onSnapshot(
      query(collection(fb.db, 'accountQr'), where(documentId(), '==', accountId)),
      (snap) => {
        qrDoc = snap.docs[0]?.data() ?? null;
        if (!qrDoc) {
          qrWrap.hidden = true;
          pairing.hidden = true;
          setText(codeInfo, '');
          setText(codeNote, 'No link code right now. The reconciler publishes one while the account waits for a phone (request QR).');
          drawn = '';
          return;
        }
        if (qrDoc.kind === 'qr' && typeof qrDoc.qr === 'string') {
          setText(codeNote, 'Scan with WhatsApp on the phone: Settings → Linked devices → Link a device.');
          pairing.hidden = true;
          qrWrap.hidden = false;
          if (drawn !== qrDoc.qr) {
            drawn = qrDoc.qr;
            // Whole device pixels per module (no blur), up to 400 CSS px in all, white quiet zone.
            const ratio = Math.max(1, Math.ceil(window.devicePixelRatio || 1));
            const modules = QRCode.create(qrDoc.qr, { errorCorrectionLevel: 'L' }).modules.size + 8;
            const scale = Math.max(2, Math.floor((QR_CSS_PX * ratio) / modules));
            const seq = String(qrDoc.sequence ?? '');
            void QRCode.toCanvas(canvas, qrDoc.qr, { errorCorrectionLevel: 'L', margin: 4, scale, color: { dark: '#000000', light: '#ffffff' } }).then(() => {
              canvas.style.width = `${canvas.width / ratio}px`;
              canvas.style.height = `${canvas.height / ratio}px`;
              setAttr(canvas, 'data-sequence', seq);
              setAttr(canvas, 'data-drawn', String(Number(canvas.getAttribute('data-drawn') ?? 0) + 1));
            });
          }
        } else if (qrDoc.kind === 'pairingCode' && qrDoc.pairingCode) {
          qrWrap.hidden = true;
          pairing.hidden = false;
          const code = String(qrDoc.pairingCode);
          setText(pairing, code.length === 8 ? `${code.slice(0, 4)}-${code.slice(4)}` : code);
          setText(codeNote, 'On the phone: WhatsApp → Linked devices → Link a device → Link with phone number instead, then type this code.');
        }
        countdown();
      },
      (err) => {
        qrWrap.hidden = true;
        pairing.hidden = true;
        setText(codeNote, denied(err) ? 'Link codes are shown to operators and admins only: your role may not read them.' : `The link code could not be loaded: ${err.message}`);
        setAttr(codeNote, 'data-denied', denied(err) ? 'true' : null);
      },
    ),
  );

  // ---- actions
  const actions = h('div', { class: 'actions', role: 'group', 'aria-label': 'Actions' });
  const send = h('form', { class: 'card form', id: 'send-form', 'aria-labelledby': 'send-h' });
  const operator = atLeast(ctx, 'operator');
  const act = (label: string, name: string, fn: () => Promise<string>, opts: { confirm?: string; danger?: boolean } = {}) => {
    const b = h('button', { type: 'button', 'data-action': name, class: opts.danger ? 'danger' : '' }, label);
    b.addEventListener('click', async () => {
      if (opts.confirm && !window.confirm(opts.confirm)) return;
      b.disabled = true;
      b.setAttribute('aria-busy', 'true');
      try {
        ctx.notify(await fn());
      } catch (err) {
        ctx.notify(`${label} failed. ${(err as Error).message}`, 'error');
      } finally {
        b.disabled = false;
        b.removeAttribute('aria-busy');
      }
    });
    return b;
  };
  const connectBtn = act('Connect', 'connect', async () => {
    await call(fb, 'updateAccount', { accountId, desiredState: 'connected' });
    return `Asked ${accountId} to connect.`;
  });
  const disconnectBtn = act('Disconnect', 'disconnect', async () => {
    await call(fb, 'updateAccount', { accountId, desiredState: 'disconnected' });
    return `Asked ${accountId} to disconnect (the session is kept).`;
  });
  if (operator) {
    actions.append(
      act('Request QR', 'requestQr', async () => {
        await call(fb, 'requestQr', { accountId });
        return `Asked for a new link code for ${accountId}.`;
      }),
      act('Relink', 'relink', async () => {
        await call(fb, 'relinkAccount', { accountId });
        return `Asked ${accountId} to drop its link and show a new code.`;
      }, { confirm: `Relink ${accountId}? The current phone's link is dropped and a new code must be scanned.` }),
      connectBtn,
      disconnectBtn,
      act('Log out', 'logout', async () => {
        await call(fb, 'updateAccount', { accountId, desiredState: 'loggedOut' });
        return `Asked ${accountId} to log out (the session is deleted).`;
      }, { confirm: `Log ${accountId} out of WhatsApp? Coming back needs a new link.`, danger: true }),
    );
    if (atLeast(ctx, 'admin')) {
      actions.append(
        act('Delete', 'delete', async () => {
          const r = await call<{ alreadyRequested: boolean }>(fb, 'deleteAccount', { accountId });
          return r.alreadyRequested ? `${accountId} is already being deleted.` : `Deleting ${accountId}: the reconciler logs it out and removes it.`;
        }, { confirm: `Delete account ${accountId}? It is logged out and all its documents are removed. This cannot be undone.`, danger: true }),
      );
    }
    const to = h('input', { id: 's-to', type: 'tel', required: true, autocomplete: 'off', placeholder: '+14155550123' });
    const text = h('input', { id: 's-text', required: true, maxlength: 4096, autocomplete: 'off', value: 'wafleet test message' });
    const btn = h('button', { type: 'submit', 'data-action': 'send' }, 'Send test message');
    send.append(h('h3', { id: 'send-h' }, 'Send a test message'), h('label', { for: 's-to' }, 'To (phone number or JID)', to), h('label', { for: 's-text' }, 'Text', text), btn);
    send.addEventListener('submit', async (e) => {
      e.preventDefault();
      btn.disabled = true;
      try {
        const r = await call<{ messageId: string; status: string }>(fb, 'sendMessage', { accountId, to: to.value.trim(), text: text.value, idempotencyKey: `console-${crypto.randomUUID()}` });
        ctx.notify(`Message queued (${r.messageId}); its status follows in the outbox below.`);
      } catch (err) {
        ctx.notify(`Sending failed. ${(err as Error).message}`, 'error');
      } finally {
        btn.disabled = false;
      }
    });
  } else {
    actions.append(h('p', { class: 'muted', id: 'viewer-note' }, 'You can watch this account; operators and admins can act on it.'));
  }

  // ---- outbox, incidents, threads
  const outboxList = h('ul', { class: 'list', id: 'outbox' });
  const outboxNote = h('p', { class: 'muted' }, 'Loading…');
  const incidentList = h('ul', { class: 'list', id: 'acct-incidents' });
  const incidentNote = h('p', { class: 'muted' }, 'Loading…');
  const threadList = h('ul', { class: 'list', id: 'threads' });
  const threadNote = h('p', { class: 'muted' }, 'Loading…');

  const outboxRows = new Map<string, { li: HTMLLIElement; status: HTMLElement; detail: HTMLElement }>();
  unsub.push(
    onSnapshot(
      query(collection(fb.db, 'outbox'), where('accountId', '==', accountId), orderBy('createdAt', 'desc'), limit(20)),
      (snap) => {
        const ids = new Set<string>();
        snap.docs.forEach((d, i) => {
          ids.add(d.id);
          const m = d.data({ serverTimestamps: 'estimate' });
          let row = outboxRows.get(d.id);
          if (!row) {
            const status = h('span', { class: 'badge' });
            const detail = h('span');
            row = { li: h('li', { 'data-message': d.id }, status, ' ', detail), status, detail };
            outboxRows.set(d.id, row);
          }
          setText(row.status, String(m.status));
          setAttr(row.status, 'data-status', String(m.status));
          setText(row.detail, `to ${maskJid(String(m.to).replace(/^\+/, ''))} · “${String(m.text).slice(0, 60)}” · ${ago(millis(m.createdAt))}${m.error ? ` · ${m.error.code}: ${m.error.message}` : ''}`);
          if (outboxList.children[i] !== row.li) outboxList.insertBefore(row.li, outboxList.children[i] ?? null);
        });
        for (const [id, row] of outboxRows) if (!ids.has(id)) (row.li.remove(), outboxRows.delete(id));
        setText(outboxNote, snap.empty ? 'No messages yet.' : '');
      },
      (err) => setText(outboxNote, denied(err) ? 'The outbox is shown to operators and admins only.' : `The outbox could not be loaded: ${err.message}`),
    ),
    onSnapshot(
      query(collection(fb.db, 'incidents'), where('accountId', '==', accountId)),
      (snap) => {
        const items = snap.docs.map((d) => ({ ...d.data(), id: d.id }) as Doc & { id: string }).sort((a, b) => (millis(b.lastSeenAt) ?? 0) - (millis(a.lastSeenAt) ?? 0)).slice(0, 10);
        incidentList.replaceChildren(...items.map((i) => incidentItem(ctx, i)));
        setText(incidentNote, items.length ? '' : 'No incidents.');
      },
      (err) => setText(incidentNote, `Incidents could not be loaded: ${err.message}`),
    ),
  );
  const threadUnsub = new Map<string, Unsubscribe>();
  unsub.push(() => threadUnsub.forEach((u) => u()));
  unsub.push(
    onSnapshot(
      query(collection(fb.db, 'threads'), where('accountId', '==', accountId)),
      (snap) => {
        const items = snap.docs.map((d) => ({ ...d.data(), id: d.id }) as Doc & { id: string }).sort((a, b) => (millis(b.lastMessageAt) ?? 0) - (millis(a.lastMessageAt) ?? 0)).slice(0, 5);
        const keep = new Set(items.map((t) => t.id));
        for (const [id, u] of threadUnsub) if (!keep.has(id)) (u(), threadUnsub.delete(id));
        const lis = items.map((t) => {
          const existing = threadList.querySelector<HTMLLIElement>(`li[data-thread="${CSS.escape(t.id)}"]`);
          const li = existing ?? h('li', { 'data-thread': t.id }, h('strong', {}, maskJid(String(t.chatJid))), ' ', h('span', { class: 'last' }, '…'));
          if (!threadUnsub.has(t.id)) {
            threadUnsub.set(
              t.id,
              onSnapshot(query(collection(fb.db, 'threads', t.id, 'messages'), orderBy('sentAt', 'desc'), limit(1)), (ms) => {
                const m = ms.docs[0]?.data();
                setText(li.querySelector('.last')!, m ? `${m.fromName ? `${m.fromName}: ` : ''}“${String(m.text).slice(0, 120)}” · ${ago(millis(m.sentAt))}` : '');
              }),
            );
          }
          return li;
        });
        threadList.replaceChildren(...lis);
        setText(threadNote, items.length ? '' : 'No inbound messages yet.');
      },
      (err) => setText(threadNote, denied(err) ? 'Inbound messages are shown to operators and admins only.' : `Threads could not be loaded: ${err.message}`),
    ),
  );

  const el = h(
    'section',
    { 'aria-labelledby': 'acct-h', class: 'account', 'data-account': accountId },
    h('p', {}, h('a', { href: '#/' }, '← Fleet')),
    title,
    h('p', {}, phase),
    message,
    stale,
    facts,
    actions,
    h('div', { class: 'cols' }, codeBox, operator ? send : null),
    h('section', { class: 'card', 'aria-labelledby': 'ob-h' }, h('h3', { id: 'ob-h' }, 'Outbox'), outboxNote, outboxList),
    h('section', { class: 'card', 'aria-labelledby': 'inc-h' }, h('h3', { id: 'inc-h' }, 'Recent incidents'), incidentNote, incidentList),
    h('section', { class: 'card', 'aria-labelledby': 'th-h' }, h('h3', { id: 'th-h' }, 'Latest inbound threads'), threadNote, threadList),
  );

  function update(): void {
    const a = store.accounts.get(accountId);
    const s = store.statuses.get(accountId);
    if (!a && store.loaded.accounts) {
      setText(title, accountId);
      setText(message, 'No such account (or it was deleted).');
      actions.hidden = true;
      return;
    }
    if (!a) return;
    setText(title, `${a.displayName} (${accountId})`);
    setText(phase, phaseWords(s?.phase));
    setAttr(phase, 'data-tone', phaseTone(s?.phase));
    setAttr(phase, 'data-phase', (s?.phase as string | undefined) ?? null);
    setText(message, s ? `${s.reason}: ${s.message}` : 'No reconciler has reported on this account yet.');
    const live = statusLiveness(s as never, s?.owner ? (store.reconcilers.get(s.owner.instanceId) as never) : null, Date.now());
    stale.hidden = !s || live.live;
    if (!live.live && s) setText(stale, live.reason === 'ReconcilerSilent' ? `Not live: the reconciler ${live.instanceId} is unreachable since ${isoTime(live.sinceMillis)}; this is the last thing it saw.` : 'Not live: no reconciler drives this account right now; this is the last thing known.');
    fact('Desired state', `${a.desiredState}${a.deleteRequestedAt ? ' (being deleted)' : ''}`);
    fact('Since', s ? `${ago(millis(s.since))} (${isoTime(millis(s.since))})` : '—');
    fact('Linked phone', s?.linkedPhoneMasked ?? '—');
    fact('Owner', s?.owner ? `${s.owner.instanceId} (epoch ${s.owner.epoch})` : '—');
    const ld = s?.lastDisconnect;
    fact('Last disconnect', ld ? `${ld.reason}${ld.code !== null ? ` (${ld.code})` : ''}, ${ago(millis(ld.at))}` : '—');
    fact('Labels', labelsText(a.labels) || '—');
    fact('Link method', a.linkMethod === 'pairingCode' ? 'pairing code' : 'QR code');
    connectBtn.hidden = a.desiredState === 'connected';
    disconnectBtn.hidden = a.desiredState === 'disconnected';
  }
  update();
  const off = store.subscribe((c) => {
    if (c.all || c.accounts.has(accountId) || c.statuses.has(accountId)) update();
  });
  timers.push(setInterval(update, 15_000));
  return {
    el,
    destroy() {
      off();
      for (const u of unsub) u();
      for (const t of timers) clearInterval(t);
      clear(el);
    },
  };
}

export function incidentItem(ctx: Ctx, i: Doc & { id: string }): HTMLLIElement {
  const li = h(
    'li',
    { 'data-incident': i.id, class: i.open ? 'open' : '' },
    h('span', { class: 'badge', 'data-severity': String(i.severity) }, `${i.open ? 'open' : 'resolved'} · ${i.severity}`),
    ' ',
    h('strong', {}, String(i.type)),
    i.accountId ? h('span', {}, ' on ', h('a', { href: `#/account/${encodeURIComponent(i.accountId)}` }, String(i.accountId))) : ' (fleet-wide)',
    `: ${i.message} · seen ${i.count}× · last ${ago(millis(i.lastSeenAt))}`,
    i.acknowledgedBy ? h('span', { class: 'muted' }, ` · acknowledged ${ago(millis(i.acknowledgedAt))}`) : null,
  );
  if (i.open && !i.acknowledgedBy && atLeast(ctx, 'operator')) {
    const b = h('button', { type: 'button', 'data-action': 'acknowledge' }, 'Acknowledge');
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        await call(ctx.fb, 'acknowledgeIncident', { incidentId: i.id });
        ctx.notify(`Incident ${i.type} acknowledged.`);
      } catch (err) {
        ctx.notify(`Acknowledging failed. ${(err as Error).message}`, 'error');
        b.disabled = false;
      }
    });
    li.append(' ', b);
  }
  return li;
}
