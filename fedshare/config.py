"""One typed configuration, built from ``params.yaml`` and overridable with ``--set key.sub=value``.

``params.yaml`` is the single source of defaults: it is read from the current folder, else from the
repository the package lives in.  The dataclass defaults below mirror it (a test keeps them equal),
so an installed ``fedshare`` run from any folder behaves the same.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedshare.errors import ConfigError


@dataclass
class RunConfig:
    method: str = "fedshare"
    seed: int = 0
    device: str = "cpu"
    backend: str = "local"
    shards: int = 2
    ray_address: str | None = None


@dataclass
class ColumnsConfig:
    user: str = "user_id"
    item: str = "item_id"
    rating: str | None = "rating"
    timestamp: str | None = "timestamp"


@dataclass
class DataConfig:
    dataset: str = "ml-100k"
    data_dir: str | None = None
    min_rating: float | None = None
    k_core: int = 0
    valid_ratio: float = 0.1
    test_ratio: float = 0.1
    min_user_interactions: int = 3
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)


@dataclass
class SharingConfig:
    policy: str = "mixed"
    file: str | None = None


@dataclass
class ModelConfig:
    dim: int = 64
    server_layers: int = 2
    client_encoder: str = "mf"
    use_server_graph: bool = True
    global_weight: str = "ratio"
    device_view: float = 0.0
    contrastive_weight: float = 0.0
    temperature: float = 0.2
    align_direction: str = "both"
    align_batch: int = 2048
    client_l2: float = 1e-2
    server_l2: float = 1e-3
    init_std: float = 0.1
    mend_edges: int = 0
    mend_every: int = 250


@dataclass
class FederatedConfig:
    rounds: int = 800
    client_fraction: float = 1.0
    local_steps: int = 1
    local_lr: float = 1.0
    client_lr: float = 0.01
    server_lr: float = 0.01
    graph_lr: float | None = None
    negatives: int = 1
    implementation: str = "vectorized"
    sampler: str = "auto"  # auto: counter on the ray backend, stream otherwise (resolved by Config.validate)
    chunk_interactions: int | str = "auto"
    server_batch: int = 0
    server_steps: int = 0
    server_sampling: str = "edges"
    max_minutes: float = 0.0


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10, 20])
    metric: str = "recall@20"
    every: int = 5
    patience: int = 30
    batch_users: int = 1024
    valid_users: int = 0


@dataclass
class UnlearningConfig:
    method: str = "contrastive"
    snapshot_rounds: list[int] = field(default_factory=lambda: [0, 50, 100])
    snapshots: int = 1  # how many of the stored snapshots contrastive reads: the first K (-1: all; 0: none)
    rounds: int = 10
    device_steps: int = 100  # a delete: local steps with which each deleting device refits its private vector
    weight: float = 1.0
    hops: int = 1
    fru_alpha: float = 0.0


@dataclass
class RequestsConfig:
    fraction: float = 0.1
    scope: str = "all"
    seed: int = 0
    inbox: str = "inbox"
    state: str = "state"
    retention_days: float = 0.0
    share_rounds: int = 20


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    registered_model: str | None = None
    register: bool = True


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sharing: SharingConfig = field(default_factory=SharingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    unlearning: UnlearningConfig = field(default_factory=UnlearningConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        if self.federated.sampler == "auto":  # the shard-invariant sampler where shards need it
            self.federated.sampler = "counter" if self.run.backend == "ray" else "stream"
        checks = [
            (self.run.method in METHODS, f"run.method must be one of {', '.join(METHODS)}, got {self.run.method!r}"),
            (
                self.run.device in ("cpu", "cuda") or self.run.device.startswith("cuda:"),
                f"run.device must be cpu or cuda, got {self.run.device!r}",
            ),
            (
                0 <= self.data.valid_ratio < 1
                and 0 <= self.data.test_ratio < 1
                and self.data.valid_ratio + self.data.test_ratio < 1,
                "data.valid_ratio and data.test_ratio must be in [0,1) and sum to less than 1",
            ),
            (self.model.dim > 0, "model.dim must be positive"),
            (self.model.server_layers >= 0, "model.server_layers must be >= 0"),
            (self.model.client_encoder in ("mf", "ego_lightgcn"), "model.client_encoder must be mf or ego_lightgcn"),
            (self.model.temperature > 0, "model.temperature must be positive"),
            (self.model.device_view >= 0, "model.device_view must be >= 0 (0: off)"),
            (self.model.global_weight in ("ratio", "one"), "model.global_weight must be ratio or one"),
            (
                self.model.align_direction in ("both", "local_to_global"),
                "model.align_direction must be both or local_to_global",
            ),
            (self.federated.rounds >= 1, "federated.rounds must be >= 1"),
            (0 < self.federated.client_fraction <= 1, "federated.client_fraction must be in (0,1]"),
            (self.federated.local_steps >= 1, "federated.local_steps must be >= 1"),
            (self.federated.negatives >= 1, "federated.negatives must be >= 1"),
            (
                self.federated.implementation in ("vectorized", "loop"),
                "federated.implementation must be vectorized or loop",
            ),
            (self.federated.sampler in ("stream", "counter"), "federated.sampler must be auto, stream or counter"),
            (
                self.federated.chunk_interactions == "auto"
                or isinstance(self.federated.chunk_interactions, int)
                and self.federated.chunk_interactions >= 0,
                "federated.chunk_interactions must be auto or an integer >= 0 (0: no chunks)",
            ),
            (self.eval.valid_users >= 0, "eval.valid_users must be an integer >= 0 (0: every user)"),
            (self.federated.server_batch >= 0, "federated.server_batch must be an integer >= 0 (0: full batch)"),
            (
                self.federated.server_sampling in ("edges", "users"),
                "federated.server_sampling must be edges (every shared edge once per epoch) or users "
                "(uniform users, then one of their edges: LightGCN-PyTorch's sampler)",
            ),
            (self.model.mend_edges >= 0, "model.mend_edges must be an integer >= 0 (0: no graph mending)"),
            (self.model.mend_every >= 1, "model.mend_every must be an integer >= 1 (rounds between two mendings)"),
            (self.federated.max_minutes >= 0, "federated.max_minutes must be >= 0 (0: no time limit)"),
            (self.federated.server_steps >= 0, "federated.server_steps must be an integer >= 0 (0: a whole epoch)"),
            (self.run.backend in ("local", "ray"), f"run.backend must be local or ray, got {self.run.backend!r}"),
            (self.run.shards >= 1, "run.shards must be >= 1"),
            (
                self.run.backend != "ray" or self.federated.sampler == "counter",
                "run.backend=ray needs federated.sampler=counter (the stream sampler's random numbers depend on how "
                "clients are grouped); leave federated.sampler at auto, and give a local run to compare with "
                "--set federated.sampler=counter",
            ),
            (
                self.run.backend != "ray" or self.unlearning.fru_alpha == 0,
                "run.backend=ray does not log FRU updates (unlearning.fru_alpha must be 0)",
            ),
            (
                self.eval.metric.split("@")[0] in ("recall", "ndcg")
                and self.eval.metric.split("@")[-1].isdigit()
                and int(self.eval.metric.split("@")[-1]) in self.eval.ks,
                f"eval.metric must look like recall@K or ndcg@K with K in eval.ks, got {self.eval.metric!r}",
            ),
            (self.eval.every >= 1 and self.eval.patience >= 1, "eval.every and eval.patience must be >= 1"),
            (0 <= self.unlearning.fru_alpha <= 1, "unlearning.fru_alpha must be in [0,1]"),
            (self.unlearning.device_steps >= 0, "unlearning.device_steps must be >= 0"),
            (self.unlearning.snapshots >= -1, "unlearning.snapshots must be -1 (all), 0 (none) or a count"),
            (0 < self.requests.fraction <= 1, "requests.fraction must be in (0,1]"),
            (self.requests.scope in ("all", "partial"), "requests.scope must be all or partial"),
            (self.requests.retention_days >= 0, "requests.retention_days must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


METHODS = ("fedshare", "local", "central")


REPO_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def default_params_path() -> Path | None:
    """./params.yaml, else the repository's params.yaml, else None (the dataclass defaults)."""
    for candidate in (Path("params.yaml"), REPO_PARAMS):
        if candidate.exists():
            return candidate
    return None


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a dict, checking names and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown key {where}{sorted(unknown)[0]} (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name, value in values.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return _build(hint, value, where + ".")
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where} may not be null")
    if int in args and str in args:  # int | str: a number, or a keyword such as "auto"
        if isinstance(value, (int, str)) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer or a keyword, got {value!r}")
    base = (
        next((a for a in args if a is not type(None)), hint) if args and typing.get_origin(hint) is not list else hint
    )
    if typing.get_origin(base) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        inner = typing.get_args(base)[0]
        return [_coerce(inner, v, where) for v in value]
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if base is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, got {value!r}")
    if base is str:
        # YAML turns `0.5` into a float; sharing policies like 0.5 are strings here.
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            raise ConfigError(f"unknown key {dotted}")
        node = node[key]
    if keys[-1] not in node:
        raise ConfigError(f"unknown key {dotted}")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``model.dim=32`` -> ("model.dim", 32); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults from the dataclasses, then ``path`` (params.yaml), then its ``datasets`` block for the
    chosen data set (and, inside it, for the chosen method), then ``--set`` overrides.

    ``datasets.<name>`` holds the defaults that a data set needs (Gowalla trains in mini-batches of
    clients, MovieLens in full rounds); the data set and method are read after ``--set``, so
    ``--dataset gowalla`` picks Gowalla's block and ``--set`` still has the last word.
    """
    tree = Config().to_dict()
    path = Path(path) if path else default_params_path()
    if path is None or not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    loaded = _read_params(path)
    per_dataset = loaded.pop("datasets", None) or {}
    if not isinstance(per_dataset, dict):
        raise ConfigError(f"'datasets' in {path} must map data set names to sections")
    _apply_sections(tree, loaded, str(path))
    parsed = [parse_override(text) for text in overrides]
    _apply_overrides(tree, parsed)  # first, to learn the data set and method that were asked for
    block = per_dataset.get(str(tree["data"]["dataset"])) or {}
    if block:
        block = dict(block)
        method_block = {name: block.pop(name) for name in list(block) if name in METHODS}
        _apply_sections(tree, block, f"{path} (datasets.{tree['data']['dataset']})")
        chosen = method_block.get(tree["run"]["method"])
        if chosen:
            _apply_sections(tree, chosen, f"{path} (datasets.{tree['data']['dataset']}.{tree['run']['method']})")
        _apply_overrides(tree, parsed)  # again: the command line wins over the data set's block
    return _build(Config, tree, "").validate()


def _read_params(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path} must be a mapping of sections")
    return loaded


def _apply_sections(tree: dict[str, Any], sections: dict[str, Any], where: str) -> None:
    for section, values in sections.items():
        if section not in tree:
            raise ConfigError(f"unknown section {section!r} in {where}")
        if not isinstance(values, dict):
            raise ConfigError(f"section {section!r} in {where} must be a mapping")
        for key, value in _flatten(values):
            _set_dotted(tree, f"{section}.{key}", value)


def _apply_overrides(tree: dict[str, Any], parsed: list[tuple[str, Any]]) -> None:
    for key, value in parsed:
        _set_dotted(tree, key, value)


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict) and key == "columns":
            out.extend(_flatten(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


def save_config(config: Config, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
