"""Generated DMI v1beta1 stubs (``api_pb2``, ``api_pb2_grpc``); regenerate with ``make proto``."""
