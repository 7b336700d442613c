# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The modules' decisions (module_utils/decide.py) without an agent: changed or not, which call,
the check-mode answer, an idempotent rerun recognised, and the refusals."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import unittest

from ansible_collections.blockcopy.agent.plugins.module_utils.decide import (
    commit_decision, copy_decision, move_decision, pull_decision, snapshot_decision)


def job(state, dest="/b/vm1-vda.qcow2", source="/a/vm1-vda.qcow2", kind="copy", job_id="j1", **extra):
    j = {"jobId": job_id, "kind": kind, "state": state, "disk": "vda", "destination": {"path": dest}, "source": {"path": source}}
    j.update(extra)
    return j


def copy_opts(**kw):
    p = dict(domain="vm1", disk="vda", state="pivoted", destination="/b/vm1-vda.qcow2", destination_xml=None,
             wait=True, remove_source=False)
    p.update(kw)
    return p


class CopyDecisionTests(unittest.TestCase):
    def test_new_copy_starts_pivoting(self):
        d = copy_decision(copy_opts(), None, [], check_mode=False)
        self.assertEqual((d.action, d.when_ready, d.wait, d.needs_daemon), ("start", "pivot", "done", None))

    def test_check_mode_answers_changed_and_calls_nothing(self):
        d = copy_decision(copy_opts(), None, [], check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", True))
        self.assertIn("would take vm1/vda to pivoted", d.msg)

    def test_wait_false_needs_the_daemon(self):
        d = copy_decision(copy_opts(wait=False, state="finished"), None, [], check_mode=False)
        self.assertEqual((d.action, d.when_ready, d.wait, d.needs_daemon), ("start", "finish", "none", "finish when the copy is ready"))
        d = copy_decision(copy_opts(wait=False, state="ready"), None, [], check_mode=False)
        self.assertEqual((d.when_ready, d.needs_daemon), ("none", None))

    def test_rerun_after_pivot_is_not_changed(self):
        pivoted = job("pivoted")
        d = copy_decision(copy_opts(), pivoted, [pivoted], check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))
        self.assertIn("already pivoted", d.msg)

    def test_rerun_after_a_later_backup_is_not_changed(self):
        pivoted = job("pivoted")
        backup = job("finished", dest="/backup/vda.qcow2", source="/b/vm1-vda.qcow2", job_id="j2")
        d = copy_decision(copy_opts(), backup, [pivoted, backup], check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", False))

    def test_pivoted_there_once_but_moved_away_since_copies_again(self):
        pivoted = job("pivoted")
        back = job("pivoted", dest="/a/vm1-vda.qcow2", source="/b/vm1-vda.qcow2", job_id="j2")
        self.assertEqual(copy_decision(copy_opts(), back, [pivoted, back], check_mode=False).action, "start")

    def test_ready_is_satisfied_past_ready(self):
        d = copy_decision(copy_opts(state="ready"), job("finished"), [job("finished")], check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))
        d = copy_decision(copy_opts(state="ready"), job("pivoting"), [], check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))

    def test_running_ready_copy_is_pivoted(self):
        d = copy_decision(copy_opts(remove_source=True), job("ready"), [], check_mode=False)
        self.assertEqual((d.action, d.method, d.wait_ready, d.remove_source), ("switch", "pivot", False, True))
        d = copy_decision(copy_opts(state="finished"), job("copying"), [], check_mode=False)
        self.assertEqual((d.action, d.method, d.wait_ready, d.remove_source), ("switch", "finish", True, False))
        self.assertEqual(copy_decision(copy_opts(), job("ready"), [], check_mode=True).changed, True)

    def test_phase_one_without_wait(self):
        d = copy_decision(copy_opts(wait=False), job("copying", whenReady="pivot"), [], check_mode=False)
        self.assertEqual((d.action, d.changed, d.needs_daemon), ("done", False, "pivot when the copy is ready"))
        d = copy_decision(copy_opts(wait=False), job("copying", whenReady="none"), [], check_mode=False)
        self.assertEqual((d.action, d.error), ("fail", "notReady"))

    def test_ready_goal_waits_for_a_copy_in_phase_one(self):
        d = copy_decision(copy_opts(state="ready"), job("copying"), [], check_mode=False)
        self.assertEqual((d.action, d.until), ("wait", "ready"))
        self.assertIn("already runs (ready)", d.msg % {"state": "ready"})

    def test_refusals(self):
        self.assertEqual(copy_decision(copy_opts(), job("ready", dest="/c/other.qcow2"), [], False).error, "jobExists")
        self.assertEqual(copy_decision(copy_opts(), job("copying", kind="activeCommit"), [], False).error, "jobExists")
        self.assertEqual(copy_decision(copy_opts(), job("cancelling"), [], False).error, "invalidState")

    def test_absent(self):
        self.assertEqual(copy_decision(copy_opts(state="absent"), None, [], False).changed, False)
        self.assertEqual(copy_decision(copy_opts(state="absent"), job("finished"), [], False).action, "done")
        self.assertEqual(copy_decision(copy_opts(state="absent"), job("ready"), [], False).action, "abort")
        d = copy_decision(copy_opts(state="absent"), job("ready"), [], True)
        self.assertEqual((d.action, d.changed), ("done", True))
        self.assertEqual(copy_decision(copy_opts(state="absent"), job("copying", kind="pull"), [], False).error, "invalidState")


SNAP, BASE = "/i/vda.snap.qcow2", "/i/vda.qcow2"
TWO = [{"path": SNAP, "format": "qcow2", "index": 2}, {"path": BASE, "format": "qcow2", "index": 1}]
ONE = [{"path": BASE, "format": "qcow2", "index": 1}]


def commit_opts(**kw):
    p = dict(domain="db1", disk="vda", top=None, base=None, state=None, wait=True)
    p.update(kw)
    return p


def commit_job(state, kind="activeCommit", top=SNAP, base=BASE, **extra):
    return job(state, dest=base, source=top, kind=kind, layers={"top": {"path": top, "index": 2}, "base": {"path": base, "index": 1}}, **extra)


class CommitDecisionTests(unittest.TestCase):
    def test_active_commit_starts_and_pivots(self):
        d = commit_decision(commit_opts(), None, [], TWO, check_mode=False)
        self.assertEqual((d.action, d.when_ready, d.wait), ("start", "pivot", "done"))
        self.assertEqual(commit_decision(commit_opts(), None, [], TWO, check_mode=True).changed, True)

    def test_rerun_after_pivot_reads_the_live_chain(self):
        prior = commit_job("pivoted")
        d = commit_decision(commit_opts(), prior, [prior], ONE, check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))
        # New overlay since: the same commit is due again.
        again = [{"path": "/i/vda.snap2.qcow2", "format": "qcow2", "index": 3}] + ONE
        self.assertEqual(commit_decision(commit_opts(), prior, [prior], again, check_mode=False).action, "start")

    def test_single_layer_has_nothing_to_commit(self):
        d = commit_decision(commit_opts(), None, [], ONE, check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", False))

    def test_commit_below_the_top_completes(self):
        three = [{"path": "/i/act.qcow2", "index": 3}] + TWO
        prior = commit_job("completed", kind="commit")
        d = commit_decision(commit_opts(top=SNAP), None, [prior], [three[0]] + ONE, check_mode=False)
        self.assertEqual((d.action, d.changed), ("done", False))
        d = commit_decision(commit_opts(top=SNAP), None, [], three, check_mode=False)
        self.assertEqual((d.action, d.when_ready), ("start", "none"))

    def test_running_commit_is_switched(self):
        d = commit_decision(commit_opts(state="finished"), commit_job("ready"), [], TWO, check_mode=False)
        self.assertEqual((d.action, d.method, d.wait_ready), ("switch", "finish", False))
        d = commit_decision(commit_opts(), commit_job("ready"), [], TWO, check_mode=True)
        self.assertEqual((d.action, d.changed), ("done", True))

    def test_running_other_job_is_refused(self):
        self.assertEqual(commit_decision(commit_opts(), job("ready"), [], TWO, False).error, "jobExists")

    def test_absent_aborts_a_commit_only(self):
        self.assertEqual(commit_decision(commit_opts(state="absent"), commit_job("copying"), [], TWO, False).action, "abort")
        self.assertEqual(commit_decision(commit_opts(state="absent"), job("copying"), [], TWO, False).changed, False)


def pull_opts(**kw):
    p = dict(domain="web1", disk="vda", base=None, state="completed", wait=True)
    p.update(kw)
    return p


class PullDecisionTests(unittest.TestCase):
    def test_flat_chain_is_done(self):
        self.assertEqual(pull_decision(pull_opts(), None, [], ONE, False).changed, False)
        self.assertEqual(pull_decision(pull_opts(base=BASE), None, [], TWO, False).action, "done")

    def test_pull_starts_or_would(self):
        self.assertEqual(pull_decision(pull_opts(), None, [], TWO, False).action, "start")
        d = pull_decision(pull_opts(), None, [], TWO, True)
        self.assertEqual((d.action, d.changed, d.job), ("done", True, None))

    def test_without_the_live_chain_the_prior_job_decides(self):
        prior = job("completed", kind="pull")
        self.assertEqual(pull_decision(pull_opts(), prior, [prior], None, False).changed, False)

    def test_running(self):
        self.assertEqual(pull_decision(pull_opts(), job("copying", kind="pull"), [], TWO, False).action, "wait")
        self.assertEqual(pull_decision(pull_opts(), job("copying", kind="pull"), [], TWO, True).changed, False)
        self.assertEqual(pull_decision(pull_opts(), job("copying"), [], TWO, False).error, "jobExists")
        self.assertEqual(pull_decision(pull_opts(state="absent"), job("copying", kind="pull"), [], TWO, False).action, "abort")


def move_opts(**kw):
    p = dict(domain="vm1", dir="/srv/fast", pool=None, state="pivoted", wait=True, endpoint=None, remove_source=False)
    p.update(kw)
    return p


PLAN = {"plan": [{"disk": "vda"}, {"disk": "vdb"}]}


class MoveDecisionTests(unittest.TestCase):
    def test_nothing_to_move(self):
        self.assertEqual(move_decision(move_opts(), {"plan": []}, False).changed, False)
        self.assertEqual(move_decision(move_opts(), dict(PLAN, group={"state": "pivoted"}), True).changed, False)

    def test_check_mode_and_start(self):
        d = move_decision(move_opts(), PLAN, True)
        self.assertEqual((d.action, d.changed, d.msg), ("done", True, "would move 2 disk(s) of vm1 to /srv/fast"))
        self.assertEqual(move_decision(move_opts(), PLAN, False).action, "move")

    def test_wait_false_needs_the_daemon_unless_an_endpoint(self):
        self.assertEqual(move_decision(move_opts(wait=False), PLAN, False).needs_daemon, "pivot when the copies are ready")
        self.assertEqual(move_decision(move_opts(wait=False, endpoint="wss://h:1"), PLAN, False).needs_daemon, None)
        self.assertEqual(move_decision(move_opts(wait=False, state="ready"), PLAN, False).needs_daemon, None)

    def test_a_move_under_way_that_will_not_switch_is_resumed(self):
        group = {"groupId": "g1", "state": "ready", "whenReady": "none"}
        d = move_decision(move_opts(remove_source=True), dict(PLAN, group=group), False)
        self.assertEqual((d.action, d.method, d.group_id, d.when_ready, d.remove_source), ("resume", "pivotGroup", "g1", "none", True))
        group = dict(group, whenReady="pivot", state="copying")
        self.assertEqual(move_decision(move_opts(), dict(PLAN, group=group), False).action, "move")


class SnapshotDecisionTests(unittest.TestCase):
    DISKS = [{"disk": "vda", "overlay": "/i/vda.o"}, {"disk": "vdb", "overlay": "/i/vdb.o"}]

    def opts(self):
        return {"domain": "db1", "disks": self.DISKS}

    def test_all_on_their_overlays_is_done(self):
        live = {"vda": [{"path": "/i/vda.o"}, {"path": "/i/vda"}], "vdb": [{"path": "/i/vdb.o"}]}
        self.assertEqual((snapshot_decision(self.opts(), live, True).changed), False)

    def test_some_on_their_overlays_is_refused(self):
        live = {"vda": [{"path": "/i/vda.o"}], "vdb": [{"path": "/i/vdb"}]}
        self.assertEqual(snapshot_decision(self.opts(), live, False).error, "invalidState")

    def test_take_or_would(self):
        live = {"vda": [{"path": "/i/vda"}], "vdb": [{"path": "/i/vdb"}]}
        self.assertEqual(snapshot_decision(self.opts(), live, True).changed, True)
        d = snapshot_decision(self.opts(), live, False)
        self.assertEqual(d.action, "take")
        self.assertEqual(d.msg % {"domain": "db1", "quiesced": ""}, "snapshotted vda, vdb of db1")


if __name__ == "__main__":
    unittest.main()
