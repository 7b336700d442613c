// Moved to src/schemas.ts (a leaf module). This re-export only keeps branches written
// before the move compiling; delete it once they are merged.
export * from '../schemas.js';
