"""What many tests do, in one place: copy the project into a temporary git repository, run a
command (dvc, git, textclf) in it, and read `dvc exp show --json` and `dvc queue status`.

Test modules import from here (or the re-exports in conftest.py), never from each other.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# What a copy of the project leaves behind: environments, caches, per-user DVC settings,
# and the pipeline's outputs (a copy rebuilds them, as a fresh clone would).
NOT_COPIED = (".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "cache", "tmp",
              "config.local", "prepared", "resampled", "classifier", "dvc_plots", "reports",
              "logs", ".*.tmp-*")

# DVC experiments make git commits: give them an identity on machines without one.
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "textclf tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
                "GIT_COMMITTER_NAME": "textclf tests",
                "GIT_COMMITTER_EMAIL": "tests@example.invalid"}


def command_env(**extra: str) -> dict[str, str]:
    return {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1", **extra}


def run(cmd: list[str], cwd: Path, check: bool = True, env: dict | None = None,
        timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a command in `cwd`; fail the test with its output if it fails (and `check`)."""
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                            env=env or command_env(), timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def set_params(project: Path, **sections) -> None:
    """Update sections of a project's params.yaml, e.g. train={"epochs": 1}."""
    import yaml

    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(dest: Path, message: str = "copy", **params) -> Path:
    """The repository's files (no outputs, no caches) as a new git repository at `dest`,
    with `params` (sections of params.yaml, as for set_params) committed."""
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(*NOT_COPIED))
    if params:
        set_params(dest, **params)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", message], dest)
    return dest


def clone(origin: Path, dest: Path) -> Path:
    """A fresh clone: committed files only, no DVC cache, no outputs."""
    run(["git", "clone", "-q", str(origin), str(dest)], origin.parent)
    return dest


def git_show(project: Path, rev: str, path: str) -> bytes:
    return subprocess.run(["git", "show", f"{rev}:{path}"], cwd=project, check=True,
                          capture_output=True).stdout


def experiments(project: Path, *flags: str) -> dict[str, dict]:
    """`dvc exp show --json` as {name: rev, baseline, state, params.yaml, metrics by file, outs};
    baselines are keyed by their branch name or short rev."""
    rows = {}
    for baseline in json.loads(run(["dvc", "exp", "show", "--json", *flags], project).stdout):
        if baseline["rev"] == "workspace":
            continue
        rows.setdefault(baseline.get("name") or baseline["rev"][:7],
                        _row(baseline, baseline["rev"], "success"))
        for group in baseline.get("experiments") or []:
            state = (group.get("executor") or {}).get("state") or "success"
            for exp in group["revs"]:
                rows[exp["name"]] = _row(exp, baseline["rev"],
                                         "failed" if exp.get("error") else state)
    return rows


def _row(entry: dict, baseline: str, state: str) -> dict:
    data = entry.get("data") or {}
    return {"rev": entry["rev"], "baseline": baseline, "state": state,
            "params": (data.get("params") or {}).get("params.yaml", {}).get("data"),
            "metrics": {p: m.get("data") for p, m in (data.get("metrics") or {}).items()},
            "outs": {p: o.get("hash") for p, o in (data.get("outs") or {}).items()}}


def queue_status(project: Path) -> dict[str, str]:
    """`dvc queue status` as {experiment name: Queued | Running | Success | Failed}."""
    out = run(["dvc", "queue", "status"], project).stdout
    return {m[1]: m[2] for m in re.finditer(r"^[0-9a-f]{7}\s+(\S+)\s+.*?(\w+)\s*$", out, re.M)}


def wait_for_queue(project: Path, timeout_s: float = 600) -> dict[str, str]:
    """Poll until no run is queued or running; then the final status."""
    deadline = time.monotonic() + timeout_s
    while True:
        status = queue_status(project)
        if not {"Queued", "Running"} & set(status.values()):
            return status
        if time.monotonic() > deadline:
            run(["dvc", "queue", "kill", *status], project, check=False)
            raise AssertionError(f"queue not done after {timeout_s}s: {status}")
        time.sleep(2)


# Where each block that the tests run lives: the README keeps the set-up commands, the tour
# and the own-data section; the longer sections live on their docs/ pages.
BLOCK_PAGES = {"main-command": "README.md", "test-command": "README.md", "tour": "README.md",
               "own-data": "README.md", "sweep": "docs/experiments.md",
               "loop-watch": "docs/loop.md", "loop-labels": "docs/loop.md",
               "loop-retrain": "docs/loop.md", "loop-live": "docs/loop.md"}


def readme_blocks(marker: str, readme: Path | None = None) -> list[str]:
    """The shell commands of the ```bash block after `<!-- marker -->` in `readme` (by
    default the page BLOCK_PAGES names), one per command: comments dropped, backslash
    continuations joined."""
    readme = readme or REPO / BLOCK_PAGES[marker]
    text = readme.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {re.escape(marker)} -->\s*```bash\n(.*?)```", text, re.S)
    if not found:
        raise AssertionError(f"{readme} has no ```bash block after <!-- {marker} -->")
    joined = found[1].replace("\\\n", " ")
    commands = []
    for line in joined.splitlines():
        command = _strip_comment(line).strip()
        if command:
            commands.append(re.sub(r"\s+", " ", command))
    return commands


def _strip_comment(line: str) -> str:
    """`cmd  # note` -> `cmd`, leaving a # inside quotes alone."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


# --- the README, run as a newcomer runs it -------------------------------------------------

@dataclass(frozen=True)
class Step:
    section: str                 # the block's marker: main-command, tour, own-data, sweep
    command: str
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Walk:
    """What happened when README sections ran one after another in one project."""
    project: Path
    steps: list[Step]
    skipped: list[str]                       # commands with a <placeholder>: examples only

    def step(self, section: str, starts: str) -> Step:
        [found] = [s for s in self.steps if s.section == section and s.command.startswith(starts)]
        return found


@dataclass(frozen=True)
class TourWalk(Walk):
    """The main command, then the tour."""
    before_tour: dict[str, str]              # workspace file -> sha256 after the main command
    after_tour: dict[str, str]
    after_tour_exps: dict[str, dict]         # `dvc exp show --json` rows by name
    narrow_exp_show: str                     # `dvc exp show --only-changed` in 120 columns
    would_add: list[str]                     # what `git add -A` would add after the tour


@dataclass(frozen=True)
class OwnDataWalk(Walk):
    """The main command, then the own-data section, in a project of its own. (It starts
    where the tour leaves a user: TourWalk checks that the tour leaves the workspace as
    it was.)"""
    before: dict[str, str]                   # workspace file -> sha256 after the main command
    after: dict[str, str]                    # ... and after the own-data section
    exps: dict[str, dict]                    # `dvc exp show --json` rows by name
    report: dict                             # `textclf report --json` after own-data
    would_add: list[str]                     # what `git add -A` would add after all that


@dataclass(frozen=True)
class SweepWalk(Walk):
    """The main command, then the sweep section (docs/experiments.md). (It starts where
    the tour and own-data sections leave a user: TourWalk and OwnDataWalk check that they
    leave the workspace as it was.)"""
    sweep_commit_params: str                 # params.yaml as the sweep's `git commit` left it
    sweep_commit_files: list[str]            # files tracked after that commit
    sweep_status: dict[str, str]             # `dvc queue status` once the queue was done
    sweep_exps: dict[str, dict]


def workspace_state(project: Path) -> dict[str, str]:
    """sha256 of what a run changes in the workspace: params, dvc.lock, metrics, model, splits."""
    paths = [project / "params.yaml", project / "dvc.lock"]
    for folder in ("metrics", "models", "data/prepared", "data/resampled"):
        paths += sorted(p for p in (project / folder).rglob("*") if p.is_file())
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in paths if p.is_file()}


def own_reviews(path: Path, per_class: int = 24) -> None:
    """A small CSV in the README's own-data shape: `review` text, integer `stars` 1-3."""
    cue = {1: "awful dreadful", 2: "okay average", 3: "superb brilliant"}
    rows = [f'"review {i}: the {thing} was {cue[stars]}",{stars}'
            for stars in cue for i, thing in
            zip(range(per_class), ["food", "room", "film", "phone", "book", "app"] * per_class)]
    path.write_text("review,stars\n" + "\n".join(rows) + "\n")


class _Reader:
    """Runs the blocks of the README (and docs pages, BLOCK_PAGES) in a project as a newcomer
    would, keeping every step."""

    def __init__(self, tmp: Path, model_dir: Path, epochs: int) -> None:
        """The project as published (its own run committed), with only the model and the
        epoch count changed, and the file the own-data section copies in a home folder."""
        self.tmp = tmp
        self.project = copy_project(tmp / "textclf", "tiny model",
                                    model={"name": str(model_dir)}, train={"epochs": epochs})
        home = tmp / "home"
        home.mkdir()
        own_reviews(home / "my_reviews.csv")
        run(["dvc", "repro"], self.project, env=_walk_env(tmp))
        run(["git", "add", "-A"], self.project)
        run(["git", "commit", "-qm", "the published run"], self.project)
        self.steps: list[Step] = []
        self.skipped: list[str] = []

    def section(self, marker: str) -> None:
        commands = readme_blocks(marker)
        if marker == "main-command":      # set-up (venv, pip) is done: run what follows it
            parts = commands[0].split(" && ")
            start = max(i for i, p in enumerate(parts) if p.startswith("pip install")) + 1
            commands = [" && ".join(parts[start:])]
        for command in commands:
            if re.search(r"<[a-z-]+>", command):
                self.skipped.append(command)
                continue
            result = run(["bash", "-c", command], self.project, check=False,
                         env=_walk_env(self.tmp))
            self.steps.append(Step(marker, command, result.returncode, result.stdout,
                                   result.stderr))
            if marker == "sweep" and "dvc queue start" in command:
                wait_for_queue(self.project)


def walk_tour(tmp: Path, model_dir: Path, epochs: int = 1) -> TourWalk:
    """The README's main command, then its tour."""
    reader = _Reader(tmp, model_dir, epochs)
    project = reader.project
    reader.section("main-command")
    before = workspace_state(project)
    reader.section("tour")
    after = workspace_state(project)
    tour_exps = experiments(project)
    narrow = run(["dvc", "exp", "show", "--only-changed", "--no-pager"], project,
                 env=_walk_env(tmp, COLUMNS="120")).stdout
    return TourWalk(project, reader.steps, reader.skipped, before, after, tour_exps, narrow,
                    would_add(project))


def walk_own_data(tmp: Path, model_dir: Path, epochs: int = 1) -> OwnDataWalk:
    """The README's main command, then its own-data section, in a project of its own (so
    it runs beside the tour on another worker)."""
    reader = _Reader(tmp, model_dir, epochs)
    project = reader.project
    reader.section("main-command")
    before = workspace_state(project)
    reader.section("own-data")
    return OwnDataWalk(
        project, reader.steps, reader.skipped, before, workspace_state(project),
        experiments(project), json.loads(run(["textclf", "report", "--json"], project).stdout),
        would_add(project))


def walk_sweep(tmp: Path, model_dir: Path, epochs: int = 1) -> SweepWalk:
    """The README's main command, then the sweep section of docs/experiments.md, in a
    project of its own (so it runs beside the tour on another worker)."""
    reader = _Reader(tmp, model_dir, epochs)
    project = reader.project
    reader.section("main-command")
    reader.section("sweep")
    return SweepWalk(
        project, reader.steps, reader.skipped,
        git_show(project, "HEAD", "params.yaml").decode(),
        run(["git", "ls-files"], project).stdout.splitlines(),
        queue_status(project), experiments(project))


@dataclass(frozen=True)
class LoopWalk(Walk):
    """The main command, then docs/loop.md: serve, send texts, drift, select, a person's
    labels, the live-accuracy report, a new data version with a new class, a warm-started
    candidate, promotion, the new version served and scored live."""
    truth: dict[str, str]                    # text -> its true label (the stand-in person's)
    weeks: dict[str, dict]                   # "week-49" / "week-50" -> the request body sent
    chosen: list[dict]                       # reports/to-label.csv as `select` wrote it
    new_class: list[dict]                    # reports/new-class.csv
    week_50_labels: list[dict]               # reports/week-50-labels.csv
    server_pid: int


NEW_CLASS = "mixed"


def week_texts(week: int) -> dict[str, str]:
    """A week's texts, with the true labels a person would give: the demo's five classes
    and mixed reviews (a class the model lacks), in words the training data does not use."""
    cue = {"very negative": "a total disaster, never again", "negative": "rather poor",
           "neutral": "fine, nothing special", "positive": "pretty good",
           "very positive": "simply wonderful, a delight",
           NEW_CLASS: "great in parts but awful in others"}
    things = {49: ["blender", "hotel stay", "concert", "laptop", "novel", "taxi ride"],
              50: ["kettle", "guest house", "opera", "tablet", "comic", "bus ride"]}[week]
    return {f"The {thing} was {cue[label]}.": label for label in cue for thing in things}


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def walk_loop(tmp: Path, model_dir: Path, epochs: int = 1) -> LoopWalk:
    """The README's main command, then docs/loop.md's blocks, with a stand-in person doing
    the labelling between them; the server is stopped at the end even when a step failed."""
    reader = _Reader(tmp, model_dir, epochs)
    project = reader.project
    truth = week_texts(49) | week_texts(50)
    weeks = {}
    for week in (49, 50):      # week 49: the old classes only; week 50: mixed reviews too
        texts = [t for t, label in week_texts(week).items() if week == 50 or label != NEW_CLASS]
        weeks[f"week-{week}"] = {"id": f"week-{week}", "texts": texts}
        (tmp / "home" / f"week-{week}.json").write_text(json.dumps(weeks[f"week-{week}"]))
    reader.section("main-command")
    pid_file = project / "logs" / "serve.pid"
    try:
        reader.section("loop-watch")
        # The person labels what `select` chose, and gathers examples of the new class.
        with open(project / "reports/to-label.csv", newline="") as chosen_file:
            chosen = list(csv.DictReader(chosen_file))
        fields = list(chosen[0]) if chosen else ["request_id", "index", "text", "label"]
        write_csv(project / "reports/to-label.csv",
                  [row | {"label": truth[row["text"]]} for row in chosen], fields)
        new_class = [{"text": text, "label": label} for text, label in week_texts(49).items()
                     if label == NEW_CLASS]
        write_csv(project / "reports/new-class.csv", new_class, ["text", "label"])
        reader.section("loop-labels")
        reader.section("loop-retrain")
        week_50 = weeks["week-50"]["texts"]
        labels_50 = [{"request_id": "week-50", "index": i, "label": truth[text]}
                     for i, text in enumerate(week_50) if i % 3 != 2]
        write_csv(project / "reports/week-50-labels.csv", labels_50,
                  ["request_id", "index", "label"])
        reader.section("loop-live")
        pid = int(pid_file.read_text())
    finally:
        _stop_server(pid_file)
    return LoopWalk(project, reader.steps, reader.skipped, truth, weeks, chosen, new_class,
                    labels_50, pid)


def _stop_server(pid_file: Path) -> None:
    """SIGKILL a server the walk left running (a failed step), so no test leaks it."""
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def would_add(project: Path) -> list[str]:
    """The paths `git add -A` would add now."""
    return [line.split("'", 2)[1] for line in
            run(["git", "add", "-A", "--dry-run"], project).stdout.splitlines()]


def _walk_env(tmp: Path, **extra: str) -> dict[str, str]:
    # One thread per process: the sweep runs two workers on a 2-core machine
    # (docs/experiments.md).
    return command_env(HOME=str(tmp / "home"), OMP_NUM_THREADS="1", **extra)
