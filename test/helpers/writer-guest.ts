// Moved to harness/writer-guest.ts (shared by tests, demo and bench). This re-export only keeps
// branches written before the move compiling; delete it once they are merged.
export * from '../../harness/writer-guest.js';
