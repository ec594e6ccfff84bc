"""`prettyspace render ...` and `prettyspace resolve NAME`: the gateway's commands.

    prettyspace render "M51" --fov 8 --size 1024 --out m51.png
    prettyspace render --ra 202.4696 --dec 47.1952 --fov 8 --size 1024 --out field.png --fits

Writes the rendering (--out), the survey | rendering side-by-side (`<out>-side-by-side.png`),
the FITS with the sky's WCS (--fits: `<out>.fits`) and, with --samples > 1, the spread overlay
(`<out>-spread.png`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from services.api import common_pb2, gateway_pb2
from services.client import cli
from services.client.clients import client_for


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: expected a number from 0 (vivid) to 1 (faithful)")
    return value


def build_request(args: argparse.Namespace) -> gateway_pb2.RenderRequest:
    request = gateway_pb2.RenderRequest(
        fov_arcmin=args.fov or 0.0,
        size=common_pb2.PixelGrid(width=args.size, height=args.height or args.size),
        survey=args.survey or "",
        model_name=args.model or "",
        model_version=args.model_version or "",
        samples=args.samples,
        fidelity=args.fidelity,
        north_angle_deg=args.north_angle,
        want_fits=args.fits,
        seed=args.seed or 0,
        no_cache=args.no_cache,
    )
    if args.target:
        request.name = args.target
    else:
        request.position.CopyFrom(common_pb2.SkyPosition(ra_deg=args.ra, dec_deg=args.dec))
    return request


def output_paths(out: Path) -> dict[str, Path]:
    stem = out.with_suffix("")
    return {
        "png": out,
        "side_by_side_png": stem.with_name(stem.name + "-side-by-side.png"),
        "fits": stem.with_suffix(".fits"),
        "spread_png": stem.with_name(stem.name + "-spread.png"),
    }


def cmd_render(args: argparse.Namespace) -> int:
    if not args.target and (args.ra is None or args.dec is None):
        print("prettyspace render: give a target name or both --ra and --dec", file=sys.stderr)
        return 2
    request = build_request(args)
    bar = tqdm(total=0, unit="tile", dynamic_ncols=True, desc="render", disable=not sys.stderr.isatty())

    def progress(p: common_pb2.JobProgress) -> None:
        if not sys.stderr.isatty():
            print(f"render: {p.stage} {p.done}/{p.total} {p.message}".rstrip(), file=sys.stderr, flush=True)
            return
        if p.total and bar.total != p.total:
            bar.total = p.total
        bar.n = p.done
        bar.set_postfix_str(f"{p.stage} {p.message}".strip(), refresh=False)
        bar.refresh()

    with client_for("gateway", args.address, timeout_s=args.timeout) as client:
        try:
            result = client.render(request, progress, timeout_s=args.timeout)  # type: ignore[attr-defined]
        finally:
            bar.close()
    written = []
    for product, path in output_paths(Path(args.out)).items():
        data: bytes = getattr(result, product)
        if data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            written.append(str(path))
    p = result.provenance
    summary = (
        f"{p.disclaimer}: {p.parameters.get('size', '')} px of {result.footprint.fov_x_arcmin:.3g}' around "
        f"RA {result.footprint.center.ra_deg:.5f} Dec {result.footprint.center.dec_deg:+.5f}"
        f"{' (' + result.resolver + ')' if result.resolver else ''}, {p.survey} through {p.model_name} "
        f"v{p.model_version}{' (cached)' if result.from_cache else ''}\n"
        + "\n".join(f"  wrote {w}" for w in written)
        + "\n  credit: "
        + "; ".join(p.credits)
    )
    cli.print_message(result.provenance, args.json, summary)
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    with client_for("gateway", args.address, timeout_s=args.timeout) as client:
        found = client.stub.ResolveName(gateway_pb2.ResolveNameRequest(name=args.name), timeout=args.timeout)
    size = f", {found.size_arcmin:g}'" if found.size_arcmin else ""
    text = f"{found.name}: RA {found.position.ra_deg:.5f} Dec {found.position.dec_deg:+.5f}{size} ({found.resolver})"
    cli.print_message(found, args.json, text)
    return 0


def add_parsers(sub: Any) -> None:
    render = sub.add_parser(
        "render",
        help="render a field of the sky as Hubble/Webb might show it (an AI rendering)",
        epilog="Exit status: 0 rendered, 1 refused or failed (the reason is printed), 2 bad arguments.",
    )
    render.add_argument("target", nargs="?", help='an object name, e.g. "M51" or "NGC 253"')
    render.add_argument("--ra", type=float, help="right ascension, degrees (instead of a name)")
    render.add_argument("--dec", type=float, help="declination, degrees")
    render.add_argument("--fov", type=float, help="field of view across, arcmin (default: framed on the object)")
    render.add_argument("--size", type=int, default=1024, help="output width in pixels (default 1024)")
    render.add_argument("--height", type=int, help="output height in pixels (default: square)")
    render.add_argument("--out", default="render.png", help="the rendering's PNG (others are named after it)")
    render.add_argument("--fits", action="store_true", help="also write a FITS with the WCS")
    render.add_argument("--samples", type=int, default=1, help=">1: also a spread map of where the model invents")
    render.add_argument("--fidelity", type=_fraction, default=0.5, help="0 vivid ... 1 faithful (default 0.5)")
    render.add_argument("--survey", help="survey slug, e.g. dss2-color (default) or sdss9-color")
    render.add_argument("--model", help="model name (default: generator)")
    render.add_argument("--model-version", help="model version (default: the newest served)")
    render.add_argument("--north-angle", type=float, default=0.0, help="north N degrees left of vertical")
    render.add_argument("--seed", type=int, help="noise seed (default: derived from the field)")
    render.add_argument("--no-cache", action="store_true", help="render again even when cached")
    cli.service_options(render, "gateway", False, 600.0)
    render.set_defaults(func=cmd_render)

    resolve = sub.add_parser("resolve", help="where an object name points (Sesame, else the shipped catalogue)")
    resolve.add_argument("name")
    cli.service_options(resolve, "gateway", False, 10.0)
    resolve.set_defaults(func=cmd_resolve)
