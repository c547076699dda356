"""A simulated crowd's pure parts: generated scenes with exact truth and simulated workers'
behaviours. The runner that sets them to work (``manage.py crowdsim``, ``manage.py
seed_demo``) is ``frontend.sim``: it plays the manager too, through reviews and payouts."""
