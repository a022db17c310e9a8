"""The ``fedshare`` command line.  Bad input gives one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import METHODS, ConfigError, load_config
from .data import DataError
from .storage import CorruptFileError

USER_ERRORS = (ConfigError, DataError, CorruptFileError, FileNotFoundError)

TRAIN_EXAMPLES = """
examples:
  fedshare train --dataset ml-100k --data-dir ../shared/data --out runs/ml100k-mixed
  fedshare train --method local --out runs/local          # nobody shares (FedAvg FedRec)
  fedshare train --method central --out runs/central      # LightGCN on all data (the ceiling)
  fedshare train --sharing 0.5 --set model.contrastive_weight=0 --out runs/no-cl
  fedshare train --dataset data/my.csv --set data.columns.user=uid --set data.columns.item=iid --out runs/mine

Defaults come from params.yaml; every key there can be changed with --set section.key=value.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedshare",
        description="Federated recommendation with personalized data sharing (and unsharing).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a model and write a run directory",
        description="Load data, split it per user, draw the sharing masks, train with the federated engine, "
                    "evaluate with full ranking on the test split and write RUN_DIR.",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("--dataset", help="ml-100k, ml-1m, or a path to a CSV/TSV/Parquet file of interactions "
                                         "(default: data.dataset in params.yaml)")
    train.add_argument("--data-dir", help="folder laid out like ../shared/data (ml-100k/u.data, ml-1m/ratings.dat); "
                                          "default: $FEDSHARE_DATA_DIR, else download from GroupLens into "
                                          "~/.cache/fedshare with a checksum check")
    train.add_argument("--method", choices=METHODS,
                       help="fedshare: clients + server graph of shared data + contrastive alignment; "
                            "local: nobody shares (FedRec baseline); central: LightGCN on all data (ceiling)")
    train.add_argument("--sharing", metavar="POLICY",
                       help="how much each user shares: none, all, mixed (1/3 each at 0, 0.5, 1), uniform "
                            "(rho ~ U[0,1]), a number in [0,1], or file (with --set sharing.file=PATH)")
    train.add_argument("--seed", type=int, help="seed of the split, the masks and training")
    train.add_argument("--device", help="cpu or cuda")
    train.add_argument("--rounds", type=int, help="maximum number of federated rounds (federated.rounds)")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    add_config_arguments(train)
    train.set_defaults(handler=run_train)

    requests = commands.add_parser(
        "make-requests", help="draw a random unsharing request file from a run",
        description="Pick a fraction of the run's sharing users and write requests.csv "
                    "(request_id,user_id,item_id; an empty item_id means all of that user's shared items).")
    requests.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory written by `fedshare train`")
    requests.add_argument("--fraction", type=float, default=0.1, help="fraction of sharing users who unshare (default 0.1)")
    requests.add_argument("--scope", choices=("all", "partial"), default="all",
                          help="all: each chosen user unshares everything shared; partial: half of it")
    requests.add_argument("--seed", type=int, default=0)
    requests.add_argument("--out", required=True, metavar="FILE", help="CSV file to write")
    requests.set_defaults(handler=run_make_requests)

    unshare = commands.add_parser(
        "unshare", help="apply unsharing requests to a run and remove their influence",
        description="Validate the requests against the run's masks (rejected rows go to OUT_DIR/rejections.csv), "
                    "make the pairs private again (or delete them with --mode delete), unlearn, evaluate, and write "
                    "OUT_DIR/unlearning.json plus a run directory that unshare can start from again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  fedshare make-requests --run runs/a --fraction 0.1 --out requests.csv\n"
               "  fedshare unshare --run runs/a --requests requests.csv --method contrastive --compare-retrain --out runs/a-u1")
    unshare.add_argument("--run", required=True, metavar="RUN_DIR", help="a fedshare run directory")
    source = unshare.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", metavar="FILE", help="CSV with request_id,user_id,item_id (raw dataset IDs)")
    source.add_argument("--fraction", type=float, help="draw requests for this fraction of sharing users instead")
    unshare.add_argument("--scope", choices=("all", "partial"), default="all", help="with --fraction: what they unshare")
    unshare.add_argument("--method", default="contrastive", choices=("contrastive", "finetune", "none", "retrain"),
                         help="contrastive: snapshot-based contrastive unlearning; finetune: more rounds without the "
                              "push; none: only drop the edges; retrain: from scratch without the data (reference)")
    unshare.add_argument("--mode", choices=("unshare", "delete"), default="unshare",
                         help="unshare: the data stays on the device as private; delete: it leaves the device too")
    unshare.add_argument("--compare-retrain", action="store_true", help="also retrain from scratch and report it under 'retrain'")
    unshare.add_argument("--seed", type=int, help="seed (default: the run's)")
    unshare.add_argument("--out", required=True, metavar="OUT_DIR")
    unshare.set_defaults(handler=run_unshare)
    return parser


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="parameters file (default: params.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one parameter, e.g. --set model.dim=32 (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> int:
    from .pipeline import summary_line, train_stage

    overrides = list(args.overrides)
    flags = {"data.dataset": args.dataset, "data.data_dir": args.data_dir, "run.method": args.method,
             "sharing.policy": args.sharing, "run.seed": args.seed, "run.device": args.device,
             "federated.rounds": args.rounds}
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    config = load_config(args.config, overrides)
    metrics = train_stage(config, Path(args.out), progress=not args.quiet)
    print(summary_line(metrics))
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def run_make_requests(args: argparse.Namespace) -> int:
    from .pipeline import make_requests_stage

    requests = make_requests_stage(args.run, args.fraction, args.scope, args.seed, args.out)
    print(f"wrote {len(requests)} requests for {requests['user_id'].nunique()} users to {args.out}")
    return 0


def run_unshare(args: argparse.Namespace) -> int:
    from .pipeline import unshare_stage

    metrics = unshare_stage(args.run, args.out, args.method, args.requests, args.fraction, args.scope, args.mode,
                            args.compare_retrain, args.seed)
    print(f"{metrics['method']}: {metrics['requests']} requests ({metrics['rejected']} rejected), "
          f"{metrics['unshared_interactions']} interactions, recall@20 {metrics['recall@20']:.4f}, "
          f"MIA AUC {metrics['mia_auc']:.3f}, {metrics['seconds']:.1f}s, {metrics['storage_bytes']} bytes kept")
    if "retrain" in metrics:
        print(f"retrain: recall@20 {metrics['retrain']['recall@20']:.4f}, MIA AUC {metrics['retrain']['mia_auc']:.3f}, "
              f"{metrics['retrain']['seconds']:.1f}s")
    print(f"wrote {Path(args.out) / 'unlearning.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as err:
        print(f"fedshare: error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # e.g. --device cuda without CUDA
        print(f"fedshare: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedshare: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
