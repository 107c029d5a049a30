"""Operational tooling (the team stack); not part of the ``marketplace`` library."""
