"""Sharing through a DVC remote: push, pull, experiments, time travel, gc, failures.

Every test runs the real `dvc` and `git` commands. The S3 remote is moto's S3 on 127.0.0.1
(tests/s3_server.py) with IAM signature checks on; credentials live only in the environment
of the `dvc` subprocesses, per-user settings only in `.dvc/config.local`. A module-scoped
project is trained twice (data v1, then v2 with more rows); each test works on its own
copy of it, with its own git origin (a bare repository), folder remote and bucket.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from moto.core.authorization import enable_iam_authentication

from conftest import REPO
from credential_scan import credential_findings, scan_tracked_files
from remote_project import (ARTIFACT, BUCKET, S3, S3_URL, History, Team, assert_nothing_to_run,
                            build_history, cache_fingerprint, call, fingerprint, isolate, only)
from s3_server import S3Server

pytestmark = pytest.mark.slow

# README "Share with your team": keeps what any commit, branch, tag or experiment uses.
GC_KEEP_ALL = ["dvc", "gc", "--workspace", "--all-commits", "--all-branches", "--all-tags",
               "--all-experiments", "--force"]


@pytest.fixture(scope="module", autouse=True)
def isolated(tmp_path_factory):
    isolate(tmp_path_factory.mktemp("settings"))
    # A relative folder remote read from an older commit lands at the filesystem root
    # (Team.pin_storage): fail if a test ever writes there.
    leak = Path("/textclf-storage")
    existed = leak.exists()
    yield
    assert existed or not leak.exists(), f"a test wrote DVC data to {leak}"


@pytest.fixture(scope="module")
def history(tmp_path_factory, tiny_model_dir) -> History:
    return build_history(tmp_path_factory.mktemp("history") / "project", tiny_model_dir)


@pytest.fixture
def team(history, tmp_path) -> Team:
    return Team.start(history, tmp_path)


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server) -> S3:
    """Fresh moto state: an IAM user allowed s3:*, an empty bucket, signatures checked."""
    s3_server.reset()
    user = S3.new_user(s3_server.endpoint)
    with enable_iam_authentication():
        user.client().create_bucket(Bucket=BUCKET)
        yield user


# --- credentials -------------------------------------------------------------------------

def test_credential_scanner_finds_planted_secrets():
    # Built at run time, so that this file holds no credential-like text itself.
    planted = ["[default]", "aws_access_key_id = AKIA" + "Q7WERTY2UIOP3ASD",
               "aws_secret_access_key = " + "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz9ABCDEF1",
               "    secret_access_key = " + "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
               "password: " + "hunter2024x", "-----BEGIN RSA " + "PRIVATE KEY-----",
               '{"secret_access_key": "' + '0a9b8c7d6e5f4a3b2c1d"}',
               "export AWS_SECRET_ACCESS_KEY=" + "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5",
               "dvc remote modify --local storage password " + "s3cr3tPassw0rd"]
    harmless = ["secret_access_key = ${AWS_SECRET_ACCESS_KEY}",
                "dvc remote modify --local storage secret_access_key <your-secret>",
                'pad_token = "[PAD]"', "password: null", "token = tokenizer(texts)",
                "export AWS_SECRET_ACCESS_KEY=...", "the secret is in the sauce"]
    hits = credential_findings("\n".join(planted + harmless))
    assert [int(hit.split(":")[0]) for hit in hits] == list(range(2, len(planted) + 1)), hits


def test_no_credentials_in_git_tracked_files():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: no tracked files to scan")
    assert scan_tracked_files(REPO) == []
    ignored = call(["git", "check-ignore", "-q", ".dvc/config.local"], REPO, check=False)
    assert ignored.returncode == 0, ".dvc/config.local (per-user settings) must be git-ignored"


# --- push / pull -------------------------------------------------------------------------

def assert_clone_restored(clone: Path, expected: dict[str, str], env: dict | None = None):
    assert fingerprint(clone) == expected
    assert_nothing_to_run(clone, env)
    assert call(["git", "status", "--porcelain"], clone).stdout == ""  # config.local ignored


def test_s3_push_then_pull_in_a_fresh_clone(history, team, s3):
    s3.use(team.author)
    pushed = call(["dvc", "push", "-r", "storage"], team.author, s3.env).stdout
    assert re.search(r"\d+ files? pushed", pushed), pushed
    assert json.loads(call(["dvc", "status", "--cloud", "-r", "storage", "--json"],
                           team.author, s3.env).stdout) == {}
    assert s3.keys() and all(key.startswith("store/files/md5/") for key in s3.keys())

    clone = team.clone("clone")
    s3.use(clone)
    call(["dvc", "pull", "-r", "storage"], clone, s3.env)
    assert_clone_restored(clone, history.v2, s3.env)

    # What was committed names the bucket, not where the server is, and holds no keys.
    config = call(["git", "show", "HEAD:.dvc/config"], clone).stdout
    assert S3_URL in config and "endpointurl" not in config
    for project in (team.author, clone):
        tracked = call(["git", "grep", "-I", "-l", "-F", "-e", s3.secret, "-e", s3.key_id,
                        "-e", s3.endpoint], project, check=False)
        assert tracked.returncode == 1 and tracked.stdout == "", tracked.stdout
        assert scan_tracked_files(project) == []


def test_local_folder_push_then_pull_in_a_fresh_clone(history, team):
    call(["dvc", "push"], team.author)  # the committed default remote, a folder beside the repo
    assert any((team.storage / "files" / "md5").rglob("*.dir"))

    clone = team.clone("clone")
    call(["dvc", "pull"], clone)
    assert_clone_restored(clone, history.v2)

    # Older versions too, once the folder has an absolute path (docs/sharing.md).
    team.pin_storage(team.author)
    call(["dvc", "push", "--all-tags"], team.author)
    call(["git", "checkout", "-q", f"{ARTIFACT}@v1.0.0"], clone)
    call(["dvc", "pull"], clone)
    assert fingerprint(clone) == history.v1


def test_artifact_get_without_cloning(history, team, s3, tmp_path):
    """`dvc artifacts get` reads the version from GTO tags in the git repo, data from the remote."""
    s3.use(team.author)
    call(["dvc", "push", "-r", "storage", "--all-tags"], team.author, s3.env)
    team.pin_storage(team.author)
    call(["dvc", "push", "--all-tags"], team.author)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    get = ["dvc", "artifacts", "get", team.origin, ARTIFACT]
    via_s3 = ["--remote", "storage", "--remote-config", f"endpointurl={s3.endpoint}"]

    call(get + via_s3 + ["-o", "latest"], elsewhere, s3.env)  # highest version: v2.0.0
    call(get + via_s3 + ["--rev", "v1.0.0", "-o", "first"], elsewhere, s3.env)
    # The committed url of the folder remote is relative to the project: name it.
    call(get + ["--rev", "v1.0.0", "--remote-config", f"url={team.storage}",
                "-o", "first-local"], elsewhere)

    def model(folder: str) -> dict[str, str]:
        return {f"models/classifier/{path.split('/', 1)[1]}": digest
                for path, digest in fingerprint(elsewhere, (folder,)).items()}

    assert model("latest") == only(history.v2, "models/") != only(history.v1, "models/")
    assert model("first") == model("first-local") == only(history.v1, "models/")
    assert not (elsewhere / ".git").exists() and not (elsewhere / ".dvc").exists()


# --- experiments -------------------------------------------------------------------------

def find_experiment(project: Path, name: str, env: dict) -> dict:
    def visit(entries):
        for entry in entries:
            if entry.get("name") == name:
                return entry
            for group in entry.get("experiments") or []:
                found = visit(group.get("revs", []))
                if found:
                    return found
        return None

    shown = json.loads(call(["dvc", "exp", "show", "--json"], project, env).stdout)
    found = visit(shown)
    assert found is not None, f"experiment {name!r} not in `dvc exp show`: {shown}"
    return found["data"]


def test_experiment_travels_between_clones(history, team, s3):
    first = team.author
    s3.use(first)
    ran = call(["dvc", "exp", "run", "-n", "bs16", "-S", "train.batch_size=16"], first).stdout
    assert "Running stage 'train'" in ran and "Running stage 'prepare'" not in ran
    experiment = fingerprint(first)
    assert only(experiment, "models/") != only(history.v2, "models/")
    call(["dvc", "exp", "push", "-r", "storage", "origin", "bs16"], first, s3.env)

    second = team.clone("second")
    s3.use(second)
    call(["dvc", "exp", "pull", "-r", "storage", "origin", "bs16"], second, s3.env)
    shown = find_experiment(second, "bs16", s3.env)
    assert shown["params"]["params.yaml"]["data"]["train"]["batch_size"] == 16
    metrics = json.loads((first / "metrics/evaluate/metrics.json").read_text())
    assert shown["metrics"]["metrics/evaluate/metrics.json"]["data"] == metrics

    call(["dvc", "exp", "apply", "bs16"], second, s3.env)
    call(["dvc", "pull", "-r", "storage"], second, s3.env)
    assert fingerprint(second) == experiment
    assert_nothing_to_run(second, s3.env)


# --- time travel and garbage collection --------------------------------------------------

def test_time_travel_restores_data_model_and_metrics(history, team):
    project = team.author
    for part in ("data/v.csv", "data/prepared/", "data/resampled/", "models/", "metrics/"):
        assert only(history.v1, part) != only(history.v2, part), part

    call(["git", "checkout", "-q", f"{ARTIFACT}@v1.0.0"], project)
    call(["dvc", "checkout"], project)
    assert fingerprint(project) == history.v1
    assert_nothing_to_run(project)

    call(["git", "checkout", "-q", "main"], project)
    call(["dvc", "checkout"], project)
    assert fingerprint(project) == history.v2


def orphan_in_cache_and_remote(project: Path) -> str:
    """A data version that was added and pushed but never committed; returns its md5."""
    data = project / "data/v.csv"
    data.write_bytes(data.read_bytes() + b'"never committed",neutral\r\n')
    call(["dvc", "add", "data/v.csv"], project)
    call(["dvc", "push", "data/v.csv.dvc"], project)
    md5 = yaml.safe_load((project / "data/v.csv.dvc").read_text())["outs"][0]["md5"]
    call(["git", "checkout", "-q", "HEAD", "--", "data/v.csv.dvc"], project)  # autostage
    call(["dvc", "checkout", "data/v.csv.dvc"], project)
    assert call(["git", "status", "--porcelain"], project).stdout == ""
    return md5


def test_gc_keeps_every_committed_version(history, team):
    project = team.author
    team.pin_storage(project)  # gc -c reads older commits (docs/sharing.md)
    storage = team.storage
    call(["dvc", "push", "--all-commits"], project)
    orphan = orphan_in_cache_and_remote(project)
    cache = project / ".dvc/cache/files/md5"
    assert (cache / orphan[:2] / orphan[2:]).exists()
    assert (storage / "files/md5" / orphan[:2] / orphan[2:]).exists()

    call(GC_KEEP_ALL + ["--cloud"], project)  # README: local cache and the remote
    assert not (cache / orphan[:2] / orphan[2:]).exists(), "gc removed nothing"
    assert not (storage / "files/md5" / orphan[:2] / orphan[2:]).exists()
    assert fingerprint(project) == history.v2

    call(["git", "checkout", "-q", f"{ARTIFACT}@v1.0.0"], project)
    call(["dvc", "checkout"], project)  # from the local cache alone
    assert fingerprint(project) == history.v1
    clone = team.clone("clone")  # and from the remote alone
    call(["git", "checkout", "-q", f"{ARTIFACT}@v1.0.0"], clone)
    call(["dvc", "pull"], clone)
    assert fingerprint(clone) == history.v1

    # Control: gc that keeps only the workspace (here v1) loses v2's model, and
    # `dvc checkout` says so: the check above would catch a gc that deletes too much.
    call(["dvc", "gc", "--workspace", "--force"], project)
    call(["git", "checkout", "-q", "main"], project)
    lost = call(["dvc", "checkout"], project, check=False)
    assert lost.returncode != 0 and "missing" in (lost.stdout + lost.stderr).lower(), lost


# --- failures ----------------------------------------------------------------------------

def test_push_interrupted_by_server_stop_then_resumed(history, team, s3):
    """The server goes away after 3 objects: push fails clearly, nothing local is lost."""
    server = S3Server()  # a server of its own to stop; moto's buckets live in this process
    server.start()
    try:
        endpoint = S3(server.endpoint, s3.key_id, s3.secret)
        endpoint.use(team.author)
        before = fingerprint(team.author), cache_fingerprint(team.author)

        server.gate.close_after(3)
        push = subprocess.Popen(["dvc", "push", "-r", "storage"], cwd=team.author,
                                env=s3.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            assert server.gate.wait_until_holding(timeout=120), "push never reached upload 4"
            server.stop()
            output, _ = push.communicate(timeout=120)
        finally:
            push.kill()
        assert push.returncode != 0, output
        assert re.search(r"^ERROR: .*Could not connect to the endpoint URL", output,
                         re.MULTILINE), output
        assert len(s3.keys()) == 3  # s3 still reaches moto's state through the module server
        assert (fingerprint(team.author), cache_fingerprint(team.author)) == before

        server.start()  # same port
        resumed = call(["dvc", "push", "-r", "storage"], team.author, s3.env).stdout
        assert re.search(r"\d+ files? pushed", resumed), resumed
        assert (fingerprint(team.author), cache_fingerprint(team.author)) == before
        assert json.loads(call(["dvc", "status", "--cloud", "-r", "storage", "--json"],
                               team.author, s3.env).stdout) == {}

        clone = team.clone("clone")
        endpoint.use(clone)
        call(["dvc", "pull", "-r", "storage"], clone, s3.env)
        assert_clone_restored(clone, history.v2, s3.env)
    finally:
        server.stop()


def closed_port() -> tuple[socket.socket, int]:
    """A loopback port with a bound socket that never listens: connections are refused."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock, sock.getsockname()[1]


BROKEN_REMOTES = {
    # case: (remote url, credentials, message DVC prints)
    "wrong secret key": (S3_URL, {"AWS_SECRET_ACCESS_KEY": "wrong/secret"}, r"Forbidden|403"),
    "unknown access key": (S3_URL, {"AWS_ACCESS_KEY_ID": "no-such-key-id"}, r"Forbidden|403"),
    "missing bucket": ("s3://no-such-bucket/store", {}, r"bucket does not exist"),
    "unreachable endpoint": (S3_URL, {}, r"Could not connect to the endpoint URL"),
}


@pytest.mark.parametrize("case", list(BROKEN_REMOTES))
def test_remote_errors_are_clear_and_quick(team, s3, case):
    url, credentials, message = BROKEN_REMOTES[case]
    project = team.author
    call(["dvc", "remote", "add", "--local", "broken", url], project)
    call(["dvc", "remote", "modify", "--local", "broken", "connect_timeout", "5"], project)
    listener, port = closed_port()
    with listener:
        endpoint = f"http://127.0.0.1:{port}" if case == "unreachable endpoint" else s3.endpoint
        call(["dvc", "remote", "modify", "--local", "broken", "endpointurl", endpoint], project)
        started = time.monotonic()
        push = call(["dvc", "push", "-r", "broken"], project, {**s3.env, **credentials},
                    check=False, timeout=60)
        elapsed = time.monotonic() - started
    output = push.stdout + push.stderr
    assert push.returncode != 0, output
    assert re.search(f"^ERROR: .*({message})", output, re.MULTILINE), output
    assert elapsed < 30, f"{case}: {elapsed:.0f} s"
    assert s3.keys() == []  # nothing reached the real bucket
