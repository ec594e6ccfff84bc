"""Generate the Python gRPC stubs from proto/ into services/api/generated.

The one way stubs are made (`make proto`, the container build): they are never
edited by hand. Run with the project's Python: ``python proto/generate.py``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
OUT = ROOT.parent / "services" / "api" / "generated"


def main() -> int:
    protos = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.proto"))
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={OUT}",
        f"--pyi_out={OUT}",
        f"--grpc_python_out={OUT}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed ({code})", file=sys.stderr)
        return 1
    (OUT / ".stamp").touch()
    print(f"generated stubs for {len(protos)} proto files in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
