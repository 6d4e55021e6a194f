/**
 * The emulator runs any query without an index; production Firestore refuses one that needs a
 * composite index it lacks. These tests prove the code cannot reach that failure: composite
 * queries exist only in the registry, and each has its index in firestore.indexes.json.
 */
import { buildQuery, needsCompositeIndex, QUERIES, type QueryName, type QuerySpec } from '@wafleet/contract';
import { getApps, initializeApp } from 'firebase-admin/app';
import { getFirestore } from 'firebase-admin/firestore';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isolatedProjectId } from './support/emulators.ts';

const root = path.resolve(import.meta.dirname, '..');

interface IndexField { fieldPath: string; order?: 'ASCENDING' | 'DESCENDING'; arrayConfig?: 'CONTAINS' }
interface Index { collectionGroup: string; queryScope: string; fields: IndexField[] }
const indexes = (JSON.parse(readFileSync(path.join(root, 'firestore.indexes.json'), 'utf8')) as { indexes: Index[] }).indexes;

/** The composite index Firestore asks for: equality fields first, then the sort/range fields. */
function requiredIndex(spec: QuerySpec): IndexField[] {
  const fields: IndexField[] = [];
  const add = (f: IndexField) => {
    if (!fields.some((x) => x.fieldPath === f.fieldPath)) fields.push(f);
  };
  for (const w of spec.where) {
    if (w.op === '==' || w.op === 'in') add({ fieldPath: w.field, order: 'ASCENDING' });
    if (w.op === 'array-contains') add({ fieldPath: w.field, arrayConfig: 'CONTAINS' });
  }
  const inequality = spec.where.find((w) => !['==', 'in', 'array-contains'].includes(w.op));
  if (inequality && !spec.orderBy.some((o) => o.field === inequality.field)) add({ fieldPath: inequality.field, order: 'ASCENDING' });
  for (const o of spec.orderBy) add({ fieldPath: o.field, order: o.direction === 'desc' ? 'DESCENDING' : 'ASCENDING' });
  return fields;
}

const sameFields = (a: IndexField[], b: IndexField[]) => JSON.stringify(a) === JSON.stringify(b);

describe('composite indexes', () => {
  const names = Object.keys(QUERIES) as QueryName[];

  it.each(names)('%s has its composite index in firestore.indexes.json', (name) => {
    const spec: QuerySpec = QUERIES[name];
    if (!needsCompositeIndex(spec)) return;
    const want = requiredIndex(spec);
    const match = indexes.find((ix) => ix.collectionGroup === spec.collection && ix.queryScope === 'COLLECTION' && sameFields(ix.fields, want));
    expect(match, `add to firestore.indexes.json: ${JSON.stringify({ collectionGroup: spec.collection, queryScope: 'COLLECTION', fields: want })}`).toBeDefined();
  });

  it('declares no index that no registered query uses', () => {
    const used = names.map((n) => QUERIES[n] as QuerySpec).filter(needsCompositeIndex).map((s) => `${s.collection}:${JSON.stringify(requiredIndex(s))}`);
    const unused = indexes.filter((ix) => !used.includes(`${ix.collectionGroup}:${JSON.stringify(ix.fields)}`));
    expect(unused).toEqual([]);
  });

  it('production code runs no filtered or sorted query outside the registry', () => {
    const offenders: string[] = [];
    const scan = (dir: string) => {
      for (const entry of readdirSync(dir)) {
        const full = path.join(dir, entry);
        if (entry === 'node_modules' || entry === 'test') continue;
        if (statSync(full).isDirectory()) scan(full);
        else if (full.endsWith('.ts') && !full.endsWith(path.join('contract', 'src', 'queries.ts'))) {
          readFileSync(full, 'utf8').split('\n').forEach((line, i) => {
            if (/\.(where|orderBy)\(/.test(line)) offenders.push(`${path.relative(root, full)}:${i + 1}: ${line.trim()}`);
          });
        }
      }
    };
    for (const dir of ['contract/src', 'functions/src', 'reconciler/src']) scan(path.join(root, dir));
    expect(offenders, 'build composite queries with buildQuery() from @wafleet/contract').toEqual([]);
  });

  it('every registered query runs against the Firestore emulator', async () => {
    const app = getApps().find((a) => a.name === 'indexes') ?? initializeApp({ projectId: isolatedProjectId('indexes') }, 'indexes');
    const db = getFirestore(app);
    for (const name of names) {
      const spec: QuerySpec = QUERIES[name];
      // 'in' takes a list of values; every other operator here takes one.
      const q = buildQuery(db.collection(spec.collection), name, spec.where.map((w) => (w.op === 'in' ? ['x'] : 'x')));
      await expect(q.limit(1).get()).resolves.toBeDefined();
    }
  });
});
