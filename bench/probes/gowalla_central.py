"""Probe: a fast training regime for centralized LightGCN on the LightGCN Gowalla split.

Trains one configuration of LightGCN (He et al., SIGIR 2020) with mini-batch BPR on
``gowalla/train.txt`` minus a seeded per-user validation part, and evaluates full ranking over
all items (train items masked; for test, validation items masked too) with Recall@20 and NDCG@20
as LightGCN computes them.  One line per evaluation, then a summary line with the test metrics
at the epoch selected on validation.

The reference implementation (gusye1234/LightGCN-PyTorch) uses batch 2048, Adam lr 1e-3, L2 1e-4
on the batch's layer-0 embeddings, d = 64, N(0, 0.1) init, one negative per positive and
uniform user sampling, for 1000 epochs.  Every mini-batch step needs one full-graph propagation
forward and backward, which dominates CPU time, so this probe looks for larger batches with a
higher learning rate that converge in fewer steps.

Only reads the data (``$FEDSHARE_DATA_DIR`` or ``../shared/data`` next to the repo); never
downloads.

    .venv/bin/python bench/probes/gowalla_central.py --batch 16384 --lr 0.01 --layers 3 --eval-every 4
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from fedshare.data.lightgcn_layout import parse_pairs  # noqa: E402  (the project's reader of the layout)

warnings.filterwarnings("ignore", message=".*[Ss]parse.*")  # torch's beta / invariant-check notices


# ----------------------------------------------------------------------------------------------
# data


def default_data_dir() -> Path:
    env = os.environ.get("FEDSHARE_DATA_DIR")
    return Path(env) if env else REPO.parent / "shared" / "data"


def split_valid(users: np.ndarray, ratio: float, min_items: int, seed: int) -> np.ndarray:
    """Boolean mask of validation pairs: per user, seeded, floor(ratio * n) (at least 1).

    Users with fewer than ``min_items`` train pairs keep all of them in train (same rule as
    ``fedshare.data.split_per_user``).
    """
    if ratio <= 0:  # the papers' protocol: all of train.txt trains (see --valid-ratio)
        return np.zeros(len(users), dtype=bool)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(users)), users))  # random order within each user
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    counts = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    n_valid = np.maximum(np.floor(ratio * n), 1)
    chosen = (n >= min_items) & (position < n_valid)
    mask = np.zeros(len(users), dtype=bool)
    mask[order] = chosen
    return mask


def csr_rows(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """User x item 0/1 matrix as torch CSR (float32)."""
    order = np.lexsort((items, users))
    crow = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(crow, users + 1, 1)
    crow = np.cumsum(crow)
    return torch.sparse_csr_tensor(
        torch.from_numpy(crow), torch.from_numpy(items[order]), torch.ones(len(users)), size=(n_users, n_items)
    )


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the bipartite user-item graph, (U+I) x (U+I) torch CSR float32."""
    n = n_users + n_items
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    dinv = np.zeros(n)
    dinv[deg > 0] = deg[deg > 0] ** -0.5
    vals = (dinv[rows] * dinv[cols]).astype(np.float32)
    coo = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, cols])), torch.from_numpy(vals), (n, n))
    return coo.coalesce().to_sparse_csr()


# ----------------------------------------------------------------------------------------------
# model


class Propagate(torch.autograd.Function):
    """out = mean(X, AX, ..., A^L X) for a symmetric sparse A; backward is the same map on the grad."""

    @staticmethod
    def run(adj: torch.Tensor, x: torch.Tensor, layers: int) -> torch.Tensor:
        out, h = x.clone(), x
        for _ in range(layers):
            h = torch.sparse.mm(adj, h)
            out += h
        return out / (layers + 1)

    @staticmethod
    def forward(ctx, x, adj, layers):
        ctx.adj, ctx.layers = adj, layers
        return Propagate.run(adj, x, layers)

    @staticmethod
    def backward(ctx, grad):
        return Propagate.run(ctx.adj, grad.contiguous(), ctx.layers), None, None


class Sampler:
    """Training triples (user, positive, negatives), as LightGCN-PyTorch samples them.

    ``uniform-user``: per epoch draw as many users as there are train pairs, uniformly, then one
    of the user's items and negatives uniform over items the user has not interacted with
    (rejection, vectorized).  ``pairs``: every train pair once per epoch, shuffled.
    """

    def __init__(
        self,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        mode: str,
        negatives: int,
        rng: np.random.Generator,
    ):
        order = np.lexsort((items, users))
        self.users, self.items = users[order], items[order]
        self.n_users, self.n_items = n_users, n_items
        self.keys = self.users * n_items + self.items  # sorted
        self.start = np.searchsorted(self.users, np.arange(n_users))
        self.count = np.bincount(self.users, minlength=n_users)
        self.active = np.flatnonzero(self.count > 0)
        self.mode, self.negatives, self.rng = mode, negatives, rng

    def _is_positive(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        k = u * self.n_items + i
        pos = np.searchsorted(self.keys, k)
        pos[pos == len(self.keys)] = 0
        return self.keys[pos] == k

    def epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.users)
        if self.mode == "pairs":
            perm = self.rng.permutation(n)
            u, p = self.users[perm], self.items[perm]
        else:
            u = self.active[self.rng.integers(0, len(self.active), n)]
            p = self.items[self.start[u] + (self.rng.random(n) * self.count[u]).astype(np.int64)]
        uu = np.repeat(u[:, None], self.negatives, axis=1).ravel()
        neg = self.rng.integers(0, self.n_items, len(uu))
        bad = self._is_positive(uu, neg)
        while bad.any():
            neg[bad] = self.rng.integers(0, self.n_items, int(bad.sum()))
            bad[bad] = self._is_positive(uu[bad], neg[bad])
        return u, p, neg.reshape(n, self.negatives)


# ----------------------------------------------------------------------------------------------
# evaluation


class Truth:
    """Held-out items of each user (from a CSR user x item matrix), for fast hit look-ups."""

    def __init__(self, m: torch.Tensor, n_items: int):
        crow, col = m.crow_indices(), m.col_indices()
        self.count = crow[1:] - crow[:-1]
        rows = torch.repeat_interleave(torch.arange(len(self.count)), self.count)
        self.keys = rows * n_items + col  # sorted (CSR order)
        self.n_items = n_items

    def hits(self, users: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
        k = users[:, None] * self.n_items + top
        pos = torch.searchsorted(self.keys, k).clamp(max=len(self.keys) - 1)
        return (self.keys[pos] == k).float()


def metrics(hits: torch.Tensor, n_truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user Recall@k and NDCG@k as LightGCN defines them (ideal DCG over min(|truth|, k))."""
    k = hits.shape[1]
    discount = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float32))
    ideal = torch.cumsum(discount, 0)[(n_truth.clamp(max=k) - 1).long()]
    return hits.sum(1) / n_truth, (hits * discount).sum(1) / ideal


@torch.no_grad()
def evaluate(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    train_m: torch.Tensor,
    valid: Truth | None,
    test: Truth | None,
    valid_m: torch.Tensor,
    k: int = 20,
    batch: int = 2048,
):
    """Full ranking over all items, scored once per user for both splits.

    Validation ranks with the train items masked; test ranks with train and validation items
    masked.  Returns (valid recall, valid ndcg, test recall, test ndcg), means over the users
    that have held-out items in that split (nan for a split that is None).
    """
    n_users = user_emb.shape[0]
    sums = torch.zeros(4, dtype=torch.float64)
    for s in range(0, n_users, batch):
        ub = torch.arange(s, min(s + batch, n_users))
        scores = user_emb[ub] @ item_emb.T
        r, c = _rows(train_m, ub)
        scores[r, c] = -math.inf
        for j, (truth, extra) in enumerate(((valid, None), (test, valid_m))):
            if truth is None:
                continue
            if extra is not None:
                r, c = _rows(extra, ub)
                scores[r, c] = -math.inf
            nt = truth.count[ub]
            keep = nt > 0
            top = torch.topk(scores[keep], k, dim=1).indices
            rec, ndcg = metrics(truth.hits(ub[keep], top), nt[keep].float())
            sums[2 * j] += rec.sum().double()
            sums[2 * j + 1] += ndcg.sum().double()
    out = [float("nan")] * 4
    if valid is not None:
        nv = int((valid.count > 0).sum())
        out[:2] = [sums[0].item() / nv, sums[1].item() / nv]
    if test is not None:
        nt = int((test.count > 0).sum())
        out[2:] = [sums[2].item() / nt, sums[3].item() / nt]
    return tuple(out)


def _rows(m: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(local row index, column) of the nonzeros of CSR ``m`` in the given rows."""
    crow, col = m.crow_indices(), m.col_indices()
    starts, ends = crow[rows], crow[rows + 1]
    lengths = ends - starts
    local = torch.repeat_interleave(torch.arange(len(rows)), lengths)
    offsets = torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    return local, col[starts[local] + offsets]


# ----------------------------------------------------------------------------------------------
# main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=default_data_dir(),
        help="folder holding gowalla/train.txt and test.txt ($FEDSHARE_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--batch", type=int, default=2048, help="training triples per Adam step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--layers", type=int, default=3, help="LightGCN propagation layers")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument(
        "--l2",
        type=float,
        default=1e-4,
        help="weight of 0.5*||layer-0 embeddings of the batch||^2 / batch (LightGCN's decay)",
    )
    p.add_argument("--negatives", type=int, default=1, help="sampled negatives per positive (BPR averaged)")
    p.add_argument(
        "--loss",
        choices=["bpr", "softmax"],
        default="bpr",
        help="bpr: mean BPR over the negatives; softmax: sampled softmax of the positive "
        "against its negatives, scores divided by --temperature",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="for --loss softmax")
    p.add_argument(
        "--cosine",
        action="store_true",
        help="score with the cosine of the propagated embeddings (training and ranking), as "
        "sampled-softmax recommenders do; the embeddings' norms then carry no popularity",
    )
    p.add_argument(
        "--shared-negatives",
        type=int,
        default=0,
        help="if > 0: instead of per-example negatives, this many uniform items per step shared "
        "by the whole batch (scored by one matmul; a user's own positives are not excluded)",
    )
    p.add_argument("--sampling", choices=["uniform-user", "pairs"], default="uniform-user")
    p.add_argument("--epochs", type=int, default=1000)
    p.add_argument("--eval-every", type=int, default=10, help="evaluate every this many epochs")
    p.add_argument(
        "--patience",
        type=int,
        default=0,
        help="stop after this many evaluations without a better validation recall (0: never)",
    )
    p.add_argument("--time-limit", type=float, default=0, help="stop after this many training seconds (0: none)")
    p.add_argument(
        "--valid-ratio",
        type=float,
        default=0.1,
        help="share of each user's train.txt pairs carved out for validation; 0: none, all of train.txt "
        "trains and the best epoch is the best on test (the papers' protocol, a diagnostic only)",
    )
    p.add_argument("--min-items", type=int, default=3, help="users with fewer train items get no validation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--no-test", action="store_true", help="do not evaluate test along the way (only at the best epoch)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()

    folder = args.data_dir / "gowalla"
    tr_u, tr_i = parse_pairs((folder / "train.txt").read_bytes(), str(folder / "train.txt"))
    te_u, te_i = parse_pairs((folder / "test.txt").read_bytes(), str(folder / "test.txt"))
    n_users = int(max(tr_u.max(), te_u.max())) + 1
    n_items = int(max(tr_i.max(), te_i.max())) + 1
    is_valid = split_valid(tr_u, args.valid_ratio, args.min_items, args.seed)
    fit_u, fit_i = tr_u[~is_valid], tr_i[~is_valid]
    train_m = csr_rows(fit_u, fit_i, n_users, n_items)
    valid_m = csr_rows(tr_u[is_valid], tr_i[is_valid], n_users, n_items)
    test_m = csr_rows(te_u, te_i, n_users, n_items)
    adj = normalized_adjacency(fit_u, fit_i, n_users, n_items)
    sampler = Sampler(fit_u, fit_i, n_users, n_items, args.sampling, args.negatives, rng)
    print(
        f"# data: {n_users} users, {n_items} items, {len(fit_u)} train / {int(is_valid.sum())} valid / "
        f"{len(te_u)} test pairs; loaded in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )
    print(f"# config: {vars(args)}", flush=True)

    emb = torch.nn.Parameter(torch.randn(n_users + n_items, args.dim) * 0.1)
    opt = torch.optim.Adam([emb], lr=args.lr)

    def final_embeddings():
        with torch.no_grad():
            out = Propagate.run(adj, emb.detach(), args.layers)
            if args.cosine:
                out = torch.nn.functional.normalize(out, dim=1)
        return out[:n_users], out[n_users:]

    valid_truth = Truth(valid_m, n_items) if is_valid.any() else None
    test_truth = Truth(test_m, n_items)

    def eval_all(with_test: bool):
        ue, ie = final_embeddings()
        return evaluate(ue, ie, train_m, valid_truth, test_truth if with_test else None, valid_m)

    best = dict(valid=-1.0, epoch=0, test_recall=float("nan"), test_ndcg=float("nan"), seconds=0.0)
    best_state = None
    train_seconds, steps, since_best = 0.0, 0, 0
    shared = args.shared_negatives > 0
    for epoch in range(1, args.epochs + 1):
        te = time.perf_counter()
        u, p, n = sampler.epoch()
        u, p, n = (torch.from_numpy(x) for x in (u, p, n))
        perm = torch.randperm(len(u))
        loss_sum = 0.0
        for s in range(0, len(u), args.batch):
            idx = perm[s : s + args.batch]
            b = len(idx)
            if shared:  # one set of uniform negatives for the whole batch, scored by a matmul
                negs = torch.randint(0, n_items, (args.shared_negatives,))
            else:
                negs = n[idx].ravel()
            rows = torch.cat([u[idx], p[idx] + n_users, negs + n_users])
            out = Propagate.apply(emb, adj, args.layers).index_select(0, rows)
            if args.cosine:
                out = torch.nn.functional.normalize(out, dim=1)
            eu, ep, en = out[:b], out[b : 2 * b], out[2 * b :]
            pos = (eu * ep).sum(-1, keepdim=True)
            if shared:
                neg = eu @ en.T  # B x M
            else:
                neg = (eu.unsqueeze(1) * en.view(b, args.negatives, -1)).sum(-1)  # B x negatives
            if args.loss == "bpr":
                rank_loss = torch.nn.functional.softplus(neg - pos).mean()
            else:
                logits = torch.cat([pos, neg], 1) / args.temperature
                rank_loss = (torch.logsumexp(logits, 1) - logits[:, 0]).mean()
            e0 = emb.index_select(0, rows).pow(2).sum(1)  # layer-0 L2, as LightGCN
            # users and positives per example; negatives weighted as one negative per example
            reg = 0.5 * (e0[: 2 * b].sum() / b + e0[2 * b :].mean())
            loss = rank_loss + args.l2 * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += rank_loss.item() * b
            steps += 1
        train_seconds += time.perf_counter() - te
        last = epoch == args.epochs or (args.time_limit and train_seconds >= args.time_limit)
        if epoch % args.eval_every == 0 or last:
            tv = time.perf_counter()
            vr, vn, tr, tn = eval_all(not args.no_test or valid_truth is None)
            # Without a validation carve the best epoch is the best on test: the papers' protocol,
            # a diagnostic of the implementation, never a selection the project reports as its own.
            selected_on = vr if valid_truth is not None else tr
            improved = selected_on > best["valid"]
            if improved:
                best.update(valid=selected_on, epoch=epoch, test_recall=tr, test_ndcg=tn, seconds=train_seconds)
                best_state = emb.detach().clone() if args.no_test else None
                since_best = 0
            else:
                since_best += 1
            print(
                f"epoch {epoch:4d}  steps {steps:6d}  train_s {train_seconds:8.1f}  "
                f"s/epoch {train_seconds / epoch:6.2f}  s/step {train_seconds / steps:.3f}  "
                f"loss {loss_sum / len(u):.4f}  "
                f"valid_r20 {vr:.4f}  test_r20 {tr:.4f}  test_n20 {tn:.4f}  eval_s {time.perf_counter() - tv:.1f}"
                f"{'  *' if improved else ''}",
                flush=True,
            )
            if args.patience and since_best >= args.patience:
                break
        if last:
            break

    if args.no_test and best_state is not None:
        emb.data.copy_(best_state)
        _, _, best["test_recall"], best["test_ndcg"] = eval_all(True)
    print(
        f"SUMMARY batch {args.batch} lr {args.lr} layers {args.layers} l2 {args.l2} loss {args.loss} "
        f"negatives {args.negatives} shared_negatives {args.shared_negatives} cosine {args.cosine} "
        f"temperature {args.temperature} sampling {args.sampling} "
        f"epochs_run {epoch} s/epoch {train_seconds / epoch:.2f} s/step {train_seconds / steps:.3f}  "
        f"best_valid_r20 {best['valid']:.4f} at epoch {best['epoch']} (train_s {best['seconds']:.0f})  "
        f"test_r20 {best['test_recall']:.4f}  test_n20 {best['test_ndcg']:.4f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
