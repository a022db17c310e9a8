"""The ``fedshare`` command line.  Bad input gives one line on stderr and exit code 2, no traceback."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedshare.config import METHODS, load_config
from fedshare.errors import ConfigError, CorruptFileError, DataError
from fedshare.unlearning.registry import METHODS as UNLEARNING_METHODS
from fedshare.unlearning.registry import methods_help

USER_ERRORS = (ConfigError, DataError, CorruptFileError, FileNotFoundError)


TRAIN_EXAMPLES = """
examples:
  fedshare train --dataset ml-100k --data-dir ../shared/data --out runs/ml100k-mixed
  fedshare train --method local --out runs/local          # nobody shares (FedAvg FedRec)
  fedshare train --method central --out runs/central      # LightGCN on all data (the ceiling)
  fedshare train --sharing 0.5 --set model.contrastive_weight=0 --out runs/no-cl
  fedshare train --dataset data/my.csv --set data.columns.user=uid --set data.columns.item=iid --out runs/mine
  fedshare train --backend ray --shards 4 --out runs/ray   # local Ray instance (sampler auto = counter)
  fedshare train --backend ray --ray-address auto --shards 64 --out runs/cluster

Defaults come from params.yaml; every key there can be changed with --set section.key=value.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedshare", description="Federated recommendation with personalized data sharing (and unsharing)."
    )
    from fedshare import __version__

    parser.add_argument("--version", action="version", version=f"fedshare {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model and write a run directory",
        description="Load data, split it per user, draw the sharing masks, train with the federated engine, "
        "evaluate with full ranking on the test split and write RUN_DIR.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--dataset",
        help="ml-100k, ml-1m, gowalla, a path to a CSV/TSV/Parquet file of interactions, "
        "or a folder with train.txt and test.txt (LightGCN layout) "
        "(default: data.dataset in params.yaml)",
    )
    train.add_argument(
        "--data-dir",
        help="folder laid out like ../shared/data (ml-100k/u.data, ml-1m/ratings.dat, gowalla/train.txt and test.txt); "
        "default: $FEDSHARE_DATA_DIR, else download from GroupLens into "
        "~/.cache/fedshare with a checksum check",
    )
    train.add_argument(
        "--method",
        choices=METHODS,
        help="fedshare: clients + server graph of shared data + contrastive alignment; "
        "local: nobody shares (FedRec baseline); central: LightGCN on all data (ceiling)",
    )
    train.add_argument(
        "--sharing",
        metavar="POLICY",
        help="how much each user shares: none, all, mixed (1/3 each at 0, 0.5, 1), uniform "
        "(rho ~ U[0,1]), a number in [0,1], or file (with --set sharing.file=PATH)",
    )
    train.add_argument("--seed", type=int, help="seed of the split, the masks and training")
    train.add_argument("--device", help="cpu or cuda")
    train.add_argument("--rounds", type=int, help="maximum number of federated rounds (federated.rounds)")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to write")
    train.add_argument(
        "--prepared", metavar="DIR", help="start from `fedshare prepare` output instead of loading the data"
    )
    train.add_argument("--masks", metavar="FILE", help="start from `fedshare share` masks instead of drawing them")
    train.add_argument(
        "--backend",
        choices=("local", "ray"),
        help="local: every client simulated in this process (default); ray: clients split into "
        "--shards shards, one Ray actor each, the server in this process (run.backend). "
        "ray needs --set federated.sampler=counter, whose negatives do not depend on how clients "
        "are grouped; train the local run you compare with with it too",
    )
    train.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="with --backend ray: the Ray cluster to join (auto, or HOST:6379; ray:// would need ray[client]); "
        "default: start a local Ray instance (run.ray_address)",
    )
    train.add_argument(
        "--shards", type=int, metavar="N", help="with --backend ray: number of client shards (run.shards)"
    )
    train.add_argument(
        "--state",
        metavar="DIR",
        help="train for this state folder (what the unlearning flow works on): its users keep their "
        "choices whatever --sharing says (the policy only draws for users it never served), its applied "
        "requests are replayed (nothing withdrawn is shared again, nothing deleted is trained on), and the "
        "run is served only if it beats the served model on the same validation measure",
    )
    add_config_arguments(train)
    train.set_defaults(handler=run_train)

    requests = commands.add_parser(
        "make-requests",
        help="draw a random unsharing request file from a run",
        description="Pick a fraction of the run's sharing users and write requests.csv "
        "(request_id,user_id,item_id; an empty item_id means all of that user's shared items).",
    )
    requests.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory written by `fedshare train`")
    requests.add_argument(
        "--fraction", type=float, default=0.1, help="fraction of sharing users who unshare (default 0.1)"
    )
    requests.add_argument(
        "--scope",
        choices=("all", "partial"),
        default="all",
        help="all: each chosen user unshares everything shared; partial: half of it",
    )
    requests.add_argument("--seed", type=int, default=0)
    requests.add_argument("--out", required=True, metavar="FILE", help="CSV file to write")
    requests.set_defaults(handler=run_make_requests)

    unshare = commands.add_parser(
        "unshare",
        help="apply unsharing requests to a run and remove their influence",
        description="Validate the requests against the run's masks (rejected rows go to OUT_DIR/rejections.csv), "
        "make the pairs private again (or delete them with --mode delete), unlearn, evaluate, and write "
        "OUT_DIR/unlearning.json plus a run directory that unshare can start from again.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  fedshare make-requests --run runs/a --fraction 0.1 --out requests.csv\n"
        "  fedshare unshare --run runs/a --requests requests.csv --method contrastive --compare-retrain \\\n"
        "      --out runs/a-u1",
    )
    unshare.add_argument("--run", required=True, metavar="RUN_DIR", help="a fedshare run directory")
    source = unshare.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", metavar="FILE", help="CSV with request_id,user_id,item_id (raw dataset IDs)")
    source.add_argument("--fraction", type=float, help="draw requests for this fraction of sharing users instead")
    unshare.add_argument(
        "--scope", choices=("all", "partial"), default="all", help="with --fraction: what they unshare"
    )
    unshare.add_argument("--method", default="contrastive", choices=tuple(UNLEARNING_METHODS), help=methods_help())
    unshare.add_argument(
        "--mode",
        choices=("unshare", "delete"),
        default="unshare",
        help="unshare: the data stays on the device as private; delete: it leaves the device too",
    )
    unshare.add_argument(
        "--compare-retrain", action="store_true", help="also retrain from scratch and report it under 'retrain'"
    )
    unshare.add_argument("--seed", type=int, help="seed (default: the run's)")
    unshare.add_argument("--out", required=True, metavar="OUT_DIR")
    unshare.set_defaults(handler=run_unshare)
    add_config_arguments(unshare, quiet=False)

    add_pipeline_commands(commands)
    return parser


def add_pipeline_commands(commands) -> None:
    """The DVC stages and the unlearning inbox: one command per stage."""
    fetch = commands.add_parser(
        "fetch",
        help="copy a known dataset into a DVC-tracked folder (data/)",
        description="Copy ml-100k, ml-1m or gowalla from --data-dir / $FEDSHARE_DATA_DIR (else download from "
        "GroupLens, or LightGCN-PyTorch for gowalla, with a checksum) into DIR, laid out like "
        "../shared/data.  data.dvc tracks data/.",
    )
    fetch.add_argument("--dataset", default="ml-100k", help="ml-100k, ml-1m or gowalla (default ml-100k)")
    fetch.add_argument("--data-dir", help="source folder (default: $FEDSHARE_DATA_DIR, else cache/download)")
    fetch.add_argument("--to", default="data", metavar="DIR", help="target folder (default data)")
    fetch.set_defaults(handler=run_fetch)

    prepare = commands.add_parser(
        "prepare",
        help="load, clean and split the data (DVC stage)",
        description="Read the dataset, map raw IDs to indices, split per user; writes "
        "OUT/interactions.parquet and OUT/prepare.json.",
    )
    prepare.add_argument("--dataset")
    prepare.add_argument("--data-dir")
    prepare.add_argument("--out", required=True, metavar="DIR")
    add_config_arguments(prepare, quiet=False)
    prepare.set_defaults(handler=run_prepare)

    validate = commands.add_parser(
        "validate",
        help="Great Expectations checks on prepared data (DVC stage)",
        description="Validate OUT of `fedshare prepare`; exit code 2 and a short report on failure.",
    )
    validate.add_argument("--prepared", required=True, metavar="DIR")
    validate.add_argument("--report", metavar="FILE", help="write the report as JSON")
    validate.set_defaults(handler=run_validate)

    share = commands.add_parser(
        "share",
        help="draw and validate the sharing masks (DVC stage)",
        description="Draw each user's sharing mask from sharing.policy; with --state, users that "
        "state folder serves keep their own choices and its applied requests are replayed, so consent "
        "stays as users gave or withdrew it.",
    )
    share.add_argument("--prepared", required=True, metavar="DIR")
    share.add_argument("--sharing", metavar="POLICY")
    share.add_argument("--state", metavar="DIR", help="state folder whose users' consent to keep")
    share.add_argument("--out", required=True, metavar="DIR")
    add_config_arguments(share, quiet=False)
    share.set_defaults(handler=run_share)

    evaluate = commands.add_parser(
        "evaluate",
        help="full-ranking evaluation of saved runs (DVC stage)",
        description="Re-evaluate each RUN_DIR on test; writes OUT/summary.json and "
        "OUT/validation_curve.json (for `dvc plots`).",
    )
    evaluate.add_argument("--run", action="append", required=True, metavar="RUN_DIR", dest="runs")
    evaluate.add_argument("--out", required=True, metavar="DIR")
    evaluate.set_defaults(handler=run_evaluate)

    inbox = commands.add_parser(
        "process-inbox",
        help="apply the request files dropped in the inbox to the served model",
        description="For each CSV in the inbox (request_id,user_id,item_id; files named delete*.csv are delete "
        "requests): check it, journal the accepted requests, unlearn, log the event to MLflow, move the "
        "file to processed/ with its rejections.  What the unlearning flow and its schedule run.",
    )
    inbox.add_argument("--state", help="state folder (default requests.state)")
    inbox.add_argument("--inbox", help="inbox folder (default requests.inbox)")
    inbox.add_argument(
        "--method", choices=tuple(UNLEARNING_METHODS), help="unlearning method (default unlearning.method)"
    )
    add_config_arguments(inbox, quiet=False)
    inbox.set_defaults(handler=run_process_inbox)

    purge = commands.add_parser(
        "purge",
        help="delete superseded copies that still hold withdrawn data",
        description="Delete model folders other than CURRENT, DVC mask versions other than the served one, and MLflow "
        "model versions registered before the last unlearning event, once older than "
        "requests.retention_days (0: at once).  The unlearning flow runs this after every event.",
    )
    purge.add_argument("--state", help="state folder (default requests.state)")
    add_config_arguments(purge, quiet=False)
    purge.set_defaults(handler=run_purge)
    add_service_commands(commands)


def add_service_commands(commands) -> None:
    """The HTTP API on a state folder, and the tokens its users authenticate with."""
    serve = commands.add_parser(
        "serve",
        help="start the HTTP API (consent, requests with receipts, recommendations) on a state folder",
        description="Serve the state folder's model over HTTP: PUT /users/ID/consent, POST /users/ID/unshare, "
        "POST /users/ID/delete (202 with a receipt), GET /requests/RECEIPT, GET /users/ID/consent, "
        "GET /users/ID/recommendations?k=20, GET /health; OpenAPI docs at /docs.  Requests become files "
        "in the inbox (written before the answer), applied by `fedshare process-inbox`, the inbox flow, or "
        "this process itself with --apply-every.  Tokens: `fedshare users issue-token`.",
    )
    serve.add_argument("--state", help="state folder (default requests.state)")
    serve.add_argument("--inbox", help="inbox folder (default requests.inbox)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument(
        "--apply-every",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also apply waiting requests every SECONDS (one process is enough for a demo); 0: leave it to "
        "process-inbox or the inbox flow (default)",
    )
    serve.add_argument(
        "--method", choices=tuple(UNLEARNING_METHODS), help="unlearning method (default unlearning.method)"
    )
    add_config_arguments(serve, quiet=False)
    serve.set_defaults(handler=run_serve)

    users = commands.add_parser("users", help="manage the API's users (tokens)")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    issue = user_commands.add_parser(
        "issue-token",
        help="print a new API token for a user (shown once; only its hash is stored)",
        description="Print a new bearer token for USER_ID (a raw user ID of the data set) as the last line; it "
        "replaces the user's previous token.  --operator issues a token that acts for every user.",
    )
    issue.add_argument("user_id", nargs="?", metavar="USER_ID")
    issue.add_argument("--operator", action="store_true", help="an operator token (acts for every user)")
    issue.add_argument("--state", help="state folder (default requests.state)")
    add_config_arguments(issue, quiet=False)
    issue.set_defaults(handler=run_issue_token)


def add_config_arguments(parser: argparse.ArgumentParser, quiet: bool = True) -> None:
    parser.add_argument("--config", metavar="FILE", help="parameters file (default: params.yaml)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override one parameter, e.g. --set model.dim=32 (repeatable)",
    )
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bar and no progress log")


def config_from(args: argparse.Namespace, flags: dict[str, object] | None = None):
    overrides = list(args.overrides) + [f"{key}={value}" for key, value in (flags or {}).items() if value is not None]
    return load_config(args.config, overrides)


def run_train(args: argparse.Namespace) -> int:
    from fedshare.stages import train_stage

    config = config_from(
        args,
        {
            "data.dataset": args.dataset,
            "data.data_dir": args.data_dir,
            "run.method": args.method,
            "sharing.policy": args.sharing,
            "run.seed": args.seed,
            "run.device": args.device,
            "federated.rounds": args.rounds,
            "run.backend": args.backend,
            "run.ray_address": args.ray_address,
            "run.shards": args.shards,
        },
    )
    consent = None
    if args.state:  # a model for a state folder keeps every user's choice and every request applied there
        from fedshare.service.model_store import ModelStore

        consent = ModelStore(args.state).consent()
    metrics = train_stage(
        config,
        Path(args.out),
        progress=not args.quiet,
        prepared_dir=args.prepared,
        masks_path=args.masks,
        consent=consent,
    )
    print(summary_line(metrics))
    if config.run.backend == "ray":
        last = (json.loads((Path(args.out) / "history.json").read_text()) or [{}])[-1]
        print(
            f"ray: {last.get('net/shards', 0):.0f} shards, per shard and round "
            f"{last.get('net/down_bytes_per_shard', 0):,.0f} bytes down, "
            f"{last.get('net/up_bytes_per_shard', 0):,.0f} up (history.json net/*)"
        )
    print(f"wrote {Path(args.out) / 'metrics.json'}")
    if "tracking" in metrics:
        tracked = metrics["tracking"]
        print(
            f"MLflow: run {tracked['run_id']} in {tracked['experiment']}, model version {tracked['model_version']}"
            f"{' (alias candidate)' if tracked['model_version'] else ''}; "
            f"browse with: mlflow ui --backend-store-uri {tracked['tracking_uri']}"
        )
    if args.state:
        from fedshare.service.model_store import publish

        served = publish(config, args.state, args.out)
        if not served:
            print(f"{args.state}: kept the current model (better on validation)")
        else:
            version = metrics.get("tracking", {}).get("model_version")
            print(
                f"{args.state}: now serving this run"
                + (f" (MLflow alias champion: version {version})" if version else "")
            )
    return 0


def run_make_requests(args: argparse.Namespace) -> int:
    from fedshare.stages import make_requests_stage

    requests = make_requests_stage(args.run, args.fraction, args.scope, args.seed, args.out)
    print(f"wrote {len(requests)} requests for {requests['user_id'].nunique()} users to {args.out}")
    return 0


def run_unshare(args: argparse.Namespace) -> int:
    from fedshare.stages import unshare_stage

    if args.config:
        raise ConfigError("unshare uses the run's own config.yaml; change single values with --set")
    metrics = unshare_stage(
        args.run,
        args.out,
        args.method,
        args.requests,
        args.fraction,
        args.scope,
        args.mode,
        args.compare_retrain,
        args.seed,
        overrides=args.overrides,
    )
    print(
        f"{metrics['method']}: {metrics['requests']} requests ({metrics['rejected']} rejected), "
        f"{metrics['unshared_interactions']} interactions, recall@20 {metrics['recall@20']:.4f}, "
        f"{attack_summary(metrics)}, {metrics['seconds']:.1f}s, {metrics['storage_bytes']} bytes kept"
    )
    if "retrain" in metrics:
        retrained = metrics["retrain"]
        print(
            f"retrain: recall@20 {retrained['recall@20']:.4f}, {attack_summary(retrained)}, {retrained['seconds']:.1f}s"
        )
    print(f"wrote {Path(args.out) / 'unlearning.json'}")
    return 0


def attack_summary(metrics: dict) -> str:
    """The membership attacks of an unlearning event, in one phrase."""
    text = f"MIA AUC {metrics['mia_auc']:.3f} (strongest on the server's tables {metrics['mia_auc_server']:.3f}"
    if "mia_auc_device" in metrics:
        text += f", on the device's score {metrics['mia_auc_device']:.3f}"
    return text + ")"


def run_fetch(args: argparse.Namespace) -> int:
    from fedshare.data.loading import fetch_dataset

    print(f"{args.dataset}: {fetch_dataset(args.dataset, args.to, args.data_dir)}")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from fedshare.stages import prepare_stage

    summary = prepare_stage(config_from(args, {"data.dataset": args.dataset, "data.data_dir": args.data_dir}), args.out)
    print(
        f"{summary['dataset']}: {summary['n_users']} users, {summary['n_items']} items, "
        f"{summary['n_train']}/{summary['n_valid']}/{summary['n_test']} train/valid/test -> {args.out}"
    )
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from fedshare.stages import validate_stage

    report = validate_stage(args.prepared, args.report)
    print(f"{report['suite']}: {report['evaluated']} expectations passed on {report['rows']} rows")
    return 0


def run_share(args: argparse.Namespace) -> int:
    from fedshare.stages import share_stage

    consent = None
    if args.state:
        from fedshare.service.model_store import ModelStore

        consent = ModelStore(args.state).consent()
    summary = share_stage(config_from(args, {"sharing.policy": args.sharing}), args.prepared, args.out, consent)
    print(
        f"sharing {summary['policy']}: {summary['n_shared']} of {summary['n_train']} training interactions shared "
        f"by {summary['sharing_users']} users -> {Path(args.out) / 'masks.parquet'}"
    )
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from fedshare.stages import evaluate_stage

    summary = evaluate_stage(args.runs, args.out)
    for name, metrics in summary.items():
        print(f"{name}: recall@20 {metrics['recall@20']:.4f}  ndcg@20 {metrics['ndcg@20']:.4f}")
    return 0


def run_process_inbox(args: argparse.Namespace) -> int:
    from fedshare.service.inbox import UnparsedFiles, check_outcomes, process_inbox

    config = config_from(args)
    outcomes = process_inbox(
        config,
        args.state or config.requests.state,
        args.inbox or config.requests.inbox,
        args.method or config.unlearning.method,
    )
    if not outcomes:
        print("inbox is empty")
    for outcome in outcomes:
        if "error" in outcome:
            print(f"{outcome['file']}: not parsed, moved to failed/ ({outcome['error']})")
        else:
            print(
                f"{outcome['file']}: {outcome['applied']} requests applied, {outcome['rejected']} rejected"
                + (
                    f", event {outcome['event']['event']} -> model {outcome['event']['model']}"
                    if outcome["event"]
                    else ""
                )
            )
    try:
        check_outcomes(outcomes)
    except UnparsedFiles as err:  # every other file was handled; a non-zero exit lets cron or a scheduler alert
        print(f"error: {err}; exit 3", file=sys.stderr)
        return 3
    return 0


def run_purge(args: argparse.Namespace) -> int:
    from fedshare.service.inbox import purge
    from fedshare.service.journal import state_lock

    config = config_from(args)
    state = args.state or config.requests.state
    with state_lock(state):
        purged = purge(config, state)
    print(
        f"purged {len(purged['models'])} model folders, {len(purged['mask_versions'])} DVC mask versions, "
        f"{len(purged['mlflow_versions'])} MLflow model versions"
    )
    return 0


def run_serve(args: argparse.Namespace) -> int:
    import threading
    import time

    import uvicorn

    from fedshare.service.api import create_app
    from fedshare.service.inbox import process_inbox
    from fedshare.service.pending import pending_files

    config = config_from(args)
    state, inbox = args.state or config.requests.state, args.inbox or config.requests.inbox
    if args.apply_every > 0:
        method = args.method or config.unlearning.method

        def apply_forever() -> None:
            while True:
                time.sleep(args.apply_every)
                try:
                    if pending_files(inbox):
                        for outcome in process_inbox(config, state, inbox, method):
                            print(f"applied {outcome['file']}: {outcome.get('applied', 0)} requests", flush=True)
                except Exception as err:  # noqa: BLE001 - keep serving; the files stay for the next try
                    print(f"fedshare serve: applying failed ({err}); retrying in {args.apply_every}s", flush=True)

        threading.Thread(target=apply_forever, name="apply-requests", daemon=True).start()
    print(f"FedShare API on http://{args.host}:{args.port} (docs: /docs), state {state}, inbox {inbox}", flush=True)
    uvicorn.run(create_app(state, inbox), host=args.host, port=args.port, log_level="warning")
    return 0


def run_issue_token(args: argparse.Namespace) -> int:
    from fedshare.service.tokens import TokenStore

    if args.operator == bool(args.user_id):
        raise ConfigError("give a USER_ID or --operator (not both)")
    from fedshare.data.sharing import load_mask
    from fedshare.service.model_store import ModelStore

    config = config_from(args)
    state = args.state or config.requests.state
    served = ModelStore(state).require_current()
    if args.user_id and args.user_id not in set(load_mask(served / "masks.parquet")["user_id"].astype(str)):
        raise DataError(f"user {args.user_id} is not in the served model's data ({served})")
    token = TokenStore(state).issue(None if args.operator else args.user_id)
    who = "the operator" if args.operator else f"user {args.user_id}"
    print(f"token for {who} (shown once; send it as 'Authorization: Bearer TOKEN'):")
    print(token)
    return 0


COMPUTE_COMMANDS = {"train", "unshare", "evaluate", "process-inbox", "serve"}  # the ones that run torch


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in COMPUTE_COMMANDS:
        from fedshare.threads import apply_thread_policy

        apply_thread_policy()
        if not getattr(args, "quiet", False):  # validation, early stopping, unlearning steps above the bar
            from fedshare.logs import to_console

            to_console()
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


def summary_line(metrics: dict[str, Any]) -> str:
    keys = [k for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20") if k in metrics]
    values = "  ".join(f"{k} {metrics[k]:.4f}" for k in keys)
    return (
        f"{metrics['method']} on {metrics['dataset']} (sharing {metrics['sharing']}, seed {metrics['seed']}): "
        f"{values}  best round {metrics['best_round']}  {metrics['seconds']:.1f}s"
    )


if __name__ == "__main__":
    sys.exit(main())
