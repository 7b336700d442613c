#!/usr/bin/env bash
# Sanity checks for the collection that run offline with Debian's packages.
# ansible-test's pep8, pylint, yamllint, import, ansible-doc, validate-modules and
# runtime-metadata tests create a venv and pip-install into it, which cannot work without
# PyPI; ansible-doc, pycodestyle, pylint, yamllint and plain imports stand in for them here.
# validate-modules itself runs: in a venv seeded here over Debian's python3-voluptuous.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
coll="$here/ansible_collections/blockcopy/agent"
export ANSIBLE_COLLECTIONS_PATH="$here" ANSIBLE_NOCOLOR=1
cd "$coll"

OFFLINE_TESTS=(action-plugin-docs compile empty-init future-import-boilerplate line-endings
  metaclass-boilerplate no-assert no-basestring no-dict-iteritems no-dict-iterkeys no-dict-itervalues
  no-get-exception no-illegal-filenames no-main-display no-smart-quotes no-unicode-literals
  replace-urlopen shebang symlinks use-argspec-type-path use-compat-six)
args=()
for t in "${OFFLINE_TESTS[@]}"; do args+=(--test "$t"); done
echo "== ansible-test sanity (${#OFFLINE_TESTS[@]} offline tests)"
ansible-test sanity --python "$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "${args[@]}" 2>&1 | grep -v 'locale\|Reviewing previous' || true
# ansible-test prints failures and exits non-zero; rerun quietly to get the status.
ansible-test sanity --python "$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" "${args[@]}" >/dev/null 2>&1

echo "== validate-modules (ansible-test, offline)"
bash "$here/validate-modules.sh"
bash "$here/validate-modules-selftest.sh"
echo "== ansible-doc"
for m in block_copy block_copy_info disk_snapshot block_commit block_pull block_move block_backup checkpoint_info; do
  out=$(ansible-doc -t module "blockcopy.agent.$m" 2>&1)
  if grep -q 'ERROR' <<<"$out"; then echo "$out"; exit 1; fi
  echo "blockcopy.agent.$m: renders ($(wc -l <<<"$out") lines)"
done
echo "== imports"
(cd "$here" && /usr/bin/python3 -c '
import glob, importlib
# Every plugin file, found rather than listed, so that a new one cannot be left out.
base = "ansible_collections/blockcopy/agent/"
names = sorted(f[len(base):-3].replace("/", ".") for f in glob.glob(base + "plugins/**/*.py", recursive=True)
               if not f.endswith("__init__.py"))
for m in names:
    importlib.import_module("ansible_collections.blockcopy.agent." + m)
print("all %d plugin files import" % len(names))')
echo "== pycodestyle"
# The settings of ansible-test's own pep8 test (imports follow DOCUMENTATION in modules).
pycodestyle --max-line-length=160 --ignore=E402,W503,W504,E741 plugins tests
echo "== pylint (errors only)"
command -v pylint >/dev/null || { echo "pylint is not installed (apt-get install pylint)" >&2; exit 1; }
(cd "$here" && PYTHONPATH="$here" pylint --errors-only --disable=import-error $(find ansible_collections/blockcopy/agent/plugins -name "*.py"))
echo "== yamllint"
yamllint -d '{extends: default, rules: {line-length: {max: 160}, document-start: disable, truthy: {allowed-values: ["true", "false", "yes", "no"]}}}' .
echo "== example playbooks (syntax)"
for f in docs/*.yml; do ansible-playbook --syntax-check -i localhost, "$f" >/dev/null 2>&1 || { ansible-playbook --syntax-check -i localhost, "$f"; exit 1; }; echo "$f: ok"; done
echo "== ansible-lint (production profile), then module options against the modules' argument specs"
# ansible-compat 2.x (Debian 12) points its collection finder at the *parent* of
# ANSIBLE_COLLECTIONS_PATH, so this one names .../ansible_collections to make the modules load.
# The args rule belongs to no profile in ansible-lint 6.13: a second run with -t args.
if command -v ansible-lint >/dev/null; then
  (export ANSIBLE_COLLECTIONS_PATH="$here/ansible_collections"
   ansible-lint --offline --nocolor --profile production -q
   ansible-lint --offline --nocolor -t args -q)
else
  echo "ansible-lint is not installed (apt-get install ansible-lint)" >&2; exit 1
fi
echo "== changelogs (antsibull-changelog's format; the tool itself is on PyPI only)"
/usr/bin/python3 - <<'PY'
import os, yaml
cfg = yaml.safe_load(open("changelogs/config.yaml"))
sections = {name for name, _ in cfg["sections"]} | {cfg["prelude_section_name"], cfg["trivial_section_name"]}
log = yaml.safe_load(open("changelogs/changelog.yaml"))
assert set(log) >= {"ancestor", "releases"}, "changelog.yaml needs ancestor and releases"
for version, rel in log["releases"].items():
    for key in rel.get("changes", {}):
        assert key in sections, "%s: unknown section %s" % (version, key)
    for m in rel.get("modules", []):
        assert set(m) == {"name", "description", "namespace"}, "%s: module entry %s" % (version, m)
for f in sorted(os.listdir("changelogs/fragments")):
    frag = yaml.safe_load(open("changelogs/fragments/" + f))
    for key, entries in frag.items():
        assert key in sections, "%s: unknown section %s" % (f, key)
        assert key == cfg["prelude_section_name"] or all(isinstance(e, str) for e in entries), "%s: %s must be a list of strings" % (f, key)
print("changelogs: ok (%d releases, %d fragments)" % (len(log["releases"]), len(os.listdir("changelogs/fragments"))))
PY
echo "== integration target aliases (ansible-test's integration-aliases rules; that test runs for ansible-core only)"
/usr/bin/python3 - <<'PY'
import os, sys
root = "tests/integration/targets"
modules = {f[:-3] for f in os.listdir("plugins/modules") if f.endswith(".py") and f != "__init__.py"}
simple = {"destructive", "unsupported", "disabled", "unstable", "hidden"}
prefixes = ("context/", "needs/", "skip/", "setup/", "cloud/", "shippable/", "gather_facts/")
bad = []
for target in sorted(os.listdir(root)):
    path = os.path.join(root, target, "aliases")
    if not os.path.isfile(path):
        bad.append("%s: no aliases file" % target)
        continue
    aliases = [l.split("#")[0].strip() for l in open(path)]
    aliases = [a for a in aliases if a]
    unknown = [a for a in aliases if a not in simple and a not in modules and not a.startswith(prefixes)]
    if unknown:
        bad.append("%s: unknown aliases %s" % (target, ", ".join(unknown)))
    contexts = [a for a in aliases if a.startswith("context/")]
    if contexts not in (["context/target"], ["context/controller"]):
        bad.append("%s: needs exactly one of context/target, context/controller (its name is no module's)" % target)
    # Every target drives a real libvirtd as root: not in ansible-test's default runs.
    for need in ("destructive", "needs/root", "unsupported"):
        if need not in aliases:
            bad.append("%s: lacks %s (it needs a real libvirtd as root)" % (target, need))
if bad:
    sys.exit("integration target aliases:\n  " + "\n  ".join(bad))
print("aliases: ok (%d targets)" % len(os.listdir(root)))
PY
echo "== collection tarball"
tar_dir=$(mktemp -d)
ansible-galaxy collection build --output-path "$tar_dir" . >/dev/null
listing=$(tar -tzf "$tar_dir"/blockcopy-agent-*.tar.gz)
grep -qx LICENSE <<<"$listing" || { echo "LICENSE is not in the collection tarball" >&2; exit 1; }
grep -qx 'changelogs/changelog.yaml' <<<"$listing" || { echo "changelogs/changelog.yaml is not in the tarball" >&2; exit 1; }
echo "$(basename "$tar_dir"/blockcopy-agent-*.tar.gz): LICENSE and changelogs/changelog.yaml included"
rm -rf "$tar_dir"
echo "== unit tests"
(cd "$here" && /usr/bin/python3 -m unittest discover -s ansible_collections/blockcopy/agent/tests/unit -t . -p 'test_*.py')
echo "sanity: ok"
