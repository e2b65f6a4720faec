"""``python -m spisim.manifest``: print the key table of ``docs/manifest.md``."""

from .reference import reference_markdown

print(reference_markdown(), end="")
