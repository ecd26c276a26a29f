"""The Optimistic Feasible Search experiment: OFS, UCB, primal-dual (a sweep of step sizes) and
the fixed-threshold oracle sweep on one closed-loop environment, over seeds.

Run it with ``fairkernels ofs --env synthetic|german|compas``; see :mod:`.run` for the API.
"""
