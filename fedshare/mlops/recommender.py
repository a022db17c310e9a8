"""The registered model as devices use it: an MLflow pyfunc that returns top-k raw item IDs.

This file is the model's code (MLflow "models from code": ``tracking._log_model`` logs the file
itself), so it imports nothing from FedShare: a device needs MLflow, numpy and pandas only.

Input, one row per device: ``user_vector`` (what the device holds: its private user vector and,
when it shares, its global one, laid out as ``Model.scoring_vectors`` does) and ``seen`` (raw IDs
of the items already on the device, never recommended).  Output: ``items``, the top-k raw item
IDs, best first.  ``params={"k": 20}``.

    model = mlflow.pyfunc.load_model("models:/fedshare-ml-100k@champion")
    model.predict(pd.DataFrame({"user_vector": [vector], "seen": [["50", "172"]]}), params={"k": 10})
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd


class Recommender(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        tables = np.load(context.artifacts["tables"], allow_pickle=False)
        self.item_vectors = tables["item_vectors"].astype(np.float32)
        self.item_ids = tables["item_ids"].astype(str)
        self.index = {item: position for position, item in enumerate(self.item_ids)}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 20))
        recommended = []
        for vector, seen in zip(model_input["user_vector"], model_input["seen"]):
            scores = self.item_vectors @ np.asarray(vector, dtype=np.float32)
            scores[
                [self.index[str(item)] for item in (seen if seen is not None else []) if str(item) in self.index]
            ] = -np.inf
            top = np.argsort(-scores, kind="stable")[:k]
            recommended.append([str(self.item_ids[i]) for i in top if np.isfinite(scores[i])])
        return pd.DataFrame({"items": recommended})


mlflow.models.set_model(Recommender())
