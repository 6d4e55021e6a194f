import type { Fb } from './firebase.ts';
import type { Store } from './store.ts';

export type Role = 'viewer' | 'operator' | 'admin';

export interface Ctx {
  fb: Fb;
  store: Store;
  role: Role;
  uid: string;
  /** Says something in the page's live region (results and errors of actions). */
  notify(text: string, kind?: 'ok' | 'error'): void;
}

const ORDER: Role[] = ['viewer', 'operator', 'admin'];

export function atLeast(ctx: Ctx, need: Role): boolean {
  return ORDER.indexOf(ctx.role) >= ORDER.indexOf(need);
}

/** A view: builds its DOM once, updates it in place, and stops its listeners on leave. */
export interface View {
  el: HTMLElement;
  destroy(): void;
}
