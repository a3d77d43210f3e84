"""The distribution: `python -m build` gives an sdist and a wheel without warnings, that pass
`twine check --strict`, carry websocket.js (with its ES module form and TypeScript
declarations) and py.typed, and nothing from the repository's
tests, demo project or benchmarks.

Built with --no-isolation (the virtualenv's setuptools, pinned in requirements.txt), so the
test needs no network. The sdist is built first and the wheel from the unpacked sdist, as a
release would be: the wheel can only carry what the sdist does.
"""

import email
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = "django-websocket-views"
VERSION = "0.1.0"
# The repository's TypeScript tooling (make typecheck) is not part of the distribution either.
STRAY = (
    "tests/",
    "test_project/",
    "bench/",
    "docs/",
    "scripts/",
    "node_modules/",
    "package.json",
    "package-lock.json",
)
#: The browser client: the classic script, the ES module, the declarations of each.
CLIENT = tuple(
    f"django_websocket/static/django_websocket/{name}"
    for name in ("websocket.js", "websocket.esm.js", "websocket.d.ts", "websocket.esm.d.ts")
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_distributions(tmp_path_factory.mktemp("dist"))


def build_distributions(outdir: Path) -> tuple[str, Path, Path]:
    """Build the sdist, then the wheel from it, into *outdir*; return (build output, wheel, sdist).

    Fails the calling test (with the output) if the build fails. tests/test_install.py
    installs the wheel built here.
    """
    env = dict(os.environ)
    # With PYTHONDONTWRITEBYTECODE set, distutils warns that byte-compiling is disabled: a
    # property of this environment, not of the package.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(ROOT)],
        cwd=outdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    (wheel,) = outdir.glob("*.whl")
    (sdist,) = outdir.glob("*.tar.gz")
    return output, wheel, sdist


def test_build_prints_no_warnings(built):
    output, _, _ = built
    warnings = [line for line in output.splitlines() if "warning" in line.lower()]
    assert warnings == [], "\n".join(warnings)


def test_twine_check_strict(built):
    _, wheel, sdist = built
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_contents(built):
    _, wheel, _ = built
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "django_websocket/__init__.py",
        "django_websocket/py.typed",
        *CLIENT,
        "django_websocket/management/commands/runwebsocket.py",
        "django_websocket/management/commands/websocket_publish.py",
        "django_websocket/templatetags/websockets.py",
    ):
        assert required in names
    dist_info = f"{NAME.replace('-', '_')}-{VERSION}.dist-info/"
    assert f"{dist_info}licenses/LICENSE" in names
    stray = [n for n in names if not n.startswith(("django_websocket/", dist_info))]
    assert stray == []
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]


def test_wheel_metadata(built):
    _, wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        (path,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(zf.read(path))
    assert metadata["Name"] == NAME
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.10"
    classifiers = metadata.get_all("Classifier")
    for django in ("5.2", "6.0", "6.1"):
        assert f"Framework :: Django :: {django}" in classifiers
    for python in ("3.10", "3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {python}" in classifiers
    assert "Framework :: Django :: 4.2" not in classifiers
    assert metadata.get_payload().lstrip().startswith("# django_websocket")


def test_sdist_contents(built):
    _, _, sdist = built
    top = f"{NAME.replace('-', '_')}-{VERSION}/"
    with tarfile.open(sdist) as tf:
        names = [n.removeprefix(top) for n in tf.getnames()]
    for required in (
        "README.md",
        "CHANGELOG.md",
        "setup.cfg",
        "pyproject.toml",
        *CLIENT,
    ):
        assert required in names
    assert not [n for n in names if n.startswith(STRAY)]
