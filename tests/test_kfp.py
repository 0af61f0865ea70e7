"""Sweeps of DVC experiments on Kubeflow Pipelines: the grid, the plan, the compiled YAML,
the leaderboard, and (slow) a whole sweep through `kfp.local` pushing to a bare git origin.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import REPO, set_params
from credential_scan import credential_findings
from remote_project import BUCKET, S3, base_env, call, isolate
from textclf.errors import UserError
from textclf.sweeps.grid import check_sweep_name, grid_points
from textclf.sweeps.point import error_text
from textclf.sweeps.results import PointResult, leaderboard_markdown
from textclf.sweeps.stages import confusion_plot, metrics_files, pull_targets, rerun_stages

pytest.importorskip("kfp", reason="the kfp extra is not installed")

RATIOS = ["[1,1,1,1,1]", "[2,1,1,1,1]"]
GRID = ["-S", "train.batch_size=8,16,-1", "-S", f"data.class_ratio={','.join(RATIOS)}"]
BAD = "train.batch_size must be a positive integer, found -1"


# --- the grid: `dvc exp run -S` syntax -----------------------------------------------------

def test_each_set_sweeps_one_key_and_points_are_the_product():
    points = grid_points(["train.batch_size=16,32", f"data.class_ratio={','.join(RATIOS)}"])
    assert [p.number for p in points] == [1, 2, 3, 4]
    assert [p.overrides for p in points] == [
        ("train.batch_size=16", "data.class_ratio=[1,1,1,1,1]"),
        ("train.batch_size=16", "data.class_ratio=[2,1,1,1,1]"),
        ("train.batch_size=32", "data.class_ratio=[1,1,1,1,1]"),
        ("train.batch_size=32", "data.class_ratio=[2,1,1,1,1]")]
    assert points[1].name("grid") == "grid-2"
    assert points[0].as_item() == {"number": "1", "overrides": list(points[0].overrides)}


def test_quotes_lists_files_and_ranges_follow_hydra():
    [quoted, null] = grid_points(["data.labels=['a,b','c'],null"])
    assert quoted.overrides == ("data.labels=['a,b','c']",)
    assert null.overrides == ("data.labels=null",)
    assert [p.overrides for p in grid_points(["other.yaml:train.lr=0.1,0.2"])] == \
        [("other.yaml:train.lr=0.1",), ("other.yaml:train.lr=0.2",)]
    assert [p.overrides[0] for p in grid_points(["train.epochs=range(1,4)"])] == \
        ["train.epochs=1", "train.epochs=2", "train.epochs=3"]
    assert grid_points(["train.epochs=1"])[0].overrides == ("train.epochs=1",)
    assert [p.overrides for p in grid_points([])] == [()]     # no -S: the commit as it is


@pytest.mark.parametrize("sets, message", [
    (["train.lr=1", "train.lr=2"], "each key may be swept once"),
    (["train.batch_size=[1,2"], "syntax of `dvc exp run -S`"),
    (["train.lr=interval(0,1)"], "only lists of values"),
])
def test_bad_sweeps_say_which_flag(sets, message):
    with pytest.raises(UserError, match=re.escape(message)):
        grid_points(sets)


@pytest.mark.parametrize("sets, message", [
    (["=16"], "-S '=16': no key before '='"),
    (["train.lr="], "-S 'train.lr=': train.lr has an empty value"),
    (["train.lr=''"], "train.lr has an empty value"),
    (["data.text_column=text,''"], "data.text_column has an empty value"),
    (["train.epochs=range(5,1)"], "-S 'train.epochs=range(5,1)': sweeps no value"),
    (["train.seed=shuffle(range(0,3))"], "shuffle() would number the points differently"),
])
def test_empty_keys_values_and_sweeps_are_refused_naming_the_key(sets, message):
    with pytest.raises(UserError, match=re.escape(message)):
        grid_points(sets)


def test_a_delete_override_stays_a_delete():
    assert grid_points(["~train.ema_decay"])[0].overrides == ("~train.ema_decay",)


def test_a_grid_above_the_cap_is_refused_before_a_point_is_built():
    import time

    started = time.perf_counter()
    with pytest.raises(UserError, match=re.escape(
            "-S: the grid has 1,000,000 points (1,000 x 1,000 values), more than "
            "--max-points 1,000; sweep fewer values, or raise --max-points")):
        grid_points(["train.seed=range(0,1000)", "data.seed=range(0,1000)"])
    with pytest.raises(UserError, match=re.escape("more than 1,000 points (more than 1,000 "
                                                  "x 2 values)")):
        grid_points(["train.seed=range(0,1000000000)", "data.seed=1,2"])
    with pytest.raises(UserError, match="more than --max-points 10"):
        grid_points(["train.lr=range(0,1,0.01)"], max_points=10)
    with pytest.raises(UserError, match=re.escape("-S 'train.lr=range(0,1,0)': ")):
        grid_points(["train.lr=range(0,1,0)"])
    # Building them would take minutes (a million points compiled in 77 s before the cap):
    # a bound far from both sides, so a busy machine cannot fail it.
    assert time.perf_counter() - started < 10.0
    assert len(grid_points(["train.seed=range(0,1000)", "data.seed=1,2"], max_points=2000)) \
        == 2000


def test_a_million_point_compile_fails_at_once(tmp_path, capsys):
    import time

    from textclf import kfp_sweep

    started = time.perf_counter()
    with pytest.raises(SystemExit) as stop:
        kfp_sweep.main(["compile", "-o", str(tmp_path / "s.yaml"), "--image", "i",
                        "--repo", "https://git.example/t.git", "--rev", "a" * 40, "-S", "train.seed=range(0,1000)",
                        "-S", "data.seed=range(0,1000)"])
    assert time.perf_counter() - started < 10.0       # 77 s before the cap; about 1 s now
    assert stop.value.code == 2 and not (tmp_path / "s.yaml").exists()
    assert "raise --max-points" in capsys.readouterr().err


PARAMS = {"train": {"lr": 0.1, "epochs": 3}, "data": {"labels": ["a", "b"]}}


@pytest.mark.parametrize("sets, message", [
    (["train.lrr=0.1,0.2"], "-S 'train.lrr=0.1,0.2': train.lrr is not in params.yaml "
                            "(known keys in train: lr, epochs)"),
    (["evaluate.batch_size=8"], "evaluate.batch_size is not in params.yaml"),
    (["~train.momentum"], "train.momentum is not in params.yaml"),
    (["+train.lr=1"], "-S '+train.lr=1': train.lr is already in params.yaml; drop the '+'"),
    (["other.yaml:train.lr=1"], "train.lr is not in other.yaml"),
])
def test_keys_must_be_in_the_params_file_as_dvc_requires(sets, message):
    from textclf.sweeps.grid import check_keys

    files = {"params.yaml": PARAMS, "other.yaml": {}}
    with pytest.raises(UserError, match=re.escape(message)):
        check_keys(sets, files.__getitem__)


def test_keys_in_the_params_file_adds_and_unchecked_formats_pass():
    from textclf.sweeps.grid import check_keys

    files = {"params.yaml": PARAMS, "params.toml": None}
    check_keys(["train.lr=1,2", "data.labels.1=c", "+train.new=1", "++train.lr=2",
                "~train.epochs", "params.toml:anything=1"], files.__getitem__)


def test_keys_are_read_from_the_swept_revision(tmp_path):
    from textclf.kfp_sweep import params_reader

    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.1\n")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "p"]):
        call(cmd, tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  epochs: 1\n")     # not committed
    assert params_reader(tmp_path, "HEAD")("params.yaml") == {"train": {"lr": 0.1}}
    assert params_reader(tmp_path, "b" * 40)("params.yaml") == {"train": {"epochs": 1}}
    with pytest.raises(UserError, match="other.yaml is neither in commit HEAD"):
        params_reader(tmp_path, "HEAD")("other.yaml")


@pytest.mark.parametrize("flag, value", [
    ("--parallelism", "nan"), ("--parallelism", "0"), ("--parallelism", "inf"),
    ("--max-points", "1e9"), ("--max-points", "-1"), ("--gpus", "-1"), ("--gpus", "nan"),
])
def test_numeric_flags_refuse_nan_inf_and_out_of_range_naming_the_flag(capsys, flag, value):
    from textclf import kfp_sweep

    with pytest.raises(SystemExit) as stop:
        kfp_sweep.main(["compile", "--image", "i", flag, value])
    assert stop.value.code == 2
    assert f"argument {flag}: expected a whole number" in capsys.readouterr().err


def test_sweep_name_must_fit_in_a_git_ref():
    assert check_sweep_name("bs-sweep_1.2") == "bs-sweep_1.2"
    for bad in ("has space", "-lead", "a/b", ""):
        with pytest.raises(UserError, match="--name"):
            check_sweep_name(bad)


# --- the plan: what a point re-runs, pulls and reports -------------------------------------

@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


@pytest.mark.parametrize("overrides, rerun", [
    (["train.batch_size=16"], {"train", "evaluate"}),
    (["data.class_ratio=[2,1,1,1,1]"], {"resample", "train", "evaluate"}),
    (["evaluate.batch_size=8"], {"evaluate"}),
    (["model.name=bert-base-uncased"], {"train", "evaluate"}),
    (["data.seed=1"], {"prepare", "resample", "train", "evaluate"}),
    (["data.path=other.csv"], {"prepare", "resample", "train", "evaluate"}),
    (["data"], {"prepare", "resample", "train", "evaluate"}),
    (["other.yaml:train.lr=1"], set()),       # a file no stage reads
    ([], set()),
])
def test_a_point_reruns_the_stages_its_params_reach(dvc_yaml, overrides, rerun):
    assert rerun_stages(dvc_yaml, overrides) == rerun


def test_a_point_pulls_only_what_does_not_rerun(dvc_yaml):
    assert pull_targets(dvc_yaml, ["train.batch_size=16"], ["data/v.csv.dvc"]) == \
        ["prepare", "resample", "data/v.csv.dvc"]
    assert pull_targets(dvc_yaml, ["data.seed=1"], []) == []
    looped = {"stages": {"many": {"foreach": [1, 2], "do": {"cmd": "echo ${item}"}}}}
    assert pull_targets(looped, ["x=1"], []) is None             # DVC decides: pull all


def test_metrics_and_confusion_matrix_come_from_dvc_yaml(dvc_yaml):
    assert "metrics/evaluate/metrics.json" in metrics_files(dvc_yaml)
    declared = {"metrics": ["a.json", {"b.json": {"cache": False}}],
                "stages": {"s": {"metrics": ["c.json", "a.json"]}}}
    assert metrics_files(declared) == ["a.json", "b.json", "c.json"]
    plot = confusion_plot(dvc_yaml)
    assert plot.path == "metrics/evaluate/plots/sklearn/confusion_matrix.json"
    assert (plot.actual, plot.predicted) == ("actual", "predicted")


def test_scores_and_confusion_matrix_are_read_in_label_order(tmp_path):
    from textclf.sweeps.point import read_scores

    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    files = {"metrics/evaluate/metrics.json": {"accuracy": 0.5, "f1_macro": 0.4, "note": "x"},
             "metrics/train/metrics.json": {"best": {"val_f1_macro": 0.6}, "step": 0},
             "data/prepared/labels.json": {"labels": ["neg", "neu", "pos"]},
             "metrics/evaluate/plots/sklearn/confusion_matrix.json": [
                 {"actual": "pos", "predicted": "pos"}, {"actual": "neg", "predicted": "pos"},
                 {"actual": "pos", "predicted": "pos"}, {"actual": "neu", "predicted": "neg"}]}
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(content))
    metrics, labels, matrix = read_scores(tmp_path, ("metrics/train/metrics.json",))
    assert metrics == {"accuracy": 0.5, "f1_macro": 0.4, "best.val_f1_macro": 0.6, "step": 0}
    assert labels == ("neg", "neu", "pos")
    assert matrix == ((0, 0, 1), (1, 0, 0), (0, 0, 2))        # rows: actual


def test_error_text_keeps_the_lines_that_say_what_failed():
    output = ("Running stage 'train':\n> textclf train ...\n"
              f"error: params.yaml: {BAD} (int)\n"
              "ERROR: failed to reproduce 'train': failed to run: textclf train, exited with 2\n")
    assert error_text(output) == (f"error: params.yaml: {BAD} (int) / ERROR: failed to "
                                  "reproduce 'train': failed to run: textclf train, exited with 2")
    assert error_text("a\nb\n") == "a / b"
    assert len(error_text("x" * 5000)) == 600


def test_threads_per_point_share_the_cores(monkeypatch):
    from textclf.kfp_sweep import local_threads, pod_threads

    assert [pod_threads(cpu) for cpu in ("", "500m", "4", "2.5", "8000m")] == [0, 1, 4, 2, 8]
    monkeypatch.setattr("textclf.cores.available_cores", lambda: 8)
    # kfp.local runs at most 2 points at once, whatever --parallelism says
    assert [local_threads(p, 4) for p in (1, 2, 8)] == [8, 4, 4]
    assert local_threads(8, 1) == 8
    with pytest.raises(UserError, match="--cpu 'four'"):
        pod_threads("four")


# --- the leaderboard ---------------------------------------------------------------------

def _result(name, f1=None, error=""):
    return PointResult(name, (f"train.lr={name}",), "failed" if error else "success",
                       error=error, rev="0123456789abcdef" if not error else "",
                       metrics={} if f1 is None else {"f1_macro": f1, "accuracy": 0.5})


def test_leaderboard_ranks_best_first_and_lists_failures_with_their_error():
    results = [_result("a", 0.4), _result("b", error="dvc exp run: error: x | y\nz"),
               _result("c", 0.9), _result("d")]
    page = leaderboard_markdown(results)
    rows = [line for line in page.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [row.split(" | ")[1] for row in rows] == ["c", "a", "d"]   # no metric: last
    assert "| 1 | c | `train.lr=c` | 0.9000 | 0.5000 | - | 0123456 |" in page
    assert "| b | `train.lr=b` | dvc exp run: error: x \\| y z |" in page
    assert page.startswith("# Sweep leaderboard: 3 finished, 1 failed")
    ascending = leaderboard_markdown(results, "f1_macro", ascending=True)
    assert ascending.index("| 1 | a |") < ascending.index("| 2 | c |")


def test_point_results_travel_as_versioned_json():
    result = PointResult("g-1", ("a=1",), "success", rev="ab", stages_run=("train",),
                         metrics={"f1_macro": 0.5},
                         labels=("x", "y"), confusion=((1, 0), (2, 3)))
    assert PointResult.from_json(result.to_json()) == result
    with pytest.raises(ValueError, match="not a textclf sweep point result"):
        PointResult.from_json(json.dumps({"name": "g-1"}))


# --- the compiled pipeline ---------------------------------------------------------------

PLANTED_KEY_ID = "AKIA" + "ZXCVBNMASDFGHJKL"           # built at run time: no secret in git
PLANTED_SECRET = "kfpT3st" + "SecretValue9876543210abcdEF"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    """The 2 x 2 grid compiled with resource requests and a secret, credentials in the env."""
    from textclf import kfp_sweep

    out = tmp_path_factory.mktemp("compile") / "sweep.yaml"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", PLANTED_KEY_ID)
        env.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
        kfp_sweep.main(["compile", "-o", str(out), "--image", "registry.example/textclf:1",
                        "--repo", "https://git.example/team/textclf.git", "--rev", "a" * 40,
                        "--remote", "s3://bucket/store", "--remote-config",
                        "endpointurl=http://minio.internal:9000", "-n", "grid",
                        "-S", "train.batch_size=16,32",
                        "-S", f"data.class_ratio={','.join(RATIOS)}",
                        "--parallelism", "3", "--cpu", "4", "--memory", "8Gi",
                        "--gpu-type", "nvidia.com/gpu", "--gpus", "2", "--secret", "dvc-s3"])
    text = out.read_text()
    spec, platform = yaml.safe_load_all(text)
    return {"text": text, "spec": spec, "platform": platform}


def _components(spec: dict) -> dict[str, dict]:
    return spec["components"]


def test_compiled_pipeline_has_one_task_per_grid_point_then_the_leaderboard(compiled):
    spec = compiled["spec"]
    root = spec["root"]["dag"]["tasks"]
    [loop] = [name for name in root if name.startswith("for-loop")]
    assert set(root) == {loop, "sweep-leaderboard"}
    assert root["sweep-leaderboard"]["dependentTasks"] == [loop]
    body = _components(spec)[root[loop]["componentRef"]["name"]]["dag"]["tasks"]
    assert list(body) == ["sweep-point"]                     # one task per iteration
    items = json.loads(root[loop]["parameterIterator"]["items"]["raw"])
    assert [item["overrides"] for item in items] == [
        [f"train.batch_size={bs}", f"data.class_ratio={ratio}"]
        for bs in (16, 32) for ratio in RATIOS]
    assert root[loop]["iteratorPolicy"]["parallelismLimit"] == 3
    assert body["sweep-point"]["cachingOptions"] == {}       # never served from a cache
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert inputs["sweep_name"]["defaultValue"] == "grid"
    assert inputs["revision"]["defaultValue"] == "a" * 40
    assert inputs["threads"]["defaultValue"] == 4             # the CPU request


def test_compiled_pipeline_requests_resources_per_point(compiled):
    executors = compiled["spec"]["deploymentSpec"]["executors"]
    [point] = [e for name, e in executors.items() if "sweep-point" in name]
    resources = point["container"]["resources"]
    assert resources["resourceCpuRequest"] == "4"
    assert resources["resourceMemoryRequest"] == "8Gi"
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "2"
    for executor in executors.values():
        assert executor["container"]["image"] == "registry.example/textclf:1"
        assert "pip install" not in json.dumps(executor)    # the image has everything


def test_compiled_pipeline_names_the_secret_and_holds_no_credential(compiled):
    text = compiled["text"]
    assert PLANTED_KEY_ID not in text and PLANTED_SECRET not in text
    assert credential_findings(text) == []
    [executor] = compiled["platform"]["platforms"]["kubernetes"]["deploymentSpec"][
        "executors"].values()
    [secret] = executor["secretAsEnv"]
    assert secret["secretName"] == "dvc-s3"
    assert {(k["secretKey"], k["envVar"]) for k in secret["keyToEnv"]} == {
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}


@pytest.mark.parametrize("flags", [
    ["--remote-config", "secret_access_key=" + PLANTED_SECRET],
    ["--repo", "https://me:" + PLANTED_SECRET + "@git.example/t.git"],
    ["--repo", "https://" + PLANTED_SECRET + "@github.com/team/textclf.git"],   # a pasted token
    ["--remote", "https://me:" + PLANTED_SECRET + "@dav.example/store"],
])
def test_credentials_are_refused_on_the_command_line(tmp_path, capsys, flags):
    from textclf import kfp_sweep

    with pytest.raises(SystemExit) as stop:
        kfp_sweep.main(["compile", "-o", str(tmp_path / "s.yaml"), "--image", "i",
                        "--repo", "https://git.example/t.git", "--rev", "a" * 40, *flags])
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {flags[0]}") and PLANTED_SECRET not in error, error
    assert not (tmp_path / "s.yaml").exists()


@pytest.mark.parametrize("flags, error", [
    (["--repo", "/home/me/textclf"], "error: --repo /home/me/textclf: a folder on this "
                                     "machine, which a cluster cannot clone"),
    (["--repo", "file:///srv/git/textclf.git"], "a cluster cannot clone"),
    (["--repo", "https://git.example/t.git", "--memory", "8XB"],
     "argument --memory: '8XB': expected a memory quantity as KFP reads it"),
    (["--repo", "https://git.example/t.git", "--memory", "1.5Gi"], "(e.g. 8Gi)"),
])
def test_what_a_cluster_cannot_use_is_refused_before_compiling(tmp_path, capsys, flags, error):
    from textclf import kfp_sweep

    with pytest.raises(SystemExit) as stop:
        kfp_sweep.main(["compile", "-o", str(tmp_path / "s.yaml"), "--image", "i",
                        "--rev", "a" * 40, "-S", "train.seed=1,2", *flags])
    assert stop.value.code == 2
    assert error in capsys.readouterr().err
    assert not (tmp_path / "s.yaml").exists()


def test_an_ssh_url_with_its_user_is_not_a_credential():
    from textclf.kfp_sweep import local_path
    from textclf.sweeps.remote_settings import check_url

    for url in ("ssh://git@github.com/team/textclf.git", "git@github.com:team/textclf.git",
                "myserver:/srv/git/textclf.git"):
        assert check_url("--repo", url) == url and not local_path(url)


@pytest.mark.parametrize("cpu", ["-1", "1e3", "nan", "inf", "0", "0m", "nanm", "infm", "1e3m"])
def test_a_cpu_request_kfp_cannot_read_is_refused_naming_the_flag(cpu):
    from textclf.kfp_sweep import pod_threads

    with pytest.raises(UserError, match=f"--cpu '{cpu}': expected cores"):
        pod_threads(cpu)


# --- a whole sweep through kfp.local (slow) ---------------------------------------------

@dataclass(frozen=True)
class LocalSweep:
    author: Path        # the user's clone, where `textclf kfp run --local` ran
    origin: Path        # bare git repository the points clone and push to
    storage: Path       # the DVC folder remote
    baseline: str       # the commit swept
    board: str          # the leaderboard Markdown
    pipeline_root: Path
    printed: str


def _copy_project(dest: Path, tiny_model_dir: Path) -> None:
    shutil.copytree(REPO, dest, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".pytest_cache", "cache", "tmp",
        "config.local", "prepared", "resampled", "classifier", "reports"))
    set_params(dest, model={"name": str(tiny_model_dir)}, train={"epochs": 1})
    call(["git", "init", "-q", "-b", "main"], dest)
    call(["git", "add", "-A"], dest)
    call(["git", "commit", "-qm", "tiny model, one epoch"], dest)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory, tiny_model_dir) -> LocalSweep:
    root = tmp_path_factory.mktemp("kfp")
    isolate(tmp_path_factory.mktemp("settings"))
    author, origin, storage = root / "author", root / "origin.git", root / "storage"
    _copy_project(author, tiny_model_dir)
    call(["git", "init", "-q", "--bare", "-b", "main", origin], root)
    # prepare's outputs in the remote, as after a teammate's `dvc repro && dvc push`: the
    # points pull them instead of running prepare (no point changes a param prepare reads)
    call(["dvc", "remote", "modify", "--local", "local", "url", storage], author)
    call(["dvc", "repro", "prepare"], author)
    call(["dvc", "push"], author)
    call(["git", "add", "-A"], author)
    # --allow-empty: where the committed dvc.lock already records these outputs
    call(["git", "commit", "-q", "--allow-empty", "-m", "prepared"], author)
    call(["git", "remote", "add", "origin", origin], author)
    call(["git", "push", "-q", "origin", "main"], author)
    baseline = call(["git", "rev-parse", "HEAD"], author).stdout.strip()
    board, scratch = root / "leaderboard.md", root / "tmp"
    scratch.mkdir()
    printed = call(["textclf", "kfp", "run", "--local", "--repo", origin, "--remote", storage,
                    "-n", "grid", *GRID, "--parallelism", "2", "--leaderboard", board,
                    "--pipeline-root", root / "kfp-root"], author,
                   {**base_env(), "OMP_NUM_THREADS": "1", "TMPDIR": str(scratch)},
                   timeout=600).stdout
    # nothing left in the temporary folder (kfp.local's own workspace folder was, once)
    assert not list(scratch.iterdir()), sorted(p.name for p in scratch.iterdir())
    return LocalSweep(author, origin, storage, baseline, board.read_text(), root / "kfp-root",
                      printed)


def _experiments(project: Path) -> dict[str, dict]:
    """`dvc exp show --json` as {name: {rev, params (params.yaml), metrics by file}}."""
    rows = {}
    for baseline in json.loads(call(["dvc", "exp", "show", "--json"], project).stdout)[1:]:
        for group in baseline.get("experiments") or []:
            for exp in group["revs"]:
                data = exp.get("data") or {}
                rows[exp["name"]] = {
                    "rev": exp["rev"],
                    "params": (data.get("params") or {}).get("params.yaml", {}).get("data"),
                    "metrics": {p: m.get("data") for p, m in (data.get("metrics") or {}).items()}}
    return rows


GOOD = {f"grid-{i}": (bs, ratio) for i, (bs, ratio) in
        enumerate(((bs, r) for bs in (8, 16) for r in RATIOS), start=1)}
FAILED = ("grid-5", "grid-6")        # train.batch_size=-1 with either ratio


@pytest.mark.slow
def test_every_good_point_is_pushed_to_origin(local_sweep):
    refs = call(["git", "ls-remote", local_sweep.origin, "refs/exps/*"],
                local_sweep.author).stdout.split("\n")
    names = sorted(line.rsplit("/", 1)[-1] for line in refs if line)
    assert names == sorted(GOOD)
    prefix = f"refs/exps/{local_sweep.baseline[:2]}/{local_sweep.baseline[2:]}/"
    assert all(prefix in line for line in refs if line)        # baseline: the swept commit


@pytest.mark.slow
def test_the_leaderboard_ranks_good_points_and_lists_failed_ones_with_their_error(local_sweep):
    board = local_sweep.board
    assert board.startswith("# Sweep leaderboard: 4 finished, 2 failed")
    ranked = [line.split(" | ") for line in board.splitlines() if re.match(r"\| \d+ \|", line)]
    assert sorted(row[1] for row in ranked) == sorted(GOOD)
    scores = [float(row[3]) for row in ranked]
    assert scores == sorted(scores, reverse=True)
    failed = board.split("## Failed", 1)[1]
    for name in FAILED:
        [line] = [line for line in failed.splitlines() if line.startswith(f"| {name} |")]
        assert "`train.batch_size=-1`" in line and BAD in line, line
    assert board in local_sweep.printed


@pytest.mark.slow
def test_points_pull_what_they_do_not_rerun(local_sweep):
    results = {}
    for path in local_sweep.pipeline_root.rglob("sweep-point/executor_output.json"):
        result = PointResult.from_json(
            json.loads(path.read_text())["parameterValues"]["Output"])
        results[result.name] = result
    assert sorted(results) == sorted([*GOOD, *FAILED])
    for name in GOOD:     # class_ratio changes: resample on; prepare's outputs were pulled
        assert results[name].stages_run == ("resample", "train", "evaluate"), results[name]
    for name in FAILED:
        assert results[name].status == "failed" and BAD in results[name].error


@pytest.mark.slow
def test_each_point_reports_kfp_metrics_and_a_confusion_matrix(local_sweep):
    outputs = [json.loads(p.read_text()) for p in
               local_sweep.pipeline_root.rglob("executor_output.json")]
    metadata = [artifact.get("metadata", {}) for out in outputs
                for group in out.get("artifacts", {}).values()
                for artifact in group.get("artifacts", [])]
    scalars = [m for m in metadata if "f1_macro" in m]
    matrices = [m["confusionMatrix"] for m in metadata if "confusionMatrix" in m]
    assert len(scalars) == 4 and len(matrices) == 4
    assert all("best.val_f1_macro" in m and 0 <= m["f1_macro"] <= 1 for m in scalars)
    for matrix in matrices:
        labels = [c["displayName"] for c in matrix["annotationSpecs"]]
        assert labels == ["very negative", "negative", "neutral", "positive", "very positive"]
        assert sum(map(sum, (row["row"] for row in matrix["rows"]))) > 0


@pytest.mark.slow
def test_a_second_clone_pulls_shows_and_applies_the_sweep(local_sweep, tmp_path):
    clone = tmp_path / "clone"
    call(["git", "clone", "-q", local_sweep.origin, clone], tmp_path)
    call(["dvc", "remote", "modify", "--local", "local", "url", local_sweep.storage], clone)
    call(["dvc", "exp", "pull", "origin"], clone)
    shown = _experiments(clone)
    assert sorted(shown) == sorted(GOOD)
    board_f1 = {row.split(" | ")[1]: float(row.split(" | ")[3])
                for row in local_sweep.board.splitlines() if re.match(r"\| \d+ \|", row)}
    for name, (batch_size, ratio) in GOOD.items():
        params = shown[name]["params"]
        assert params["train"]["batch_size"] == batch_size
        assert params["data"]["class_ratio"] == json.loads(ratio)
        scores = shown[name]["metrics"]["metrics/evaluate/metrics.json"]
        assert scores["f1_macro"] == pytest.approx(board_f1[name], abs=1e-4)

    best = max(board_f1, key=board_f1.get)
    call(["dvc", "exp", "apply", best], clone)
    call(["dvc", "pull"], clone)
    assert (clone / "models/classifier/model.safetensors").is_file()
    assert json.loads(call(["dvc", "status", "--json"], clone).stdout) == {}  # nothing to rerun
    report = tmp_path / "report.md"
    call(["textclf", "report", "--html", tmp_path / "report.html", "--markdown", report], clone)
    assert all(name in report.read_text() for name in GOOD)
    call(["dvc", "plots", "diff", *GOOD, "-o", tmp_path / "plots"], clone)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert all(name in page for name in GOOD)


@pytest.fixture(scope="module")
def s3_user():
    from moto.core.authorization import enable_iam_authentication

    from s3_server import S3Server

    server = S3Server()
    server.start()
    try:
        server.reset()
        user = S3.new_user(server.endpoint)
        with enable_iam_authentication():
            user.client().create_bucket(Bucket=BUCKET)
            yield user
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.long    # 70 s in the suite: S3 with keys from the environment is test_remote.py's;
                     # kfp points' pulls and pushes are the local sweep's, with a folder remote
def test_a_point_pulls_from_and_pushes_to_s3_with_credentials_from_the_env(local_sweep, s3_user):
    """The moto S3 server on loopback, keys only in the environment, endpoint per clone."""
    author, url = local_sweep.author, f"s3://{BUCKET}/kfp"
    call(["dvc", "remote", "add", "--local", "s3", url], author)
    s3_user.use(author, "s3")
    call(["dvc", "push", "-r", "s3"], author, s3_user.env)       # prepare's outputs
    before = set(s3_user.keys())
    board = author.parent / "s3-leaderboard.md"
    call(["textclf", "kfp", "run", "--local", "--repo", local_sweep.origin, "--remote", url,
          "--remote-config", f"endpointurl={s3_user.endpoint}", "-n", "s3pt",
          "-S", "train.batch_size=8", "--leaderboard", board,
          "--pipeline-root", author.parent / "s3-root"], author,
         {**s3_user.env, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert board.read_text().startswith("# Sweep leaderboard: 1 finished, 0 failed")
    [output] = (author.parent / "s3-root").rglob("sweep-point/executor_output.json")
    result = PointResult.from_json(json.loads(output.read_text())["parameterValues"]["Output"])
    assert result.stages_run == ("resample", "train", "evaluate")  # prepare came from S3
    assert set(s3_user.keys()) > before                            # its model went there
    refs = call(["git", "ls-remote", local_sweep.origin, "refs/exps/*"], author).stdout
    assert any(line.endswith("/s3pt-1") for line in refs.splitlines()), refs
    assert s3_user.secret not in output.read_text() + board.read_text()


def _echo_project(root: Path) -> tuple[Path, Path]:
    """A one-stage DVC project (no training) and its bare origin, for run_point itself."""
    project, origin = root / "echo", root / "echo.git"
    project.mkdir()
    (project / "params.yaml").write_text("msg: hi\n")
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"greet": {
        "cmd": "python -c \"import yaml; open('out.txt', 'w').write("
               "yaml.safe_load(open('params.yaml'))['msg'])\"",
        "params": ["msg"], "outs": ["out.txt"]}}}))
    for cmd in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "echo"],
                ["git", "init", "-q", "--bare", "-b", "main", origin],
                ["git", "remote", "add", "origin", origin],
                ["git", "push", "-q", "origin", "main"]):
        call(cmd, project)
    return project, origin


@pytest.mark.slow
def test_run_point_pushes_once_and_lists_a_pushed_point_without_running_it(tmp_path, monkeypatch):
    from textclf.sweeps.point import PointJob, run_point

    isolate(tmp_path)
    project, origin = _echo_project(tmp_path)
    for key, value in base_env().items():
        monkeypatch.setenv(key, value)
    job = PointJob(repo_url=str(origin), revision="main", name="echo-1",
                   overrides=("msg=bye",), dvc_remote=str(tmp_path / "storage"))
    first = run_point(job)
    assert first.ok and first.stages_run == ("greet",), first
    refs = call(["git", "ls-remote", origin, "refs/exps/*"], project).stdout
    assert refs.split()[0] == first.rev and refs.rstrip().endswith("/echo-1")
    assert any((tmp_path / "storage").rglob("*"))               # out.txt went to the remote

    again = run_point(job)                       # the same sweep run again: nothing runs
    assert again.ok and again.rev == first.rev and again.stages_run == (), again
    assert again.metrics == first.metrics
    other = run_point(dataclasses.replace(job, overrides=("msg=hello",)))
    assert other.status == "failed"
    assert other.error.startswith("dvc exp push: error: origin already has an experiment "
                                  "named echo-1 with other params"), other.error
    assert call(["git", "ls-remote", origin, "refs/exps/*"], project).stdout == refs
