"""vidmill: curate raw video buckets and train a MAGI-1 style autoregressive video model.

The areas live in top-level folders (pipeline/, model/, training/, evaluation/, dashboards/) and are
imported under this one namespace (`vidmill.pipeline`, `vidmill.model`, ...) through setuptools'
package-dir mapping, so a user's own `model.py` or `training/` never shadows them.
"""

__version__ = "0.1.0"
