"""Sphinx configuration for torchgeo-scalemae."""

import os
import sys

sys.path.insert(0, os.path.abspath('..'))

import torchgeo_scalemae

project = 'torchgeo-scalemae'
author = 'torchgeo-scalemae contributors'
copyright = '2026, torchgeo-scalemae contributors'
version = release = torchgeo_scalemae.__version__

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
    'sphinx.ext.doctest',
]
autodoc_typehints = 'description'
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ['_build']
html_theme = 'alabaster'
suppress_warnings = ['ref.python']
