"""The package installs as one `mohaq` tree: callbacks and datamodules live under it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_installed_copy_imports_outside_the_repo(tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
         "--no-build-isolation", "--target", str(site), str(REPO)],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    top_level = sorted(p.name for p in site.iterdir() if not p.name.endswith(".dist-info"))
    # Nothing generic such as `callbacks` or `datamodules` at the top of site-packages.
    assert "callbacks" not in top_level and "datamodules" not in top_level
    assert "mohaq" in top_level
    probe = (
        "import mohaq, mohaq.callbacks, mohaq.datamodules, mohaq.datamodules.phones as p\n"
        "import importlib.resources as r\n"
        f"assert str(mohaq.__file__).startswith({str(site)!r}), mohaq.__file__\n"
        "assert len(p.PHONES_48) == 48\n"
        "names = {f.name for f in r.files('mohaq.configs').iterdir()}\n"
        "assert 'quickstart.yaml' in names and 'sru_timit.yaml' in names, names\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
