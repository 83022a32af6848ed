"""Torch backend: the same tie groups as the numpy backend, built on a torch device (CUDA in
practice; also runs on the CPU, which is how the tests cover it without a GPU).

Everything is float64/int64 on the device, so TF32 settings cannot change a result, and only
integer counts and positions travel back to the CPU, where _metrics does the arithmetic.
"""

from __future__ import annotations

import numpy as np

from cmr_bench.evaluation._inputs import Prepared
from cmr_bench.evaluation._metrics import Groups


class TorchBackend:
    name = "torch"

    def __init__(self, prep: Prepared, ties: str, device: str):
        import torch

        self.torch = torch
        self.p = prep
        self.ties = ties
        self.device = device
        dev = torch.device(device)
        f64 = torch.float64
        self.query = torch.as_tensor(prep.query, dtype=f64).to(dev)
        r = torch.as_tensor(prep.retrieval, dtype=f64).to(dev)
        if prep.similarity == "hamming":
            self.K = prep.dim
            self.keyT = r.T.contiguous()  # inner products; dist = (K - ip) / 2
        elif prep.similarity == "cosine":
            self.keyT = (-r).T.contiguous()
        else:
            self.keyT = (-2.0 * r).T.contiguous()
        self.sqnorm = None if prep.r_sqnorm is None else torch.as_tensor(prep.r_sqnorm, dtype=f64).to(dev)
        self.inverse = None if prep.r_inverse is None else torch.as_tensor(prep.r_inverse, dtype=torch.int64).to(dev)
        if prep.multilabel:
            self.q_labels = torch.as_tensor(prep.q_labels, dtype=f64).to(dev)
            self.LrT = torch.as_tensor(prep.r_labels, dtype=f64).to(dev).T.contiguous()
        else:
            self.q_labels = torch.as_tensor(prep.q_labels, dtype=torch.int64).to(dev)
            self.r_labels = torch.as_tensor(prep.r_labels, dtype=torch.int64).to(dev)

    def bytes_per_row(self) -> int:
        """Device bytes per query of a chunk (float64 scores, sort values and indices, group
        ids), plus the host-side tie-group arrays."""
        n_r = self.p.n_r
        return (48 if self.p.similarity == "hamming" else 72) * n_r + 96 * n_r

    def max_rows(self) -> int:
        return 1 << 30

    def relevance(self, s: int, e: int):
        if self.p.multilabel:
            return (self.q_labels[s:e] @ self.LrT) > 0
        return self.q_labels[s:e, None] == self.r_labels[None, :]

    def chunk(self, s: int, e: int):
        if self.p.similarity == "hamming":
            return self._hamming(s, e)
        return self._real(s, e), None, None

    def _np(self, t) -> np.ndarray:
        return t.to("cpu").numpy()

    def _hamming(self, s: int, e: int):
        torch = self.torch
        b, K = e - s, self.K
        ip = self.query[s:e] @ self.keyT
        dist = torch.round((K - ip) * 0.5).to(torch.int64)
        del ip
        rel = self.relevance(s, e)
        key = dist * 2 + rel.to(torch.int64)
        key += (torch.arange(b, device=key.device, dtype=torch.int64) * (2 * (K + 1)))[:, None]
        counts = torch.bincount(key.reshape(-1), minlength=b * 2 * (K + 1)).reshape(b, K + 1, 2)
        del key
        N = self._np(counts.sum(dim=2))
        M = self._np(counts[:, :, 1])
        if self.ties == "average":
            return Groups.from_dense(N, M), N, M
        order = torch.sort(dist, dim=1, stable=True).indices
        row, pos = torch.nonzero(torch.gather(rel, 1, order), as_tuple=True)
        return Groups.from_items(b, M.sum(axis=1), self._np(row), self._np(pos)), N, M

    def _real(self, s: int, e: int) -> Groups:
        torch = self.torch
        b, n_r = e - s, self.p.n_r
        key = self.query[s:e] @ self.keyT
        if self.sqnorm is not None:
            key += self.sqnorm
        if self.inverse is not None:
            key = key[:, self.inverse]
        rel = self.relevance(s, e)
        R = self._np(rel.sum(dim=1))
        vals, order = torch.sort(key, dim=1, stable=True)
        del key
        rel_sorted = torch.gather(rel, 1, order).reshape(-1)
        del order
        if self.ties == "stable":
            flat = torch.nonzero(rel_sorted).reshape(-1)
            return Groups.from_items(b, R, self._np(flat // n_r), self._np(flat % n_r))
        new = torch.ones((b, n_r), dtype=torch.bool, device=vals.device)
        new[:, 1:] = vals[:, 1:] != vals[:, :-1]
        del vals
        new = new.reshape(-1)
        starts = torch.nonzero(new).reshape(-1)
        gid = torch.cumsum(new.to(torch.int64), 0) - 1
        del new
        m = torch.bincount(gid[rel_sorted], minlength=len(starts))
        del gid, rel_sorted
        ends = torch.cat([starts[1:], torch.tensor([b * n_r], device=starts.device)])
        keep = m > 0
        start = starts[keep]
        return Groups(b, R, self._np(start // n_r), self._np(start % n_r), self._np((ends - starts)[keep]), self._np(m[keep]))
