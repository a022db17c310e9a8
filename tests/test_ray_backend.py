"""The counter sampler (no Ray needed) and the Ray backend: same results as one process, unsharing
through shards, and a shard actor killed mid-round.  One local Ray instance for the whole module."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from fedshare.config import SharingConfig, load_config
from fedshare.data.sharing import build_mask
from fedshare.errors import ConfigError
from fedshare.federated.aggregation import pick_participants
from fedshare.federated.client import client_updates
from fedshare.federated.ray_backend import RayBackend, ShardWorker, split_users
from fedshare.federated.simulation import build_model
from fedshare.model.sampling import counter_negatives, draw_round_key, splitmix64
from fedshare.training import train


def _with(config, **sections):
    """dataclasses.replace on several sections: _with(c, run={"backend": "ray"}, federated={...})."""
    return dataclasses.replace(
        config, **{name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    )


@pytest.fixture
def counter_config(tiny_config):
    return _with(tiny_config, federated={"sampler": "counter"})


# -- the counter sampler (no Ray) ----------------------------------------------------------------------


def _splitmix64_reference(x: int) -> int:
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def test_splitmix64_on_int64_tensors_matches_the_uint64_reference():
    values = [0, 1, 2, 12345, (1 << 62) + 7, (1 << 63) - 1, -1, -(1 << 63)]
    got = splitmix64(torch.tensor(values, dtype=torch.long)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [_splitmix64_reference(v & ((1 << 64) - 1)) for v in values]


def test_counter_negatives_are_uniform_avoid_positives_and_depend_on_the_key():
    users = torch.arange(200).repeat_interleave(5)
    slots = torch.arange(5).repeat(200)
    positives = torch.sort(users * 50 + slots * 3).values  # each user's items 0,3,6,9,12
    draw = counter_negatives(users, slots, 50, 4, positives, round_key=7)
    assert draw.shape == (1000, 4) and int(draw.min()) >= 0 and int(draw.max()) < 50
    owned = torch.isin(users.unsqueeze(1) * 50 + draw, positives)
    assert owned.float().mean() < 0.001  # 5/50 hit at first, 4 re-draws: about 1e-5 remain
    counts = torch.bincount(draw.reshape(-1), minlength=50).float()
    assert counts[[1, 2, 4, 5]].min() > 50  # about 4000/45 per allowed item
    assert torch.equal(draw, counter_negatives(users, slots, 50, 4, positives, round_key=7))
    assert not torch.equal(draw, counter_negatives(users, slots, 50, 4, positives, round_key=8))


def test_counter_sampler_gives_the_same_round_whatever_the_grouping(counter_config, tiny_interactions):
    """All clients in one batch == two arbitrary groups (even/odd users, run as shard workers) summed."""
    config = _with(counter_config, federated={"local_steps": 2, "negatives": 2, "local_lr": 0.5})
    mask = build_mask(tiny_interactions, SharingConfig(policy="mixed"), seed=0)
    whole, generator = build_model(config, tiny_interactions, mask, torch.device("cpu"))
    global_users, global_items = whole.server.propagate()
    broadcast = whole.server.broadcast(global_users, global_items)
    participants = pick_participants(whole.clients, 1.0, generator)
    key = draw_round_key(generator)
    total = int(whole.clients.counts[participants].sum())
    groups = [participants[participants % 2 == 0], participants[participants % 2 == 1]]
    workers = [ShardWorker(whole.clients.shard(ids), config.model, config.federated) for ids in groups]
    parts = [worker.train_round(broadcast.item_table, global_items, None, None, key, total) for worker in workers]
    upload = client_updates(whole.clients, broadcast, participants, config.model, config.federated, None, round_key=key)
    assert torch.allclose(upload, parts[0][0] + parts[1][0], atol=1e-6)
    for ids, (_, state) in zip(groups, parts):
        for name, value in state.items():
            assert torch.allclose(getattr(whole.clients, name)[ids].float(), value.float(), atol=1e-6), name
    assert upload.abs().sum() > 0


def test_ray_backend_picks_the_counter_sampler_and_refuses_the_stream_one():
    assert load_config(None, ["run.backend=ray"]).federated.sampler == "counter"  # auto, the default
    assert load_config(None, []).federated.sampler == "stream"  # the published results' sampler
    with pytest.raises(ConfigError, match="federated.sampler=counter"):
        load_config(None, ["run.backend=ray", "federated.sampler=stream"])


def test_users_are_split_into_balanced_contiguous_shards():
    counts = torch.tensor([5, 0, 1, 9, 3, 3, 2, 7])
    parts = split_users(counts, 3)
    assert torch.equal(torch.cat(parts), torch.arange(8)) and all(p.numel() for p in parts)
    assert max(int(counts[p].sum()) for p in parts) <= 15


# -- the Ray backend ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    import logging

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


def _state_close(a, b, atol=1e-5):
    for part in ("server", "clients"):
        for name in a[part]:
            assert torch.allclose(a[part][name].float(), b[part][name].float(), atol=atol), (part, name)


def _metrics(result):
    return [{k: v for k, v in row.items() if k.startswith("valid/")} for row in result.history]


@pytest.fixture(scope="module")
def local_counter_run():
    from conftest import synthetic_raw

    from fedshare.data.interactions import prepare

    config = load_config(
        None,
        [
            "federated.rounds=6",
            "eval.every=2",
            "model.dim=8",
            "model.align_batch=16",
            "model.contrastive_weight=0.1",
            "federated.sampler=counter",
        ],
    )
    interactions = prepare(synthetic_raw(), config.data, seed=0)
    mask = build_mask(interactions, SharingConfig(policy="mixed"), seed=0)
    return config, interactions, mask, train(config, interactions, mask, progress=False)


@pytest.mark.ray
@pytest.mark.parametrize("shards", [2, 3])
def test_ray_shards_train_like_one_process(ray_instance, local_counter_run, shards):
    config, interactions, mask, local = local_counter_run
    result = train(_with(config, run={"backend": "ray", "shards": shards}), interactions, mask, progress=False)
    assert result.best_round == local.best_round
    for mine, theirs in zip(_metrics(result), _metrics(local), strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)
    _state_close(result.model.state(), local.model.state())
    last = result.history[-1]
    n_items, dim = interactions.n_items, config.model.dim
    assert last["net/shards"] == shards and last["net/restarts"] == 0
    assert last["net/up_bytes_per_shard"] == n_items * dim * 4  # the summed item-row changes, nothing else
    assert last["net/down_bytes_per_shard"] >= 2 * n_items * dim * 4  # Q and G_I (+ g_u rows, 2 numbers)


@pytest.mark.ray
def test_a_shard_killed_mid_round_is_recreated_and_the_result_is_unchanged(
    ray_instance, local_counter_run, monkeypatch
):
    config, interactions, mask, local = local_counter_run
    killed = []

    def kill_once(backend, round_index):
        if round_index == 2 and not killed:  # the third round: sent out, answers not collected yet
            ray_instance.kill(backend.actors[1], no_restart=True)
            killed.append(round_index)

    monkeypatch.setattr(RayBackend, "before_collect", staticmethod(kill_once))
    result = train(_with(config, run={"backend": "ray", "shards": 2}), interactions, mask, progress=False)
    assert killed and result.history[-1]["net/restarts"] >= 1
    assert result.best_round == local.best_round
    for mine, theirs in zip(_metrics(result), _metrics(local), strict=True):
        assert mine == pytest.approx(theirs, abs=1e-6)
    _state_close(result.model.state(), local.model.state())


@pytest.mark.ray
def test_unsharing_a_ray_run_goes_through_the_shards_and_equals_the_local_backend(ray_instance, tmp_path, monkeypatch):
    from conftest import synthetic_raw

    from fedshare.stages import train_stage, unshare_stage

    raw = tmp_path / "raw.csv"
    synthetic_raw().to_csv(raw, index=False)
    config = load_config(
        None,
        [
            f"data.dataset={raw}",
            "federated.rounds=4",
            "eval.every=2",
            "model.dim=8",
            "model.align_batch=16",
            "federated.sampler=counter",
            "run.backend=ray",
            "run.shards=2",
            "tracking.enabled=false",
            "unlearning.snapshot_rounds=[0,2]",
            "unlearning.rounds=3",
            "sharing.policy=all",
        ],
    )
    train_stage(config, tmp_path / "run", progress=False)
    rounds_seen = []
    real_round = RayBackend.client_round

    def spy(self, model, broadcast, participants, generator):
        gradient = real_round(self, model, broadcast, participants, generator)
        rounds_seen.append([ids.clone() for ids in self.shard_users])
        return gradient

    monkeypatch.setattr(RayBackend, "client_round", spy)
    ray_metrics = unshare_stage(tmp_path / "run", tmp_path / "ray-u", "contrastive", fraction=0.2, track=False)
    assert len(rounds_seen) == 3  # the unlearning rounds ran on the shards
    requested = json.loads((tmp_path / "ray-u" / "unlearning.json").read_text())
    local_metrics = unshare_stage(
        tmp_path / "run",
        tmp_path / "local-u",
        "contrastive",
        fraction=0.2,
        track=False,
        overrides=["run.backend=local"],
    )
    assert len(rounds_seen) == 3  # ... and the local run did not use them
    assert requested["requests"] > 0
    for key in ("recall@20", "ndcg@20", "mia_auc", "unshared_mean_rank"):
        assert ray_metrics[key] == pytest.approx(local_metrics[key], abs=1e-6), key


def test_the_core_library_and_the_local_backend_work_without_ray(tmp_path):
    """The GPU machine has no ray: with ``import ray`` failing, the library imports and trains locally."""
    import subprocess
    import sys

    script = (
        "import sys; sys.modules['ray'] = None\n"  # makes `import ray` raise ImportError
        "import fedshare.cli, fedshare.stages, fedshare.federated.ray_backend\n"
        "from conftest import synthetic_raw\n"
        "from fedshare.config import SharingConfig, load_config\n"
        "from fedshare.data.interactions import prepare\n"
        "from fedshare.data.sharing import build_mask\n"
        "from fedshare.training import train\n"
        "config = load_config(None, ['federated.rounds=2', 'eval.every=1', 'model.dim=8',\n"
        "                             'federated.sampler=counter'])\n"
        "data = prepare(synthetic_raw(), config.data, seed=0)\n"
        "mask = build_mask(data, SharingConfig(policy='mixed'), seed=0)\n"
        "print(train(config, data, mask, progress=False).best_round)\n"
    )
    from conftest import REPO

    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO / "tests", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() in ("1", "2")


def test_the_ray_manifest_defines_every_volume_claim_it_mounts():
    import yaml
    from conftest import REPO

    documents = list(yaml.safe_load_all((REPO / "deploy" / "ray-cluster.yaml").read_text()))
    defined = {d["metadata"]["name"] for d in documents if d["kind"] == "PersistentVolumeClaim"}
    cluster = next(d for d in documents if d["kind"] == "RayCluster")
    pods = [cluster["spec"]["headGroupSpec"]] + cluster["spec"]["workerGroupSpecs"]
    claimed = {
        volume["persistentVolumeClaim"]["claimName"]
        for pod in pods
        for volume in pod["template"]["spec"].get("volumes", [])
        if "persistentVolumeClaim" in volume
    }
    assert claimed == {"fedshare-data", "fedshare-home"} and claimed <= defined
    assert "sampler=counter" not in (REPO / "deploy" / "ray-cluster.yaml").read_text()  # auto picks it on Ray
