"""Export evaluated pairs from the object store as .npz files, to study the filters on real data.

    python -m services.curator.export_pairs OUT_DIR [--survey dss2-color] [--limit N]

with the stack's settings in the environment (e.g. `set -a; . .stack/stack.env; set +a`). One file
per (observation, survey) pair that has an available cutout: ``outreach`` (H, W, 3) uint8 and
``survey`` (3, h, w) float32 NaN blank, both in FITS orientation, their WCSs as JSON FITS headers
(``outreach_wcs``, ``survey_wcs``: the cutout's pairing WCS), and the verdict's ``reasons`` as JSON.
`python -m services.curator.evalset_alignment --real OUT_DIR` runs the alignment over them.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
from astropy.io import fits

from services.curator import verdicts
from services.curator.evaluation import decode_image
from services.runtime.config import load_config
from services.runtime.objectstore import ObjectStore


def export(store: ObjectStore, out_dir: Path, surveys: tuple[str, ...] = (), limit: int = 0) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key in sorted(store.list_keys(verdicts.BUCKET, "verdicts/")):
        document = store.get_json(verdicts.BUCKET, key)
        image_ref = document.get("outreach", {}).get("image")
        if not image_ref:
            continue
        image = None
        for survey, pair in sorted(document.get("pairs", {}).items()):
            cutout = pair.get("cutout")
            if not cutout or (surveys and survey not in surveys):
                continue
            if image is None:
                image = decode_image(store.get_bytes(image_ref["bucket"], image_ref["key"]))
            with fits.open(io.BytesIO(store.get_bytes(cutout["bucket"], cutout["key"]))) as hdul:
                cube = np.asarray(hdul[0].data, dtype=np.float32)
            path = out_dir / f"{document['source']}__{document['image_id']}__{survey}.npz"
            np.savez_compressed(
                path,
                outreach=image,
                outreach_wcs=json.dumps(image_ref["wcs"]),
                survey=cube,
                survey_wcs=json.dumps(cutout["wcs"]),
                reasons=json.dumps(pair["reasons"]),
            )
            written.append(path)
            if limit and len(written) >= limit:
                return written
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.curator.export_pairs", description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--survey", action="append", default=[], help="only this survey (repeatable)")
    parser.add_argument("--limit", type=int, default=0, help="stop after N pairs (0: all)")
    args = parser.parse_args(argv)
    written = export(ObjectStore.from_config(load_config()), args.out_dir, tuple(args.survey), args.limit)
    print(f"{len(written)} pairs written to {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
