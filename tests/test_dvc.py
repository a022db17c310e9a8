"""`dvc repro` runs the whole pipeline from a clean copy of the repository, and a second one does nothing."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, synthetic_raw

DVC = Path(sys.executable).parent / "dvc"
pytestmark = pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")


def run(args, cwd, check=True):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(cwd),
    }
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, f"{args}: {out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory):
    """The repository's tracked and untracked-but-not-ignored files, as a fresh git repo, on tiny data."""
    root = tmp_path_factory.mktemp("clone") / "fedshare"
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, root / name)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"]["dataset"] = "data/tiny.csv"
    params["federated"]["rounds"] = 4
    params["model"]["dim"] = 8
    params["eval"]["every"] = 2
    params["unlearning"].update(rounds=2, snapshot_rounds=[0, 2])
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "data").mkdir()
    synthetic_raw(n_users=40, n_items=60, per_user=12).to_csv(root / "data" / "tiny.csv", index=False)
    run(["git", "init", "-q"], root)
    run([str(DVC), "add", "-q", "data"], root)  # the tiny data replaces ML-100K in data.dvc
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "clean clone"], root)
    return root


def test_dvc_repro_runs_every_stage_then_nothing(clean_clone):
    first = run([str(DVC), "repro"], clean_clone)
    for stage in ("prepare", "validate", "share", "train", "unlearn", "evaluate"):
        assert f"Running stage '{stage}'" in first.stdout
    summary = json.loads((clean_clone / "pipeline" / "evaluation" / "summary.json").read_text())
    assert set(summary) == {"train", "unlearn"} and summary["unlearn"]["storage_bytes"] > 0
    assert 0 <= summary["train"]["recall@20"] <= 1 and "mia_auc" in summary["unlearn"]
    applied = (clean_clone / "pipeline" / "unlearn" / "applied.csv").read_text()
    assert applied.startswith("request_id,user_id,item_id")
    lock = (clean_clone / "dvc.lock").read_text()

    second = run([str(DVC), "repro"], clean_clone)
    assert "Data and pipelines are up to date" in second.stdout and "Running stage" not in second.stdout
    assert (clean_clone / "dvc.lock").read_text() == lock

    # Every version of the masks is in the DVC cache and can be pushed to the default local remote.
    pushed = run([str(DVC), "push"], clean_clone)
    assert "pushed" in pushed.stdout
    assert (clean_clone / ".dvc_remote").is_dir()


def test_dvc_experiment_compares_sharing_policies(clean_clone):
    run(["git", "add", "-A"], clean_clone)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline", "--allow-empty"], clean_clone)
    experiment = run([str(DVC), "exp", "run", "-S", "sharing.policy=all"], clean_clone)
    assert "Running stage 'share'" in experiment.stdout and "Running stage 'prepare'" not in experiment.stdout
    shown = json.loads(run([str(DVC), "exp", "show", "--json"], clean_clone).stdout)
    policies = set()
    for entry in shown:
        for experiment_entry in [entry] + [
            e for group in entry.get("experiments") or [] for e in group.get("revs", [])
        ]:
            data = experiment_entry.get("data") or {}
            policy = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("sharing", {}).get("policy")
            policies.add(policy)
    assert {"mixed", "all"} <= policies


def test_init_home_makes_the_data_folder_version_the_masks_and_outside_dvc_it_says_so(tmp_path, caplog):
    """The stack's volume: scripts/init_home.sh makes it a DVC repository with a remote, so the served
    masks get versions there; a state folder outside any DVC repository is warned about, not silent."""
    import logging

    import pandas as pd

    from fedshare.mlops.versioning import mask_versions, version_masks

    masks = tmp_path / "masks.parquet"
    pd.DataFrame({"user": [0, 1], "item": [0, 1], "shared": [True, False]}).to_parquet(masks)
    with caplog.at_level(logging.WARNING, logger="fedshare"):
        assert version_masks(tmp_path / "loose-state", masks) is None
    assert "not versioned" in caplog.text and "init_home.sh" in caplog.text

    home = tmp_path / "home"
    env = {
        **os.environ,
        "FEDSHARE_HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    made = subprocess.run(
        ["bash", str(REPO / "scripts" / "init_home.sh"), "true"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 0, made.stderr
    assert (home / ".dvc").is_dir() and (home / "state").is_dir() and (home / "inbox").is_dir()
    again = subprocess.run(["bash", str(REPO / "scripts" / "init_home.sh")], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "init_home" not in again.stderr  # idempotent: the repository is kept
    version = version_masks(home / "state", masks)
    assert version["pushed"] is True and mask_versions(home / "state")[-1]["md5"] == version["md5"]
    assert any((home / "dvc-remote").rglob("*")), "the version reached the volume's DVC remote"
