"""No credential reaches a compiled sweep: every class of secret given to `textclf kfp compile`
(DVC's secret-holding remote options of each remote type, a look-alike option DVC does not
know, a url with a password or a signature, a connection string's key) is refused naming the
flag, without echoing the value and without writing a YAML; settings that only look like
secrets (`ask_password=true`, a key file's path) compile, and the YAML scans clean."""

from __future__ import annotations

import re

import pytest

from credential_scan import credential_findings
from textclf.sweeps.remote_settings import NOT_SECRET, SECRET_OPTIONS, secret_option

pytest.importorskip("kfp", reason="the kfp extra is not installed")

PLANTED = "kfpPl4nted" + "Cred3ntialValue0123456789xyz"     # built at run time: none in git


def compile_sweep(tmp_path, *flags: str) -> tuple[int, str]:
    """(exit code, the YAML or '') of `textclf kfp compile` with these flags."""
    from textclf import kfp_sweep

    out = tmp_path / "sweep.yaml"
    try:
        kfp_sweep.main(["compile", "-o", str(out), "--image", "registry.example/textclf:1",
                        "--repo", "https://git.example/team/textclf.git", "--rev", "a" * 40,
                        "--remote", "s3://bucket/store", "-S", "train.batch_size=16,32",
                        *flags])
        code = 0
    except SystemExit as stop:
        code = stop.code
    return code, out.read_text() if out.exists() else ""


def refused(tmp_path, capsys, *flags: str) -> str:
    code, text = compile_sweep(tmp_path, *flags)
    error = capsys.readouterr().err
    assert code == 2 and text == "", (code, error)
    assert PLANTED not in error, error                         # the value is never echoed
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in error, error
    return error


SECRET_SETTINGS = sorted({option for options in SECRET_OPTIONS.values() for option in options})


@pytest.mark.parametrize("option", SECRET_SETTINGS)
def test_every_secret_option_of_every_remote_type_is_refused(tmp_path, capsys, option):
    error = refused(tmp_path, capsys, "--remote-config", f"{option}={PLANTED}")
    assert error.startswith(f"error: --remote-config {option}: "), error
    assert "--secret" in error


@pytest.mark.parametrize("option", ["api_token", "client_password", "private_key_secret"])
def test_an_option_dvc_does_not_know_that_looks_like_a_secret_is_refused(tmp_path, capsys,
                                                                         option):
    error = refused(tmp_path, capsys, "--remote-config", f"{option}={PLANTED}")
    assert error.startswith(f"error: --remote-config {option}: "), error


@pytest.mark.parametrize("setting, found", [
    (f"endpointurl=http://user:{PLANTED}@minio.internal:9000", "a url with a password"),
    (f"url=webdavs://me:{PLANTED}@dav.example/store", "a url with a password"),
    (f"url=https://acct.blob.core.windows.net/c?sv=2022-11-02&sig={PLANTED}", "sig="),
    (f"endpointurl=https://s3.example/?X-Amz-Signature={PLANTED}", "X-Amz-Signature="),
    (f"account_name=acct;AccountKey={PLANTED}", "AccountKey="),
    (f"url=BlobEndpoint=https://a.example;SharedAccessSignature=sv=1&sig={PLANTED}",
     "SharedAccessSignature="),
])
def test_a_credential_inside_a_harmless_option_is_refused(tmp_path, capsys, setting, found):
    option = setting.partition("=")[0]
    error = refused(tmp_path, capsys, "--remote-config", setting)
    assert error.startswith(f"error: --remote-config {option}: the value is "), error
    assert found in error, error


@pytest.mark.parametrize("flag, url", [
    ("--repo", f"https://me:{PLANTED}@git.example/t.git"),
    ("--remote", f"s3://key:{PLANTED}@bucket/store"),
    ("--remote", f"https://dav.example/store?access_token={PLANTED}"),
])
def test_urls_with_credentials_are_refused(tmp_path, capsys, flag, url):
    error = refused(tmp_path, capsys, flag, url)
    assert error.startswith(f"error: {flag}: the url is "), error


def test_malformed_settings_are_refused_without_echoing_them(tmp_path, capsys):
    for setting in (PLANTED, f"={PLANTED}"):
        error = refused(tmp_path, capsys, "--remote-config", setting)
        assert error.startswith("error: --remote-config: expected KEY=VALUE"), error


HARMLESS = ["ask_password=true", "ask_passphrase=true", "endpointurl=http://minio.internal:9000",
            "sse_kms_key_id=arn:aws:kms:us-east-1:111122223333:key/abcd",
            "keyfile=/var/run/secrets/ssh/id_ed25519", "credentialpath=/etc/dvc/aws-credentials",
            "custom_auth_header=X-Auth", "auth=basic", "account_name=mystorage",
            "region=eu-west-1", "exclude_shared_token_cache_credential=true",
            "bearer_token_command=cat /var/run/secrets/token", "use_ssl=false"]


def test_settings_that_only_look_like_secrets_compile_and_the_yaml_scans_clean(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED)      # in the env: never in the YAML
    flags = [arg for setting in HARMLESS for arg in ("--remote-config", setting)]
    code, text = compile_sweep(tmp_path, *flags, "--secret", "textclf-dvc")
    assert code == 0, capsys.readouterr().err
    for setting in HARMLESS:
        assert setting in text, setting
    assert PLANTED not in text and credential_findings(text) == []


# --- the list against DVC's own schema -------------------------------------------------------

# Wider than remote_settings.SECRET_LOOKING on purpose: a name this matches must be classified.
LOOKS_SECRET = re.compile(r"secret|pass|pwd|token|key|cred|sig|auth|cert|ticket|private|sas|"
                          r"connection_str|bearer", re.IGNORECASE)


def dvc_remote_options() -> dict[str, set[str]]:
    """{remote type: option names} from DVC's config schema (voluptuous markers unwrapped)."""
    from dvc.config_schema import REMOTE_SCHEMAS

    return {scheme: {str(getattr(key, "schema", key)) for key in schema
                     if isinstance(getattr(key, "schema", key), str)}
            for scheme, schema in REMOTE_SCHEMAS.items() if isinstance(schema, dict)}


def test_every_secret_looking_dvc_option_is_classified():
    """Fails when DVC grows a remote option that looks like a secret and is in neither list:
    then decide which it is (SECRET_OPTIONS or NOT_SECRET in textclf/sweeps/remote_settings)."""
    unclassified = sorted(
        f"{scheme}.{option}" for scheme, options in dvc_remote_options().items()
        for option in options if LOOKS_SECRET.search(option)
        and option not in SECRET_OPTIONS.get(scheme, ()) and option not in NOT_SECRET)
    assert unclassified == []


def test_the_lists_name_options_dvc_has_and_decide_as_they_say():
    options = dvc_remote_options()
    for scheme, secrets in SECRET_OPTIONS.items():
        assert secrets <= options[scheme], (scheme, secrets - options[scheme])
        assert all(secret_option(option) for option in secrets)
    known = set().union(*options.values())
    assert NOT_SECRET <= known, NOT_SECRET - known
    assert not any(secret_option(option) for option in NOT_SECRET)
    # every option DVC has that is in neither list is treated as harmless
    for option in known - NOT_SECRET - set().union(*SECRET_OPTIONS.values()):
        assert not secret_option(option), option
