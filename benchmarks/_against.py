"""``--against REV``: one benchmark run measuring two trees of poolkeeper side by side.

Issue #16 restructures the core with a 3 % budget: that difference is smaller than the drift
of this shared 2-vCPU machine between two separate runs, so "before" and "after" must be
measured in one run. Each tree is imported in a subprocess of its own (PYTHONPATH=<tree>/src,
the benchmark scripts themselves come from the current tree, so both sides run the same
harness), both subprocesses set up their pools once and then run rounds on command, in the
order new old, old new, new old, ... (ABBA: a linear drift hits both sides alike), and a ratio
new/old is taken inside each pair of adjacent rounds. Peers (psycopg_pool, SQLAlchemy, DBUtils)
run inside every round of both subprocesses, so a ratio normalised by a peer cancels what
differs between the two processes themselves (heap layout, which CPU cache lines collide).

The old tree is exported with ``git archive`` into ``.bench-trees/<sha>`` (git-ignored) and
reused while it exists. An export rather than ``git worktree add``: a worktree registers
itself in the shared ``.git`` of every checkout, an export touches nothing outside this tree.
"""

from __future__ import annotations

import gc
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _common import code_fingerprint, median, print_table

__all__ = ["REPO", "Child", "RoundFn", "report", "run_pairs", "serve", "tree_of"]

REPO = Path(__file__).resolve().parent.parent
TREES = REPO / ".bench-trees"
#: a protocol line from a child starts with this; any other line is the child's own output
TAG = "@@bench "
#: one round's figures: metric -> contender -> value (seconds, or queries/s)
Figures = dict[str, dict[str, float]]
RoundFn = Callable[[int], Figures]


def tree_of(rev: str) -> Path:
    """The directory holding ``rev``'s ``src/`` (exported once, then reused)."""
    found = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO,
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise SystemExit(f"--against {rev!r}: git cannot resolve it to a commit "
                         f"({found.stderr.strip()}); give a branch, a tag or a sha")
    sha = found.stdout.strip()
    dest = TREES / sha
    if (dest / "src" / "poolkeeper" / "__init__.py").is_file():
        return dest
    archive = subprocess.run(["git", "archive", "--format=tar", sha, "src"], cwd=REPO,
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"--against {rev!r}: git archive {sha[:12]} src failed: "
                         f"{archive.stderr.decode(errors='replace').strip()}")
    # Extract beside the target and rename: an interrupted export is never mistaken for a tree.
    partial = TREES / f".{sha}.partial-{os.getpid()}"
    partial.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(partial, filter="data")
    partial.rename(dest)
    return dest


class Child:
    """One tree's benchmark subprocess, driven line by line over its stdin and stdout."""

    def __init__(self, label: str, tree: Path, script: str, argv: Sequence[str]) -> None:
        self.label = label
        env = dict(os.environ)
        # The tree's src first; the benchmarks directory for _common (the current tree's).
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(Path(script).parent)])
        # One hash seed for both sides: string hashes decide dict and set layouts, and with
        # them some of a process's speed; left random, the two sides differ by more than code.
        env.setdefault("PYTHONHASHSEED", "0")
        self.proc = subprocess.Popen([sys.executable, script, *argv], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.hello = self._read()
        origin = str(self.hello.get("poolkeeper", ""))
        if not origin.startswith(str(tree / "src")):
            self.close()
            raise SystemExit(f"{label} tree: the child imported poolkeeper from {origin}, not "
                             f"from {tree / 'src'}; is another copy installed non-editable?")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(TAG):
                message: dict[str, Any] = json.loads(line[len(TAG):])
                if "error" in message:
                    raise RuntimeError(f"{self.label} tree: {message['error']}")
                return message
            print(f"  [{self.label}] {line.rstrip()}")
        raise RuntimeError(f"{self.label} tree: the benchmark subprocess exited "
                           f"(status {self.proc.wait()}) before answering; see its output above")

    def round(self, r: int) -> Figures:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"round {r}\n")
        self.proc.stdin.flush()
        figures: Figures = self._read()["figures"]
        return figures

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()  # EOF: the child tears its pools down and exits
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def serve(setup: Callable[[ExitStack], RoundFn]) -> int:
    """The child's side: set up once, then run one round per ``round N`` line until EOF."""
    import poolkeeper

    def say(message: dict[str, Any]) -> None:
        sys.stdout.write(TAG + json.dumps(message) + "\n")
        sys.stdout.flush()

    with ExitStack() as stack:
        try:
            run_round = setup(stack)
        except Exception as exc:  # noqa: BLE001 - the parent shows it and stops
            say({"error": f"setup failed: {type(exc).__name__}: {exc}"})
            return 1
        say({"poolkeeper": poolkeeper.__file__, "code": code_fingerprint()})
        for line in sys.stdin:
            r = int(line.split()[1])
            # No collection inside a round: a collection lands in one side's round at random.
            gc.collect()
            gc.disable()
            try:
                figures = run_round(r)
            except Exception as exc:  # noqa: BLE001 - the parent shows it and stops
                say({"error": f"round {r} failed: {type(exc).__name__}: {exc}"})
                return 1
            finally:
                gc.enable()
            say({"figures": figures})
    return 0


def run_pairs(rev: str, script: str, argv: Sequence[str], rounds: int, procs: int = 3
              ) -> tuple[list[Figures], list[Figures], str]:
    """``rounds`` rounds on each tree, ABBA order, spread over ``procs`` pairs of processes
    started one pair after the other; the new and the old tree's figures, in pairs.

    Several processes per tree because a process carries a bias of its own for its whole life
    (where its heap and its server process landed): with the same tree on both sides and one
    pair of processes, the raw psycopg connection of one side ran 4 % faster (median over 15
    rounds) than the other side's.
    """
    old_tree = tree_of(rev)
    news: list[Figures] = []
    olds: list[Figures] = []
    header = ""
    procs = max(1, min(procs, rounds))
    for g in range(procs):
        # start order alternates too: the first process started may get the quieter CPU
        labels = ("new", "old") if g % 2 == 0 else ("old", "new")
        started: dict[str, Child] = {}
        try:
            for label in labels:
                started[label] = Child(label, REPO if label == "new" else old_tree, script,
                                       argv)
            new, old = started["new"], started["old"]
            if not header:
                header = (f"new: {new.hello['code']}\nold ({rev} = {old_tree.name[:12]}): "
                          f"{old.hello['code']}")
                print(header)
            share = rounds // procs + (1 if g < rounds % procs else 0)
            for r in range(share):
                if r % 2 == 0:
                    news.append(new.round(r))
                    olds.append(old.round(r))
                else:
                    olds.append(old.round(r))
                    news.append(new.round(r))
        finally:
            for child in started.values():
                child.close()
    return news, olds, header


def _spread(values: Sequence[float], signed: bool = False) -> str:
    """median [interquartile range] (min-max): the IQR is the spread a typical round shows,
    min-max what one burst of load from another process did to a round. ``signed``: for
    differences, every figure with its sign and the ranges written ``a..b``."""
    data = sorted(values)
    q1, q3 = data[len(data) // 4], data[(3 * len(data)) // 4]
    if signed:
        return f"{median(data):+.3f} [{q1:+.3f}..{q3:+.3f}] ({data[0]:+.3f}..{data[-1]:+.3f})"
    return f"{median(data):.3f} [{q1:.3f}-{q3:.3f}] ({data[0]:.3f}-{data[-1]:.3f})"


def report(title: str, news: list[Figures], olds: list[Figures], metric: str, *,
           unit: str, scale: float, ref: str | None, notes: Sequence[str] = (),
           difference: bool = False) -> dict[str, Any]:
    """Print one table for ``metric``: each contender in both trees and new/old per round.

    With ``ref`` (a peer), also new/old of each contender's ratio to that peer in the same
    round: what the peer's own drift between the two subprocesses cannot reach. With
    ``difference``, new - old per round instead of new/old, for a figure that is already a
    ratio and may be 0 (fairness: a starved thread); ``ref`` is then not used.
    """
    names = list(news[0][metric])
    rows = []
    out: dict[str, Any] = {}
    compared = "new - old" if difference else "new/old"
    for name in names:
        n = [f[metric][name] for f in news]
        o = [f[metric][name] for f in olds]
        rel = [a - b if difference else a / b for a, b in zip(n, o, strict=True)]
        row = [name, f"{median(n) * scale:.2f}", f"{median(o) * scale:.2f}",
               _spread(rel, signed=difference)]
        entry: dict[str, Any] = {"new": n, "old": o,
                                 "new_minus_old" if difference else "new_over_old": rel}
        if ref is not None and not difference:
            nr = [f[metric][name] / f[metric][ref] for f in news]
            orr = [f[metric][name] / f[metric][ref] for f in olds]
            norm = [a / b for a, b in zip(nr, orr, strict=True)]
            row += [f"{median(nr):.3f}", f"{median(orr):.3f}", _spread(norm)]
            entry["new_over_old_normalised"] = norm
        rows.append(row)
        out[name] = entry
    headers = ["contender", f"new {unit}", f"old {unit}", f"{compared} median [IQR] (min-max)"]
    if ref is not None and not difference:
        headers += ["new x ref", "old x ref", "new/old of x ref"]
    print_table(title, headers, rows,
                [f"{len(news)} rounds per tree, ABBA order; {compared}: per pair of adjacent "
                 f"rounds, median [IQR] (min-max)",
                 *([f"ref = {ref}, in the same round of the same tree"]
                   if ref and not difference else []),
                 *notes])
    return out
