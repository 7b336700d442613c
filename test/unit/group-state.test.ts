// A group's state from its jobs' states (pure).
import t from 'tap';
import { groupState, isGroupEnded } from '../../src/jobs/groups/state.js';

t.test('group state from job states', async (t) => {
  const cases: Array<[string[], string]> = [
    [['copying', 'ready', 'ready'], 'copying'],
    [['ready', 'ready', 'ready'], 'ready'],
    [['ready', 'pivoting', 'pivoted'], 'pivoting'],
    [['finishing', 'ready'], 'finishing'],
    [['cancelling', 'cancelled'], 'cancelling'],
    [['pivoted', 'pivoted'], 'pivoted'],
    [['finished', 'finished'], 'finished'],
    [['cancelled', 'cancelled'], 'cancelled'],
    [['pivoted', 'ready', 'pivoted'], 'partial'],
    [['finished', 'failed'], 'partial'],
    [['failed', 'cancelled'], 'failed'],
    [['failed', 'ready'], 'failed'],
  ];
  for (const [states, want] of cases) t.equal(groupState(states as never), want, `${states.join(', ')} → ${want}`);
  t.ok(
    isGroupEnded('cancelled') && !isGroupEnded('partial') && !isGroupEnded('ready'),
    'partial is not an end: its other disks may still mirror',
  );
});
