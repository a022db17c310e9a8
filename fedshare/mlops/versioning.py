"""DVC versions of the served sharing masks and consent store, and their purge (the only module that imports DVC).

Each time the served model changes (a training run is adopted, an unlearning event is applied),
``state/masks.parquet`` is replaced by the new masks and ``dvc add``-ed together with
``state/consent.parquet`` (each user's current choice and the request that last changed it): the
DVC cache (and the default remote, when one is configured) holds every version, and
``state/mask_versions.json`` lists them with their MD5s and time, so any version can be restored
with DVC.

Keeping old versions would undo forgetting: a version from before an unsharing event still marks
the withdrawn interactions as shared.  ``purge_mask_versions`` deletes every version but the
current one from the cache and the local remote once it is older than the retention period.
Outside a DVC repository all of this is skipped (the state folder may live anywhere), with one
warning per state folder, so that it is never off without anyone knowing (``scripts/init_home.sh``
makes a data folder a DVC repository).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

from fedshare.storage import atomic_write_json

MASKS = "masks.parquet"
CONSENT = "consent.parquet"  # the consent store (fedshare.data.consent.consent_table), versioned with the masks
log = logging.getLogger(__name__)
_warned_unversioned: set[Path] = set()


def dvc_root(path: Path) -> Path | None:
    """The DVC repository that contains ``path``, if any (without importing DVC)."""
    for folder in [path.resolve(), *path.resolve().parents]:
        if (folder / ".dvc").is_dir():
            return folder
    return None


def versions_file(state: Path) -> Path:
    return state / "mask_versions.json"


def mask_versions(state: Path) -> list[dict[str, Any]]:
    file = versions_file(state)
    return json.loads(file.read_text()) if file.exists() else []


def version_masks(state: str | Path, masks_file: Path) -> dict[str, Any] | None:
    """Copy the served masks to state/masks.parquet, `dvc add` and push them; returns the version."""
    state = Path(state)
    root = dvc_root(state)
    if root is None:
        if state.resolve() not in _warned_unversioned:
            _warned_unversioned.add(state.resolve())
            log.warning(
                "the masks of %s are not versioned: it is not inside a DVC repository "
                "(`dvc init` there, or FEDSHARE_HOME=FOLDER bash scripts/init_home.sh)",
                state,
            )
        return None
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    target = state / MASKS
    shutil.copyfile(masks_file, target)
    targets = [str(path.resolve()) for path in (target, state / CONSENT) if path.exists()]
    try:
        with Repo(str(root)) as repo:
            repo.scm_context.quiet = True  # no "To track the changes with git, run: ..." after each event
            md5s = [stage.outs[0].hash_info.value for stage in repo.add(targets)]
            pushed = False
            if repo.config.get("core", {}).get("remote"):
                repo.push(targets=[path + ".dvc" for path in targets])
                pushed = True
    except DvcException as err:  # the model is served either way; say loudly that this version is not in DVC
        warnings.warn(f"DVC could not version {target}: {err}", stacklevel=2)
        return {"error": str(err)}
    md5 = md5s[0]
    version = {"md5": md5, "time": time.time(), "pushed": pushed}
    if len(md5s) > 1:
        version["consent_md5"] = md5s[1]
    versions = [v for v in mask_versions(state) if v["md5"] != md5] + [version]
    atomic_write_json(versions_file(state), versions)
    return version


def _object_paths(root: Path, md5: str) -> list[Path]:
    """Where DVC 3 keeps an object: the project cache and a local-folder default remote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        paths = [Path(repo.cache.local.path) / md5[:2] / md5[2:]]  # cache.local.path ends in files/md5
        name = repo.config.get("core", {}).get("remote")
        url = repo.config.get("remote", {}).get(name, {}).get("url") if name else None
    if url and "://" not in url:  # DVC hands local remote paths back absolute
        paths.append(Path(url) / "files" / "md5" / md5[:2] / md5[2:])
    return paths


def purge_mask_versions(state: str | Path, retention_seconds: float = 0.0) -> list[str]:
    """Delete superseded mask versions older than the retention period; returns the purged MD5s."""
    state = Path(state)
    root = dvc_root(state)
    versions = mask_versions(state)
    if root is None or len(versions) < 2:
        return []
    current = versions[-1]["md5"]
    served = {current, versions[-1].get("consent_md5"), None}  # objects the current version still uses
    now = time.time()
    purged, kept = [], []
    for version in versions:
        if version["md5"] != current and now - version["time"] >= retention_seconds:
            for md5 in {version["md5"], version.get("consent_md5")} - served:
                for path in _object_paths(root, md5):
                    path.unlink(missing_ok=True)
            purged.append(version["md5"])
        else:
            kept.append(version)
    atomic_write_json(versions_file(state), kept)
    return purged
