"""The HTTP API of a state folder: a user's consent, requests with receipts, recommendations.

    fedshare serve --state state --inbox inbox --port 8000 --apply-every 5      # OpenAPI docs at /docs

A request received here becomes a request file in the inbox, written atomically (and fsynced)
*before* the 202 answer, so it goes through exactly what a dropped file goes through: the checks,
the journal, one unlearning event, exactly once, across crashes.  A server killed after answering
loses nothing: the file waits for the next ``process-inbox`` (or the ``--apply-every`` loop).

Every endpoint but ``/health`` and the docs needs ``Authorization: Bearer TOKEN``: a user's token
(``fedshare users issue-token ID``) acts for that user only (403 otherwise), an operator token
(``--operator``) for anyone; no or an unknown token is 401.

Moving the slider up writes a ``share-api-…`` file: the server adds the edges and continues
training the served model (``fedshare.stages.share_more_stage``).  A consent change that takes some
items back and gives others writes both files under one receipt, the withdrawal first.
"""

from __future__ import annotations

import secrets
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, model_validator

from fedshare.data.requests import REQUEST_COLUMNS
from fedshare.service.model_store import ModelStore
from fedshare.service.pending import pending_files
from fedshare.service.tokens import Principal, TokenStore
from fedshare.storage import atomic_write_bytes

MAX_ITEMS = 10_000  # items in one request body; a longer list is a mistake or an attack (422)
PAGE = Path(__file__).with_name("page.html")  # the slider page, served at /
API_PREFIX = "api-"  # request files written by the API: api-<request_id>.csv, delete-api-<request_id>.csv


class ItemsBody(BaseModel):
    items: list[str] | None = Field(
        None, max_length=MAX_ITEMS, description="raw item IDs; omitted: every item the user shares"
    )


class ConsentBody(BaseModel):
    ratio: float | None = Field(None, ge=0.0, le=1.0, description="share this fraction of your training items")
    items: list[str] | None = Field(None, max_length=MAX_ITEMS, description="share exactly these raw item IDs")

    @model_validator(mode="after")
    def exactly_one(self) -> "ConsentBody":
        if (self.ratio is None) == (self.items is None):
            raise ValueError("give exactly one of 'ratio' or 'items'")
        return self


class Receipt(BaseModel):
    request_id: str | None
    state: str
    withdrawn_items: int  # items the request takes back (an empty item ID counts once: "everything shared")
    shared_items: int = 0  # items it gives the server (the slider moved up)
    status_url: str | None = None


MODE_PREFIX = {"unshare": "", "delete": "delete-", "share": "share-"}  # what the inbox reads the mode from


def request_file(mode: str, request_id: str) -> str:
    return f"{MODE_PREFIX[mode]}{API_PREFIX}{request_id}.csv"


def new_request_id() -> str:
    return f"r-{secrets.token_hex(8)}"


@dataclass
class ServedModel:
    """What the API reads from CURRENT, loaded once per model folder."""

    name: str
    item_ids: np.ndarray  # index -> raw item ID
    user_index: dict[str, int]  # raw user ID -> index
    mask: pd.DataFrame  # user_id, item_id, shared (the served masks)
    seen: dict[int, np.ndarray]  # user index -> item indices already on the device (train and valid)
    user_vectors: torch.Tensor
    item_vectors: torch.Tensor
    titles: dict[str, str]  # raw item ID -> title, where the data set has them (fedshare/data/titles.py)


class Served:
    """The served model, reloaded when CURRENT moves (an unlearning event switched it)."""

    def __init__(self, store: ModelStore):
        self.store = store
        self.lock = threading.Lock()
        self.model: ServedModel | None = None

    def get(self) -> ServedModel:
        current = self.store.current()
        if current is None or not current.exists():
            raise HTTPException(503, f"{self.store.folder} serves no model yet; train one first")
        with self.lock:
            if self.model is None or self.model.name != current.name:
                self.model = self._load(current)
            return self.model

    @staticmethod
    def _load(folder: Path) -> ServedModel:
        from fedshare.data.titles import item_titles
        from fedshare.rundir import load_run

        config, interactions, mask, model = load_run(folder)
        user_vectors, item_vectors = model.scoring_vectors()
        table = interactions.table
        on_device = table[table["split"] != "test"]
        seen = {int(u): group.to_numpy() for u, group in on_device.groupby("user")["item"]}
        user_index = {str(user_id): index for index, user_id in enumerate(interactions.user_ids)}
        mask = mask.assign(user_id=mask["user_id"].astype(str), item_id=mask["item_id"].astype(str))
        titles = item_titles(config.data.dataset, config.data.data_dir)
        return ServedModel(
            folder.name, interactions.item_ids, user_index, mask, seen, user_vectors.cpu(), item_vectors.cpu(), titles
        )


def create_app(state: str | Path, inbox: str | Path) -> FastAPI:
    store = ModelStore(state)
    tokens = TokenStore(state)
    served = Served(store)
    inbox = Path(inbox)

    @asynccontextmanager
    async def load_before_serving(_app: FastAPI):
        # The model is read before the port opens, so /health means ready and the first
        # request does not pay seconds of loading (a client's timeout would see it as a hang).
        current = store.current()
        if current is not None and current.exists():
            served.get()
        yield

    app = FastAPI(
        lifespan=load_before_serving,
        title="FedShare",
        summary="Consent that users control: share, unshare, delete, and the recommendations of the served model.",
    )

    def principal(authorization: str | None = Header(None)) -> Principal:
        scheme, _, token = (authorization or "").partition(" ")
        who = tokens.principal(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if who is None:
            raise HTTPException(401, "missing or unknown token (Authorization: Bearer TOKEN)")
        return who

    def acting_for(user_id: str, who: Principal = Depends(principal)) -> str:
        if not who.may_act_for(user_id):
            raise HTTPException(403, "a user's token reads and changes only that user's consent")
        if user_id not in served.get().user_index:
            raise HTTPException(404, f"unknown user {user_id}")
        return user_id

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        """The slider page: it holds no data; it calls this API with the token the user types in."""
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    def health() -> dict[str, Any]:
        current = store.current()
        return {"status": "ok", "model": current.name if current else None, "pending_files": len(pending_files(inbox))}

    @app.get("/users/{user_id}/consent")
    def get_consent(user_id: str = Depends(acting_for)) -> dict[str, Any]:
        rows = user_rows(served.get(), user_id)
        shared = rows[rows["shared"]]
        entries = store.journal.entries()
        theirs = {e["request_id"] for e in entries if e.get("user_id") == user_id}
        history = [
            {k: e.get(k) for k in ("request_id", "item_id", "mode", "state", "time", "source", "event")}
            for e in entries
            if e["request_id"] in theirs
        ]
        return {
            "user_id": user_id,
            "model": served.get().name,
            "training_items": len(rows),
            "shared_items": len(shared),
            "ratio": len(shared) / len(rows) if len(rows) else 0.0,
            "shared": shared["item_id"].tolist(),
            "history": history,
        }

    @app.post("/users/{user_id}/unshare", status_code=202)
    def unshare(body: ItemsBody | None = None, user_id: str = Depends(acting_for)) -> Receipt:
        return withdraw(user_id, (body or ItemsBody()).items, "unshare")

    @app.post("/users/{user_id}/delete", status_code=202)
    def delete(body: ItemsBody | None = None, user_id: str = Depends(acting_for)) -> Receipt:
        return withdraw(user_id, (body or ItemsBody()).items, "delete")

    @app.put("/users/{user_id}/consent", status_code=202)
    def put_consent(body: ConsentBody, user_id: str = Depends(acting_for)) -> Receipt:
        rows = user_rows(served.get(), user_id)
        shared = rows.loc[rows["shared"], "item_id"].tolist()
        private = rows.loc[~rows["shared"], "item_id"].tolist()
        if body.items is not None:
            unknown = sorted(set(body.items) - set(rows["item_id"]))
            if unknown:
                raise HTTPException(422, f"not among the user's training items: {', '.join(unknown[:20])}")
            keep = set(body.items)
        else:  # the device picks which items move, at random: nothing the server could steer
            count = int(np.floor(body.ratio * len(rows) + 1e-9))
            pick = np.random.default_rng().permutation
            if count >= len(shared):
                keep = set(shared) | {private[i] for i in pick(len(private))[: count - len(shared)]}
            else:
                keep = {shared[i] for i in pick(len(shared))[:count]}
        withdrawn, more = sorted(set(shared) - keep), sorted(keep - set(shared))
        if not withdrawn and not more:
            return Receipt(request_id=None, state="unchanged", withdrawn_items=0)
        request_id = new_request_id()
        if withdrawn:  # written first: api-… sorts before share-api-…, so the inbox applies it first
            write_request(request_id, user_id, withdrawn, "unshare", "u" if more else "")
        if more:
            write_request(request_id, user_id, more, "share", "s" if withdrawn else "")
        return receipt(request_id, len(withdrawn), len(more))

    def withdraw(user_id: str, items: list[str] | None, mode: str) -> Receipt:
        rows = user_rows(served.get(), user_id)
        if items is not None:
            if not items:
                raise HTTPException(422, "'items' is empty; omit it to withdraw every shared item")
            available = set(rows["item_id"]) if mode == "delete" else set(rows.loc[rows["shared"], "item_id"])
            unknown = sorted(set(items) - available)
            if unknown:
                what = "training" if mode == "delete" else "shared"
                raise HTTPException(422, f"not among the user's {what} items: {', '.join(unknown[:20])}")
        request_id = new_request_id()
        targets = [""] if items is None else sorted(set(items))
        write_request(request_id, user_id, targets, mode)
        return receipt(request_id, len(targets), 0)

    def write_request(request_id: str, user_id: str, targets: list[str], mode: str, tag: str = "") -> None:
        """One request file in the inbox, fsynced before the answer; row IDs ``RECEIPT`` or ``RECEIPT.[tag]N``."""
        ids = (
            [request_id]
            if len(targets) == 1 and not tag
            else [f"{request_id}.{tag}{n}" for n in range(1, len(targets) + 1)]
        )
        table = pd.DataFrame({"request_id": ids, "user_id": user_id, "item_id": targets})[REQUEST_COLUMNS]
        atomic_write_bytes(inbox / request_file(mode, request_id), table.to_csv(index=False).encode())

    def receipt(request_id: str, withdrawn: int, shared: int) -> Receipt:
        return Receipt(
            request_id=request_id,
            state="accepted",
            withdrawn_items=withdrawn,
            shared_items=shared,
            status_url=f"/requests/{request_id}",
        )

    @app.get("/requests/{request_id}")
    def get_request(request_id: str, who: Principal = Depends(principal)) -> dict[str, Any]:
        status = request_status(store, inbox, request_id)
        if status is None or not who.may_act_for(status["user_id"]):
            raise HTTPException(404, f"no request {request_id}")  # another user's receipt: not even its existence
        return status

    @app.get("/users/{user_id}/recommendations")
    def recommendations(k: int = Query(20, ge=1, le=1000), user_id: str = Depends(acting_for)) -> dict[str, Any]:
        model = served.get()
        user = model.user_index[user_id]
        scores = model.item_vectors @ model.user_vectors[user]
        seen = model.seen.get(user)
        if seen is not None:
            scores[torch.as_tensor(seen)] = -torch.inf  # never what the device already has
        top = torch.topk(scores, min(k, int(torch.isfinite(scores).sum()))).indices.numpy()
        items = [str(model.item_ids[i]) for i in top]
        titles = [model.titles.get(item) for item in items]  # null where the data set has no title for it
        return {"user_id": user_id, "model": model.name, "items": items, "titles": titles}

    return app


def user_rows(model: ServedModel, user_id: str) -> pd.DataFrame:
    """The user's training pairs in the served masks (raw IDs as strings) with their ``shared`` flag."""
    return model.mask.loc[model.mask["user_id"] == user_id, ["item_id", "shared"]]


def request_status(store: ModelStore, inbox: Path, request_id: str) -> dict[str, Any] | None:
    """accepted (a file of it waits in the inbox, or it is journaled and being applied), applied
    (with the event and the model version), or rejected (with the reasons); ``None`` if this ID
    was never received.  A receipt whose files are not all applied yet is still accepted."""
    for mode in MODE_PREFIX:
        waiting = inbox / request_file(mode, request_id)
        if waiting.exists():
            user_id = pd.read_csv(waiting, dtype=str, keep_default_na=False)["user_id"].iloc[0]
            return {"request_id": request_id, "user_id": user_id, "state": "accepted", "detail": "waiting"}
    mine = lambda rid: rid == request_id or rid.startswith(f"{request_id}.")  # noqa: E731
    journal = [e for e in store.journal.entries() if mine(str(e["request_id"]))]
    if journal:
        latest = {}
        for entry in journal:
            latest[entry["request_id"]] = {**latest.get(entry["request_id"], {}), **entry}
        user_id = next(e["user_id"] for e in journal if "user_id" in e)
        if {entry["state"] for entry in latest.values()} != {"applied"}:
            return {"request_id": request_id, "user_id": user_id, "state": "accepted", "detail": "being applied"}
        model = max(entry["event"] for entry in latest.values())  # a change in two files: its last event
        event = next((e for e in store.events() if e.get("model") == model), {})
        return {
            "request_id": request_id,
            "user_id": user_id,
            "state": "applied",
            "event": event.get("event"),
            "model": model,
            "model_version": (event.get("tracking") or {}).get("model_version"),
        }
    for mode in MODE_PREFIX:
        rejections = inbox / "processed" / request_file(mode, request_id).replace(".csv", ".rejections.csv")
        rejected = pd.read_csv(rejections, dtype=str, keep_default_na=False) if rejections.exists() else []
        if len(rejected):
            return {
                "request_id": request_id,
                "user_id": str(rejected["user_id"].iloc[0]),
                "state": "rejected",
                "reasons": sorted(set(rejected["reason"])),
            }
    return None
