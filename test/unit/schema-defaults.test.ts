// A default written once on a def applies wherever a property refers to that def: the
// handlers receive it filled in, so the code needs no fallback of its own.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SchemaSet, SCHEMAS_DIR } from '../../src/schemas.js';

const def = (name: string) => JSON.parse(readFileSync(join(SCHEMAS_DIR, 'defs', name), 'utf8')).default;

t.test('defaults of referenced defs are filled in by validation', async (t) => {
  const schemas = new SchemaSet();
  for (const method of ['pivotGroup', 'finishGroup']) {
    const params: Record<string, unknown> = { groupId: 'g1' };
    t.ok(schemas.validator(`methods/${method}.params.json`)(params), `${method}: valid`);
    t.equal(params.maxPause, def('max-pause.json'), `${method}: maxPause from defs/max-pause.json`);
    t.equal(params.freeze, def('freeze-mode.json'), `${method}: freeze from defs/freeze-mode.json`);
  }
  const given: Record<string, unknown> = { groupId: 'g1', maxPause: 2 };
  schemas.validator('methods/pivotGroup.params.json')(given);
  t.equal(given.maxPause, 2, 'a value given is kept');
});
