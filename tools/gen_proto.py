"""Generate the Python stubs of the DMI v1beta1 proto.

Run from anywhere: ``python tools/gen_proto.py [OUTPUT_DIR]``. Without an
argument the stubs are written next to ``dmi/v1beta1/api.proto``; the test
suite passes a temporary folder and compares the result with the committed
stubs, so a proto edit without regeneration cannot land.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = Path("dmi/v1beta1/api.proto")


def generate(out_root: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) and return the files it wrote."""
    import grpc_tools
    from grpc_tools import protoc  # dev-only dependency

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_root.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        str(ROOT / PROTO),
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    stem = out_root / PROTO.parent
    return [stem / "api_pb2.py", stem / "api_pb2.pyi", stem / "api_pb2_grpc.py"]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT
    for path in generate(target):
        print(path)
