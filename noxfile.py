"""The supported-versions matrix: the whole test suite on every supported (Python, Django) pair.

    make test-matrix                 # every pair, oldest first
    make test-oldest                 # Django 5.2 on the oldest Python (CI runs it after make test)
    .venv/bin/nox -l                 # the sessions
    .venv/bin/nox -s "tests(python='3.12', django='6.0')" -- -k chat   # one pair, pytest args

Each session installs ``requirements.txt`` (the tested set, with markers for what an older
Python cannot install) and the package, then the Django release of its pair, and runs what
``make test`` runs: ``manage.py check``, the suite, then the database tests again on a
throwaway PostgreSQL cluster. ``make test`` itself is the newest pair, in ``.venv``.

Interpreters are found on PATH as ``python3.X``, and in pyenv's versions folder, whose shims
run only the versions pyenv has selected.
"""

import glob
import os

import nox

#: Django's feature releases we support and the release of each that the matrix installs.
DJANGO = {"5.2": "5.2.19", "6.0": "6.0.10", "6.1": "6.1.3"}

#: Every supported pair, oldest first: Django 5.2 LTS runs on Python 3.10-3.14, Django 6.0 and
#: 6.1 on 3.12-3.14 (3.14 is not on this machine yet).
PAIRS = [
    ("3.10", "5.2"),
    ("3.11", "5.2"),
    ("3.12", "5.2"),
    ("3.13", "5.2"),
    ("3.12", "6.0"),
    ("3.13", "6.0"),
    ("3.12", "6.1"),
    ("3.13", "6.1"),
]

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_existing_virtualenvs = True


def _add_pyenv_interpreters():
    """Put each pyenv-installed Python's bin folder first on PATH (before pyenv's shims)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    folders = sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin")), reverse=True)
    os.environ["PATH"] = os.pathsep.join([*folders, *os.environ.get("PATH", "").split(os.pathsep)])


_add_pyenv_interpreters()


@nox.session
@nox.parametrize(
    ("python", "django"),
    [
        nox.param(python, django, tags=["oldest"] if index == 0 else [])
        for index, (python, django) in enumerate(PAIRS)
    ],
)
def tests(session: nox.Session, django: str) -> None:
    """``manage.py check`` and the whole suite, SQLite then PostgreSQL, on one pair."""
    session.env["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    session.install("-r", "requirements.txt", "-e", ".")
    session.install(f"Django=={DJANGO[django]}")
    session.run("python", "-c", "import django, sys; print('Django', django.__version__, sys.version)")
    session.run("python", "-m", "django", "check", env={"DJANGO_SETTINGS_MODULE": "test_project.settings"})
    pytest = ["python", "-m", "pytest", "-p", "no:cacheprovider", "-ra", *session.posargs]
    session.run(*pytest)
    # Exit status 5: every test deselected by the posargs, not a failure.
    session.run("python", "-m", "tests.postgres_server", "--", *pytest, "-m", "db_both", success_codes=[0, 5])
