# -*- coding: utf-8 -*-
# Copyright: blockcopy-agent developers
# MIT License (see the repository's LICENSE)
"""The modules' decisions as pure functions: from the options, what the agent reported (the
disk's job, its history, the live chain, a move's plan) and check mode, what to do - nothing
(changed or not), fail, or which call to make - with no agent and no Ansible involved, so that
every decision (idempotent rerun, check-mode answer, the call made) is unit-tested on its own.

Each function returns a Decision; the module carries it out (the calls, the daemon check).
Standard library only."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.blockcopy.agent.plugins.module_utils.chain import find_layer, names_layer, same_path

ACTIVE = ("copying", "ready", "pivoting", "finishing", "cancelling")
TERMINAL = ("pivoted", "finished", "completed", "cancelled", "failed")


class Decision(object):
    """action: done (nothing to call; changed tells whether check mode would change it), fail,
    or the call to make (start, wait, switch, abort for a job; take for a snapshot; move, resume
    for a group). needs_daemon: what the agent must do by itself after the module returned (the
    module then requires a daemon). msg may hold %(state)s, the job's state after the call."""

    def __init__(self, action, changed=False, msg="", job=None, error=None, needs_daemon=None, **extra):
        self.action = action
        self.changed = changed
        self.msg = msg
        self.job = job
        self.error = error
        self.needs_daemon = needs_daemon
        self.extra = extra

    def __getattr__(self, name):
        try:
            return self.__dict__["extra"][name]
        except KeyError:
            raise AttributeError(name)

    def __repr__(self):
        return "Decision(%s, changed=%s, msg=%r, error=%s, %r)" % (self.action, self.changed, self.msg, self.error, self.extra)


def _done(job, msg, changed=False):
    return Decision("done", changed=changed, job=job, msg=msg)


def _fail(msg, error, job=None):
    return Decision("fail", msg=msg, error=error, job=job)


# block_copy

def same_destination(job, path):
    return job is not None and same_path(job["destination"]["path"], path)


def live_source(job):
    """Where the guest's disk runs now, by its latest job: the copy after a pivot, otherwise the
    source that job started from (a finish or an abort leaves the guest there). None when that
    cannot be told: no job, or a failed job (a failed pivot may have left the guest on either)."""
    if job is None or job["state"] == "failed":
        return None
    if job["state"] == "pivoted":
        return job["destination"]["path"]
    return (job.get("source") or {}).get("path")


def copy_decision(p, job, history, check_mode):
    """block_copy: p the module's options, job the disk's running (else latest) job, history the
    disk's jobs oldest first."""
    where = "%s/%s" % (p["domain"], p["disk"])
    goal = p["state"]
    if goal == "absent":
        if job is None or job["state"] in TERMINAL:
            return _done(job, "no copy job runs on %s" % where)
        if job.get("kind", "copy") != "copy":
            # Not this module's: a commit or pull is ended with block_commit / block_pull state=absent.
            return _fail("a %s job, not a copy, runs on %s: block_copy aborts only copies" % (job["kind"], where), "invalidState", job)
        if check_mode:
            return _done(job, "would abort the copy job on %s" % where, changed=True)
        return Decision("abort", job=job, msg="aborted the copy job on %s" % where)
    dest = p["destination"]
    if dest is None and p["destination_xml"]:
        dest = job["destination"]["path"] if job else None
    active = job is not None and job["state"] in ACTIVE
    if active and job.get("kind", "copy") != "copy":
        return _fail("disk %s of %s already has a %s job" % (p["disk"], p["domain"], job["kind"]), "jobExists", job)
    if active and not same_destination(job, dest) and not p["destination_xml"]:
        return _fail("disk %s of %s already has a copy job to %s" % (p["disk"], p["domain"], job["destination"]["path"]), "jobExists", job)
    if active and job["state"] == "cancelling":
        return _fail("the copy job on %s is being cancelled; run again once it ended" % where, "invalidState", job)
    would = "would take %s to %s (%s)" % (where, goal, dest)
    if not active:
        # Decided by where the disk runs now and what became of earlier copies to dest,
        # not by the disk's latest job alone (a later backup does not undo a pivot).
        prior = next((j for j in reversed(history) if same_destination(j, dest)), None)
        # Pivoted onto dest earlier and still running there. (A dest that is merely the
        # disk's original source goes to the agent, which rejects it.)
        if goal == "pivoted" and prior is not None and prior["state"] == "pivoted" and same_path(live_source(job), dest):
            return _done(prior, "%s is already pivoted onto %s" % (where, dest))
        if prior is not None and goal == "finished" and prior["state"] == "finished":
            return _done(prior, "%s is already finished (%s)" % (where, dest))
        if prior is not None and goal == "ready" and prior["state"] in ("pivoted", "finished"):
            return _done(prior, "%s is already past ready (%s)" % (where, prior["state"]))
        if check_mode:
            return _done(job, would, changed=True)
        when_ready = {"ready": "none", "pivoted": "pivot", "finished": "finish"}[goal]
        daemon = None
        if not p["wait"] and when_ready != "none":
            daemon = "%s when the copy is ready" % ("pivot" if goal == "pivoted" else "finish")
        wait = "none" if not p["wait"] else ("ready" if goal == "ready" else "done")
        return Decision("start", job=job, when_ready=when_ready, wait=wait, needs_daemon=daemon,
                        msg="%s %s to %s" % ("copied" if p["wait"] else "started copying", where, dest))
    # A job to this destination already runs: take it where it should go.
    if job["state"] == goal or (goal == "ready" and job["state"] in ("pivoting", "finishing")):
        return _done(job, "%s is already %s (%s)" % (where, job["state"], dest))
    if check_mode:
        return _done(job, would, changed=True)
    running = "a copy of %s to %s already runs (%%(state)s)" % (where, dest)
    if goal == "ready":
        if job["state"] == "copying" and p["wait"]:
            return Decision("wait", job=job, until="ready", msg=running)
        return _done(job, running % {"state": job["state"]})
    method = "pivot" if goal == "pivoted" else "finish"
    if job["state"] == "copying" and not p["wait"]:
        if job.get("whenReady") != method:
            return _fail("the copy of %s is still in phase 1 and will not %s by itself; run with wait=true" % (where, method), "notReady", job)
        return Decision("done", job=job, needs_daemon="%s when the copy is ready" % method,
                        msg="the copy of %s is still in phase 1; the agent will %s it when ready" % (where, method))
    return Decision("switch", job=job, method=method, wait_ready=job["state"] == "copying",
                    remove_source=bool(p["remove_source"] and method == "pivot"), msg="%s %s (%s)" % (goal, where, dest))


# block_commit

COMMIT_KINDS = ("activeCommit", "commit")


def commit_active(p, chain):
    """Whether the commit the options ask for is an active commit (no top, or top naming the active layer)."""
    return p["top"] is None or (chain is not None and find_layer(chain, p["top"], p["disk"]) == 0)


def commit_goal(p, chain):
    return p["state"] or ("pivoted" if commit_active(p, chain) else "completed")


def commit_matches(p, chain, job):
    """Whether `job` is the commit these options ask for (same kind and layers)."""
    layers = job.get("layers") or {}
    if job["kind"] != ("activeCommit" if commit_active(p, chain) else "commit"):
        return False
    if p["top"] is not None and job["kind"] == "commit" and not names_layer(p["top"], layers.get("top"), p["disk"]):
        return False
    return p["base"] is None or names_layer(p["base"], layers.get("base"), p["disk"])


def commit_done(goal, prior, chain):
    """Whether an ended commit left the disk where the goal says, by the live XML when it can be read."""
    state = prior["state"]
    if not (state == goal or (goal == "ready" and state in ("pivoted", "finished"))):
        return False
    if chain is None:
        return True
    top = ((prior.get("layers") or {}).get("top") or {}).get("path")
    if state == "pivoted":
        return same_path(chain[0]["path"], prior["destination"]["path"])
    if state == "finished":
        return same_path(chain[0]["path"], top)
    return top is not None and find_layer(chain, top, None) is None


def commit_decision(p, job, history, chain, check_mode):
    """block_commit: job the disk's running (else latest) job of any kind, history the disk's
    commit jobs oldest first, chain the live chain (None when it cannot be read)."""
    where = "%s/%s" % (p["domain"], p["disk"])
    goal = commit_goal(p, chain)
    active = commit_active(p, chain)
    if goal == "absent":
        if job is None or job["state"] in TERMINAL or job["kind"] not in COMMIT_KINDS:
            return _done(job, "no commit job runs on %s" % where)
        if check_mode:
            return _done(job, "would abort the commit job on %s" % where, changed=True)
        return Decision("abort", job=job, msg="aborted the commit job on %s" % where)
    if job is not None and job["state"] in ACTIVE:
        return commit_running(p, goal, job, chain, check_mode, where)
    prior = next((j for j in reversed(history) if commit_matches(p, chain, j)), None)
    if prior is not None and commit_done(goal, prior, chain):
        return _done(prior, "%s is already %s (job %s)" % (where, prior["state"], prior["jobId"]))
    if active and chain is not None and len(chain) == 1 and goal in ("pivoted", "finished"):
        return _done(prior, "%s has a single layer: nothing to commit" % where)
    if check_mode:
        return _done(job, "would commit %s (%s)" % (where, goal), changed=True)
    when_ready = {"pivoted": "pivot", "finished": "finish"}.get(goal, "none")
    daemon = "%s when the commit is ready" % when_ready if not p["wait"] and when_ready != "none" else None
    return Decision("start", job=job, when_ready=when_ready, needs_daemon=daemon,
                    wait="none" if not p["wait"] else ("ready" if goal == "ready" else "done"),
                    msg="%s %s (%%(state)s)" % ("committed" if p["wait"] else "started committing", where))


def commit_running(p, goal, job, chain, check_mode, where):
    """A commit already runs on the disk: take it where the goal says."""
    if job["kind"] not in COMMIT_KINDS or not commit_matches(p, chain, job):
        return _fail("disk %s already has a %s job (%s)" % (where, job["kind"], job["jobId"]), "jobExists", job)
    if job["state"] == "cancelling":
        return _fail("the commit job on %s is being cancelled; run again once it ended" % where, "invalidState", job)
    running = "a commit of %s already runs (%%(state)s)" % where
    if goal in ("completed", "ready") or job["state"] in ("pivoting", "finishing"):
        if p["wait"]:
            return Decision("wait", job=job, until="ready" if goal == "ready" else "done", msg=running)
        return _done(job, running % {"state": job["state"]})
    method = "pivot" if goal == "pivoted" else "finish"
    if check_mode:
        return _done(job, "would %s the commit of %s" % (method, where), changed=True)
    if job["state"] == "copying" and not p["wait"]:
        if job.get("whenReady") != method:
            return _fail("the commit of %s is still merging and will not %s by itself; run with wait=true" % (where, method), "notReady", job)
        return Decision("done", job=job, needs_daemon="%s when the commit is ready" % method,
                        msg="the commit of %s is still merging; the agent will %s it when ready" % (where, method))
    return Decision("switch", job=job, method=method, wait_ready=job["state"] == "copying", remove_source=False,
                    msg="%s the commit of %s" % ("pivoted" if method == "pivot" else "finished", where))


# block_pull

def pull_matches(p, job):
    base = (job.get("layers") or {}).get("base")
    if p["base"] is None:
        return base is None
    return names_layer(p["base"], base, p["disk"])


def pull_flattened(p, chain):
    """Whether the live chain is what the pull would leave."""
    if p["base"] is None:
        return len(chain) == 1
    return find_layer(chain, p["base"], p["disk"]) == 1


def pull_decision(p, job, history, chain, check_mode):
    """block_pull: job the disk's running (else latest) job, history its pull jobs oldest first."""
    where = "%s/%s" % (p["domain"], p["disk"])
    running = job is not None and job["state"] in ACTIVE
    if p["state"] == "absent":
        if not running or job["kind"] != "pull":
            return _done(job if job is not None and job["kind"] == "pull" else None, "no pull job runs on %s" % where)
        if check_mode:
            return _done(job, "would abort the pull job on %s" % where, changed=True)
        return Decision("abort", job=job, msg="aborted the pull job on %s" % where)
    if running:
        if job["kind"] != "pull" or not pull_matches(p, job):
            return _fail("disk %s already has a %s job (%s)" % (where, job["kind"], job["jobId"]), "jobExists", job)
        msg = "a pull of %s already runs (%%(state)s)" % where
        if p["wait"] and not check_mode:
            return Decision("wait", job=job, until="done", msg=msg)
        return _done(job, msg % {"state": job["state"]})
    prior = next((j for j in reversed(history) if pull_matches(p, j)), None)
    if chain is not None and pull_flattened(p, chain):
        return _done(prior, "%s is already pulled down to %s" % (where, p["base"] or "a single layer"))
    if chain is None and prior is not None and prior["state"] == "completed":
        return _done(prior, "%s is already pulled (job %s)" % (where, prior["jobId"]))
    if check_mode:
        return _done(None, "would pull %s down to %s" % (where, p["base"] or "a single layer"), changed=True)
    return Decision("start", wait="done" if p["wait"] else "none",
                    msg="%s %s (%%(state)s)" % ("pulled" if p["wait"] else "started pulling", where))


# block_move

MOVE_WHEN_READY = {"pivoted": "pivot", "ready": "none", "finished": "finish"}


def move_decision(p, plan, check_mode):
    """block_move: plan the agent's dry-run answer (plan, group of a move under way)."""
    where = p["dir"] or "pool %s" % p["pool"]
    group = plan.get("group")
    if not plan["plan"]:
        # Nothing to copy and no move of this VM under way: already there.
        return _done(None, "every disk of %s already is in %s" % (p["domain"], where))
    if group is not None and group["state"] == p["state"]:
        return _done(None, "the move of %s to %s is already %s" % (p["domain"], where, p["state"]))
    if check_mode:
        return _done(None, "would move %d disk(s) of %s to %s" % (len(plan["plan"]), p["domain"], where), changed=True)
    switch = MOVE_WHEN_READY[p["state"]]
    daemon = None
    if not p["wait"] and p["state"] != "ready" and not p["endpoint"]:
        daemon = "%s when the copies are ready" % switch
    msg = "%s %%(count)d disk(s) of %s to %s" % ("moved" if p["wait"] else "started moving", p["domain"], where)
    if group is not None and switch != "none" and group.get("whenReady") != switch and p["wait"]:
        # A move found under way that will not switch by itself: wait for ready, then switch.
        return Decision("resume", needs_daemon=daemon, group_id=group["groupId"], when_ready=group["whenReady"],
                        method="pivotGroup" if switch == "pivot" else "finishGroup",
                        remove_source=bool(p["remove_source"] and switch == "pivot"), msg=msg)
    return Decision("move", needs_daemon=daemon, msg=msg)


# disk_snapshot

def snapshot_decision(p, live, check_mode):
    """disk_snapshot: live each listed disk's live chain by target (None when it cannot be read)."""
    disks = p["disks"]
    listed = ", ".join(d["disk"] for d in disks)
    if live is not None:
        on = [d for d in disks if same_path(live[d["disk"]][0]["path"], d["overlay"])]
        if len(on) == len(disks):
            return _done(None, "%s of %s already run on their overlays" % (listed, p["domain"]))
        if on:
            return _fail("only %s of %s already run on their overlays; snapshotting the others now would not be one moment"
                         % (", ".join(d["disk"] for d in on), p["domain"]), "invalidState")
    if check_mode:
        return _done(None, "would snapshot %s of %s" % (listed, p["domain"]), changed=True)
    return Decision("take", msg="snapshotted %s of %%(domain)s%%(quiesced)s" % listed)


# block_backup

BACKUP_OVER = ("completed", "failed", "cancelled")
NEW_CHECKPOINT = "(the checkpoint this backup creates)"


def checkpoints_to_delete(names, keep):
    """Retention: which checkpoints (names, oldest first) a deleteCheckpoints {keep} deletes - the
    oldest, so that the newest `keep` remain. None keep: nothing."""
    if keep is None or len(names) <= keep:
        return []
    return list(names[:len(names) - keep])


def backup_where(p):
    return p["dir"] if p["dir"] else "pool %s" % p["pool"]


def backup_matches(p, job):
    """Why the backup the agent knows by job_id is not the one these options ask for (None: it is)."""
    if job.get("kind", "backup") != "backup":
        return "job id %s names a %s job, not a backup" % (job["jobId"], job["kind"])
    dom = job.get("domain") or {}
    if p["domain"] not in (dom.get("name"), dom.get("uuid")):
        return "job id %s names a backup of %s, not of %s" % (job["jobId"], dom.get("name"), p["domain"])
    return None


def backup_decision(p, job, checkpoints, running, check_mode):
    """block_backup: job the backup the agent knows by p["job_id"] (None: no such job, or no
    job_id), checkpoints the domain's checkpoint names oldest first, running the domain's backup
    that runs now, if any (another one: libvirt runs one backup per domain at a time).

    A backup is an event, not a state: without job_id every run makes a new one. With job_id the
    same key again reports that backup (changed=false), waiting for it when it still runs; a
    backup that failed under this key fails the task (another key starts a new one)."""
    what = "%s backup of %s" % ("an incremental" if p["mode"] == "incremental" else "a full", p["domain"])
    if p["keep_checkpoints"] is not None and not p["wait"]:
        return _fail("keep_checkpoints needs wait=true: checkpoints cannot be deleted while the backup runs", "invalidParams")
    if p["since"] is not None and p["mode"] != "incremental":
        return _fail("since applies to mode=incremental", "invalidParams")
    if p["checkpoint_name"] is not None and not p["checkpoint"]:
        return _fail("checkpoint_name needs checkpoint=true", "invalidParams")
    if job is not None:
        why = backup_matches(p, job)
        if why:
            return _fail(why, "jobExists", job)
        if job["state"] == "completed":
            return _done(job, "backup %s of %s is already completed" % (job["jobId"], p["domain"]))
        if job["state"] in BACKUP_OVER:
            err = job.get("error") or {}
            return _fail("backup %s of %s %s earlier: %s (a new job_id starts a new backup)"
                         % (job["jobId"], p["domain"], job["state"], err.get("message", "no reason given")),
                         err.get("name") or "invalidState", job)
        msg = "backup %s of %s already runs (%%(state)s)" % (job["jobId"], p["domain"])
        if p["wait"] and not check_mode:
            return Decision("wait", job=job, until="done", msg=msg)
        return _done(job, msg % {"state": job["state"]})
    if running is not None:
        return _fail("backup %s of %s is still running: libvirt runs one backup of a domain at a time" % (running["jobId"], p["domain"]),
                     "backupRunning", running)
    since = None
    if p["mode"] == "incremental":
        if p["since"] is not None and p["since"] not in checkpoints:
            return _fail("domain %s has no checkpoint %s" % (p["domain"], p["since"]), "notFound")
        if not checkpoints:
            return _fail("domain %s has no checkpoint: an incremental backup needs a full one with a checkpoint first" % p["domain"], "notFound")
        since = p["since"] or checkpoints[-1]
    if check_mode:
        return _done(None, "would make %s to %s%s" % (what, backup_where(p), " since %s" % since if since else ""), changed=True)
    daemon = None if p["wait"] else "verify the backup when it ends and write its manifest"
    return Decision("start", needs_daemon=daemon,
                    msg="%s %s to %s (%%(state)s)" % ("made" if p["wait"] else "started", what, backup_where(p)))


def backup_retention(p, names, starts=False):
    """Retention (keep_checkpoints) after a completed backup: (deleted, kept) from the domain's
    checkpoint names oldest first. starts: check mode's answer before a backup that would start,
    whose new checkpoint (when it makes one) counts as the newest."""
    if starts and p["checkpoint"]:
        names = list(names) + [p["checkpoint_name"] or NEW_CHECKPOINT]
    deleted = checkpoints_to_delete(names, p["keep_checkpoints"])
    return deleted, [n for n in names if n not in deleted]
