"""The simulator's error: the run cannot go on. Every part raises it with a message that says
why and what to do (a missing truth file, a refused account or project, a server answering
what no client expects); the commands turn it into a ``CommandError``."""

from __future__ import annotations


class SimError(Exception):
    """The simulation cannot go on; the message says why and what to do."""
