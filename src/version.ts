// The package version, read once from package.json (a leaf: the CLI's client verbs load it
// without the agent).
import { createRequire } from 'node:module';

export const VERSION: string = (createRequire(import.meta.url)('../../package.json') as { version: string }).version;
