import type { BinaryNode } from '@whiskeysockets/baileys';
import { S_WHATSAPP_NET } from './ids.ts';

export function children(node: BinaryNode | undefined, tag?: string): BinaryNode[] {
  if (!node || !Array.isArray(node.content)) return [];
  return tag ? node.content.filter((c) => c.tag === tag) : node.content;
}

export function child(node: BinaryNode | undefined, tag: string): BinaryNode | undefined {
  return children(node, tag)[0];
}

export function bytesOf(node: BinaryNode | undefined): Uint8Array | undefined {
  if (!node) return undefined;
  const c = node.content;
  if (c instanceof Uint8Array) return c;
  if (typeof c === 'string') return new Uint8Array(Buffer.from(c, 'utf8'));
  return undefined;
}

export function childBytes(node: BinaryNode | undefined, tag: string): Uint8Array | undefined {
  return bytesOf(child(node, tag));
}

export function textOf(node: BinaryNode | undefined): string | undefined {
  const b = bytesOf(node);
  return b ? Buffer.from(b).toString('utf8') : undefined;
}

export function iqResult(request: BinaryNode, content?: BinaryNode[]): BinaryNode {
  return { tag: 'iq', attrs: { from: S_WHATSAPP_NET, type: 'result', id: request.attrs['id'] ?? '' }, ...(content ? { content } : {}) };
}

export function iqError(request: BinaryNode, code: number, text: string): BinaryNode {
  return {
    tag: 'iq',
    attrs: { from: S_WHATSAPP_NET, type: 'error', id: request.attrs['id'] ?? '' },
    content: [{ tag: 'error', attrs: { code: String(code), text } }],
  };
}

export function unixNow(): string {
  return String(Math.floor(Date.now() / 1000));
}

export function streamError(code: number | undefined, reason?: BinaryNode): BinaryNode {
  return { tag: 'stream:error', attrs: code ? { code: String(code) } : {}, ...(reason ? { content: [reason] } : {}) };
}
