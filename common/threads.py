"""torch's intra-op thread count for one piece of work, restored after it."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def torch_threads(n: int):
    """``with torch_threads(n):`` runs its body on ``n`` torch threads, then restores the
    count it found (the server and in-process clients of one run use different counts)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
