"""Command-line tools for people and scripts: ``dbopt produce`` and ``dbopt tail``."""
