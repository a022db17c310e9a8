"""The Prefect flows run the library's stage functions (local temporary Prefect API, sqlite MLflow)."""

import asyncio
import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli, synthetic_raw

from fedshare.service.inbox import UnparsedFiles


@pytest.fixture(scope="module")
def prefect_backend():
    prefect_testing = pytest.importorskip("prefect.testing.utilities")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with prefect_testing.prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="module")
def trained(prefect_backend, tmp_path_factory):
    """One training flow into a state folder; the unlearning tests start from it."""
    from flows.training import training_flow

    folder = tmp_path_factory.mktemp("flows")
    data = folder / "inter.csv"
    synthetic_raw().to_csv(data, index=False)
    overrides = [
        f"data.dataset={data}",
        "federated.rounds=4",
        "eval.every=2",
        "model.dim=8",
        "tracking.registered_model=flow-test",
    ]
    state = training_flow(str(folder / "work"), str(folder / "state"), overrides, keep_workdir=True, return_state=True)
    assert state.is_completed()
    return folder, overrides, {**state.result(), "flow_run_id": state.state_details.flow_run_id}


def test_training_flow_leaves_no_workdir_by_default(prefect_backend, tmp_path):
    from flows.training import training_flow

    data = tmp_path / "inter.csv"
    synthetic_raw().to_csv(data, index=False)
    metrics = training_flow(
        str(tmp_path / "work"),
        str(tmp_path / "state"),
        [f"data.dataset={data}", "federated.rounds=2", "eval.every=1", "model.dim=8", "tracking.enabled=false"],
    )
    assert metrics["served"] and not (tmp_path / "work").exists()
    assert (tmp_path / "state" / "models" / "0000" / "server.pt").exists()


def test_training_flow_validates_trains_registers_and_serves(trained):
    folder, _, metrics = trained
    run = folder / "work" / "run"
    assert metrics["best_round"] in (2, 4) and (run / "server.pt").exists()
    assert json.loads((folder / "work" / "prepared" / "validation.json").read_text())["success"]
    assert (run / "evaluation" / "summary.json").exists()
    assert metrics["served"] and (folder / "state" / "CURRENT").read_text() == "0000"
    assert metrics["tracking"]["model_version"] and metrics["tracking"]["champion"]


def test_a_training_flow_that_loses_keeps_the_champion_and_tags_no_dead_folder(prefect_backend, tmp_path):
    import mlflow

    from flows.training import training_flow

    data = tmp_path / "inter.csv"
    synthetic_raw().to_csv(data, index=False)
    common = [f"data.dataset={data}", "model.dim=8", "tracking.registered_model=flow-lose-test"]
    state = str(tmp_path / "state")
    won = training_flow(str(tmp_path / "work"), state, common + ["federated.rounds=30", "eval.every=5"])
    lost = training_flow(str(tmp_path / "work"), state, common + ["federated.rounds=1", "eval.every=1"])
    assert won["served"] and not lost["served"] and not lost["tracking"]["champion"]
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert (
        str(client.get_model_version_by_alias("flow-lose-test", "champion").version) == won["tracking"]["model_version"]
    )
    assert (
        str(client.get_model_version_by_alias("flow-lose-test", "candidate").version)
        == lost["tracking"]["model_version"]
    )
    tag = client.get_run(lost["tracking"]["run_id"]).data.tags["fedshare.run_dir"]
    assert tag.startswith("removed") and not (tmp_path / "work").exists()


def test_training_flow_logs_the_library_progress_into_the_run(trained):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    _, _, metrics = trained

    async def messages():
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[metrics["flow_run_id"]])))
            return [log.message for log in logs]

    for _ in range(20):  # the API log worker sends in batches
        found = asyncio.run(messages())
        if any(m.startswith("round 4/4: valid recall@20") for m in found):
            break
        time.sleep(0.5)
    assert any(m.startswith("training fedshare") for m in found), found
    assert any(m.startswith("round 2/4: valid recall@20") for m in found), found


def test_unlearning_flow_applies_valid_requests_and_rejects_the_rest(trained):
    import mlflow

    from flows.unlearning import unlearning_flow

    folder, overrides, _ = trained
    state, inbox = folder / "state", folder / "inbox"
    inbox.mkdir()
    mask = pd.read_parquet(state / "models" / "0000" / "masks.parquet")
    shared = mask[mask["shared"]]
    user_id, item_id = int(shared["user_id"].iloc[0]), int(shared["item_id"].iloc[0])
    before = mask[mask["shared"] & (mask["user_id"] == user_id)]
    pd.DataFrame(
        {"request_id": ["a", "b", "a"], "user_id": [user_id, 424242, user_id], "item_id": [item_id, "", item_id]}
    ).to_csv(inbox / "req1.csv", index=False)
    (inbox / "broken.csv").write_bytes(b"\xff\xfe\x00 not a csv")

    # The valid file is applied; the run still ends Failed, with a per-file artifact, because one file failed.
    with pytest.raises(UnparsedFiles) as failed:
        unlearning_flow(str(state), str(inbox), "contrastive", overrides)
    outcomes = failed.value.outcomes

    by_file = {o["file"]: o for o in outcomes}
    assert by_file["broken.csv"]["error"] and (inbox / "failed" / "broken.error.txt").exists()
    from prefect.artifacts import Artifact

    artifact = Artifact.get("inbox-outcomes")
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert {row["file"]: row["outcome"].split(":")[0] for row in rows} == {
        "broken.csv": "failed",
        "req1.csv": "processed",
    }
    assert by_file["req1.csv"]["applied"] == 1 and by_file["req1.csv"]["rejected"] == 2
    reasons = pd.read_csv(inbox / "processed" / "req1.rejections.csv")["reason"].tolist()
    assert sorted(reasons) == ["duplicate request_id", "unknown user"]
    report = json.loads((inbox / "processed" / "req1.validation.json").read_text())
    assert report["suite"] == "requests" and not report["success"] and report["failures"]
    # The served model changed, the pair is private now, the old model folder is gone.
    assert (state / "CURRENT").read_text() == "0001" and not (state / "models" / "0000").exists()
    after = pd.read_parquet(state / "models" / "0001" / "masks.parquet")
    row = after[(after["user_id"] == user_id) & (after["item_id"] == item_id)]
    assert not row["shared"].item() and after["shared"].sum() == mask["shared"].sum() - 1
    assert len(before) >= 1
    # The event is an MLflow run with storage_bytes, linked to its parent, and a new model version.
    event = by_file["req1.csv"]["event"]
    client = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(event["tracking"]["run_id"])
    assert run.data.metrics["storage_bytes"] > 0 and run.data.tags["fedshare.kind"] == "unlearning"
    assert run.data.tags["fedshare.parent_model_version"] == "1"
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/storage_per_method.png", "plots/unlearning_events.png"}
    assert str(client.get_model_version_by_alias("flow-test", "champion").version) == event["tracking"]["model_version"]
    journal = [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]
    assert [(e["request_id"], e["state"]) for e in journal] == [("a", "accepted"), ("a", "applied")]


def test_every_path_that_trains_for_a_state_folder_keeps_its_unshares_and_shares(trained, tmp_path):
    """After an unshare and a share were applied to a state folder, the training flow (what the
    scheduled retraining deployment runs), `fedshare share --state` and `fedshare train --state` each
    draw masks afresh from the policy, and each keeps the unshared pair private and the shared one shared."""
    from fedshare.config import load_config
    from fedshare.service.inbox import process_inbox
    from fedshare.service.model_store import ModelStore
    from flows.training import training_flow

    folder, overrides, _ = trained
    state, inbox = tmp_path / "state", tmp_path / "inbox"
    shutil.copytree(folder / "state", state)
    inbox.mkdir()
    mask = pd.read_parquet(ModelStore(state).require_current() / "masks.parquet")
    unshared = tuple(int(x) for x in mask.loc[mask["shared"], ["user_id", "item_id"]].iloc[0])
    shared = tuple(int(x) for x in mask.loc[~mask["shared"], ["user_id", "item_id"]].iloc[0])
    for name, (user_id, item_id) in (("down.csv", unshared), ("share-up.csv", shared)):
        pd.DataFrame({"request_id": [name], "user_id": [user_id], "item_id": [item_id]}).to_csv(
            inbox / name, index=False
        )
    outcomes = process_inbox(load_config(None, overrides), state, inbox, "contrastive")
    assert sorted(o["applied"] for o in outcomes) == [1, 1]

    def consent(masks_file: Path) -> tuple[bool, bool]:
        drawn = pd.read_parquet(masks_file).set_index(["user_id", "item_id"])["shared"]
        return bool(drawn[unshared]), bool(drawn[shared])

    metrics = training_flow(str(tmp_path / "work"), str(state), overrides, keep_workdir=True)
    assert "served" in metrics
    assert consent(tmp_path / "work" / "masks" / "masks.parquet") == (False, True)
    settings = [x for o in overrides for x in ("--set", o)]
    drawn = cli(
        [
            "share",
            "--prepared",
            str(tmp_path / "work" / "prepared"),
            "--state",
            str(state),
            "--out",
            str(tmp_path / "drawn"),
            *settings,
        ]
    )
    assert drawn.returncode == 0, drawn.stderr
    assert consent(tmp_path / "drawn" / "masks.parquet") == (False, True)
    short = [x for o in overrides if not o.startswith("federated.rounds") for x in ("--set", o)]
    run = cli(["train", "--rounds", "1", "--state", str(state), "--out", str(tmp_path / "run"), *short, "--quiet"])
    assert run.returncode == 0, run.stderr
    assert consent(tmp_path / "run" / "masks.parquet") == (False, True)


def test_a_bad_request_file_changes_nothing(trained):
    from flows.unlearning import unlearning_flow

    folder, overrides, _ = trained
    state, inbox = folder / "state", folder / "inbox"
    inbox.mkdir(exist_ok=True)
    current = (state / "CURRENT").read_text()
    masks_before = (state / "models" / current / "masks.parquet").read_bytes()
    journal_before = (state / "journal.jsonl").read_text()
    pd.DataFrame({"request_id": ["x", "y"], "user_id": ["-3", "abc"], "item_id": ["", "1"]}).to_csv(
        inbox / "bad.csv", index=False
    )

    outcomes = unlearning_flow(str(state), str(inbox), "contrastive", overrides)

    assert outcomes == [{"file": "bad.csv", "applied": 0, "rejected": 2, "event": None}]
    assert (state / "CURRENT").read_text() == current
    assert (state / "models" / current / "masks.parquet").read_bytes() == masks_before
    assert (state / "journal.jsonl").read_text() == journal_before
    assert (inbox / "processed" / "bad.rejections.csv").exists()


def test_serve_declares_the_two_cron_deployments():
    from flows.serve import deployments

    training, inbox = deployments("0 3 * * *", "*/10 * * * *", ["sharing.policy=all"])
    assert (training.name, inbox.name) == ("scheduled-retraining", "inbox")
    assert [s.schedule.cron for s in training.schedules] == ["0 3 * * *"]
    assert [s.schedule.cron for s in inbox.schedules] == ["*/10 * * * *"]
    assert training.parameters == {"overrides": ["sharing.policy=all"]}


def test_the_inbox_check_loads_no_training_stack(tmp_path):
    """The scheduled inbox deployment imports Prefect and the parameters only: torch, MLflow and the
    unlearning flow load when a request file waits, not every 10 minutes."""
    import subprocess
    import sys

    from conftest import REPO

    code = (
        "import sys, flows.inbox\n"
        "heavy = [m for m in ('torch', 'mlflow', 'pandas', 'dvc', 'flows.unlearning') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        f"assert flows.inbox.pending_files({str(tmp_path)!r}) == []\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_inbox_flow_runs_nothing_on_an_empty_inbox_and_unlearns_when_a_file_waits(trained, tmp_path):
    from flows.inbox import inbox_flow

    folder, overrides, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    assert inbox_flow(str(folder / "state"), str(empty), "contrastive", overrides) == []
    waiting = tmp_path / "waiting"
    waiting.mkdir()
    (waiting / "junk.csv").write_text("who,what\n1,2\n")  # no request columns: quarantined
    with pytest.raises(UnparsedFiles) as failed:
        inbox_flow(str(folder / "state"), str(waiting), "contrastive", overrides)
    assert [o["file"] for o in failed.value.outcomes] == ["junk.csv"] and (waiting / "failed" / "junk.csv").exists()


def test_a_deployment_made_without_fedshare_home_is_refused_with_the_fix(prefect_backend):
    """`prefect deploy` with FEDSHARE_HOME unset stores '{{ $FEDSHARE_HOME }}/state' literally; a flow
    given such a path says so (and creates nothing), and scripts/deploy.sh refuses to deploy at all."""
    import subprocess

    from conftest import REPO

    from fedshare.errors import ConfigError
    from flows.inbox import inbox_flow
    from flows.training import training_flow

    literal = "{{ $FEDSHARE_HOME }}"
    with pytest.raises(ConfigError, match="FEDSHARE_HOME=/srv/fedshare bash scripts/deploy.sh"):
        inbox_flow(f"{literal}/state", f"{literal}/inbox")
    with pytest.raises(ConfigError, match="placeholder"):
        training_flow(f"{literal}/runs/nightly", f"{literal}/state")
    assert not (Path.cwd() / literal).exists()  # the flows refused before creating any folder

    env = {k: v for k, v in os.environ.items() if k != "FEDSHARE_HOME"}
    refused = subprocess.run(["bash", "scripts/deploy.sh"], cwd=REPO, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "FEDSHARE_HOME is not set" in refused.stderr
    relative = subprocess.run(
        ["bash", "scripts/deploy.sh"], cwd=REPO, env={**env, "FEDSHARE_HOME": "srv"}, capture_output=True, text=True
    )
    assert relative.returncode == 2 and "absolute path" in relative.stderr
