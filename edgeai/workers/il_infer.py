"""Inference worker of an incremental learning job, fed by a device stream, with hot model updates.

Hard examples are appended to the Dataset file named by ``HE_SAVED_URL`` (features, then the label, as the
Dataset's csv lines), which the local controller reads to trigger training. The label comes from the stream
(``STREAM_LABEL``) or, for streams without one, from a labelling callback named by ``HE_LABEL_CALLBACK``:
``package.module:function`` or the alias of a class registered as ``ClassType.CALLBACK``, called with the sample's
features and the model's answer and returning the label (or None to leave the example out).
The worker reports ``accuracy`` over the last 200 labelled samples, so a deployment's effect shows in the status.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgeai.class_factory import ClassFactory, ClassType
from edgeai.config import ConfigError, Context
from edgeai.estimator import EstimatorError
from edgeai.incremental_learning import IncrementalLearning
from edgeai.models import SklearnEstimator
from edgeai.streams import SampleStream, StreamConfigError, StreamSpec
from edgeai.workers.common import Accuracy, Every, fatal, label_text, samples, setup


def load_labeller(name: str | None) -> Callable[[Any, Any], Any] | None:
    """The labelling callback ``HE_LABEL_CALLBACK`` names, or None."""
    if not name:
        return None
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"HE_LABEL_CALLBACK={name!r}: {exc}; expected package.module:function") from None
    else:
        try:
            fn = ClassFactory.get_cls(ClassType.CALLBACK, name)()
        except ValueError as exc:
            raise ConfigError(f"HE_LABEL_CALLBACK={name!r}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"HE_LABEL_CALLBACK={name!r} is not callable")
    return fn  # type: ignore[no-any-return]


def main() -> None:
    log = setup("inferworker")
    try:
        spec = StreamSpec.from_parameters(Context.get_parameters)
    except StreamConfigError as exc:
        fatal(str(exc))
    if spec is None:
        fatal("STREAM_URL is not set: the inference worker needs a device stream (see edgeai.streams)")
    saved = Context.get_parameters("HE_SAVED_URL")
    sink = Path(saved) if saved else None
    try:
        labeller = load_labeller(Context.get_parameters("HE_LABEL_CALLBACK"))
    except ConfigError as exc:
        fatal(str(exc))
    estimator = SklearnEstimator()
    try:
        il = IncrementalLearning(estimator)
        il.start_inference()
    except (EstimatorError, ConfigError) as exc:
        fatal(str(exc))
    acc = Accuracy()
    tick = Every(5.0)
    saved_count = 0
    try:
        with SampleStream(spec) as stream:
            for sample in samples(stream, il.extra_info, log):
                try:
                    probs, _res, is_hard = il.inference(sample.features)
                except EstimatorError as exc:
                    il.extra_info["inferenceError"] = str(exc)
                    if tick():
                        log.error("%s", exc)
                    continue
                truth = label_text(sample.label)
                if truth is not None:
                    acc.add(label_text(estimator.label(probs)) == truth)
                    il.extra_info.update({"accuracy": acc.value, "labelledNumber": acc.total})
                elif is_hard and labeller is not None:
                    try:
                        truth = label_text(labeller(sample.features, probs))
                    except Exception as exc:  # a user's callback: report it, keep inferring
                        il.extra_info["labelError"] = f"HE_LABEL_CALLBACK failed: {exc}"
                if truth is not None and is_hard and sink is not None:
                    line = ",".join(repr(float(v)) for v in sample.features.ravel()) + f",{truth}\n"
                    with sink.open("a", encoding="utf-8") as f:
                        f.write(line)
                    saved_count += 1
                    il.extra_info["hardExamplesSaved"] = saved_count
                if tick():
                    print(json.dumps(il.owner_info()), flush=True)
    except (EstimatorError, ConfigError) as exc:
        fatal(str(exc), 1)
    finally:
        il.close()


if __name__ == "__main__":
    main()
