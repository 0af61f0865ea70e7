"""Find credential-like text in the files git tracks (tests/test_remote.py runs it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

CREDENTIAL_PATTERNS = {
    "AWS access key id": re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # `key = value`, `key: value`, `"key": "value"`, `KEY=value`, `dvc remote modify ... key value`
    "secret assignment": re.compile(
        r"(?<![A-Za-z0-9])(aws_secret_access_key|secret_access_key|session_token|password|"
        r"passwd|token|secret)[\"']?\s*(?:=|:|\s)\s*[\"']?(?P<value>[^\s\"'#,;]+)",
        re.IGNORECASE),
}
# Values that name a secret instead of holding one: <your-key>, ${VAR}, example, null, ...
PLACEHOLDER = re.compile(r"^[<$%{*(\[]|example|dummy|placeholder|changeme|your|redacted|"
                         r"secret|xxxx|\.\.\.|^(none|null|true|false)$", re.IGNORECASE)


def looks_real(value: str) -> bool:
    """A value that could be a real secret: long, letters and digits, not a placeholder."""
    if PLACEHOLDER.search(value) or len(value) < 8:
        return False
    return len(value) >= 20 or (re.search(r"[A-Za-z]", value) is not None
                                and re.search(r"\d", value) is not None)


def credential_findings(text: str) -> list[str]:
    """`line: kind: text` for every credential-like line of `text`."""
    found = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for kind, pattern in CREDENTIAL_PATTERNS.items():
            for match in pattern.finditer(line):
                if "value" in pattern.groupindex and not looks_real(match["value"]):
                    continue
                found.append(f"{lineno}: {kind}: {line.strip()[:120]}")
    return found


def scan_tracked_files(repo: Path) -> list[str]:
    """`path:line: kind: text` for every credential-like line in a file git tracks."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=repo, capture_output=True,
                            check=True)
    found = []
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = repo / name
        if not path.is_file():
            continue  # deleted in the work tree
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary
        text = data.decode("utf-8", "replace")
        found += [f"{name}:{hit}" for hit in credential_findings(text)]
    return found
