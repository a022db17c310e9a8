"""The Prefect training flow runs the same stage function as the CLI (local temporary Prefect API)."""

import json

import pytest

from conftest import synthetic_raw


@pytest.fixture(scope="module")
def prefect_backend():
    prefect_testing = pytest.importorskip("prefect.testing.utilities")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with prefect_testing.prefect_test_harness(server_startup_timeout=120):
        with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


def test_training_flow_writes_the_same_run_directory(prefect_backend, tmp_path):
    from flows.training import training_flow

    data = tmp_path / "inter.csv"
    synthetic_raw().to_csv(data, index=False)
    out = tmp_path / "run"
    state = training_flow(str(out), [f"data.dataset={data}", "federated.rounds=2", "eval.every=1", "model.dim=8"],
                          return_state=True)
    assert state.is_completed()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_round"] in (1, 2) and (out / "server.pt").exists()
