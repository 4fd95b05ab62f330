"""Sphinx configuration: the user guide (the Markdown pages here), the API reference from the
package's docstrings (autodoc, Google style through napoleon) and the CLI reference from its
argparse parser (``_ext/cli_reference.py``). Built with warnings as errors:

    .venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

from legacy_msi_credential import __version__  # noqa: E402

project = "legacy-msi-credential"
author = "legacy-msi-credential contributors"
copyright = "legacy-msi-credential contributors"  # noqa: A001 - the name Sphinx reads
release = version = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "cli_reference",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False


html_theme = "furo"
html_title = f"legacy-msi-credential {release}"
html_static_path = ["_static"]
#: Long lines in code blocks wrap rather than hide behind a scroll bar.
html_css_files = ["code-blocks.css"]
