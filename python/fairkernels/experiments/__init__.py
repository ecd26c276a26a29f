"""The papers' experiments, built on the public API only (like any user's code).

Each experiment is a subpackage with a ``cli`` module exposing ``register(subparsers)``; the
``fairkernels`` command (fairkernels.cli) picks them up.
"""
