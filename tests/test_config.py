import pytest
import torch

from fedshare.config import REPO_PARAMS, Config, load_config
from fedshare.errors import ConfigError
from fedshare.federated.chunking import (
    CPU_CHUNK_INTERACTIONS,
    GPU_CHUNK_INTERACTIONS,
    interaction_chunk,
)


def test_params_yaml_matches_the_typed_defaults():
    # params.yaml is the single source of defaults; the dataclasses must mirror it exactly.
    assert load_config(REPO_PARAMS).to_dict() == Config().validate().to_dict()  # validate resolves sampler: auto


def test_overrides_are_typed():
    config = load_config(None, ["model.dim=32", "sharing.policy=0.5", "eval.ks=[5,20]", "data.min_rating=4"])
    assert config.model.dim == 32
    assert config.sharing.policy == "0.5"
    assert config.eval.ks == [5, 20]
    assert config.data.min_rating == 4.0


def test_chunk_size_is_picked_per_device_unless_given():
    auto = load_config(None, ["federated.chunk_interactions=auto"]).federated
    assert interaction_chunk(auto, torch.device("cpu")) == CPU_CHUNK_INTERACTIONS
    assert interaction_chunk(auto, torch.device("cuda")) == GPU_CHUNK_INTERACTIONS  # no GPU needed to ask
    given = load_config(None, ["federated.chunk_interactions=500"]).federated
    assert given.chunk_interactions == 500
    assert interaction_chunk(given, torch.device("cuda")) == 500


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.dimension=3", "unknown key"),
        ("model.dim=abc", "must be an integer"),
        ("run.method=magic", "run.method"),
        ("federated.client_fraction=0", "client_fraction"),
        ("eval.metric=recall@7", "eval.metric"),
        ("nodot", "section.key=value"),
        ("nosection=1", "unknown key"),
        ("federated.chunk_interactions=big", "chunk_interactions must be auto or an integer"),
        ("federated.chunk_interactions=-1", "chunk_interactions must be auto or an integer"),
        ("federated.chunk_interactions=true", "must be an integer or a keyword"),
    ],
)
def test_bad_overrides_are_rejected_with_a_message(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_config_file_errors(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("nosuch:\n  a: 1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_a_data_sets_block_applies_to_that_data_set_and_method_only_and_the_command_line_wins(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(
        "federated:\n  client_fraction: 1.0\n  rounds: 800\n"
        "datasets:\n"
        "  gowalla:\n"
        "    federated:\n      client_fraction: 0.02\n      rounds: 4000\n"
        "    central:\n      federated:\n        rounds: 300\n"
    )
    assert load_config(params).federated.client_fraction == 1.0  # ml-100k: the block does not apply
    gowalla = load_config(params, ["data.dataset=gowalla"]).federated
    assert (gowalla.client_fraction, gowalla.rounds) == (0.02, 4000)
    central = load_config(params, ["data.dataset=gowalla", "run.method=central"]).federated
    assert (central.client_fraction, central.rounds) == (0.02, 300)
    chosen = load_config(params, ["data.dataset=gowalla", "federated.rounds=7"]).federated
    assert (chosen.client_fraction, chosen.rounds) == (0.02, 7)
    params.write_text("datasets:\n  gowalla:\n    nosuch:\n      a: 1\n")
    with pytest.raises(ConfigError, match=r"unknown section 'nosuch'.*datasets\.gowalla"):
        load_config(params, ["data.dataset=gowalla"])


@pytest.mark.parametrize("method", ["fedshare", "local", "central"])
def test_the_shipped_gowalla_block_is_a_valid_configuration(method):
    config = load_config(REPO_PARAMS, ["data.dataset=gowalla", f"run.method={method}"])
    assert config.federated.client_fraction < 1 and config.eval.valid_users > 0
    assert config.federated.server_steps == (0 if method == "central" else 1)
    # the ceiling samples like LightGCN-PyTorch; FedShare's graph learner keeps every edge once per epoch
    assert config.federated.server_sampling == ("users" if method == "central" else "edges")
