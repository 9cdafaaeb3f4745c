#!/usr/bin/env python3
"""Full-history plan of a generated packaging repository (issue 10's figures).

A repository of N specs (default 3,000) in 26 letter directories (about N/26 specs each,
sharing their directory's tarballs, patches and a README), then a history of commits a
packaging team makes: spec edits, a spec deleted, a tarball named by one spec updated, an
unused tarball deleted, a README edited, a spec added. Every consecutive commit pair is
planned with `packetary plan --json`, once with an empty spec cache (cold, every spec asked
in Docker) and once again (warm). Reported per binary: total wall time, the largest peak RSS
of one plan, and how many builds the plans asked for in all.

Usage: deploy/bench-plan-history.py [--specs N] [--commits C] BINARY [BINARY...]
(e.g. the binary of the commit before a change and the one after, measured in one run).
Needs git, Docker and the rpmbuild image.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def spec_text(name, rev, deps):
    br = "".join(f"BuildRequires: {d}-devel\n" for d in deps)
    return (
        f"Name: {name}\nVersion: 1.{rev}\nRelease: 1%{{?dist}}\nSummary: {name}\nLicense: MIT\n"
        f"Source0: https://example.org/{name}-1.{rev}.tar.gz\nPatch0: {name}-fix.patch\n{br}"
        "%if 0%{?fedora} >= 40\nBuildRequires: newer-tool\n%endif\n"
        f"%description\n{name}\n\n%package devel\nSummary: dev\n%description devel\ndev\n\n"
        f"%files\n%files devel\n"
    )


def generate(origin, n, commits):
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", origin], check=True)
    names = [f"{LETTERS[i % 26]}/p{i:05d}" for i in range(n)]
    out = []
    mark_time = [1_700_000_000]

    def commit(msg, edits):
        mark_time[0] += 60
        out.append(f"commit refs/heads/main\ncommitter Bench <b@x> {mark_time[0]} +0000\n")
        out.append(f"data {len(msg)}\n{msg}\n")
        for e in edits:
            if e[0] == "M":
                data = e[2].encode()
                out.append(f"M 100644 inline {e[1]}\ndata {len(data)}\n{e[2]}\n")
            else:
                out.append(f"D {e[1]}\n")

    commit("start", [("M", "README", "packages\n")])
    first = []
    for i, p in enumerate(names):
        base = p.split("/")[1]
        deps = [names[i - 1].split("/")[1]] if i % 10 == 5 else []
        first.append(("M", f"{p}.spec", spec_text(base, 0, deps)))
        first.append(("M", f"{p.split('/')[0]}/{base}-1.0.tar.gz", f"{base}\n"))
        first.append(("M", f"{p.split('/')[0]}/{base}-fix.patch", f"{base}\n"))
    for d in LETTERS:
        first.append(("M", f"{d}/README", "notes\n"))
        first.append(("M", f"{d}/unused-{d}.tar.gz", "old\n"))
    commit("all packages", first)
    k = 0
    for c in range(commits - 2):
        kind = c % 6
        d = LETTERS[c % 26]
        i = (c * 37) % n
        p = names[i]
        base = p.split("/")[1]
        if kind == 0:
            edits = [("M", f"{names[(i + j * 101) % n]}.spec",
                      spec_text(names[(i + j * 101) % n].split("/")[1], c + 1, [])) for j in range(5)]
        elif kind == 1:
            edits = [("D", f"{p}.spec")]
        elif kind == 2:
            edits = [("M", f"{p.split('/')[0]}/{base}-fix.patch", f"fix {c}\n")]
        elif kind == 3:
            edits = [("D", f"{d}/unused-{d}.tar.gz")]
        elif kind == 4:
            edits = [("M", f"{d}/README", f"notes {c}\n")]
        else:
            k += 1
            edits = [("M", f"{d}/new{k:03d}.spec", spec_text(f"new{k:03d}", 0, []))]
        commit(f"change {c}", edits)
    subprocess.run(["git", "fast-import", "--quiet"], cwd=origin, input="".join(out).encode(), check=True)
    revs = subprocess.run(["git", "rev-list", "--reverse", "main"], cwd=origin, check=True,
                          capture_output=True, text=True).stdout.split()
    return revs


def run_history(binary, url, revs, cache):
    total = 0.0
    peak = 0
    builds = 0
    deleted = 0
    errors = 0
    for a, b in zip(revs, revs[1:]):
        t = time.monotonic()
        p = subprocess.Popen([binary, "plan", "--json", "--cache-dir", cache, url, f"{a}..{b}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = p.communicate()
        total += time.monotonic() - t
        peak = max(peak, _rss.get(p.pid, 0))
        try:
            plan = json.loads(out)
        except ValueError:
            sys.exit(f"{binary}: no plan for {a}..{b}: {err.decode()[-400:]}")
        builds += sum(len(pk["targets"]) for pk in plan["packages"] if not pk.get("error"))
        errors += sum(1 for pk in plan["packages"] if pk.get("error"))
        deleted += len(plan["deleted"])
    return total, peak, builds, deleted, errors


# Peak RSS (KiB) of each finished child, by pid.
_rss = {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--specs", type=int, default=3000)
    ap.add_argument("--commits", type=int, default=42)
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-plan-history-")
    origin = os.path.join(work, "origin.git")
    revs = generate(origin, args.specs, args.commits)
    url = f"file://{origin}"
    print(f"repository: {args.specs} specs in 26 directories, {len(revs)} commits ({work})")
    for i, binary in enumerate(args.binaries):
        cache = os.path.join(work, f"cache-{i}")
        for phase in ("cold", "warm"):
            total, peak, builds, deleted, errors = run_history(binary, url, revs, cache)
            print(f"{binary} {phase}: {total:.1f} s for {len(revs) - 1} plans, "
                  f"peak RSS {peak / 1024:.1f} MiB, {builds} build(s) planned, "
                  f"{deleted} deletion(s), {errors} package error(s)", flush=True)


# Popen.communicate reaps the child itself; wait4 through a wrapper to keep its rusage.
def _try_wait(self, wait_flags):
    try:
        pid, sts, usage = os.wait4(self.pid, wait_flags)
    except ChildProcessError:
        return (self.pid, 0)
    if pid == self.pid:
        _rss[pid] = usage.ru_maxrss
    return (pid, sts)


subprocess.Popen._try_wait = _try_wait

if __name__ == "__main__":
    main()
