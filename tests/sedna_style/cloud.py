"""A cloud worker written the way Sedna's examples are, with only the import pointing at edgeai."""

from edgeai.joint_inference import BigModelService  # Sedna: from sedna.core.joint_inference import BigModelService


class Estimator:
    def __init__(self, **kwargs):
        self.threshold = None

    def load(self, model_url=""):
        with open(model_url) as f:
            self.threshold = float(f.read())

    def predict(self, data, **kwargs):
        return ["cloud", float(sum(data)) > self.threshold * len(data)]


if __name__ == "__main__":
    BigModelService(estimator=Estimator).start()
