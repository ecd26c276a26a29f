"""A small autoregressive proof-writing policy (torch, CPU).

The policy sees only an encoding of the problem, ``(start, target - start)``, and writes the
whole proof token by token without ever seeing intermediate values.  (A policy that sees the
current value makes the rare move a local decision and simply learns it; the spec's prototype
only showed sharpening with this "blind" design.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .tasks import N_TOKENS, STOP


@dataclass
class SampleBatch:
    """Sampled proofs: STOP-padded tokens, per-token log-probs and response mask ``[N, T]``."""

    tokens: torch.Tensor
    token_logp: torch.Tensor
    mask: torch.Tensor


def thermometer(values: torch.Tensor, size: int) -> torch.Tensor:
    """Thermometer code: ``out[i, j] = 1`` iff ``values[i] > j``.

    Makes differences of inputs (``delta - start``, what the doubling style needs) linear.
    """
    steps = torch.arange(size, device=values.device)
    return (values[:, None] > steps[None, :]).float()


class ProofPolicy(nn.Module):
    """GRU policy over operation tokens conditioned on ``(start, delta)``.

    Args:
        max_start: largest start value the encoder accepts.
        max_delta: largest ``target - start`` the encoder accepts.
        max_len: maximum number of tokens in a proof (the decode length).
        hidden: GRU width.
        emb: token embedding width.
    """

    def __init__(self, max_start: int, max_delta: int, max_len: int,
                 hidden: int = 128, emb: int = 16) -> None:
        super().__init__()
        for name, val in (("max_start", max_start), ("max_delta", max_delta),
                          ("max_len", max_len), ("hidden", hidden), ("emb", emb)):
            if not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        self.max_start, self.max_delta, self.max_len = max_start, max_delta, max_len
        n_feat = max_start + max_delta
        self.encoder = nn.Sequential(nn.Linear(n_feat, hidden), nn.Tanh(),
                                     nn.Linear(hidden, hidden), nn.Tanh())
        self.tok_emb = nn.Embedding(N_TOKENS + 1, emb)  # + BOS
        # the problem code is fed at every step too, so the GRU need not carry it alone
        self.gru = nn.GRU(emb + hidden, hidden, batch_first=True)
        self.head = nn.Linear(hidden, N_TOKENS)
        self.bos = N_TOKENS

    def _encode(self, starts: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        starts = torch.as_tensor(starts, dtype=torch.long)
        deltas = torch.as_tensor(deltas, dtype=torch.long)
        if starts.shape != deltas.shape or starts.dim() != 1:
            raise ValueError("starts and deltas must be 1-D tensors of the same length")
        if starts.numel() and (starts.min() < 1 or starts.max() > self.max_start):
            raise ValueError(f"starts must lie in 1..{self.max_start}")
        if deltas.numel() and (deltas.min() < 1 or deltas.max() > self.max_delta):
            raise ValueError(f"deltas must lie in 1..{self.max_delta}")
        feat = torch.cat([thermometer(starts, self.max_start),
                          thermometer(deltas, self.max_delta)], dim=1)
        return self.encoder(feat)

    def score(self, starts: torch.Tensor, deltas: torch.Tensor,
              tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs of given STOP-padded proofs (teacher forcing).

        Returns ``(token_logp, mask)``, each ``[N, T]``; ``mask`` is 1 on response tokens (every
        operation and the first STOP) and ``token_logp`` is 0 elsewhere.
        """
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 2 or tokens.shape[1] != self.max_len:
            raise ValueError(f"tokens must be [N, {self.max_len}], got {tuple(tokens.shape)}")
        code = self._encode(starts, deltas)
        n = tokens.shape[0]
        prev = torch.cat([torch.full((n, 1), self.bos, dtype=torch.long), tokens[:, :-1]], 1)
        inp = torch.cat([self.tok_emb(prev), code[:, None, :].expand(-1, self.max_len, -1)], 2)
        out, _ = self.gru(inp, code[None].contiguous())
        logp_all = torch.log_softmax(self.head(out), dim=-1)
        logp = logp_all.gather(2, tokens[:, :, None]).squeeze(2)
        mask = response_mask(tokens)
        return logp * mask, mask

    @torch.no_grad()
    def sample(self, starts: torch.Tensor, deltas: torch.Tensor,
               generator: torch.Generator | None = None,
               temperature: float = 1.0) -> SampleBatch:
        """Sample one proof per row; batched over rows, token by token."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        code = self._encode(starts, deltas)
        n = code.shape[0]
        h = code[None].contiguous()
        prev = torch.full((n,), self.bos, dtype=torch.long)
        tokens = torch.full((n, self.max_len), STOP, dtype=torch.long)
        logps = torch.zeros(n, self.max_len)
        done = torch.zeros(n, dtype=torch.bool)
        for t in range(self.max_len):
            inp = torch.cat([self.tok_emb(prev), code], 1)[:, None, :]
            out, h = self.gru(inp, h)
            logp_all = torch.log_softmax(self.head(out[:, 0]), dim=-1)
            probs = torch.softmax(logp_all / temperature, dim=-1) if temperature != 1.0 \
                else logp_all.exp()
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            tok = torch.where(done, torch.full_like(tok, STOP), tok)
            tokens[:, t] = tok
            logps[:, t] = torch.where(done, torch.zeros(n), logp_all.gather(1, tok[:, None])[:, 0])
            done = done | (tok == STOP)
            prev = tok
        return SampleBatch(tokens=tokens, token_logp=logps, mask=response_mask(tokens))


def response_mask(tokens: torch.Tensor) -> torch.Tensor:
    """1 on every token up to and including the first STOP, 0 after it."""
    is_stop = (tokens == STOP).long()
    stops_before = torch.cumsum(is_stop, dim=1) - is_stop
    return (stops_before == 0).float()
