"""Torch backend: every metric computed on the torch device (CUDA in practice; it also runs on
the CPU, which is how the tests cover it without a GPU). Only per-query results travel back,
a few small transfers per chunk of queries.

Same conventions and formulas as _metrics (docs/evaluation.md), laid out for the device:

* Hamming, ties "average": the tie groups are the distances 0..K. One bincount of
  (query, distance, relevant) keys gives per query and distance the items N and relevant
  items M, a dense (queries x K+1) table of groups; no sort.
* otherwise: one row sort, relevance gathered into rank order, cumulative sums. Under
  "average", tie groups are runs of bit-identical scores; every rank position carries its
  group's start P, size n, relevant count m and relevant items before it, Q. Under "stable"
  every item is its own group.

A tied group's expected precision sum over its first L slots is
    F = (m/n) [ (Q+1) S + (m-1)/(n-1) T ],  S = H(P+L) - H(P),  T = L - (P+1) S
(for L = n this is (m/n) (n c + (Q+1-c-cP) S) with c = (m-1)/(n-1)). H comes from a table
built once in extended precision and kept on the device as a float64 pair (hi, lo), so that
the difference of two close harmonic numbers keeps full precision. Everything is float64 or
int64 on the device (explicitly: integer tensors divided in torch give float32) except the
Hamming inner products, float32 over +-1 codes: exact
integers (also under TF32, which cannot round +-1 or 0/1).
"""

from __future__ import annotations

import numpy as np

from cmr_bench.evaluation._inputs import Prepared


class TorchBackend:
    name = "torch"

    def __init__(self, prep: Prepared, ties: str, device: str, ks=(), rs=(), denominator: str = "found",
                 pr_points: int | None = 11):
        import torch

        self.torch = torch
        self.p = prep
        self.ties = ties
        self.device = device
        self.ks, self.rs, self.denominator = tuple(ks), tuple(rs), denominator
        self.pr_points = None if prep.similarity == "hamming" else pr_points
        dev = self.dev = torch.device(device)
        f64 = torch.float64
        if prep.similarity == "hamming":
            self.K = prep.dim
            self.query = torch.as_tensor(prep.query, dtype=torch.float32).to(dev)
            self.keyT = torch.as_tensor(prep.retrieval, dtype=torch.float32).to(dev).T.contiguous()
        else:
            self.query = torch.as_tensor(prep.query, dtype=f64).to(dev)
            r = torch.as_tensor(prep.retrieval, dtype=f64).to(dev)
            # key: smaller ranks first (-cosine; |r|^2 - 2 q.r for euclidean)
            self.keyT = ((-r) if prep.similarity == "cosine" else (-2.0 * r)).T.contiguous()
        self.sqnorm = None if prep.r_sqnorm is None else torch.as_tensor(prep.r_sqnorm, dtype=f64).to(dev)
        self.inverse = None if prep.r_inverse is None else torch.as_tensor(prep.r_inverse, dtype=torch.int64).to(dev)
        if prep.multilabel:  # 0/1 label rows: float32 counts of shared labels are exact
            self.q_labels = torch.as_tensor(prep.q_labels, dtype=torch.float32).to(dev)
            self.LrT = torch.as_tensor(prep.r_labels, dtype=torch.float32).to(dev).T.contiguous()
        else:
            self.q_labels = torch.as_tensor(prep.q_labels, dtype=torch.int64).to(dev)
            self.r_labels = torch.as_tensor(prep.r_labels, dtype=torch.int64).to(dev)
        self._h = None

    # ------------------------------------------------------------------ sizes
    def bytes_per_row(self) -> int:
        """Device bytes per query of a chunk: the score row and the per-position arrays of the
        ranked representation (a dozen 8-byte arrays and their temporaries; peaks measured
        on the CPU stayed within these)."""
        n_r = self.p.n_r
        if self.p.similarity == "hamming" and self.ties == "average":
            return 40 * n_r + 64 * (self.K + 1)
        return 224 * n_r

    def max_rows(self) -> int:
        return 1 << 30

    # ------------------------------------------------------------------ helpers
    def relevance(self, s: int, e: int):
        if self.p.multilabel:
            return (self.q_labels[s:e] @ self.LrT) > 0
        return self.q_labels[s:e, None] == self.r_labels[None, :]

    def _harmonic(self):
        if self._h is None:
            self._h = harmonic_pair(self.torch, self.p.n_r + 1, self.dev)
        return self._h

    def _prefix(self, c, n, m, q, L):
        return expected_prefix_sum(self._harmonic(), c, n, m, q, L)

    def _found_ap(self, before, c, n, m, q, L):
        return expected_found_ap(self._harmonic(), before, c, n, m, q, L)

    # ------------------------------------------------------------------ chunk
    def chunk(self, s: int, e: int) -> dict[str, np.ndarray]:
        """Per-query metrics for queries s..e-1 (numpy arrays, see core.evaluate)."""
        if self.p.similarity == "hamming":
            dist, rel = self._hamming_dist(s, e)
            N, M = self._hamming_counts(dist, rel)
            if self.ties == "average":
                del dist, rel
                out = self._from_table(N, M)
            else:
                order = self.torch.sort(dist, dim=1, stable=True).indices
                del dist
                out = self._from_ranking(self.torch.gather(rel, 1, order), None)
            prec, rec = _radius_curve(self.torch, N, M)
            out["pr_prec"], out["pr_rec"] = prec, rec
        else:
            out = self._real(s, e)
        return self._to_host(out)

    def _to_host(self, out: dict) -> dict[str, np.ndarray]:
        torch = self.torch
        cols = [k for k, v in out.items() if v.dim() == 1]
        stacked = torch.stack([out[k].to(torch.float64) for k in cols], dim=1).cpu().numpy()
        host = {k: stacked[:, i] for i, k in enumerate(cols)}
        host["R"] = host["R"].astype(np.int64)
        for k, v in out.items():
            if v.dim() == 2:
                host[k] = v.cpu().numpy()
        return host

    # ------------------------------------------------------------------ hamming
    def _hamming_dist(self, s: int, e: int):
        ip = self.query[s:e] @ self.keyT  # exact integers: K - 2 * distance
        dist = (self.K - ip).mul_(0.5).to(self.torch.int64)
        del ip
        return dist, self.relevance(s, e)

    def _hamming_counts(self, dist, rel):
        torch = self.torch
        b, K = dist.shape[0], self.K
        key = dist * 2
        key += rel
        key += (torch.arange(b, device=key.device, dtype=torch.int64) * (2 * (K + 1)))[:, None]
        counts = torch.bincount(key.reshape(-1), minlength=b * 2 * (K + 1)).reshape(b, K + 1, 2)
        return counts.sum(dim=2), counts[:, :, 1].contiguous()

    def _from_table(self, N, M) -> dict:
        """Metrics from dense per-distance groups: N items, M relevant (queries x K+1)."""
        torch = self.torch
        P = torch.cumsum(N, dim=1) - N
        Q = torch.cumsum(M, dim=1) - M
        R = M.sum(dim=1)
        F = torch.where(M > 0, self._prefix(P, N, M, Q, N), torch.zeros((), dtype=torch.float64, device=N.device))
        cumF = torch.cumsum(F, dim=1)
        ends = P + N

        def group_at(t: int):
            g = (ends <= t - 1).sum(dim=1, keepdim=True)  # the group holding slot t-1
            Pg = P.gather(1, g)
            return (Pg, N.gather(1, g), M.gather(1, g), Q.gather(1, g), (cumF - F).gather(1, g))

        return self._metrics(R, cumF[:, -1], group_at)

    # ------------------------------------------------------------------ ranked rows
    def _real(self, s: int, e: int) -> dict:
        torch = self.torch
        key = self.query[s:e] @ self.keyT
        if self.sqnorm is not None:
            key += self.sqnorm
        if self.inverse is not None:  # duplicate retrieval rows share one score: exact ties
            key = key[:, self.inverse]
        rel = self.relevance(s, e)
        # "stable" breaks ties by index; under "average" the order inside ties is irrelevant
        vals, order = torch.sort(key, dim=1, stable=self.ties == "stable")
        del key
        rel_sorted = torch.gather(rel, 1, order)
        del order, rel
        new = None
        if self.ties == "average":
            new = torch.ones(vals.shape, dtype=torch.bool, device=vals.device)
            new[:, 1:] = vals[:, 1:] != vals[:, :-1]
            if bool(new.all()):  # no ties in the chunk (continuous scores): singleton groups
                new = None
        del vals
        return self._from_ranking(rel_sorted, new)

    def _from_ranking(self, rel_sorted, new) -> dict:
        """Metrics from relevance in rank order; `new` marks the first position of each tie
        group (None: every item its own group, the stable order)."""
        torch = self.torch
        b, n_r = rel_sorted.shape
        dev = rel_sorted.device
        pos = torch.arange(n_r, device=dev).expand(b, n_r)
        hits = torch.cumsum(rel_sorted, dim=1)
        R = hits[:, -1]
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        if new is None:
            P_at, n_at, m_at = pos, torch.ones((), dtype=torch.int64, device=dev).expand(b, n_r), rel_sorted.long()
            Q_at = hits - m_at
            F = torch.where(rel_sorted, hits.to(torch.float64) / (pos + 1).to(torch.float64), zero)
        else:
            P_at = torch.cummax(torch.where(new, pos, 0), dim=1).values
            last = torch.ones_like(new)
            last[:, :-1] = new[:, 1:]
            E_at = torch.cummin(torch.where(last, pos + 1, n_r).flip(1), dim=1).values.flip(1)
            del last
            n_at = E_at - P_at
            Q_at = (hits - rel_sorted.long()).gather(1, P_at)
            m_at = hits.gather(1, E_at - 1) - Q_at
            del E_at
            F = torch.zeros((b, n_r), dtype=torch.float64, device=dev)
            first = new & (m_at > 0)
            F[first] = self._prefix(P_at[first], n_at[first], m_at[first], Q_at[first], n_at[first])
            del first
        cumF = torch.cumsum(F, dim=1)
        first_k = {}  # "first-relevant" (stable ties): precision at the first min(k, R) relevant items
        if self.denominator == "first-relevant":
            for k in self.ks:
                taken = torch.where(hits <= k, F, zero).sum(dim=1)  # F is 0 off relevant positions
                first_k[f"ap@{k}"] = _safe_div(torch, taken, torch.clamp_max(R, k).to(torch.float64))
        before = cumF - F
        del F

        def group_at(t: int):
            Pg = P_at[:, t - 1 : t]
            return (Pg, n_at[:, t - 1 : t], m_at[:, t - 1 : t], Q_at[:, t - 1 : t], before.gather(1, Pg))

        out = {**self._metrics(R, cumF[:, -1], group_at), **first_k}
        if self.pr_points:
            out["pr"] = self._interpolated(R, P_at, n_at, m_at, Q_at)
        return out

    def _interpolated(self, R, P_at, n_at, m_at, Q_at):
        """Interpolated precision at recall levels i/(points-1) (see _metrics.interpolated_precision):
        the first cut-off reaching the level inside its group, or a later group end."""
        torch = self.torch
        den = self.pr_points - 1
        ends = Q_at + m_at  # relevant items up to the end of each position's group
        end_prec = ends / (P_at + n_at).to(torch.float64)
        best_after = torch.cummax(end_prec.flip(1), dim=1).values.flip(1)
        del end_prec
        target = torch.arange(self.pr_points, device=R.device)[None, :] * R[:, None]
        idx = torch.searchsorted((ends * den).contiguous(), target.contiguous(), side="left")
        idx = idx.clamp_max(P_at.shape[1] - 1)
        P, n, m, Q = (a.gather(1, idx) for a in (P_at, n_at, m_at, Q_at))
        need = target - Q * den
        j = torch.where(m > 0, -torch.div(-need * n, (m * den).clamp_min(1), rounding_mode="floor"),
                        torch.zeros_like(need)).clamp_min(0)
        cut = P + j
        hits = Q + (j * m).to(torch.float64) / n
        cand = torch.where(cut > 0, hits / cut.clamp_min(1), torch.zeros((), dtype=torch.float64, device=R.device))
        out = torch.maximum(cand, best_after.gather(1, idx))
        return torch.where((R > 0)[:, None], out, torch.full((), float("nan"), dtype=torch.float64, device=R.device))

    # ------------------------------------------------------------------ metrics
    def _metrics(self, R, total, group_at) -> dict:
        """AP@all, AP@k, P@R per query. `group_at(t)` gives, as (b, 1) columns, the group
        holding slot t-1: its start P, size n, relevant m, relevant before Q and the AP
        numerator of all groups before it."""
        torch = self.torch
        n_r = self.p.n_r
        Rf = R.to(torch.float64)
        out = {"R": R, "ap": _safe_div(torch, total, Rf)}
        cache = {}

        def cut(t):
            if t not in cache:
                cache[t] = [v[:, 0] for v in group_at(t)]
            return cache[t]

        for k in (() if self.denominator == "first-relevant" else self.ks):  # that one: _from_ranking
            t = min(k, n_r)
            P, n, m, Q, A = cut(t)
            L = t - P
            whole = L == n
            inside = self._prefix(P, n, m, Q, L)  # 0 for groups without relevant items
            if self.denominator == "trec":
                out[f"ap@{k}"] = _safe_div(torch, A + inside, torch.clamp_max(Rf, k))
            else:
                found = (Q + torch.where(whole, m, torch.zeros_like(m))).to(torch.float64)
                ap = _safe_div(torch, A + torch.where(whole, inside, torch.zeros_like(inside)), found)
                part = torch.nonzero(~whole & (m > 0)).reshape(-1)
                if len(part):
                    ap[part] = self._found_ap(A[part], P[part], n[part], m[part], Q[part], L[part])
                out[f"ap@{k}"] = ap
        for r in self.rs:
            t = min(r, n_r)
            P, n, m, Q, _ = cut(t)
            out[f"p@{r}"] = (Q + ((t - P) * m).to(torch.float64) / n) / r
        return out


def _log_comb(torch, a, b):
    return torch.lgamma(a + 1.0) - torch.lgamma(b + 1.0) - torch.lgamma(a - b + 1.0)


def _safe_div(torch, num, den):
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))


def _radius_curve(torch, N, M):
    """Precision (NaN where nothing lies within r) and recall (NaN without relevant items) of
    the items within Hamming radius r = 0..K."""
    cn = torch.cumsum(N, dim=1)
    cm = torch.cumsum(M, dim=1).to(torch.float64)
    R = cm[:, -1:]
    nan = torch.full((), float("nan"), dtype=torch.float64, device=N.device)
    precision = torch.where(cn > 0, cm / cn.clamp_min(1), nan)
    recall = torch.where(R > 0, cm / R.clamp_min(1), nan)
    return precision, recall


# ---------------------------------------------------------------------- group formulas (device)
def harmonic_pair(torch, upto: int, device):
    """H[0..upto] as float64 (hi, lo) tensors on `device`, from the extended-precision table."""
    from cmr_bench.evaluation._metrics import harmonic

    h = harmonic(upto)[: upto + 1]
    hi = h.astype(np.float64)
    lo = (h - hi).astype(np.float64)
    return torch.as_tensor(hi).to(device), torch.as_tensor(lo).to(device)


def prefix_sums(H, c, L):
    """S(c, L) and T(c, L) of the module docstring (c >= 0, L >= 1, c + L within H)."""
    import torch

    hi, lo = H
    a = c + L
    s = (hi[a] - hi[c]) + (lo[a] - lo[c])
    one = L == 1
    s = torch.where(one, 1.0 / (c + 1).to(torch.float64), s)
    t = torch.where(one, torch.zeros_like(s), L - (c + 1) * s)
    return s, t


def expected_prefix_sum(H, c, n, m, q, L):
    """Expected precision sum over the first L slots of a group (F above); 0 when m = 0."""
    import torch

    s, t = prefix_sums(H, c, L)
    nf, mf = n.to(torch.float64), m.to(torch.float64)
    ratio = torch.where(n > 1, (mf - 1) / (nf - 1).clamp_min(1), torch.zeros_like(nf))
    return (mf / nf.clamp_min(1)) * ((q + 1) * s + ratio * t)


def expected_found_ap(H, before, c, n, m, q, L, max_cells: int = 1 << 22):
    """E[(before + B) / (q + X)] for groups cut after L of their n slots, X ~
    Hypergeometric(n, m, L) the relevant items inside the cut (see _metrics.expected_found_ap)."""
    import torch

    f64 = torch.float64
    lo = (L - (n - m)).clamp_min(0)
    hi = torch.minimum(m, L)
    mean = L.to(f64) * m / n
    tail = torch.ceil(torch.sqrt(26.0 * L.to(f64))) + 1  # Hoeffding: mass left out < 1e-22
    lo = torch.maximum(lo, torch.floor(mean - tail).to(torch.int64))
    hi = torch.minimum(hi, torch.ceil(mean + tail).to(torch.int64))
    out = torch.empty(len(c), dtype=f64, device=c.device)
    if len(c) == 0:
        return out
    width = int((hi - lo).max().item()) + 1
    step = max(1, max_cells // width)
    x0 = torch.arange(width, device=c.device)
    for a in range(0, len(c), step):
        sl = slice(a, a + step)
        x = lo[sl, None] + x0
        valid = x <= hi[sl, None]
        xs = torch.where(valid, x, lo[sl, None]).to(f64)
        nn, mm, ll = (v[sl, None].to(f64) for v in (n, m, L))
        logp = _log_comb(torch, mm, xs) + _log_comb(torch, nn - mm, ll - xs) - _log_comb(torch, nn, ll)
        p = torch.where(valid, torch.exp(logp), torch.zeros_like(logp))
        p = p / p.sum(dim=1, keepdim=True)
        s, t = prefix_sums(H, c[sl], L[sl])
        ratio = torch.where(ll > 1, (xs - 1.0) / (ll - 1.0).clamp_min(1.0), torch.zeros_like(xs))
        inside = (xs / ll) * ((q[sl, None] + 1.0) * s[:, None] + ratio * t[:, None])
        den = q[sl, None] + xs
        val = torch.where(den > 0, (before[sl, None] + inside) / den.clamp_min(1), torch.zeros_like(xs))
        out[sl] = (p * val).sum(dim=1)
    return out
