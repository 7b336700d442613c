// The config's `domains` patterns (context.ts domainMatcher): which domains an agent manages.
import t from 'tap';
import { domainMatcher } from '../../src/jobs/context.js';

t.test('domains: shell-style patterns, anchored, the rest literal', async (t) => {
  const all = domainMatcher();
  t.ok(all('anything') && all('vm.1'), 'the default manages every domain');
  const m = domainMatcher(['web-*', 'db?', 'a.b']);
  t.ok(m('web-1') && m('web-'), '* matches any run, also an empty one');
  t.ok(m('db1') && !m('db') && !m('db12'), '? matches exactly one character');
  t.ok(m('a.b') && !m('axb'), 'a dot is literal');
  t.notOk(m('xweb-1') || m('web') || m('db1x'), 'anchored at both ends');
  t.notOk(domainMatcher(['(x|y)+'])('x'), 'regex syntax is literal');
  t.ok(domainMatcher(['(x|y)+'])('(x|y)+'), 'and matches itself');
});
