"""mkdocs hook: the README is the site's home page, written once.

Its links into docs/ are relative to the repository root (as GitHub shows them); on the site they are relative to
docs/, so the `docs/` prefix is dropped. A link from the README to anything outside docs/ would be broken on the
site, and the strict build says so.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    readme = Path(config["config_file_path"]).parent / "README.md"
    home = readme.read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=home))
    return files
