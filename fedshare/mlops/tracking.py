"""MLflow tracking and model registry: the only module of FedShare that imports MLflow.

What is logged, and why:

* one experiment per dataset (``fedshare-<dataset>``), so runs on different data never get compared;
* a training run: its parameters (the whole config, flattened), per-round validation metrics sent with
  ``log_batch`` in chunks, the test metrics, the interactions and sharing masks as dataset inputs
  (digest, schema and size, never the rows), a Recall-vs-round plot and the model;
* an unlearning event: a run of its own, tagged with the run and model version it started from,
  with the same parameters and dataset inputs, ``storage_bytes``, ``seconds``, utility and
  forgetting metrics, the method and how many requests and users it touched.

Both kinds use one metric naming (``run_metrics``): ``test/recall_at_20``, ``valid/recall_at_20``
(the selected model's, logged at the step of its round), ``curve/valid/recall_at_20`` (the
validation curve as it happened), ``mia_auc``, ``seconds``, ... so the compare view lines them up.

The logged model is what the server ships to devices (``recommender.py``, an MLflow pyfunc): the
item vectors and raw item IDs inside, a device's user vector and the items it already has as the
input, its top-k raw item IDs as the output.  The user vectors are computed on each device, so no
private user embedding ever reaches the tracking server.

Aliases of the registered model: ``candidate`` names the latest registered version, whatever
produced it (a one-off experiment, a state folder's training, an unlearning event).  ``champion``
always names the model a state folder serves and nothing else moves it: ``mark_served`` is called
by the state folder when a training run beats the served model on the same validation measure
(``fedshare.service.model_store.publish``) and when an unlearning event has been applied and
measured (``fedshare.service.inbox.apply``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedshare.config import Config
from fedshare.data.loading import KNOWN_DATASETS
from fedshare.errors import ConfigError
from fedshare.storage import atomic_write_json

CHAMPION = "champion"  # the model a state folder serves
CANDIDATE = "candidate"  # the latest registered version
RUN_DIR_TAG = "fedshare.run_dir"  # where the run's folder is (or that it is gone)


BATCH = 1000  # MLflow accepts at most 1000 metrics per log_batch call


@dataclass
class TrackedRun:
    run_id: str
    experiment: str
    model_version: str | None
    champion: bool
    uri: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "model_version": self.model_version,
            "champion": self.champion,
            "tracking_uri": self.uri,
        }


def _mlflow():
    # MLflow's hints about integer schemas and ambiguous dataset sources say nothing useful here.
    warnings.filterwarnings("ignore", message=".*(Integer columns|dataset source can be interpreted).*")
    try:
        import mlflow
    except ImportError:  # the GPU machine and minimal installs have no MLflow
        raise ConfigError(
            "MLflow is not installed; install requirements.txt or pass --set tracking.enabled=false"
        ) from None
    return mlflow


def names(config: Config) -> tuple[str, str]:
    """(experiment, registered model) names; both default to fedshare-<dataset>."""
    dataset = (
        Path(config.data.dataset).stem
        if ("/" in config.data.dataset or "." in config.data.dataset)
        else config.data.dataset
    )
    default = f"fedshare-{dataset}"
    return config.tracking.experiment or default, config.tracking.registered_model or default


def tracking_uri(config: Config) -> str:
    uri = config.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    keep_artifacts_beside_the_database(uri)
    return uri


# Artifact tables of MLflow's SQL store whose values are local paths (MLflow 3 writes plain absolute paths).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)
_checked_stores: set[Path] = set()


def keep_artifacts_beside_the_database(uri: str) -> None:
    """A local ``sqlite:///…/mlflow.db`` keeps its artifacts in the ``mlruns/`` folder next to it.

    MLflow stores absolute artifact paths, so a copied project folder (its ``mlflow.db`` and
    ``mlruns/``) would go on writing into, and reading from, the original's ``mlruns/``.  Once per
    process and database, paths of the form ``OTHER/mlruns/…`` are rewritten to ``HERE/mlruns/…``
    (HERE: the database's folder) when ``HERE/mlruns/`` holds the experiment's folder (it was
    copied along), so that a copy is self-contained.  Any other location (a
    server, an object store, a folder configured on purpose) is left alone.
    """
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///")).resolve()
    if database in _checked_stores or not database.exists():
        return
    _checked_stores.add(database)
    import sqlite3

    here = f"{database.parent}/mlruns/"
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
        if "experiments" not in tables:
            return
        roots = set()
        for (location,) in connection.execute("select artifact_location from experiments"):
            if not location or not location.startswith("/") or "/mlruns/" not in location or location.startswith(here):
                continue  # a server, an object store, or already here
            old = location[: location.index("/mlruns/") + len("/mlruns/")]
            # Only a copy: the experiment's folder came along beside the database.  (A database used
            # from another working directory keeps its artifacts in that directory's mlruns/.)
            if (database.parent / "mlruns" / location[len(old) :]).is_dir():
                roots.add(old)
        for old in roots:
            for table, column in ARTIFACT_COLUMNS:
                if table in tables:
                    connection.execute(
                        f"update {table} set {column} = ? || substr({column}, ?) where substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, len(old), old),
                    )
            warnings.warn(f"{database} was copied from another folder: its artifacts now live in {here}, not {old}")


def metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / space: recall@20 -> recall_at_20."""
    return name.replace("@", "_at_")


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested metrics dict, with MLflow-safe keys (group/recall_at_20)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{metric_key(str(key))}"
        if isinstance(value, dict):
            flat.update(flat_metrics(value, name + "/"))
        elif isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            if np.isfinite(value):
                flat[name] = float(value)
    return flat


def run_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """One naming for every run, so that MLflow's compare view lines training and unlearning up:
    ranking metrics measured on test are ``test/[group/]recall_at_20``, the selected model's
    validation metrics ``valid/...``, anything else (seconds, storage_bytes, mia_auc, ...) keeps
    its name; a nested block (an unlearning event's ``retrain`` reference) gets its name as prefix."""
    flat: dict[str, float] = {}
    for key, value in flat_metrics({k: v for k, v in metrics.items() if k != "valid"}).items():
        parts = key.split("/")
        if "_at_" in parts[-1]:  # a ranking metric (recall_at_20, from '@'): measured on the test split
            at = 1 if parts[0] == "retrain" else 0
            key = "/".join(parts[:at] + ["test"] + parts[at:])
        flat[key] = value
    flat.update(flat_metrics(metrics.get("valid", {}), "valid/"))
    return flat


def flat_params(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            params.update(flat_params(value, f"{prefix}{key}."))
        else:
            params[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list) else str(value)
    return params


def log_metric_history(
    client, run_id: str, history: list[dict[str, Any]], step_key: str = "round", prefix: str = ""
) -> int:
    """Per-round metrics in batches of at most 1000 values; returns how many were sent."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(prefix + metric_key(key), float(value), now, int(row[step_key]))
        for row in history
        for key, value in row.items()
        if key != step_key and isinstance(value, (int, float)) and np.isfinite(value)
    ]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH])
    return len(metrics)


def _start(config: Config, run_name: str, tags: dict[str, str]):
    mlflow = _mlflow()
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    experiment, _ = names(config)
    mlflow.set_experiment(experiment)
    return mlflow, uri, experiment, mlflow.start_run(run_name=run_name, tags=tags)


def training_run_name(config: Config) -> str:
    return f"{config.run.method}-{config.sharing.policy}-seed{config.run.seed}"


def training_tags(config: Config, run_dir: Path) -> dict[str, str]:
    return {
        "fedshare.kind": "training",
        "fedshare.method": config.run.method,
        "fedshare.sharing": config.sharing.policy,
        "fedshare.dataset": config.data.dataset,
        RUN_DIR_TAG: run_dir_tag(run_dir),
    }


LIVE_RUN_FILE = "live_run.json"  # in the run folder: the MLflow run that got the curve while it trained


class LiveCurve:
    """The training run, opened before the first round, so that the MLflow UI shows the validation
    curve of a job that is still running (``curve/valid/...``, one point per validation).

    ``log_training`` later finishes the same run (params, summary, inputs, model) and logs only the
    curve points this object did not send.  The tracking server being away never stops a training:
    the curve then simply goes out at the end.  ``live_run.json`` in the run folder says which run
    it is and how far its curve got, so the separate tracking step of the flow can resume it.
    """

    def __init__(self, config: Config, run_dir: Path):
        self.file = Path(run_dir) / LIVE_RUN_FILE
        self.run_id: str | None = None
        try:
            mlflow = _mlflow()
            mlflow.set_tracking_uri(tracking_uri(config))
            experiment = mlflow.set_experiment(names(config)[0])
            self.client = _client(mlflow)
            run = self.client.create_run(
                experiment.experiment_id, run_name=training_run_name(config), tags=training_tags(config, run_dir)
            )
            self.run_id = run.info.run_id
            self._remember(0)
        except Exception as error:  # noqa: BLE001 - tracking must never cost a training
            warnings.warn(f"MLflow: no live curve ({error}); the curve is logged when the training ends")

    def __call__(self, row: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        try:
            log_metric_history(self.client, self.run_id, [row], prefix="curve/")
            self._remember(int(row["round"]))
        except Exception as error:  # noqa: BLE001
            warnings.warn(f"MLflow: live curve stopped ({error}); the rest is logged when the training ends")
            self.run_id = None

    def failed(self) -> None:
        """The training raised: the run says FAILED instead of staying RUNNING forever."""
        if self.run_id is not None:
            try:
                self.client.set_terminated(self.run_id, "FAILED")
            except Exception:  # noqa: BLE001
                pass

    def _remember(self, logged_through: int) -> None:
        atomic_write_json(self.file, {"run_id": self.run_id, "curve_logged_through": logged_through})


def live_run(run_dir: Path) -> dict[str, Any] | None:
    """What ``LiveCurve`` left in a run folder (``None`` when the curve was not sent live)."""
    path = Path(run_dir) / LIVE_RUN_FILE
    return json.loads(path.read_text()) if path.exists() else None


def log_training(
    config: Config,
    run_dir: Path,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    item_vectors: torch.Tensor,
    item_ids: np.ndarray,
    interactions_table,
    mask,
) -> TrackedRun:
    """Log one training run (params, per-round metrics, inputs, plot, model) and register it.
    A run opened by ``LiveCurve`` is finished rather than a new one started."""
    mlflow = _mlflow()
    live = live_run(run_dir)
    if live and live.get("run_id"):
        uri = tracking_uri(config)
        mlflow.set_tracking_uri(uri)
        experiment = names(config)[0]
        run = mlflow.start_run(run_id=live["run_id"])
        sent = int(live.get("curve_logged_through", 0))
    else:
        mlflow, uri, experiment, run = _start(config, training_run_name(config), training_tags(config, run_dir))
        sent = -1
    with run:
        mlflow.log_params(flat_params(config.to_dict()))
        # The curve as it happened (curve/valid/..., curve/server_bpr, one step per validated round);
        # the selected model's values are the run's summary, at the step of the round selected.
        unsent = [row for row in history if int(row["round"]) > sent]
        log_metric_history(mlflow.MlflowClient(), run.info.run_id, unsent, prefix="curve/")
        mlflow.log_metrics(run_metrics(metrics), step=int(metrics.get("best_round", 0)))
        _log_inputs(mlflow, interactions_table, mask, config, run_dir)
        mlflow.log_figure(recall_plot(history, config.eval.metric), "plots/validation_vs_round.png")
        mlflow.log_dict(metrics, "metrics.json")
        version = _log_model(mlflow, config, item_vectors, item_ids) if config.tracking.register else None
    if version:
        _client(mlflow).set_registered_model_alias(names(config)[1], CANDIDATE, version)
        describe_version(config, version, metrics, "training", interactions_table, mask)
    return TrackedRun(run.info.run_id, experiment, version, False, uri)


def log_unlearning(
    config: Config,
    event_dir: Path,
    metrics: dict[str, Any],
    item_vectors: torch.Tensor,
    item_ids: np.ndarray,
    parent: dict[str, Any] | None,
    storage: dict[str, int] | None = None,
    interactions_table=None,
    mask=None,
) -> TrackedRun:
    """Log one unlearning event as its own run, linked to the run/model it started from, with the
    same parameters, dataset inputs and metric names as a training run (``run_metrics``).

    ``storage``: bytes on disk that each approach keeps for unlearning, as measured for this run
    (e.g. this event's snapshots, the FRU update log if the run wrote one); plotted as a bar chart.
    """
    parent = parent or {}
    run_name = f"unlearn-{metrics['method']}-{metrics['requests']}req"
    tags = {
        "fedshare.kind": "unlearning",
        "fedshare.method": metrics["method"],
        "fedshare.mode": metrics.get("mode", ""),
        "fedshare.dataset": config.data.dataset,
        RUN_DIR_TAG: run_dir_tag(event_dir),
        "fedshare.parent_run_id": str(parent.get("run_id", "")),
        "fedshare.parent_model_version": str(parent.get("model_version", "")),
    }
    mlflow, uri, experiment, run = _start(config, run_name, tags)
    with run:
        params = flat_params(config.to_dict())
        params.update({"unlearning.method": metrics["method"], "unlearning.mode": str(metrics.get("mode"))})
        mlflow.log_params(params)
        mlflow.log_metrics(run_metrics(metrics))
        if interactions_table is not None and mask is not None:
            _log_inputs(mlflow, interactions_table, mask, config, event_dir)
        mlflow.log_dict(metrics, "unlearning.json")
        if storage:
            mlflow.log_figure(storage_plot(storage), "plots/storage_per_method.png")
        version = _log_model(mlflow, config, item_vectors, item_ids) if config.tracking.register else None
    if version:  # champion moves only when a state folder serves it (mark_served)
        _client(mlflow).set_registered_model_alias(names(config)[1], CANDIDATE, version)
        mode = metrics.get("mode", "unshare")
        event = f"{event_dir.name}: {metrics['method']} {mode}, {metrics['requests']} requests"
        describe_version(config, version, metrics, "unlearning", interactions_table, mask, parent, event)
    return TrackedRun(run.info.run_id, experiment, version, False, uri)


def log_events_plot(config: Config, events: list[dict[str, Any]]) -> None:
    """Utility, MIA AUC and storage across sequential unlearning events, into the latest event's run."""
    if not events:
        return
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri(config))
    run_id = events[-1].get("tracking", {}).get("run_id")
    if run_id:
        mlflow.MlflowClient().log_figure(run_id, events_plot(events), "plots/unlearning_events.png")


def _client(mlflow):
    return mlflow.MlflowClient()


def _log_inputs(mlflow, interactions_table, mask, config: Config, run_dir: Path) -> None:
    """The data as MLflow dataset inputs: name, digest, schema and row count, not the rows themselves.
    Each names its true source: the interactions their publisher (or the local file), the sharing
    masks the run's own ``masks.parquet`` (they are drawn by FedShare, not downloaded)."""

    known = KNOWN_DATASETS.get(config.data.dataset)
    source = known.url if known else str(Path(config.data.dataset).resolve())
    for frame, name, context, origin in (
        (interactions_table, f"{names(config)[0]}-interactions", "training", source),
        (mask, f"{names(config)[0]}-sharing-mask", "sharing", str(Path(run_dir_tag(run_dir)) / "masks.parquet")),
    ):
        columns = [c for c in frame.columns if c not in ("rating", "timestamp")]
        view = frame[columns].astype({c: object for c in columns if frame[c].dtype.kind not in "biuf"})  # pandas 3 str
        mlflow.log_input(mlflow.data.from_pandas(view, source=origin, name=name), context=context)


def _log_model(mlflow, config: Config, item_vectors: torch.Tensor, item_ids: np.ndarray) -> str:
    """Register the model devices download: the pyfunc of ``recommender.py`` (top-k raw item IDs for
    a device's user vector and the items it has), with the server's item vectors and the raw item
    IDs as its one artifact.  No user vector is in it: those stay on the devices."""
    import tempfile

    import pandas as pd
    from mlflow.models import infer_signature

    vectors = item_vectors.detach().float().cpu().numpy()
    ids = np.asarray([str(item) for item in item_ids])
    example = pd.DataFrame({"user_vector": [np.zeros(vectors.shape[1]).tolist()], "seen": [ids[:1].tolist()]})
    output = pd.DataFrame({"items": [ids[1:3].tolist()]})
    with tempfile.TemporaryDirectory() as folder:
        tables = Path(folder) / "tables.npz"
        np.savez(tables, item_vectors=vectors, item_ids=ids)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("recommender.py")),
            artifacts={"tables": str(tables)},
            input_example=example,
            signature=infer_signature(example, output, params={"k": 20}),
            registered_model_name=names(config)[1],
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}", f"pandas=={pd.__version__}"],
        )
    return str(info.registered_model_version)


KNOWN_LIMITS = (
    "Scores with the server's global item vectors only; a device adds its private user state and its "
    "item table on top (docs/method.md). Validation is a seeded per-user carve of the training data; "
    "test is never used for selection. Influence of withdrawn data is removed approximately unless the "
    "method is 'retrain' (docs/results.md, unlearning tables)."
)


def frame_digest(frame, columns: list[str]) -> str:
    """A short content digest of a table's columns (row order included): the version of the data,
    or of the consent masks, that a model was trained on."""
    if frame is None:
        return ""
    import hashlib

    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame[columns], index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def describe_version(
    config: Config,
    version: str,
    metrics: dict[str, Any],
    kind: str,
    interactions_table=None,
    mask=None,
    parent: dict[str, Any] | None = None,
    event: str | None = None,
) -> None:
    """The model card: a description and tags on the registered model and on this version.

    Tags say what produced the version (data set and its digest, the consent masks' digest, sharing
    policy, method, seed), how good it is (validation and test Recall@20 / NDCG@20) and which
    unlearning events it includes (the parent version's list plus this event).  Tag values are what
    the MLflow UI and ``search_model_versions`` filter on; the description repeats them for people.
    """
    client = _client(_mlflow())
    model = names(config)[1]
    client.update_registered_model(
        model,
        description=(
            f"FedShare recommender for {config.data.dataset}: item scores = user_vectors @ item_vectors.T "
            "(the server's global item vectors; user vectors are computed on each device and never leave it). "
            f"Alias '{CHAMPION}' = the model the state folder serves; '{CANDIDATE}' = the latest version. "
            + KNOWN_LIMITS
        ),
    )
    client.set_registered_model_tag(model, "fedshare.dataset", config.data.dataset)
    events: list[str] = []
    if parent and parent.get("model_version"):
        try:
            previous = client.get_model_version(model, str(parent["model_version"]))
            events = json.loads(previous.tags.get("fedshare.unlearning_events", "[]"))
        except Exception:  # noqa: BLE001 - the parent version was purged: its events are in its run
            events = ["(earlier events: see the parent run)"]
    if event:
        events.append(event)
    valid = metrics.get("valid", {})
    tags = {
        "fedshare.kind": kind,
        "fedshare.method": str(metrics.get("method", config.run.method)),
        "fedshare.sharing": config.sharing.policy,
        "fedshare.seed": str(config.run.seed),
        "fedshare.dataset": config.data.dataset,
        "fedshare.data_digest": frame_digest(interactions_table, ["user", "item"]),
        "fedshare.consent_digest": frame_digest(mask, ["user", "item", "shared"]),
        "fedshare.unlearning_events": json.dumps(events),
        **{f"valid/{metric_key(k)}": f"{v:.4f}" for k, v in valid.items() if k in ("recall@20", "ndcg@20")},
        **{f"test/{metric_key(k)}": f"{metrics[k]:.4f}" for k in ("recall@20", "ndcg@20") if k in metrics},
    }
    for key, value in tags.items():
        client.set_model_version_tag(model, str(version), key, value)
    scores = ", ".join(f"{k} {v}" for k, v in tags.items() if k.startswith(("valid/", "test/")))
    client.update_model_version(
        model,
        str(version),
        description=(
            f"{kind} by {tags['fedshare.method']} (sharing {config.sharing.policy}, seed {config.run.seed}) "
            f"on {config.data.dataset} (data {tags['fedshare.data_digest'] or 'digest not recorded'}, "
            f"consent masks {tags['fedshare.consent_digest'] or 'digest not recorded'}). {scores}. "
            f"Unlearning events included: {', '.join(events) if events else 'none'}."
        ),
    )


def mark_served(config: Config, version: str, run_id: str | None = None, served_dir: Path | None = None) -> None:
    """Point ``champion`` at ``version``: the state folder now serves it (the only caller moving it).
    The run's ``fedshare.run_dir`` tag then names the served folder, not the work folder it came from."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri(config))
    client = _client(mlflow)
    client.set_registered_model_alias(names(config)[1], CHAMPION, str(version))
    if run_id and served_dir is not None:
        client.set_tag(run_id, RUN_DIR_TAG, str(Path(served_dir).resolve()))


def set_run_dir_tag(config: Config, run_id: str, value: str) -> None:
    """Say where a run's folder is now (or that it is gone), so its tag never names a dead folder."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri(config))
    _client(mlflow).set_tag(run_id, RUN_DIR_TAG, value)


def run_dir_tag(run_dir: Path) -> str:
    """The folder a run will live in: a staged ``models/.tmp-N`` is renamed to ``models/N``."""
    path = Path(run_dir).resolve()
    return str(path.with_name(path.name.removeprefix(".tmp-")))


def champion_version(config: Config) -> str | None:
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri(config))
    try:
        return str(_client(mlflow).get_model_version_by_alias(names(config)[1], CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def recall_plot(history: list[dict[str, Any]], metric: str):
    plt = _figure()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    key = f"valid/{metric}"
    rounds = [row["round"] for row in history if key in row]
    axis.plot(rounds, [row[key] for row in history if key in row], marker=".")
    axis.set_xlabel("round")
    axis.set_ylabel(f"validation {metric}")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


def storage_plot(storage: dict[str, int]):
    plt = _figure()
    figure, axis = plt.subplots(figsize=(5.5, 3.2))
    labels = list(storage)
    axis.barh(labels, [max(storage[k], 1) for k in labels])
    axis.set_xscale("log")
    axis.set_xlabel("bytes kept for unlearning (log scale)")
    for y, key in enumerate(labels):
        axis.annotate(
            f"{storage[key]:,}", (max(storage[key], 1), y), xytext=(3, -3), textcoords="offset points", fontsize=7
        )
    figure.tight_layout()
    plt.close(figure)
    return figure


def events_plot(events: list[dict[str, Any]]):
    plt = _figure()
    figure, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    steps = list(range(1, len(events) + 1))
    for axis, key, label in zip(
        axes, ("recall@20", "mia_auc", "storage_bytes"), ("test recall@20", "MIA AUC", "bytes kept for unlearning")
    ):
        axis.plot(steps, [event["metrics"].get(key, np.nan) for event in events], marker="o")
        axis.set_xlabel("unlearning event")
        axis.set_title(label)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    plt.close(figure)
    return figure


def purge_superseded_models(config: Config, before: float, retention_seconds: float = 0.0) -> list[str]:
    """Delete the registered versions (and their model artifacts) created before ``before``.

    They were trained with interactions a user has since withdrawn, so their weights still carry that
    influence.  The champion is kept; runs and their data-free metrics stay for comparison.  The
    logged models are deleted and garbage-collected with ``mlflow gc``, which removes the artifacts.
    """

    mlflow = _mlflow()
    uri = tracking_uri(config)
    client = mlflow.MlflowClient(uri)
    model_name = names(config)[1]
    try:
        champion = str(client.get_model_version_by_alias(model_name, CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        champion = None
    now = time.time()
    purged, model_ids, locations = [], [], []
    for version in client.search_model_versions(f"name='{model_name}'"):
        created = version.creation_timestamp / 1000
        if str(version.version) == champion or created >= before or now - created < retention_seconds:
            continue
        client.delete_model_version(model_name, version.version)
        if version.run_id:  # its model folder was purged with it: the tag must not name a dead folder
            client.set_tag(version.run_id, RUN_DIR_TAG, "purged (superseded by an unlearning event)")
        model_id = (version.model_id or str(version.source).removeprefix("models:/")) if version.source else None
        if model_id and model_id.startswith("m-"):
            locations.append(client.get_logged_model(model_id).artifact_location)
            client.delete_logged_model(model_id)
            model_ids.append(model_id)
        purged.append(str(version.version))
    if model_ids and uri.startswith(("http://", "https://")):
        # A tracking server: `mlflow gc` works on the database (--backend-store-uri), which a client of the
        # server cannot reach (without it, gc opens ./mlflow.db and fails).  Delete the model files through
        # the server's artifact proxy instead; the soft-deleted metadata holds no weights.
        from mlflow.store.artifact.artifact_repository_registry import (
            get_artifact_repository,
        )

        for location in locations:
            get_artifact_repository(location, tracking_uri=uri).delete_artifacts()
    elif model_ids:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mlflow",
                "gc",
                "--backend-store-uri",
                uri,
                "--logged-model-ids",
                ",".join(model_ids),
            ],
            check=True,
            capture_output=True,
        )
    return purged
