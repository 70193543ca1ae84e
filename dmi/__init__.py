"""KubeEdge DMI v1beta1: the wire contract, CR objects and their conversion, and the edge agent."""

GROUP = "devices.kubeedge.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
