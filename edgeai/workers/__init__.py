"""The workers we ship, each a Sedna-style worker script (``python -m edgeai.workers.<name>``).

They read everything from the environment Sedna injects, plus the ``STREAM_*`` parameters naming the device
stream (see :mod:`edgeai.streams`); models are pickled scikit-learn classifiers (:mod:`edgeai.models`).
"""
