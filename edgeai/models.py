"""The estimator our shipped workers use: a pickled scikit-learn classifier behind Sedna's estimator contract.

``predict`` answers class probabilities (what ``CrossEntropy`` mining reads, and what the big model sends back);
``train`` continues from the loaded model (``partial_fit`` when the model has it, else a fresh fit of the same
kind); ``evaluate`` answers accuracy, precision, recall and f1. Data is a pair ``(X, y)`` or the path of a CSV
file whose last column is the label (Sedna's ``csv`` dataset format).

Model files are pickles, as scikit-learn models are: load only model files you trust.
"""

from __future__ import annotations

import contextlib
import csv
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edgeai.estimator import EstimatorError

MODEL_FILE = "model.pkl"


def model_path(url: str) -> Path:
    """A model URL as a file: a folder (or a suffix-less path) holds ``model.pkl``."""
    path = Path(url.removeprefix("file://"))
    if path.is_dir() or not path.suffix:
        return path / MODEL_FILE
    return path


def read_csv(path: str | Path) -> tuple[NDArray[np.float64], NDArray[Any], list[str]]:
    """``(X, y, header)`` of a dataset CSV: a header line, then numbers with the label last."""
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as exc:
        raise EstimatorError(f"dataset {p}: {exc.strerror}") from None
    if not rows:
        raise EstimatorError(f"dataset {p}: empty (expected a header line, then samples)")
    header, body = rows[0], [r for r in rows[1:] if r]
    if len(header) < 2:
        raise EstimatorError(f"dataset {p} line 1: expected a header with features then the label")
    xs: list[list[float]] = []
    ys: list[str] = []
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise EstimatorError(f"dataset {p} line {i}: {len(row)} fields, the header has {len(header)}")
        try:
            xs.append([float(v) for v in row[:-1]])
        except ValueError:
            raise EstimatorError(f"dataset {p} line {i}: a feature is not a number: {row[:-1]}") from None
        ys.append(row[-1])
    if not xs:
        raise EstimatorError(f"dataset {p}: no samples after the header")
    y = np.asarray(ys)
    with contextlib.suppress(ValueError):
        y = y.astype(np.int64)
    return np.asarray(xs, dtype=np.float64), y, header


def _xy(data: Any) -> tuple[NDArray[np.float64], NDArray[Any]]:
    if isinstance(data, (str, Path)):
        x, y, _ = read_csv(data)
        return x, y
    if isinstance(data, tuple) and len(data) == 2:
        return np.asarray(data[0], dtype=np.float64), np.asarray(data[1])
    raise EstimatorError("data must be a CSV path or an (X, y) pair")


class SklearnEstimator:
    """Sedna's estimator contract over a scikit-learn classifier."""

    def __init__(self, model: Any = None) -> None:
        self.model = model
        self.url: str | None = None

    def load(self, model_url: str) -> None:
        path = model_path(model_url)
        if not path.exists():
            raise EstimatorError(f"model file {path} does not exist; check the Model's url (it reaches MODEL_URL)")
        try:
            with path.open("rb") as f:
                model = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
            raise EstimatorError(f"model file {path} cannot be loaded: {exc}") from None
        if not hasattr(model, "predict_proba"):
            raise EstimatorError(f"model file {path} holds a {type(model).__name__}, not a classifier")
        self.model, self.url = model, str(path)

    def _require(self) -> Any:
        if self.model is None:
            raise EstimatorError("no model loaded: set MODEL_URL or call load()")
        return self.model

    @property
    def n_features(self) -> int | None:
        n = getattr(self.model, "n_features_in_", None)
        return int(n) if n is not None else None

    def predict(self, data: Any, **kwargs: Any) -> list[Any]:
        """Class probabilities: a list for one sample, a list of lists for a batch (2-D input).

        One sample is a feature vector, or an image (H, W, channels), which is flattened.
        """
        model = self._require()
        x = np.asarray(data, dtype=np.float64)
        single = x.ndim != 2
        if single:
            x = x.reshape(1, -1)
        n = self.n_features
        if n is not None and x.shape[1] != n:
            raise EstimatorError(f"the model takes {n} features, the data has {x.shape[1]}; check STREAM_PROPERTIES")
        probs = model.predict_proba(x)
        return probs[0].tolist() if single else probs.tolist()  # type: ignore[no-any-return]

    def label(self, probs: Any) -> Any:
        """The class a probability vector points at."""
        model = self._require()
        return model.classes_[int(np.argmax(probs))].item()

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        x, y = _xy(train_data)
        model = self._require()
        if hasattr(model, "partial_fit"):
            for _ in range(int(kwargs.get("epochs", 5))):
                model.partial_fit(x, y, classes=getattr(model, "classes_", np.unique(y)))
        else:
            from sklearn.base import clone

            model = clone(model).fit(x, y)
        self.model = model
        return self.evaluate(valid_data if valid_data is not None else (x, y))

    def evaluate(self, data: Any, **kwargs: Any) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, precision_recall_fscore_support

        x, y = _xy(data)
        model = self._require()
        pred = model.predict(x)
        p, r, f, _ = precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
        return {"accuracy": float(accuracy_score(y, pred)), "precision": float(p), "recall": float(r), "f1": float(f)}

    def save(self, model_path_: str) -> str:
        path = model_path(model_path_)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("wb") as f:
            pickle.dump(self._require(), f)
        os.replace(tmp, path)
        return str(path)
