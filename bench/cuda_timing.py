"""Timing CUDA work with pytest-benchmark: kernels return before the GPU is done, so each
timed call ends with a device synchronisation."""


def synchronized(fn, *bound_args, **bound_kwargs):
    """fn with the given leading arguments, followed by torch.cuda.synchronize()."""
    import torch

    def run(*args, **kwargs):
        result = fn(*bound_args, *args, **bound_kwargs, **kwargs)
        torch.cuda.synchronize()
        return result

    return run
