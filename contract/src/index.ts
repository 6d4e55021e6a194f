export * from './callables.ts';
export * from './collections.ts';
export * from './documents.ts';
export * from './phone.ts';
export * from './primitives.ts';
export * from './roles.ts';
export * from './queries.ts';
export * from './liveness.ts';
