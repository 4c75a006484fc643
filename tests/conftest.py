"""Shared fixtures: where the real images are, and the shipped model; databases (tests/dbfixtures.py)
and an app's settings (tests/appfixtures.py) for every test.

A test or fixture that finds Redis or PostgreSQL unreachable (brainscan.testing raises
BackendUnavailable) is skipped saying so, except under CI=true, where it fails.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Generator
from pathlib import Path
from types import ModuleType

import pytest

from brainscan.testing import BackendUnavailable

pytest_plugins = ["tests.dbfixtures", "tests.appfixtures"]

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHIPPED_MODEL = REPO / "models" / "brainscan.keras"
# the model shipped before lgg-flair was in the training data (2026-12-02): a real model and a real
# source it never saw, for the tests of score shift and site calibration
UNSEEN_LGG_MODEL = REPO / "tests" / "models" / "trained-without-lgg-flair.keras"


def find_shared_data() -> Path | None:
    """The real MRI images: BRAINSCAN_SHARED_DATA, else ../shared/data beside the checkout."""
    candidates = [
        os.environ.get("BRAINSCAN_SHARED_DATA", ""),
        str(REPO.parent / "shared" / "data"),
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "seed-253").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips with a reason where absent, fails under CI."""
    found = find_shared_data()
    if found is None:
        message = "real MRI images not found: put them at ../shared/data or set BRAINSCAN_SHARED_DATA"
        if IN_CI:
            pytest.fail(message + " (CI must run the data tests)")
        pytest.skip(message)
    return found


@pytest.fixture(scope="session")
def lgg_flair(shared_data: Path) -> Path:
    """The lgg-flair slices (the DICOM test archive is made from them)."""
    source = shared_data / "lgg-flair"
    if not source.is_dir():
        message = f"lgg-flair slices not found under {shared_data}"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    return source


def load_bench(name: str) -> ModuleType:
    """A script of bench/ as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shipped_model() -> Path:
    """The model in models/, which every scoring test uses."""
    if not SHIPPED_MODEL.is_file():
        pytest.fail(f"the shipped model is missing: {SHIPPED_MODEL}")
    return SHIPPED_MODEL


def _skip_or_fail_without_backend() -> Generator[None, None, None]:
    try:
        yield
    except BackendUnavailable as exc:
        if IN_CI:
            pytest.fail(f"{exc} (CI must run the tests that need it)")
        pytest.skip(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    yield from _skip_or_fail_without_backend()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    yield from _skip_or_fail_without_backend()
