"""docs/configuration.md: generated from the settings' own descriptions, and never stale.

`scripts/make_config_docs.py` is loaded with runpy (no sys.path edits), as
tests/configs/test_kuberay.py loads make_kuberay.py.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bgremove.batch_settings import BatchSettings
from deployments.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
MAKE_CONFIG_DOCS = ROOT / "scripts" / "make_config_docs.py"
PAGE = ROOT / "docs" / "configuration.md"


@pytest.fixture(scope="module")
def make_config_docs() -> dict[str, Any]:
    """scripts/make_config_docs.py's functions, loaded without putting scripts/ on sys.path."""
    return runpy.run_path(str(MAKE_CONFIG_DOCS), run_name="make_config_docs")


def test_page_is_generated_from_the_settings(make_config_docs: dict[str, Any]) -> None:
    assert PAGE.read_text(encoding="utf-8") == make_config_docs["render"](), (
        "docs/configuration.md is stale: run .venv/bin/python scripts/make_config_docs.py"
    )
    assert make_config_docs["main"](["--check"]) == 0


def test_check_finds_a_stale_page_and_the_script_fixes_it(
    make_config_docs: dict[str, Any], tmp_path: Path
) -> None:
    current = PAGE.read_text(encoding="utf-8")
    stale = current.replace("Primary model for masks.", "The model.", 1)
    assert stale != current
    copy_path = tmp_path / "configuration.md"
    copy_path.write_text(stale, encoding="utf-8")
    assert make_config_docs["main"](["--check", "--output", str(copy_path)]) == 1
    assert copy_path.read_text(encoding="utf-8") == stale, "--check must not write"
    assert make_config_docs["main"](["--output", str(copy_path)]) == 0
    assert copy_path.read_text(encoding="utf-8") == current


@pytest.mark.parametrize("settings_cls", [ServiceSettings, BatchSettings], ids=lambda c: c.__name__)
def test_every_setting_has_a_row_with_its_description(settings_cls: type[BaseSettings]) -> None:
    page = PAGE.read_text(encoding="utf-8")
    for name, info in settings_cls.model_fields.items():
        rows = [line for line in page.splitlines() if line.startswith(f"| `{name}` |")]
        assert rows, f"{settings_cls.__name__}.{name} has no row"
        # the page's meaning is the code's: every field says what it is where it is defined
        assert info.description, f"{settings_cls.__name__}.{name}: Field(description=...)"
        wanted = " ".join(info.description.split()).replace("|", "\\|")
        assert any(wanted in row for row in rows), f"{name}: description missing"


def test_variables_are_the_ones_the_settings_read(
    make_config_docs: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    """The table's variable names are what pydantic-settings really reads: the prefixed
    name, or the alias choices instead of it (`U2NET_HOME`, the `AWS_*` names)."""
    env_names = make_config_docs["env_names"]
    fields = ServiceSettings.model_fields
    assert env_names("rmbg_repo", fields["rmbg_repo"], "BG_REMOVAL_") == ["BG_REMOVAL_RMBG_REPO"]
    assert env_names("u2net_home", fields["u2net_home"], "BG_REMOVAL_") == ["U2NET_HOME"]
    batch = BatchSettings.model_fields
    assert env_names("s3_region", batch["s3_region"], "BG_REMOVAL_BATCH_") == [
        "BG_REMOVAL_BATCH_S3_REGION",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ]
    clean_env.setenv("BG_REMOVAL_RMBG_REPO", "org/weights")
    clean_env.setenv("U2NET_HOME", "/models/u2net")
    clean_env.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    clean_env.delenv("AWS_REGION", raising=False)
    clean_env.delenv("BG_REMOVAL_BATCH_S3_REGION", raising=False)
    settings = ServiceSettings(env_file="")
    assert (settings.rmbg_repo, settings.u2net_home) == ("org/weights", "/models/u2net")
    assert BatchSettings(_env_file=None).s3_region == "eu-west-3"


def test_documented_precedence_holds(
    make_config_docs: dict[str, Any], clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The page says: config args, then the environment, then the .env file, then defaults."""
    header = make_config_docs["HEADER"]
    steps = ["1. the `args:` block", "2. real environment variables", "3. the `.env` file"]
    assert all(step in header for step in steps)
    assert [header.index(step) for step in steps] == sorted(header.index(s) for s in steps)

    env_file = tmp_path / ".env"
    env_file.write_text(
        "BG_REMOVAL_RMBG_REPO=file/repo\n"
        "BG_REMOVAL_RMBG_REVISION=file-rev\n"
        "BG_REMOVAL_RMBG_ARCH=birefnet-lite\n",
        encoding="utf-8",
    )
    clean_env.setenv("BG_REMOVAL_RMBG_REPO", "env/repo")
    clean_env.setenv("BG_REMOVAL_RMBG_REVISION", "env-rev")
    settings = ServiceSettings.load(env_file=str(env_file), rmbg_repo="args/repo")
    assert settings.rmbg_repo == "args/repo"  # args win over the environment
    assert settings.rmbg_revision == "env-rev"  # the environment over the file
    assert settings.rmbg_arch == "birefnet-lite"  # the file over the default
    assert settings.rmbg_resolution == 1024  # the default


class _BaseGroup(BaseSettings):
    """A lower settings class, as fields moved into a base module would be."""

    threads: int | None = Field(None, ge=1, description="Threads | per replica.")


class _Derived(_BaseGroup):
    model_config = SettingsConfigDict(env_prefix="X_")

    mode: Literal["fast", "exact"] = Field("fast", description="How to resize.")
    keys: list[str] = Field(default_factory=list)


def test_table_covers_inherited_fields_and_reads_types(make_config_docs: dict[str, Any]) -> None:
    table = make_config_docs["settings_table"](_Derived, "X_")
    lines = table.splitlines()
    assert lines[0] == "| setting | environment variable | type | default | meaning |"
    assert lines[2] == (
        "| `threads` | `X_THREADS` | integer or none (>= 1) | none | Threads \\| per replica. |"
    )
    assert lines[3] == "| `mode` | `X_MODE` | `fast`, `exact` | `fast` | How to resize. |"
    assert lines[4] == "| `keys` | `X_KEYS` | comma-separated list | empty |  |"


def test_no_setting_has_a_blank_meaning() -> None:
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    rows = [line for line in lines if line.startswith("| `")]
    blank = [row.split(" | ")[0][2:] for row in rows if not row.split(" | ")[-1].strip(" |")]
    assert blank == [], f"settings without a description (add Field(description=...)): {blank}"
