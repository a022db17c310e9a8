"""The production-like setup: docker/compose.yaml and prefect.yaml (static checks: Docker can't run here),
then both flows against a real MLflow server and a real Prefect server (marker ``servers``).

The integration test starts ``mlflow server`` (sqlite backend store, artifacts proxied by the server into
a temporary folder, as the compose stack proxies them into MinIO) and ``prefect server start`` (sqlite)
on free ports, each in its own process group.  Then, in subprocesses pointed at them only through
PREFECT_API_URL and MLFLOW_TRACKING_URI, it runs:

* the training flow through its CLI (``python -m flows.training``);
* ``prefect deploy --all --no-prompt`` of prefect.yaml, then the unlearning deployment by a real
  process worker (``prefect worker start --pool fedshare --run-once``), as in the compose stack;

and checks the results through the servers' APIs.  Both servers are stopped (SIGTERM to the process
group, SIGKILL after 30 s) whatever happens, and the test ends by checking that their ports are closed.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import synthetic_raw

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
PREFECT_YAML = REPO / "prefect.yaml"

STARTUP_TIMEOUT = 120  # seconds for a server to answer its health check (2 shared cores, fresh databases)
STOP_TIMEOUT = 30  # mlflow server takes 5-8 s to take its 9 processes down


# -- helpers for the static checks --------------------------------------------------------------------


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def strings(node):
    """Every string in a parsed YAML tree (keys included)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def compose_variables(tree) -> set[str]:
    """Names Compose interpolates: ${VAR}, ${VAR:-x}, ${VAR?err}, $VAR; `$$` is a literal dollar."""
    names = set()
    for text in strings(tree):
        text = text.replace("$$", "")
        names |= set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
        names |= set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))
    return names


def interpolate(tree, values: dict[str, str]):
    """The compose tree with .env.example's values filled in (the forms used in compose.yaml)."""
    if isinstance(tree, str):
        text = re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: values[m.group(1)], tree)
        return text.replace("$$", "$")
    if isinstance(tree, dict):
        return {key: interpolate(value, values) for key, value in tree.items()}
    if isinstance(tree, list):
        return [interpolate(item, values) for item in tree]
    return tree


def command_words(service: dict) -> list[str]:
    words = []
    for part in ("entrypoint", "command"):
        value = service.get(part) or []
        words += value.split() if isinstance(value, str) else [w for item in value for w in str(item).split()]
    return words


def one_shot(service: dict) -> bool:
    return service.get("restart") == "no" and not service.get("ports")


def requirement_pin(name: str) -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        match = re.match(rf"{re.escape(name)}==([^\s#]+)", line.strip(), re.IGNORECASE)
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def function_arguments(entrypoint: str) -> list[str]:
    """Arguments of `path.py:function`, read with ast (no import)."""
    path, _, name = entrypoint.partition(":")
    tree = ast.parse((REPO / path).read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return [a.arg for a in node.args.args + node.args.kwonlyargs]
    raise AssertionError(f"{entrypoint}: no function {name} in {path}")


def declared_tasks(path: str) -> set[str]:
    """The names given in the module's @task(name=...) decorators."""
    names = set()
    for node in ast.walk(ast.parse((REPO / path).read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "task":
            names |= {k.value.value for k in node.keywords if k.arg == "name"}
    return names


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def deployments():
    project = yaml.safe_load(PREFECT_YAML.read_text())
    return project, {d["name"]: d for d in project["deployments"]}


# -- docker/compose.yaml ------------------------------------------------------------------------------


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the patterns used here: exact paths,
    folders and ``**/`` globs; no negations)."""
    import fnmatch

    parts = path.split("/")
    for pattern in patterns:
        # An anchored pattern matches the path or a folder above it; `**/p` one at any depth.
        starts = range(len(parts)) if pattern.startswith("**/") else [0]
        candidates = ["/".join(parts[i:j]) for i in starts for j in range(i + 1, len(parts) + 1)]
        if any(fnmatch.fnmatch(candidate, pattern.removeprefix("**/")) for candidate in candidates):
            return True
    return False


def test_the_image_context_leaves_out_data_stores_and_environments_but_not_what_it_copies():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for heavy in (
        ".git",
        ".venv",
        "data/ml-1m/ratings.dat",
        "mlflow.db",
        "mlruns/1/x",
        "state/CURRENT",
        "bench/out/runs",
        "fedshare/__pycache__/cli.cpython-311.pyc",
        "docker/.env",
    ):
        assert dockerignored(heavy, patterns), heavy
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copied = [w for line in dockerfile.splitlines() if line.startswith("COPY") for w in line.split()[1:-1]]
    assert {"fedshare", "flows", "scripts", "params.yaml", "requirements.txt"} <= set(copied)
    for source in copied:
        assert (REPO / source).exists() and not dockerignored(source, patterns), source
    assert (REPO / "scripts" / "deploy.sh").exists()  # what prefect-deploy runs inside the image


def test_the_image_builds_a_gpu_variant_from_one_argument():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in dockerfile
    assert '--index-url "$TORCH_INDEX" torch==' in dockerfile
    pins = (REPO / "requirements.txt").read_text().splitlines()
    pinned = next(line for line in pins if line.startswith("torch=="))
    assert f"{pinned} " in dockerfile  # the image installs the pinned torch, CPU or CUDA


def test_compose_has_the_stack_with_healthchecks_and_ordered_startup(compose):
    services = compose["services"]
    assert {"postgres", "minio", "minio-init", "mlflow", "prefect-server", "prefect-worker", "fedshare"} <= set(
        services
    )
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        check = service.get("healthcheck")
        if one_shot(service):
            assert not check, f"{name}: a one-shot service has nothing to health-check"
        else:
            assert check and check.get("test") and not check.get("disable"), f"{name}: long-running, no healthcheck"
            assert service.get("restart") == "unless-stopped", name
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (the mapping form)"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on {target}, which is not a service"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy: it has no check"
            else:
                assert condition == "service_completed_successfully" and one_shot(services[target]), (name, target)
            # a service that only starts with a profile must not be needed by one that starts without it
            assert set(services[target].get("profiles", [])) <= set(service.get("profiles", [])), (name, target)
    assert services["mlflow"]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    # worker mode and serve mode never run together (both would fire every cron)
    assert services["prefect-worker"].get("profiles") == ["worker"], "worker mode must be a profile of its own"
    assert services["fedshare"].get("profiles") == ["serve"], "serve mode must be a profile of its own"
    assert env_example()["COMPOSE_PROFILES"] in ("worker", "serve")
    # named volumes and configs are declared; build files exist
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], name
        if "build" in service:
            build = service["build"]
            assert (COMPOSE.parent / build["context"] / build["dockerfile"]).is_file(), name


def test_every_compose_variable_is_defined_in_env_example(compose):
    defined = env_example()
    used = compose_variables(compose)
    assert used, "compose.yaml uses no ${VAR}: is it configured from .env at all?"
    assert not used - set(defined), f"used in compose.yaml, missing from .env.example: {sorted(used - set(defined))}"
    unused = set(defined) - used - {"COMPOSE_PROFILES"}  # COMPOSE_PROFILES is read by Compose itself
    assert not unused, f"defined in .env.example, never used: {sorted(unused)}"


def test_compose_wiring_mlflow_prefect_and_the_flows(compose):
    values = env_example()
    services = interpolate(compose["services"], values)
    # MLflow: Postgres backend store, S3 (MinIO) artifacts proxied by the server, accepting its service name
    mlflow = services["mlflow"]
    words = command_words(mlflow)
    backend = next(w.split("=", 1)[1] for w in words if w.startswith("--backend-store-uri="))
    assert backend == (
        f"postgresql://{values['POSTGRES_USER']}:{values['POSTGRES_PASSWORD']}@postgres:5432/{values['MLFLOW_DB']}"
    )
    assert "--serve-artifacts" in words
    assert f"--artifacts-destination=s3://{values['MLFLOW_BUCKET']}/artifacts" in words
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert mlflow["environment"]["AWS_ACCESS_KEY_ID"] == values["MINIO_ROOT_USER"]
    allowed = next(w.split("=", 1)[1] for w in words if w.startswith("--allowed-hosts=")).split(",")
    assert any(fnmatch("mlflow:5000", host) if "*" in host else host == "mlflow:5000" for host in allowed), (
        f"MLflow would answer 403 to the stack's clients (Host: mlflow:5000); allowed: {allowed}"
    )
    assert 'mb --ignore-existing "store/$MLFLOW_BUCKET"' in " ".join(command_words(services["minio-init"]))
    dockerfile = (DOCKER / "mlflow.Dockerfile").read_text()
    assert f"MLFLOW_VERSION={requirement_pin('mlflow')}" in dockerfile
    assert "psycopg2-binary==" in dockerfile and "boto3==" in dockerfile
    # Prefect server: the pinned version, on Postgres
    prefect = services["prefect-server"]
    assert prefect["image"].startswith(f"prefecthq/prefect:{requirement_pin('prefect')}-")
    assert prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(
        f"@postgres:5432/{values['PREFECT_DB']}"
    )
    assert (
        f'CREATE DATABASE "{values["PREFECT_DB"]}"'
        in interpolate(compose["configs"], values)["postgres-init"]["content"]
    )
    assert values["PREFECT_DB"] != values["MLFLOW_DB"]  # both keep an alembic_version table
    # The flows' containers reach both servers by service name; the worker polls prefect.yaml's pool
    pool = {d["work_pool"]["name"] for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    assert pool == {"fedshare"}
    worker = command_words(services["prefect-worker"])
    assert worker[:2] == ["bash", "scripts/init_home.sh"]  # the volume's DVC repository first
    assert worker[2:7] == ["prefect", "worker", "start", "--pool", "fedshare"] and "--with-healthcheck" in worker
    assert command_words(services["prefect-deploy"]) == ["bash", "scripts/deploy.sh"]
    assert "prefect deploy --all --no-prompt" in (REPO / "scripts" / "deploy.sh").read_text()
    serve = command_words(services["fedshare"])
    assert serve[:5] == ["bash", "/app/scripts/init_home.sh", "python", "-m", "flows.serve"]
    for name in ("prefect-deploy", "prefect-worker", "fedshare"):
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name


def test_the_image_installs_like_setup_sh():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    for step in ("-m venv", "install -q -r requirements.txt -c constraints.txt", "install -q --no-deps -e ."):
        assert step in setup and step in dockerfile, step
    copied = {word for line in dockerfile.splitlines() if line.startswith("COPY") for word in line.split()[1:-1]}
    needed = {
        "requirements.txt",
        "constraints.txt",
        "pyproject.toml",
        "params.yaml",
        "prefect.yaml",
        "fedshare",
        "flows",
    }
    assert needed <= copied, f"not copied into the image: {needed - copied}"
    assert 'ENTRYPOINT ["fedshare"]' in dockerfile


# -- prefect.yaml -------------------------------------------------------------------------------------


def test_prefect_yaml_deploys_both_flows_on_the_fedshare_pool(deployments):
    from prefect.client.schemas.schedules import CronSchedule

    project, by_name = deployments
    assert project["prefect-version"] == requirement_pin("prefect")
    assert set(by_name) == {"nightly", "inbox"}
    expected = {
        "nightly": ("flows/training.py:training_flow", "0 3 * * *"),
        "inbox": ("flows/inbox.py:inbox_flow", "*/10 * * * *"),
    }
    for name, (entrypoint, cron) in expected.items():
        deployment = by_name[name]
        assert deployment["entrypoint"] == entrypoint
        assert deployment["work_pool"]["name"] == "fedshare"
        assert [s["cron"] for s in deployment["schedules"]] == [cron]
        CronSchedule(cron=cron, timezone=deployment["schedules"][0]["timezone"])  # valid cron and timezone
        assert set(deployment["parameters"]) <= set(function_arguments(entrypoint)), name
        assert all("{{ $FEDSHARE_HOME }}" in value for value in deployment["parameters"].values()), name
    step = project["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $FEDSHARE_APP_DIR }}"


# -- the integration test -----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a zombie we may not signal still counts
        return True
    return True


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process group (mlflow server forks ~9 processes), SIGKILL if it is not gone in time."""
    pgid = process.pid  # start_new_session=True: the leader's pid is the group id
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT)
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process.poll() is not None and not group_alive(pgid):
            return


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def started(command: list[str], env: dict[str, str], log: Path, timeout: float, cwd: Path):
    """A subprocess in its own group, waited for on leaving the block (killed whole on timeout, on an
    error in the block, and when done: the worker's flow-run process too); fails with its log's tail."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    code = None
    try:
        yield process
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pass
    finally:
        stop_group(process)
    assert code == 0, f"{' '.join(command[:6])} -> {'timed out' if code is None else code}\n{tail(log)}"


def run(command: list[str], env: dict[str, str], log: Path, timeout: float, cwd: Path) -> None:
    with started(command, env, log, timeout, cwd):
        pass


def http_json(url: str, body: dict | None = None, attempts: int = 6):
    """GET (or POST ``body``) and decode; retried like Prefect's own client does on 429/502/503
    (the Prefect server answers 503 while its sqlite database is busy, seen on a loaded machine)."""
    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(attempts):
        request = urllib.request.Request(
            url, data=data, headers={"Content-Type": "application/json"}, method="POST" if data is not None else "GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            if err.code not in (429, 502, 503) or attempt == attempts - 1:
                raise AssertionError(f"{request.method} {url} -> {err.code}: {err.read()[:500]!r}") from None
        time.sleep(2**attempt / 2)


def http_status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):  # not listening yet
        return 0


@dataclass
class Servers:
    mlflow_url: str
    prefect_api: str
    ports: list[int]
    processes: list[subprocess.Popen]
    artifacts: Path


@contextlib.contextmanager
def running_servers(folder: Path):
    """A real MLflow server and a real Prefect server on free ports; both stopped on the way out."""
    mlflow_port, prefect_port = free_ports(2)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    base.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    artifacts = folder / "mlflow-artifacts"
    mlflow_cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(mlflow_port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(artifacts),
        "--workers",
        "1",
        "--allowed-hosts",
        env_example()["MLFLOW_ALLOWED_HOSTS"],
    ]
    prefect_env = {
        **base,
        "PREFECT_HOME": str(folder / "prefect-server-home"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{folder / 'prefect.db'}",
        # the deployments' crons must not create runs of their own during the test
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    }
    prefect_cmd = [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(prefect_port),
    ]
    processes, logs = [], {}
    try:
        for name, command, env in (("mlflow", mlflow_cmd, base), ("prefect", prefect_cmd, prefect_env)):
            logs[name] = folder / f"{name}-server.log"
            with logs[name].open("w") as out:
                processes.append(
                    subprocess.Popen(
                        command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        health = {
            "mlflow": f"http://127.0.0.1:{mlflow_port}/health",
            "prefect": f"http://127.0.0.1:{prefect_port}/api/health",
        }
        waiting = dict(zip(health, processes))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while waiting:
            for name, process in list(waiting.items()):
                assert process.poll() is None, f"{name} server exited ({process.returncode}):\n{tail(logs[name])}"
                if http_status(health[name]) == 200:
                    del waiting[name]
            assert time.monotonic() < deadline, f"not healthy after {STARTUP_TIMEOUT} s: {list(waiting)}\n" + "\n".join(
                tail(logs[name]) for name in waiting
            )
            time.sleep(0.5)
        yield Servers(
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{prefect_port}/api",
            [mlflow_port, prefect_port],
            processes,
            artifacts,
        )
    finally:
        for process in processes:
            stop_group(process)


def flow_runs(api: str, flow_name: str) -> list[dict]:
    return http_json(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}})


def task_states(api: str, flow_run_id: str) -> dict[str, str]:
    runs = http_json(f"{api}/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    return {run["name"].rsplit("-", 1)[0]: run["state_type"] for run in runs}


@pytest.mark.servers
def test_flows_against_real_mlflow_and_prefect_servers(tmp_path):
    from mlflow import MlflowClient

    home = tmp_path / "home"  # FEDSHARE_HOME: what /srv/fedshare is in the compose stack
    data = tmp_path / "inter.csv"
    synthetic_raw().to_csv(data, index=False)
    overrides = [
        f"data.dataset={data}",
        "federated.rounds=4",
        "eval.every=2",
        "model.dim=8",
        "tracking.registered_model=server-test",
    ]

    # FEDSHARE_APP_DIR: what /app is in the image, a copy of the flows and the project files; the flows run
    # with it as their working directory, so nothing they write by a relative path lands in the repository
    app = tmp_path / "app"
    shutil.copytree(REPO / "flows", app / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "prefect.yaml", "scripts/deploy.sh"):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, app / name)

    with running_servers(tmp_path) as servers:
        api = servers.prefect_api
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
        env.update(
            PREFECT_API_URL=api,
            MLFLOW_TRACKING_URI=servers.mlflow_url,
            PREFECT_HOME=str(tmp_path / "prefect-client"),
            DO_NOT_TRACK="true",
            MLFLOW_DISABLE_TELEMETRY="true",
            FEDSHARE_HOME=str(home),
            FEDSHARE_APP_DIR=str(app),
        )
        prefect = [sys.executable, "-m", "prefect"]

        # 1. Training through the flow's CLI; meanwhile prefect.yaml is deployed as the compose stack's
        #    prefect-deploy does it (pool, then `prefect deploy --all`)
        with started(
            [
                sys.executable,
                "-m",
                "flows.training",
                "--workdir",
                str(home / "runs" / "cli"),
                "--state",
                str(home / "state"),
            ]
            + [a for o in overrides for a in ("--set", o)],
            env,
            tmp_path / "training.log",
            300,
            cwd=app,
        ):
            deployer = {  # its own client home; `prefect` is this environment's
                **env,
                "PREFECT_HOME": str(tmp_path / "prefect-deployer"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            }
            run(["bash", "scripts/deploy.sh"], deployer, tmp_path / "deploy.log", 240, cwd=app)
        assert (home / "state" / "CURRENT").read_text() == "0000"

        # 2. A request file in the inbox: one shared pair to unshare, one unknown user
        mask = pd.read_parquet(home / "state" / "models" / "0000" / "masks.parquet")
        shared = mask[mask["shared"]]
        user_id, item_id = int(shared["user_id"].iloc[0]), int(shared["item_id"].iloc[0])
        (home / "inbox").mkdir()
        pd.DataFrame({"request_id": ["a", "b"], "user_id": [user_id, 424242], "item_id": [item_id, item_id]}).to_csv(
            home / "inbox" / "req1.csv", index=False
        )

        # 3. The unlearning deployment run by a process worker (the code found through the pull step)
        inbox_deployment = http_json(f"{api}/deployments/name/fedshare-inbox/inbox")
        # the same overrides as training: the flow's config names the registered model it purges
        unlearning_run = http_json(
            f"{api}/deployments/{inbox_deployment['id']}/create_flow_run", {"parameters": {"overrides": overrides}}
        )
        run(
            prefect + ["worker", "start", "--pool", "fedshare", "--run-once"],
            env,
            tmp_path / "worker.log",
            300,
            cwd=tmp_path,
        )

        # Prefect: both flow runs and all their tasks COMPLETED, the deployments as prefect.yaml says
        training_runs = flow_runs(api, "fedshare-training")
        assert [r["state_type"] for r in training_runs] == ["COMPLETED"], tail(tmp_path / "training.log")
        assert task_states(api, training_runs[0]["id"]) == dict.fromkeys(
            declared_tasks("flows/training.py"), "COMPLETED"
        )
        finished = http_json(f"{api}/flow_runs/{unlearning_run['id']}")
        assert finished["state_type"] == "COMPLETED", tail(tmp_path / "worker.log")
        assert finished["deployment_id"] == inbox_deployment["id"]
        assert finished["parameters"] == {
            "state": str(home / "state"),
            "inbox": str(home / "inbox"),
            "overrides": overrides,
        }
        # the light inbox check found the file and ran the unlearning flow as its subflow
        [unlearning] = flow_runs(api, "fedshare-unlearning")
        assert unlearning["parent_task_run_id"] and unlearning["state_type"] == "COMPLETED"
        assert task_states(api, unlearning["id"]) == dict.fromkeys(declared_tasks("flows/unlearning.py"), "COMPLETED")
        deployed = {d["name"]: d for d in http_json(f"{api}/deployments/filter", {})}
        assert {name: [s["schedule"]["cron"] for s in d["schedules"]] for name, d in deployed.items()} == {
            "nightly": ["0 3 * * *"],
            "inbox": ["*/10 * * * *"],
        }
        assert {d["work_pool_name"] for d in deployed.values()} == {"fedshare"}
        assert deployed["nightly"]["parameters"] == {
            "workdir": str(home / "runs" / "nightly"),
            "state": str(home / "state"),
        }
        assert deployed["inbox"]["pull_steps"] == [  # filled in by `prefect deploy`, as in prefect-deploy
            {"prefect.deployments.steps.set_working_directory": {"directory": str(app)}}
        ]

        # The request was applied by the worker's run, the unknown user rejected
        assert (home / "state" / "CURRENT").read_text() == "0001"
        assert (home / "inbox" / "processed" / "req1.csv").exists()
        assert pd.read_csv(home / "inbox" / "processed" / "req1.rejections.csv")["reason"].tolist() == ["unknown user"]

        # MLflow: the training run and the unlearning run, the registered model's champion, proxied artifacts
        client = MlflowClient(tracking_uri=servers.mlflow_url, registry_uri=servers.mlflow_url)
        experiment = client.get_experiment_by_name("fedshare-inter")
        assert experiment is not None and experiment.artifact_location.startswith("mlflow-artifacts:")
        runs = {r.data.tags["fedshare.kind"]: r for r in client.search_runs([experiment.experiment_id])}
        assert set(runs) == {"training", "unlearning"}
        training, unlearning = runs["training"], runs["unlearning"]
        assert training.info.status == unlearning.info.status == "FINISHED"
        assert unlearning.data.metrics["storage_bytes"] > 0
        assert unlearning.data.tags["fedshare.parent_run_id"] == training.info.run_id
        assert "valid/recall_at_20" in training.data.metrics
        champion = client.get_model_version_by_alias("server-test", "champion")
        assert champion.run_id == unlearning.info.run_id and champion.version == "2"
        # the trained version still carries the withdrawn pair: purged from the registry, and its model
        # files deleted from the server's artifact store (the client reaches it only through the server)
        assert [v.version for v in client.search_model_versions("name='server-test'")] == ["2"]
        models = list(servers.artifacts.rglob("MLmodel"))
        assert [m.parent.parent.name for m in models] == [champion.source.removeprefix("models:/")], models
        # The Host header the compose stack's clients send is accepted (.env.example's MLFLOW_ALLOWED_HOSTS)
        search = f"{servers.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert http_status(search, {"Host": "mlflow:5000"}) == 200
        assert http_status(search, {"Host": "attacker.example"}) == 403

    # Both servers are down: no process left in their groups, nothing listening on their ports
    assert not any(group_alive(p.pid) for p in servers.processes)
    assert not any(port_open(port) for port in servers.ports), servers.ports
