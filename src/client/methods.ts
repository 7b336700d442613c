// Method name → params and result types, generated from the schemas (src/generated/api.ts).
import type { MethodTypes } from '../generated/api.js';

export interface Methods extends MethodTypes {
  'rpc.discover': [Record<string, never>, Record<string, unknown>];
}

export type MethodName = keyof Methods;
