// The connection supervisor on fake connections: explicit states through a loss, a failed
// reopen, a reconcile that fails, and a stop; the job manager follows it and reconciles.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JobManager } from '../../src/jobs/manager.js';
import type { CloseReason } from '../../src/libvirt/index.js';
import { silentLogger } from '../../src/log.js';
import { ConnectionSupervisor, type ConnectionState } from '../../src/supervisor.js';
import { FakeConnection } from './fake-connection.js';

class ClosableFake extends FakeConnection {
  private closeListeners: Array<(r: CloseReason) => void> = [];
  override onClose(l: (r: CloseReason) => void): void {
    this.closeListeners.push(l);
  }
  drop(): void {
    this.closed = true;
    for (const l of this.closeListeners) l('eof' as CloseReason);
  }
}

const until = async (cond: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

t.test('lost → reconciling → serving; a failed reopen is retried; stop ends it', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'bc-sup-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const stateDir = join(root, 'state');
  const opened: ClosableFake[] = [];
  let failOpens = 0;
  const make = () => {
    const c = new ClosableFake(stateDir);
    c.addDomain({ name: 'vm1' });
    return c;
  };
  const sup = new ConnectionSupervisor({
    log: silentLogger,
    reopenMinMs: 5,
    reopenMaxMs: 20,
    open: async () => {
      if (failOpens > 0) {
        failOpens--;
        throw new Error('libvirtd not up yet');
      }
      const c = make();
      opened.push(c);
      return c;
    },
  });
  const states: ConnectionState[] = [];
  sup.on('state', (e: { state: ConnectionState }) => states.push(e.state));
  const first = await sup.connect();
  const jobs = new JobManager({ connection: first, stateDir, log: silentLogger, pollIntervalMs: 50 });
  await jobs.start();
  t.teardown(() => jobs.stop());
  const agentEvents: string[] = [];
  jobs.on('agent.connection', (e: { state: string }) => agentEvents.push(e.state));
  sup.watch(first, jobs);
  t.equal(sup.state, 'serving');

  failOpens = 2;
  opened[0]!.drop();
  t.equal(sup.state, 'lost', 'lost at once');
  t.notOk(jobs.serving, 'the job manager stops serving mutations');
  await until(() => sup.state === 'serving');
  t.same(states, ['serving', 'lost', 'reconciling', 'serving'], 'explicit states through the loss');
  t.equal(opened.length, 2, 'two failed reopens, then one connection');
  t.ok(jobs.serving, 'the job manager serves again');
  t.equal(jobs.connection, opened[1], 'on the new connection');
  t.same(agentEvents, ['lost', 'restored'], 'its followers told');

  sup.stop();
  opened[1]!.drop();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(sup.state, 'stopped');
  t.equal(opened.length, 2, 'no reconnect after stop');
});
