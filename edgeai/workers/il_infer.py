"""Inference worker of an incremental learning job, fed by a device stream, with hot model updates.

Hard examples that carry a label (``STREAM_LABEL``) are appended to the Dataset file named by ``HE_SAVED_URL``
(features, then the label, as the Dataset's csv lines), which the local controller reads to trigger training.
The worker reports ``accuracy`` over the last 200 labelled samples, so a deployment's effect shows in the status.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgeai.config import ConfigError, Context
from edgeai.estimator import EstimatorError
from edgeai.incremental_learning import IncrementalLearning
from edgeai.models import SklearnEstimator
from edgeai.streams import SampleStream, StreamConfigError, StreamSpec, StreamStalled
from edgeai.workers.common import Accuracy, Every, fatal, label_text, setup


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
            it = iter(stream)
            while True:
                try:
                    sample = next(it)
                except StreamStalled as exc:
                    il.extra_info["streamError"] = str(exc)
                    log.warning("%s", exc)
                    continue
                except StopIteration:
                    break
                il.extra_info.pop("streamError", None)
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
                    if is_hard and sink is not None:
                        line = ",".join(repr(float(v)) for v in sample.features.ravel()) + f",{truth}\n"
                        with sink.open("a", encoding="utf-8") as f:
                            f.write(line)
                        saved_count += 1
                        il.extra_info["hardExamplesSaved"] = saved_count
                stats = stream.stats
                if stats.rejected:
                    il.extra_info["streamRejected"] = stats.rejected
                    il.extra_info["streamLastError"] = stats.last_error or ""
                if tick():
                    print(json.dumps(il.owner_info()), flush=True)
    except (EstimatorError, ConfigError) as exc:
        fatal(str(exc), 1)
    finally:
        il.close()


if __name__ == "__main__":
    main()
