"""Helpers for tests/test_remote.py: run dvc and git hermetically, hash what DVC restores,
build the trained project with two data versions, and give each test its own copy."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import boto3
import pandas as pd
from botocore.config import Config

from harness import GIT_IDENTITY, NOT_COPIED, REPO, set_params
from conftest import toy_reviews

# What a pull or a checkout must restore byte for byte.
OUTPUTS = ("data/v.csv", "data/prepared", "data/resampled", "models/classifier", "metrics")
ARTIFACT = "text-classifier"  # dvc.yaml `artifacts:`
BUCKET = "textclf"
S3_URL = f"s3://{BUCKET}/store"  # the committed url of the `storage` remote
REGION = "us-east-1"


# --- running commands --------------------------------------------------------------------

ISOLATION: dict[str, str] = {}  # environment variables set by `isolate`


def isolate(folder: Path) -> None:
    """Keep this machine's AWS and DVC user/system settings out of every subprocess."""
    for variable, name in (("AWS_CONFIG_FILE", "aws-config"),
                           ("AWS_SHARED_CREDENTIALS_FILE", "aws-credentials")):
        (folder / name).write_text("")  # dvc-s3 insists that a named file exists
        ISOLATION[variable] = str(folder / name)
    for variable, name in (("DVC_GLOBAL_CONFIG_DIR", "dvc-global"),
                           ("DVC_SYSTEM_CONFIG_DIR", "dvc-system"),
                           ("DVC_SITE_CACHE_DIR", "dvc-site-cache")):
        (folder / name).mkdir()
        ISOLATION[variable] = str(folder / name)


def base_env() -> dict[str, str]:
    """The environment of every subprocess: no AWS settings or proxies from this machine."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AWS_")
           and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(GIT_IDENTITY)
    env.update(ISOLATION)
    env.update(DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="1",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               AWS_EC2_METADATA_DISABLED="true",  # never ask 169.254.169.254 for credentials
               AWS_DEFAULT_REGION=REGION,
               # one retry: a stopped server fails a push in seconds, not minutes (docs/troubleshooting.md)
               AWS_MAX_ATTEMPTS="2", AWS_RETRY_MODE="standard")
    return env


def call(cmd: list, cwd: Path, env: dict | None = None, check: bool = True,
         timeout: float = 240) -> subprocess.CompletedProcess:
    """Run `cmd` in `cwd`; fail the test with its output if it fails (and `check`)."""
    result = subprocess.run([str(part) for part in cmd], cwd=cwd, env=env or base_env(),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def assert_nothing_to_run(project: Path, env: dict | None = None) -> None:
    assert json.loads(call(["dvc", "status", "--json"], project, env).stdout) == {}
    repro = call(["dvc", "repro"], project, env).stdout
    assert "Running stage" not in repro and "is cached" not in repro, repro
    assert "Data and pipelines are up to date." in repro, repro


# --- hashing -----------------------------------------------------------------------------

def fingerprint(root: Path, paths: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """sha256 of every file under `paths` (relative to `root`), by posix path."""
    digests = {}
    for rel in paths:
        top = root / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            digests[path.relative_to(root).as_posix()] = digest
    return digests


def cache_fingerprint(project: Path) -> dict[str, str]:
    return fingerprint(project / ".dvc" / "cache", ("files",))


def only(digests: dict[str, str], prefix: str) -> dict[str, str]:
    return {path: digest for path, digest in digests.items() if path.startswith(prefix)}


# --- the trained project, its history, and each test's copy ------------------------------

@dataclass
class History:
    project: Path
    v1: dict[str, str]  # fingerprint at tag text-classifier@v1.0.0 (data v1)
    v2: dict[str, str]  # fingerprint at main = tag text-classifier@v2.0.0 (data v2)


def commit_all(project: Path, message: str, version: str | None = None) -> None:
    call(["git", "add", "-A"], project)
    call(["git", "commit", "-qm", message], project)
    if version:
        # the annotated git tag text-classifier@<version> that `dvc artifacts get` reads
        call(["gto", "register", ARTIFACT, "--version", version], project)


def build_history(project: Path, tiny_model_dir: Path) -> History:
    """The project trained on data/v.csv (tracked by `dvc add`), then on 30 more rows."""
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(*NOT_COPIED))
    call(["git", "init", "-q", "-b", "main"], project)
    # 40 reviews per class: what is pushed and pulled does not depend on the size, and
    # each `dvc repro` here then takes seconds.
    reviews = pd.read_csv(project / "data/reviews.csv")
    reviews.groupby("label", sort=False).head(40).to_csv(project / "data/v.csv", index=False)
    call(["dvc", "add", "data/v.csv"], project)
    set_params(project, data={"path": "data/v.csv"},
               model={"name": str(tiny_model_dir)}, train={"epochs": 1})
    call(["dvc", "remote", "add", "storage", S3_URL], project)  # no endpoint, no keys
    commit_all(project, "data v1 tracked by dvc add; tiny model; S3 remote")
    call(["dvc", "repro"], project)
    commit_all(project, "trained on data v1", version="v1.0.0")
    v1 = fingerprint(project)

    toy_reviews(per_class=6).to_csv(project / "data/v.csv", mode="a", header=False,
                                    index=False, lineterminator="\r\n")
    call(["dvc", "add", "data/v.csv"], project)
    call(["dvc", "repro"], project)
    commit_all(project, "trained on data v2", version="v2.0.0")
    v2 = fingerprint(project)
    assert "models/classifier/model.safetensors" in v1 and "metrics/evaluate/metrics.json" in v1
    assert set(v1) == set(v2)
    return History(project, v1, v2)


@dataclass
class Team:
    """An author's copy of the trained project, its git origin, and room for clones."""
    root: Path
    author: Path
    origin: Path

    @classmethod
    def start(cls, history: History, root: Path) -> Team:
        author, origin = root / "author", root / "origin.git"
        shutil.copytree(history.project, author, symlinks=True)
        call(["git", "init", "-q", "--bare", "-b", "main", origin], root)
        call(["git", "remote", "add", "origin", origin], author)
        call(["git", "push", "-q", "origin", "main", "--tags"], author)
        return cls(root, author, origin)

    @property
    def storage(self) -> Path:
        """The committed folder remote, ../../textclf-storage from .dvc/: beside the repo."""
        return self.root / "textclf-storage"

    def clone(self, name: str) -> Path:
        # beside the author's copy, so that both see the same folder remote
        call(["git", "clone", "-q", self.origin, self.root / name], self.root)
        return self.root / name

    def pin_storage(self, project: Path) -> None:
        """README: give the folder remote an absolute path in .dvc/config.local.

        DVC reads an older commit's remote from that commit's config and resolves a
        relative url against the root of the git tree: for `--all-tags`, `--all-commits`
        or `dvc exp push`, `../../textclf-storage` would be `/textclf-storage`.
        """
        call(["dvc", "remote", "modify", "--local", "local", "url", self.storage], project)


# --- S3 ----------------------------------------------------------------------------------

@dataclass
class S3:
    endpoint: str
    key_id: str
    secret: str

    @classmethod
    def new_user(cls, endpoint: str) -> S3:
        """An IAM user allowed s3:*, created while moto does not check signatures."""
        iam = cls(endpoint, "admin", "admin").client("iam")
        iam.create_user(UserName="dvc")
        policy = iam.create_policy(PolicyName="s3-all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        iam.attach_user_policy(UserName="dvc", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        return cls(endpoint, key["AccessKeyId"], key["SecretAccessKey"])

    @property
    def env(self) -> dict[str, str]:
        return {**base_env(), "AWS_ACCESS_KEY_ID": self.key_id,
                "AWS_SECRET_ACCESS_KEY": self.secret}

    def client(self, service: str = "s3"):
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                            config=Config(proxies={}))  # loopback only, whatever the env says

    def keys(self, bucket: str = BUCKET) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def use(self, project: Path, remote: str = "storage") -> None:
        """Per-user setting, never committed: where this S3-compatible server is."""
        call(["dvc", "remote", "modify", "--local", remote, "endpointurl", self.endpoint],
             project)
