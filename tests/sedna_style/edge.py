"""An edge worker written the way Sedna's examples are (estimator class, HEM from the CR with an override,
``Context.get_parameters``), with only the imports pointing at edgeai instead of sedna."""

import time

import numpy as np

from edgeai.config import Context  # Sedna: from sedna.common.config import Context
from edgeai.joint_inference import JointInference  # Sedna: from sedna.core.joint_inference import JointInference


class Estimator:
    def __init__(self, **kwargs):
        self.threshold = None

    def load(self, model_url=""):
        with open(model_url) as f:
            self.threshold = float(f.read())

    def predict(self, data, **kwargs):
        score = float(np.mean(data))
        p = 1.0 / (1.0 + np.exp(-(score - self.threshold) * 40))
        return [1.0 - p, p]


def main():
    hem = JointInference.get_hem_algorithm_from_config(threshold_cross_entropy=0.9)
    inference_instance = JointInference(estimator=Estimator, hard_example_mining=hem)
    count = int(Context.get_parameters("samples", 50))
    rng = np.random.default_rng(1)
    for _ in range(count):
        is_hard, final, edge, cloud = inference_instance.inference(rng.normal(0.5, 0.3, 4))
        print(is_hard, final, edge, cloud, flush=True)
    inference_instance.close()
    time.sleep(3600)  # a Sedna worker lives as long as its pod


if __name__ == "__main__":
    main()
