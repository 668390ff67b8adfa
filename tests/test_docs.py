"""The docs a newcomer walks: the README as a short front door, the rest a site that builds without a broken link."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO = (
    "python3 -m venv .venv && .venv/bin/pip install -e '.[demo]' && "
    "HF_HUB_OFFLINE=1 .venv/bin/embedforge run deployments/demo-minilm.yaml"
)
TESTS = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"


def test_the_readme_is_a_front_door_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert f"```bash\n{DEMO}\n```" in readme and f"```bash\n{TESTS}\n```" in readme
    assert "```mermaid" in readme  # the DAG as a diagram


def test_the_docs_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, or a page missing from the nav, fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    result = subprocess.run(build, cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Where to go next" in home and 'href="reference/"' in home
