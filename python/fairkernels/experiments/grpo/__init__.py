"""The GRPO / unlikeliness-reward experiment on a verifiable synthetic proof task.

See ``docs/results/grpo.md`` and the spec ``grpo.md`` ("The experiment").
"""
