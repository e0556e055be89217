"""``tbptt merge``: a sharded output (a virtual .h5 over its shards) as one regular file,
byte for byte the file the same command writes with ``--engine local``, and its manifest
(the same as that run's, apart from the input section, which names the engine)."""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import Any

import h5py

from tbptt_cli import atomic, hdf5, manifest, shards
from tbptt_cli.digest import in_background, sha256_file
from tbptt_cli.errors import InputDataError, InputMissingError, UsageError
from tbptt_cli.materialize import Slab


def merge(
    path: str, output: str, manifest_out: str | None, no_clobber: bool, wait: float
) -> dict[str, Any]:
    """Write ``output`` (and its manifest) from the sharded output ``path``."""
    from tbptt_cli.core import manifest_path
    from tbptt_cli.validate.common import load_manifest, open_output

    source, out = Path(path), Path(output)
    if out.resolve() == source.resolve():
        raise UsageError(f"{output}: is the sharded file itself; merge into another file")
    out_manifest = manifest_path(out, manifest_out)
    for target in (out, out_manifest):
        atomic.check_writable(target, no_clobber)
    with atomic.signals_raise(), contextlib.ExitStack() as stack:
        stack.enter_context(atomic.output_lock(source, wait))  # no run replaces it meanwhile
        stack.enter_context(atomic.output_lock(out, wait))
        f = stack.enter_context(open_output(path))
        _, doc, missing = load_manifest(path, None)
        if doc is None:
            raise InputMissingError(f"{missing}; merge needs it to check the shards")
        listed = _check_sharded(f, source, doc)
        hashes = in_background(
            lambda: {s["file"]: sha256_file(source.parent / s["file"]) for s in listed}
        )
        rows = file_rows(f)
        attrs = {key: f.attrs[key] for key in f.attrs}
        stored = json.loads(str(attrs["params"]))["output"]
        with atomic.transaction() as txn:
            written = hdf5.write_file(
                txn.place(out), out, rows, stored["dtype"], stored["compression"], attrs
            )
            merged = _merged_manifest(doc, output, manifest_out, out.name, written)
            txn.place(out_manifest).write_text(manifest.dumps(merged), encoding="utf-8")
            changed = [s["file"] for s in listed if hashes.result()[s["file"]] != s["sha256"]]
            if changed:
                raise InputDataError(
                    f"{path}: shard {changed[0]} differs from the manifest's sha256; "
                    "run the command again to rewrite it"
                )
            try:
                txn.commit()
            except OSError as e:
                raise atomic.write_error(out, e) from None
    return {
        "output": str(out),
        "manifest": str(out_manifest),
        "from": path,
        "shards": len(listed),
        "samples": rows.samples,
        "bytes": written.size,
    }


def _check_sharded(f: h5py.File, source: Path, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's shards, once every one the file reads is there."""
    if not shards.sources(f):
        raise UsageError(f"{source}: is one regular file already, not a sharded output")
    missing = shards.missing_sources(f, source)
    if missing:
        raise InputMissingError(
            f"{source}: shard {missing[0]} is missing ({len(missing)} in all); keep the "
            f"{shards.folder(source).name} folder beside the file, or run the command again"
        )
    listed = (doc.get("output") or {}).get("shards") or []
    if sorted(s.get("file") for s in listed) != shards.sources(f):
        raise InputDataError(f"{source}: its manifest lists other shards than the file reads")
    return list(listed)


def file_rows(f: h5py.File) -> hdf5.Rows:
    """The rows of an open output file, as the writer takes them."""
    X = f["X"]
    samples, window, features = X.shape
    big = {name: f[name] for name in shards.VIRTUAL if name in f}

    def gather(start: int, stop: int, dtype: Any, buffer: Any) -> Slab:
        read = {name: ds[start:stop] for name, ds in big.items()}
        return Slab(
            read["X"],
            read.get("y"),
            read["mask"],
            read.get("loss_mask"),
            read.get("step_reset"),
            read.get("step_sequence"),
        )

    return hdf5.Rows(
        samples=samples,
        window=window,
        batch_size=int(f.attrs["batch_size"]),
        features=features,
        targets=int(f["y"].shape[2]) if "y" in f else None,
        loss="loss_mask" in f,
        steps="step_reset" in f,
        index={name: f[name][()] for name in hdf5.INDEX_DATASETS if name in f},
        gather=gather,
    )


def _merged_manifest(
    doc: dict[str, Any], output: str, manifest_out: str | None, name: str, written: hdf5.Written
) -> dict[str, Any]:
    """The sharded run's manifest as the same command run here with ``-o output`` writes
    it; only its input section says which engine made the data."""
    merged = copy.deepcopy(doc)
    merged["output"] = {
        "file": name,
        "size": written.size,
        "sha256": written.sha256,
        "datasets": written.datasets,
    }
    merged["params"]["output"].update(
        path=output, manifest=manifest_out, engine="local", scheduler=None
    )
    return merged
