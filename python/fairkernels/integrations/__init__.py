"""Glue between fairkernels and RL training frameworks.

Each submodule imports its framework and is imported only on request, so that
``import fairkernels`` never pulls verl or TRL in:

- :mod:`fairkernels.integrations.verl`: advantage estimators ``fk_grpo``, ``fk_rloo``,
  ``fk_drgrpo``, ``fk_unlikely`` registered with verl (``pip install fairkernels[verl]``);
- :mod:`fairkernels.integrations.trl`: a drop-in ``GRPOTrainer`` whose advantages come from
  fairkernels (``pip install fairkernels[trl]``).
"""
