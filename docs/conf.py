"""Sphinx configuration: the API reference is generated from the installed convloc's docstrings.

Build (from the repository root, with convloc installed and requirements-docs.txt):
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

import re
from importlib.metadata import version as _version
from pathlib import Path

import convloc.ops

project = "convloc"
author = "convloc contributors"
release = _version("convloc")
version = release

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# Google-style docstrings, as the code uses.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
# torch.nn.Module's generic docstrings (forward, __init__) say nothing about convloc's modules.
autodoc_inherit_docstrings = False
# convloc.tf's reference builds without TensorFlow installed.
autodoc_mock_imports = ["tensorflow"]

myst_heading_anchors = 3

html_theme = "furo"
html_title = f"convloc {release}"
html_static_path = ["_static"]
html_css_files = ["gallery.css"]


def _check_ops_page(app):
    """Warns (an error under -W) when a public name of convloc.ops is missing from api/ops.rst."""
    from sphinx.util import logging

    text = (Path(app.srcdir) / "api" / "ops.rst").read_text()
    documented = set(re.findall(r"^\.\. auto(?:function|class):: convloc\.ops\.(\w+)", text, re.M))
    missing = sorted(set(convloc.ops.__all__) - documented)
    if missing:
        logging.getLogger(__name__).warning(
            "api/ops.rst does not document convloc.ops.%s", ", ".join(missing)
        )


def setup(app):
    app.connect("builder-inited", _check_ops_page)
