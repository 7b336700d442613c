// The newline framing of the unix socket (src/transport/lines.ts): lines split across chunks,
// several in one chunk, an oversized line whole in one chunk or growing over several, a last
// line without a newline.
import { PassThrough } from 'node:stream';
import t from 'tap';
import { readLines } from '../../src/transport/lines.js';

function feed(chunks: string[], maxLine: number): Promise<string[]> {
  const input = new PassThrough();
  const out: string[] = [];
  return new Promise((resolve) => {
    readLines(input, maxLine, { line: (l) => out.push(l), tooLong: () => out.push('<too long>'), end: () => resolve(out) });
    for (const c of chunks) input.write(c);
    input.end();
  });
}

t.test('framing', async (t) => {
  t.same(await feed(['{"a":', '1}\n{"b"', ':2}\n'], 100), ['{"a":1}', '{"b":2}'], 'lines split across chunks');
  t.same(await feed(['x\n\n  \ny\n'], 100), ['x', 'y'], 'blank lines are skipped');
  t.same(await feed([`${'a'.repeat(50)}\nok\n`], 10), ['<too long>', 'ok'], 'a whole oversized line in one chunk is refused, the next served');
  t.same(await feed(['a'.repeat(8), 'a'.repeat(8), 'a'.repeat(8), 'tail\nnext\n'], 10), ['<too long>', 'next'], 'an oversized line growing over chunks: refused once, skipped to its end');
  t.same(await feed(['last'], 10), ['last'], 'a last line without a newline');
  t.same(await feed(['é'.repeat(6) + '\n'], 10), ['<too long>'], 'the limit counts bytes, not characters');
});
