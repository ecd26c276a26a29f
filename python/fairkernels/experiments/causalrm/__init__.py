"""The CausalRM experiment: reward models trained on simulated observational feedback (biased
observation, noisy labels) with naive, propensity-weighted, noise-aware and CausalRM losses.
Run it with ``fairkernels causalrm`` (see cli.py); the losses come from the public API
(fairkernels.torch.CausalRMLoss)."""
