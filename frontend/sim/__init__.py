"""The simulated crowd's runner: it plays every role (workers through routing, the manager
through reviews and payouts), so it lives in the one app that builds on all the others. The
scenes and the workers' behaviours are pure modules in ``qa.sim``."""
