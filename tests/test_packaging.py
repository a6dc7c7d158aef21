"""Packaging: the wheel ships the policies; every package directory is listed; docs match the schema."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest


def test_every_package_dir_is_declared(repo: Path) -> None:
    config = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    found = {".".join(p.parent.relative_to(repo).parts) for p in (repo / "guardrail").rglob("__init__.py")} | {
        "guardrail.adapters",
        "guardrail.policies",
    }
    assert found == declared


@pytest.mark.slow
def test_wheel_contains_policies(tmp_path: Path, repo: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(repo),
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("guardrail_rewind-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "guardrail/policies/harmless.yaml" in names
    assert "guardrail/adapters/__init__.py" in names
    assert not any(name.startswith("tests/") for name in names)


def test_policy_reference_is_generated_from_schema(repo: Path) -> None:
    from guardrail.policy.docs import update_file

    assert update_file(repo / "docs" / "policies.md", check=True), "run: make docs"
