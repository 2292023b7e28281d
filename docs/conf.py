"""Sphinx configuration for pyro_gen."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import pyro_gen  # noqa: E402

project = "pyro_gen"
author = "the pyro_gen developers"
release = version = pyro_gen.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
suppress_warnings = ["ref.python"]
