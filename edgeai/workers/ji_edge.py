"""Edge worker of a joint inference service, fed by a device stream.

Each sample of the stream (``STREAM_*`` parameters) goes through ``JointInference.inference``; when the stream
carries a label (``STREAM_LABEL``) the worker also counts how often the edge answer and the final answer were
right, and reports both as metrics (``edgeAccuracy``, ``accuracy``) with Sedna's counters.
"""

from __future__ import annotations

import json
import time

from edgeai.config import ConfigError, Context
from edgeai.estimator import EstimatorError
from edgeai.joint_inference import JointInference
from edgeai.models import SklearnEstimator
from edgeai.streams import SampleStream, StreamConfigError, StreamSpec
from edgeai.workers.common import Accuracy, Every, fatal, label_text, samples, setup


def main() -> None:
    log = setup("edgeworker")
    try:
        spec = StreamSpec.from_parameters(Context.get_parameters)
    except StreamConfigError as exc:
        fatal(str(exc))
    if spec is None:
        fatal("STREAM_URL is not set: the edge worker needs a device stream (see edgeai.streams)")
    estimator = SklearnEstimator()
    try:
        ji = JointInference(estimator)
    except (EstimatorError, ConfigError) as exc:
        fatal(str(exc))
    edge_acc, final_acc = Accuracy(), Accuracy()
    tick = Every(5.0)
    slowest_ms = 0.0
    try:
        with SampleStream(spec) as stream:
            for sample in samples(stream, ji.extra_info, log):
                started = time.perf_counter()
                try:
                    is_hard, final, edge, _cloud = ji.inference(sample.features)
                except EstimatorError as exc:
                    ji.extra_info["inferenceError"] = str(exc)
                    if tick():
                        log.error("%s", exc)
                    continue
                took_ms = (time.perf_counter() - started) * 1e3
                if took_ms > slowest_ms:
                    # The longest single inference: bounded by BIG_MODEL_TIMEOUT when the big model hangs.
                    slowest_ms = took_ms
                    ji.extra_info["inferenceMaxMs"] = round(slowest_ms, 1)
                truth = label_text(sample.label)
                if truth is not None:
                    edge_acc.add(label_text(estimator.label(edge)) == truth)
                    final_acc.add(label_text(estimator.label(final)) == truth)
                    ji.extra_info.update(
                        {"edgeAccuracy": edge_acc.value, "accuracy": final_acc.value, "labelledNumber": edge_acc.total}
                    )
                if tick():
                    print(json.dumps({"hard": is_hard, "result": estimator.label(final), **ji.owner_info()}),
                          flush=True)
    finally:
        ji.close()


if __name__ == "__main__":
    main()
