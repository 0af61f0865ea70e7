"""What may go into a compiled sweep: `--remote-config` settings and urls without credentials.

Everything a sweep is given lands in the pipeline YAML (as a parameter default and again in
the task's inputs), which people upload, share and keep. So a setting is refused when it
holds a credential; the credential goes into the Kubernetes secret (`--secret`), where the
remote's client reads it from the environment. Refused:

* DVC's own secret-holding remote options, per remote type (SECRET_OPTIONS);
* any other option whose name looks like one (a newer DVC's, a plugin's), unless it is
  listed as harmless (NOT_SECRET: `ask_password`, paths to key files, ...);
* any value that is a url with a password or a signed url (`?sig=...`), or that holds a
  connection string's credential part (`AccountKey=...`).

Messages name the option, never the value.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from textclf.errors import UserError

# DVC 3's remote options that hold a secret, from REMOTE_SCHEMAS in dvc/config_schema.py
# (tests/test_kfp_secrets.py fails when DVC's schema grows one that looks like a secret and
# is in neither list).
SECRET_OPTIONS: dict[str, frozenset[str]] = {
    "s3": frozenset({"access_key_id", "secret_access_key", "session_token",
                     "sse_customer_key"}),
    "azure": frozenset({"connection_string", "sas_token", "account_key", "client_secret"}),
    "oss": frozenset({"oss_key_id", "oss_key_secret"}),
    "gdrive": frozenset({"gdrive_client_secret"}),
    "ssh": frozenset({"password", "passphrase"}),
    "http": frozenset({"password"}),
    "https": frozenset({"password"}),
    "webdav": frozenset({"password", "token"}),
    "webdavs": frozenset({"password", "token"}),
    "webhdfs": frozenset({"password", "token"}),
}
ALL_SECRET_OPTIONS = frozenset().union(*SECRET_OPTIONS.values())
# Options whose names look like a secret's but hold a switch, a name, a path or a command.
NOT_SECRET = frozenset({
    "ask_password", "ask_passphrase",                    # switches: prompt for it
    "auth", "custom_auth_header", "gss_auth",            # an auth method, a header's name
    "sse_kms_key_id",                                    # which KMS key, not the key
    "keyfile", "key_path", "cert_path", "credentialpath", "kerb_ticket",   # paths in the pod
    "gdrive_user_credentials_file", "gdrive_service_account_json_file_path",
    "bearer_token_command",                              # a command that prints a token
    "exclude_environment_credential", "exclude_visual_studio_code_credential",
    "exclude_shared_token_cache_credential", "exclude_managed_identity_credential",
})
SECRET_LOOKING = re.compile(r"secret|passw|passphrase|pwd|token|key|credential|sig|auth|"
                            r"connection_string|ticket|cert", re.IGNORECASE)
# `Name=value` parts of a connection string: `...;AccountName=a;AccountKey=...`
STRING_PART = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=")
# Parts of connection strings and url query names that are secrets under other spellings.
SECRET_PARTS = re.compile(r"secret|passw|pwd|token|key$|accountkey|sharedaccess|signature|"
                          r"^sig$|credential", re.IGNORECASE)

HINT = ("put it in the Kubernetes secret instead (--secret NAME --secret-key VARIABLE: each "
        "key becomes an environment variable the remote's client reads)")


def secret_option(option: str) -> bool:
    """Whether a DVC remote option (of any remote type) holds a credential."""
    option = option.strip().lower()
    return option in ALL_SECRET_OPTIONS or (
        option not in NOT_SECRET and SECRET_LOOKING.search(option) is not None)


def secret_in_value(value: str) -> str:
    """What in a setting's value is a credential ('' if nothing): a url's password or
    signature, or a connection string's key."""
    if "://" in value:
        try:
            url = urlsplit(value.strip())
            password = url.password
        except ValueError:   # not a url after all (e.g. an unbalanced '[')
            url, password = None, None
        if password:
            return "a url with a password"
        # https://TOKEN@github.com/... is how a personal access token is pasted; an ssh
        # user (ssh://git@host/...) is not a credential.
        if url is not None and url.username and url.scheme.lower() in ("http", "https"):
            return "an http(s) url with a user name or token before the '@'"
        if url is not None:
            for name, _ in parse_qsl(url.query, keep_blank_values=True):
                if SECRET_PARTS.search(name):
                    return f"a url whose query carries {name}="
    for part in value.split(";"):
        found = STRING_PART.match(part)
        if found and SECRET_PARTS.search(found[1]):
            return f"a connection string with {found[1]}="
    return ""


def check_remote_settings(settings: list[str]) -> tuple[str, ...]:
    """`--remote-config KEY=VALUE` settings, refused (UserError) if one holds a credential."""
    for setting in settings:
        option, equals, value = setting.partition("=")
        if not equals or not option.strip():   # not echoed: it may be a pasted secret
            raise UserError("--remote-config: expected KEY=VALUE, e.g. "
                            "endpointurl=http://minio.internal:9000, found a setting "
                            + ("without a key" if equals else "without '='"))
        if secret_option(option):
            raise UserError(f"--remote-config {option.strip()}: this DVC remote option holds "
                            f"a credential, which would be written into the pipeline YAML; "
                            f"{HINT}")
        found = secret_in_value(value)
        if found:
            raise UserError(f"--remote-config {option.strip()}: the value is {found}, which "
                            f"would be written into the pipeline YAML; {HINT}")
    return tuple(settings)


def check_url(flag: str, url: str) -> str:
    """A --repo or --remote url, refused if it carries a credential."""
    found = secret_in_value(url) if "://" in url else ""
    if found:
        raise UserError(f"{flag}: the url is {found}, which would be written into the "
                        "pipeline YAML; give credentials as environment variables instead "
                        "(GIT_USERNAME / GIT_PASSWORD for git, the remote's own for DVC; "
                        "--secret on a cluster)")
    return url
