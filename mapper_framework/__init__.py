"""The mapper SDK: a driver contract and everything around it (registration, device runtime, data plane).

It depends only on the DMI contract (``dmi``, ``dmi.v1beta1``), never on the agent or on protocol libraries.
"""
