// schemas/defs/bytes.json spells 0…2^64−1 digit by digit: checked against BigInt arithmetic.
import t from 'tap';
import { SchemaSet } from '../../src/schemas.js';

const MAX = (1n << 64n) - 1n;

t.test('ByteCount accepts exactly the unsigned 64-bit values', async (t) => {
  const v = new SchemaSet().validator('defs/bytes.json');
  const decimal = /^(0|[1-9][0-9]*)$/;
  const expect = (s: string) => decimal.test(s) && BigInt(s) <= MAX;
  const samples = new Set<string>();
  for (let d = -1000n; d <= 1000n; d++) samples.add((MAX + d).toString());
  for (let k = 0n; k <= 66n; k++) for (const d of [-1n, 0n, 1n]) samples.add(((1n << k) + d).toString());
  // Random strings around the boundary: prefixes of MAX with random tails, lengths 1…22.
  let seed = 42;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
  for (let i = 0; i < 20000; i++) {
    let s = MAX.toString().slice(0, rnd(21));
    const len = 1 + rnd(22);
    while (s.length < len) s += String(rnd(10));
    samples.add(s);
  }
  let wrong = 0;
  for (const s of samples)
    if (v(s) !== expect(s)) {
      wrong++;
      if (wrong < 5) t.fail(`'${s}': schema says ${v(s)}`);
    }
  t.equal(wrong, 0, `${samples.size} strings judged as BigInt does`);
  for (const n of [0, 1, 2 ** 53 - 1]) t.ok(v(n), `${n} as a number`);
  for (const n of [-1, 1.5, 2 ** 53, 1e300]) t.notOk(v(n), `${n} as a number is refused`);
});
