"""The simulated crowd's runner: it plays every role (workers through routing, the manager
through reviews and payouts), so it lives in the one app that builds on all the others. The
scenes and the workers' behaviours are pure modules in ``qa.sim``; here is what reaches the
database or a server, one concern a module:

- ``truth``: the exact annotations of a simulated project, kept in ``VAR_DIR/sim/``;
- ``accounts``: the simulated accounts and their passwords;
- ``seeding``: a started project of generated scenes, with gold from their truth;
- ``clients``: how a worker speaks to the product, in this process or over HTTP;
- ``engine``: the event engine that runs the crowd (``crowd_work``);
- ``manager``: the manager's reviews and a fresh consensus run;
- ``report``: the progress line, and the result measured against the truth;
- ``settle``: the in-process job worker finishing before a command exits;
- ``errors``: ``SimError``, which the commands turn into a ``CommandError``.

The manager's part runs in this process whichever way the workers go, so a run over HTTP
needs the server's database.
"""
