"""The `.env` file of the migration guide: found, read strictly, and below the environment."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bgremove.batch_settings import BatchSettings
from bgremove.errors import SetupError
from bgremove.settings import cli_settings
from deployments.settings import ServiceSettings, SettingsFileError


@pytest.fixture
def env_file(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Path:
    """A .env in a fresh current directory, found the default way (no variable set; what
    the environment sets would win over the file)."""
    clean_env.chdir(tmp_path)
    return tmp_path / ".env"


def test_the_guides_env_file_in_the_current_directory(env_file: Path) -> None:
    env_file.write_text(
        "# roll back to U2-Net\n"
        "BG_REMOVAL_MODEL=u2net\n"
        "export BG_REMOVAL_FALLBACK=false\n"
        "BG_REMOVAL_DEVICE='cpu'\n"
        'BG_REMOVAL_U2NET_AUTOSCALING={"min_replicas": 1, "max_replicas": 3}\n'
        "BG_REMOVAL_API_KEYS=one, two\n"
        "U2NET_HOME=/models/u2net\n"
    )
    settings = ServiceSettings.load()
    assert (settings.model, settings.fallback, settings.device) == ("u2net", False, "cpu")
    assert settings.u2net_autoscaling == {"min_replicas": 1, "max_replicas": 3}
    assert [key.get_secret_value() for key in settings.api_keys] == ["one", "two"]
    assert settings.u2net_home == "/models/u2net"
    assert settings.env_file == str(env_file.resolve())


def test_environment_wins_over_the_file_and_args_over_both(
    env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file.write_text("BG_REMOVAL_MODEL=u2net\nBG_REMOVAL_FALLBACK=false\n")
    monkeypatch.setenv("BG_REMOVAL_MODEL", "rmbg-2.0")
    settings = ServiceSettings.load()
    assert (settings.model, settings.fallback) == ("rmbg-2.0", False)
    assert ServiceSettings.load(model="u2net", fallback=True).fallback is True
    assert ServiceSettings.load(model="u2net").model == "u2net"


def test_a_named_file_and_an_empty_name(env_file: Path, tmp_path: Path) -> None:
    env_file.write_text("BG_REMOVAL_MODEL=u2net\n")
    deployed = tmp_path / "deploy" / "service.env"
    deployed.parent.mkdir()
    deployed.write_text("BG_REMOVAL_FALLBACK=false\n")
    named = ServiceSettings.load(environ={"BG_REMOVAL_ENV_FILE": str(deployed)})
    assert (named.model, named.fallback, named.env_file) == ("rmbg-2.0", False, str(deployed))
    none = ServiceSettings.load(environ={"BG_REMOVAL_ENV_FILE": ""})
    assert (none.model, none.env_file) == ("rmbg-2.0", "")
    with pytest.raises(SettingsFileError, match=r"BG_REMOVAL_ENV_FILE=.*missing\.env: no such"):
        ServiceSettings.load(environ={"BG_REMOVAL_ENV_FILE": str(tmp_path / "missing.env")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("BG_REMOVAL_MODEL=u2net\nthis is not a setting\n", r":2: cannot read 'this is not"),
        ("BG_REMOVAL_MODLE=u2net\n", r":1: BG_REMOVAL_MODLE is not a setting; did you mean "),
        ("\n\nBG_REMOVAL_FALLBACK\n", r":3: BG_REMOVAL_FALLBACK has no value"),
        ("BG_REMOVAL_MODEL='u2net\n", r":1: cannot read"),
    ],
)
def test_a_bad_line_is_an_error_naming_file_and_line(
    env_file: Path, text: str, message: str
) -> None:
    env_file.write_text(text)
    with pytest.raises(SettingsFileError, match=str(env_file.resolve()) + message):
        ServiceSettings.load()


def test_a_bad_value_fails_like_a_bad_variable(env_file: Path) -> None:
    env_file.write_text("BG_REMOVAL_MODEL=u3net\n")
    with pytest.raises(ValueError, match="model"):
        ServiceSettings.load()


def test_other_names_are_left_alone_and_logged(
    env_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env_file.write_text(
        "HF_TOKEN=hf_secret\nBG_REMOVAL_BATCH_U2NET_ACTORS=4\nBG_REMOVAL_MODEL=u2net\n"
    )
    with caplog.at_level(logging.INFO, logger="deployments.settings"):
        settings = ServiceSettings.load()
    assert settings.model == "u2net"
    assert "read BG_REMOVAL_MODEL from" in caplog.text
    assert "HF_TOKEN not settings of this service" in caplog.text
    assert "hf_secret" not in caplog.text


def test_bgremove_reads_the_same_file(env_file: Path) -> None:
    env_file.write_text("BG_REMOVAL_MODEL=rmbg-2.0\nBG_REMOVAL_RMBG_THREADS=3\n")
    settings = cli_settings()
    assert (settings.model, settings.rmbg_threads) == ("rmbg-2.0", 3)
    env_file.write_text("BG_REMOVAL_NOPE=1\n")
    with pytest.raises(SetupError, match="BG_REMOVAL_NOPE is not a setting"):
        cli_settings()


def test_batch_jobs_read_their_lines_of_the_same_file(env_file: Path) -> None:
    env_file.write_text(
        "BG_REMOVAL_MODEL=u2net\nBG_REMOVAL_BATCH_U2NET_ACTORS=3\nBG_REMOVAL_BATCH_IO_BATCH_SIZE=8\n"
    )
    settings = BatchSettings.load(io_batch_size=2)
    assert (settings.u2net_actors, settings.io_batch_size) == (3, 2)  # flags win
    assert ServiceSettings.load().model == "u2net"  # the service skips the batch lines
    env_file.write_text("BG_REMOVAL_MODEL=u2net\n\nBG_REMOVAL_BATCH_U2NET_ACTRS=3\n")
    assert ServiceSettings.load().model == "u2net"
    with pytest.raises(SettingsFileError, match=r":3: BG_REMOVAL_BATCH_U2NET_ACTRS is not a"):
        BatchSettings.load()
