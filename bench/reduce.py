"""Benchmark the reduce + grid stages at 1M rows, and their layout quality against umap-learn at 200k.

    python bench/reduce.py [--store PATH] [--rows 1000000] [--compare-rows 200000] [--workdir DIR]
    python bench/reduce.py --smoke --store STORE --workdir DIR --out X.json   # seconds; what CI runs

Data: with ``--store`` (default ``data/store.zarr`` if it exists) the valid rows of that store,
extended to ``--rows`` by interpolating each real row toward one of its nearest real rows with
small multiplicative noise (see :class:`Replicated` for why not plain copies); with
``--synthetic`` (or no store) a stand-in: non-negative, sparse, clustered ReLU-like 512-d rows
(see :class:`Synthetic`), with top-20 attributions drawn per cluster.
The JSON says which (``data.source``) and, for a real store, the model and layer its rows came
from (the store's ``attrs["model"]``, copied into the extended store).

Every measured configuration runs in its own subprocess, so its wall time includes imports and
numba compilation (~60 s per process) and its peak RSS (``ru_maxrss`` of that process) is its own:

- ``1M reduce+grid``: this repo's defaults (params.yaml) on ``--rows`` rows;
- at ``--compare-rows``: ``umap-learn defaults`` (one ``UMAP(n_neighbors, min_dist, metric)``
  fit on all rows, spectral init, unseeded so multi-threaded: its fastest setting), and this
  stage as configured, with ``deterministic: false``, and with the 1M run's fit fraction
  (fit on rows/5, place the rest) to isolate the cost of placement.

Quality: sklearn trustworthiness (n_neighbors 10, cosine on the raw activations) of the 2-D
embedding on the same seeded 5,000-row subsample for every configuration.
Prints a table and writes ``bench/results/reduce.json`` and ``bench/results/reduce_layout.png`` (``--out``).

``--smoke`` runs every one of those processes on 1,000 rows (one store for both sizes) with
``--method pca`` (the stage's PCA reducer, and plain sklearn PCA as the baseline) and levels 4 and 8:
UMAP's numba compilation alone costs ~25 CPU-seconds per process, which is the whole smoke
budget; the UMAP path itself is covered by tests/test_reduce.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import load_config, machine_record  # noqa: E402

log = logging.getLogger("bench.reduce")

TRUST_ROWS = 5_000
TRUST_NEIGHBORS = 10
CHANNELS = 512
N_CLASSES = 1000
TOP_K = 20


# --------------------------------------------------------------------------------- data
class Synthetic:
    """Deterministic rows of a ReLU'd latent mixture: row r is the same in every store.

    A 10-d latent mixture (20 groups x 10 overlapping sub-clusters) mapped linearly to 512
    channels, plus a rank-6 local spread per sub-cluster and isotropic noise, shifted and
    rectified: non-negative, ~60% zeros, clustered but continuous like a real layer's layout.
    The dataset label is the group; each sub-cluster has its own top-20 attributed classes
    (5 shared by its group).
    """

    def __init__(
        self,
        seed: int = 0,
        channels: int = CHANNELS,
        n_groups: int = 20,
        n_sub: int = 10,
        latent: int = 10,
        rank: int = 6,
    ):
        g = np.random.default_rng(seed)
        k = n_groups * n_sub
        groups = g.normal(0, 1.0, (n_groups, latent))
        self.latent_means = (groups.repeat(n_sub, 0) + g.normal(0, 0.45, (k, latent))).astype(np.float32)
        self.latent_sd = 0.5
        self.lift = (g.normal(0, 1.0, (latent, channels)) / np.sqrt(latent)).astype(np.float32)
        self.local = g.normal(0, 0.08, (k, rank, channels)).astype(np.float32)
        self.weights = g.dirichlet(np.ones(k) * 2.0)
        self.labels_of_cluster = np.arange(k) // n_sub
        shared = np.stack([g.choice(N_CLASSES, 5, replace=False) for _ in range(n_groups)])
        self.classes = np.stack(
            [np.concatenate([shared[c // n_sub], g.choice(N_CLASSES, TOP_K - 5, replace=False)]) for c in range(k)]
        ).astype(np.int16)
        self.class_scale = np.sort(g.exponential(1.0, (k, TOP_K)), axis=1)[:, ::-1].astype(np.float32)
        self.seed = seed

    def block(self, start: int, n: int) -> dict[str, np.ndarray]:
        rb = np.random.default_rng([self.seed, start])
        cluster = rb.choice(len(self.weights), size=n, p=self.weights)
        u = self.latent_means[cluster] + self.latent_sd * rb.normal(size=(n, self.lift.shape[0])).astype(np.float32)
        x = u @ self.lift + rb.normal(0, 0.1, (n, self.lift.shape[1])).astype(np.float32) - 0.3
        z = rb.normal(0, 1, (n, self.local.shape[1])).astype(np.float32)
        for c in np.unique(cluster):
            rows = np.flatnonzero(cluster == c)
            x[rows] += z[rows] @ self.local[c]
        np.maximum(x, 0, out=x)
        val = self.class_scale[cluster] * (1 + 0.2 * rb.normal(size=(n, TOP_K)).astype(np.float32))
        return {
            "activations": x.astype(np.float16),
            "attr_idx": self.classes[cluster],
            "attr_val": val.astype(np.float16),
            "label": self.labels_of_cluster[cluster].astype(np.int32),
        }


class Replicated:
    """The valid rows of a real store, then new rows between real neighbours (zeros stay zero).

    Plain copies with small noise make a degenerate benchmark: with 50x replication each row's
    50 nearest neighbours are its own copies, the kNN graph falls apart into cliques and UMAP lays
    them out as a featureless disc (measured: trustworthiness 0.73 vs 0.88 on the original rows).
    So row r >= n_real is ``(1 - t) a + t b`` with ``a = r mod n_real``, ``b`` one of a's 10
    nearest real rows (cosine) and ``t ~ U(0, 0.5)``, times ``1 + 2% N(0, 1)``; it keeps a's
    label and attributions. The first n_real rows are the real ones, unchanged.
    """

    def __init__(self, path: str, noise: float = 0.02, seed: int = 0, neighbours: int = 10):
        import faiss

        from store.atlas_store import AtlasStore

        src = AtlasStore.open(path, mode="r")
        valid = np.flatnonzero(src.valid_mask())
        if len(valid) <= neighbours:
            raise SystemExit(f"store {path} has {len(valid)} valid rows; too few to replicate")
        self.acts = np.asarray(src.activations()[valid].compute())
        idx, val = src.attribution_topk()
        self.idx = np.asarray(idx[valid].compute()).astype(np.int16)
        self.val = np.asarray(val[valid].compute())
        self.labels = src.row_labels()[valid]
        self.class_names = src.class_names
        self.label_names = list(src.attrs.get("label_names") or [])
        unit = self.acts.astype(np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        index = faiss.IndexFlatIP(unit.shape[1])
        index.add(unit)
        self.neighbours = index.search(unit, neighbours + 1)[1][:, 1:]
        self.noise, self.seed, self.path = noise, seed, path
        self.model = dict(src.attrs.get("model") or {})

    def block(self, start: int, n: int) -> dict[str, np.ndarray]:
        rows = np.arange(start, start + n)
        a = rows % len(self.acts)
        rb = np.random.default_rng([self.seed, start])
        b = self.neighbours[a, rb.integers(0, self.neighbours.shape[1], n)]
        t = np.where(rows < len(self.acts), 0.0, rb.uniform(0, 0.5, n)).astype(np.float32)[:, None]
        x = (1 - t) * self.acts[a].astype(np.float32) + t * self.acts[b].astype(np.float32)
        x *= np.where(t > 0, 1 + self.noise * rb.normal(size=x.shape), 1.0).astype(np.float32)
        return {
            "activations": np.maximum(x, 0).astype(self.acts.dtype),
            "attr_idx": self.idx[a],
            "attr_val": self.val[a],
            "label": self.labels[a].astype(np.int32),
        }


def make_store(path: Path, n: int, source: str | None, rows_per_chunk: int = 4096) -> dict[str, Any]:
    """Write an n-row store block by block (never the whole array in memory)."""
    from store import schema
    from store.atlas_store import AtlasStore, BlockData, StoreSpec

    data = Replicated(source) if source else Synthetic()
    channels = data.block(0, 1)["activations"].shape[1]
    names = data.class_names if source else [f"synthetic class {c}" for c in range(N_CLASSES)]
    k = data.block(0, 1)["attr_idx"].shape[1]
    # the real store's model record (name, weights hash, layer): these rows are that layer's activations
    model = data.model if source else {"name": "synthetic", "layer": "synthetic"}
    spec = StoreSpec(
        model=model,
        dataset={"fingerprint": f"bench-{source or 'synthetic'}-{n}"},
        sampling={},
        channels=channels,
        n_images=n,
        views_per_image=1,
        positions_per_image=1,
        rows_per_chunk=rows_per_chunk,
        dtype="float16",
        top_k=k,
        top_predictions=1,
    )
    if path.exists():
        import shutil

        shutil.rmtree(path)
    store = AtlasStore.create_or_open(
        path, spec, {"class_names": names, "label_names": getattr(data, "label_names", []), "skip_reasons": []}
    )
    labels = np.empty(n, np.int32)
    for block in range(store.n_blocks):
        rows = store.block_row_range(block)
        b = data.block(rows.start, len(rows))
        labels[rows.start : rows.stop] = b["label"]
        store.write_block(
            block,
            BlockData(
                status=np.full(len(rows), schema.STATUS_STORED, np.uint8),
                activations=b["activations"],
                rows={"attr_idx": b["attr_idx"], "attr_val": b["attr_val"], "yx": np.zeros((len(rows), 2), np.int16)},
            ),
        )
    store.write_images([f"bench/{i}" for i in range(n)], labels, np.full(n, -1, np.int32))
    return {
        "source": f"{len(data.acts):,} real rows of {source}, extended x{n / len(data.acts):.1f} by "
        "interpolating toward a random one of each row's 10 nearest real rows (t ~ U(0, 0.5), "
        "2% multiplicative noise)"
        if source
        else "synthetic: ReLU of a 10-d latent mixture (20 groups x 10 sub-clusters) lifted to 512-d + rank-6 local spread + noise",
        "channels": channels,
        "model": {k: model[k] for k in ("name", "weights", "layer") if k in model},
    }


# --------------------------------------------------------------------------------- children
def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def _trust(store_path: Path, eval_rows: np.ndarray, rows: np.ndarray, embedding: np.ndarray) -> float:
    from stages.reduce.layout_math import layout_trustworthiness
    from store.atlas_store import AtlasStore

    store = AtlasStore.open(store_path, mode="r")
    x = np.asarray(store.activations()[eval_rows].compute(), dtype=np.float32)
    pos = np.searchsorted(rows, eval_rows)
    return layout_trustworthiness(x, embedding[pos], n_neighbors=TRUST_NEIGHBORS, metric="cosine")


def child_stage(args: dict[str, Any]) -> dict[str, Any]:
    """reduce (+ grid) as configured in params.yaml plus ``overrides``."""
    from stages.context import StageContext
    from stages.grid import stage as grid
    from stages.reduce import stage as reduce
    from store import derived
    from store.atlas_store import AtlasStore

    t0 = time.perf_counter()
    config = load_config(args["params"], args["overrides"])
    store = AtlasStore.open(args["store"])
    r = reduce.run(config.reduce, StageContext(store))
    t_reduce = time.perf_counter() - t0
    out: dict[str, Any] = {
        "reduce_s": t_reduce,
        "reduce_parts_s": {k: round(v, 1) for k, v in r.seconds.items()},
        "n_fit": r.n_fit,
        "n_placed": r.n_placed,
    }
    if args.get("grid"):
        t = time.perf_counter()
        g = grid.run(config.grid, StageContext(store))
        out.update(
            grid_s=time.perf_counter() - t, grid_parts_s={k: round(v, 1) for k, v in g.seconds.items()}, cells=g.cells
        )
    out["stage_s"] = time.perf_counter() - t0
    out["peak_rss_gb"] = _peak_rss_gb()
    layout = derived.read_layout(store)
    out["trustworthiness"] = _trust(Path(args["store"]), np.load(args["eval_rows"]), layout.rows, layout.embedding)
    return out


def child_baseline(args: dict[str, Any]) -> dict[str, Any]:
    """The library on its own, all rows: umap-learn with its defaults but the production n_neighbors /
    min_dist / metric (``method: umap``), or sklearn's PCA to 2-D (``method: pca``)."""
    from store.atlas_store import AtlasStore

    cfg = load_config(args["params"], args["overrides"]).reduce
    t0 = time.perf_counter()
    store = AtlasStore.open(args["store"], mode="r")
    rows = np.flatnonzero(store.valid_mask())
    x = np.asarray(store.activations()[rows].compute(), dtype=np.float32)
    if cfg.method == "umap":
        import umap

        emb = umap.UMAP(n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, metric=cfg.metric).fit_transform(x)
    elif cfg.method == "pca":
        from sklearn.decomposition import PCA

        emb = PCA(n_components=2).fit_transform(x)
    else:
        raise SystemExit(f"no library baseline for reduce.method {cfg.method!r} (umap, pca)")
    out = {"stage_s": time.perf_counter() - t0, "peak_rss_gb": _peak_rss_gb(), "n_fit": len(rows), "n_placed": 0}
    del x
    out["trustworthiness"] = _trust(Path(args["store"]), np.load(args["eval_rows"]), rows, emb)
    return out


def child_plot(args: dict[str, Any]) -> dict[str, Any]:
    from stages.grid.layout_plot import plot_layout
    from store.atlas_store import AtlasStore

    plot_layout(AtlasStore.open(args["store"], mode="r"), args["level"], args["out"], "label")
    return {"png": args["out"]}


def child_make_store(args: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    info = make_store(Path(args["store"]), args["rows"], args["source"])
    return {**info, "seconds": time.perf_counter() - t0}


CHILDREN = {"stage": child_stage, "baseline": child_baseline, "plot": child_plot, "make_store": child_make_store}


def run_child(name: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; its wall time includes imports and numba JIT."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        log.error("%s failed:\n%s", name, proc.stderr[-4000:])
        return {
            "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}",
            "process_s": wall,
        }
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


# --------------------------------------------------------------------------------- main
def _table(rows: list[dict[str, Any]]) -> str:
    head = f"{'configuration':44s} {'rows':>9s} {'fit':>8s} {'process s':>10s} {'stage s':>8s} {'peak GB':>8s} {'trust@10':>9s}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['name']:44s} {r['rows']:>9,d}  FAILED: {r['error']}")
            continue
        lines.append(
            f"{r['name']:44s} {r['rows']:>9,d} {r['n_fit']:>8,d} {r['process_s']:>10.1f} "
            f"{r['stage_s']:>8.1f} {r['peak_rss_gb']:>8.2f} {r['trustworthiness']:>9.4f}"
        )
    return "\n".join(lines)


SMOKE = {
    "rows": 1000,
    "compare_rows": 1000,
    "method": "pca",
    "trust_rows": 300,
    "overrides": ["grid.levels=[4,8]", "reduce.n_neighbors=10"],
}


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", default=None, help="real store to extend (default: data/store.zarr if present)")
    parser.add_argument("--synthetic", action="store_true", help="ignore any real store; use the synthetic stand-in")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--compare-rows", type=int, default=200_000)
    parser.add_argument("--workdir", default="/tmp/atlas_bench_reduce")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "reduce.json"))
    parser.add_argument("--skip-compare", action="store_true", help="only the 1M run")
    parser.add_argument("--params", default=str(REPO / "params.yaml"), help="parameters file of the stages")
    parser.add_argument(
        "--method",
        default=None,
        choices=["umap", "pca"],
        help="reduce.method of every run (default: the parameters file's)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="extra parameter override for every stage run (repeatable)",
    )
    parser.add_argument("--trust-rows", type=int, default=TRUST_ROWS, help="trustworthiness subsample")
    parser.add_argument("--plot-level", type=int, default=None, help="level of the layout plot (default: the 2nd)")
    parser.add_argument("--smoke", action="store_true", help=f"tiny run of every process: {SMOKE}")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update({**SMOKE, "overrides": SMOKE["overrides"] + args.overrides})
    if args.method:
        args.overrides = [f"reduce.method={args.method}", *args.overrides]
    return args


def _build_stores(
    sizes: list[int], source: str | None, work: Path, results: dict[str, Any], trust_rows: int
) -> dict[int, Path]:
    """One store per size (in a child process) and a seeded trustworthiness subsample for each."""
    stores: dict[int, Path] = {}
    for n in dict.fromkeys(sizes):
        stores[n] = work / f"store_{n}.zarr"
        made = run_child("make_store", {"store": str(stores[n]), "rows": n, "source": source}, timeout=1800)
        if "error" in made:
            raise SystemExit(f"could not build the {n}-row store: {made['error']}")
        results["data"] = {"source": made["source"], "channels": made["channels"], "model": made["model"]}
        log.info("built %d-row store in %.0f s (%s)", n, made["seconds"], made["source"])
        np.save(work / f"eval_{n}.npy", np.sort(np.random.default_rng(0).choice(n, min(trust_rows, n), replace=False)))
    return stores


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if args.child:
        print(json.dumps(CHILDREN[args.child](json.loads(args.child_args)), default=float))
        return
    default_store = REPO / "data" / "store.zarr"
    source = (
        None
        if args.synthetic
        else (args.store or (str(default_store) if (default_store / "zarr.json").exists() else None))
    )
    work, out = Path(args.workdir), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    config = load_config(args.params, args.overrides)
    results: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": {**machine_record(), "load_avg_start": os.getloadavg()},
        "trustworthiness": {
            "rows": args.trust_rows,
            "n_neighbors": TRUST_NEIGHBORS,
            "metric": "cosine",
            "space": "raw activations vs the 2-D embedding before normalisation",
        },
        "config": config.reduce.model_dump(mode="json"),
        "grid_levels": config.grid.levels,
        "runs": [],
    }
    stores = _build_stores(
        [args.rows] + ([] if args.skip_compare else [args.compare_rows]), source, work, results, args.trust_rows
    )
    base = {"params": args.params}

    def measure(name: str, kind: str, n: int, overrides: list[str], **extra: Any) -> None:
        log.info("running %s", name)
        r = run_child(
            kind,
            {
                "store": str(stores[n]),
                "eval_rows": str(work / f"eval_{n}.npy"),
                **base,
                "overrides": args.overrides + overrides,
                **extra,
            },
            timeout=2400,
        )
        results["runs"].append({"name": name, "rows": n, **r})
        log.info("%s: %s", name, {k: v for k, v in r.items() if not isinstance(v, dict)})
        _write(results, out)

    measure(f"reduce+grid, defaults ({args.rows:,})", "stage", args.rows, [], grid=True)
    plot_level = args.plot_level or config.grid.levels[min(1, len(config.grid.levels) - 1)]
    results["plot"] = run_child(
        "plot",
        {"store": str(stores[args.rows]), "level": plot_level, "out": str(out.with_name(out.stem + "_layout.png"))},
        timeout=600,
    )
    if not args.skip_compare:
        m = args.compare_rows
        library = {"umap": "umap-learn defaults", "pca": "sklearn PCA"}.get(config.reduce.method, config.reduce.method)
        measure(f"{library}, all rows", "baseline", m, [])
        measure("reduce, defaults", "stage", m, [])
        measure(
            f"reduce, fit on {m // 5:,} + place (1:4 as at 1M)", "stage", m, [f"reduce.fit_samples={max(100, m // 5)}"]
        )
        measure("reduce, deterministic: false", "stage", m, ["reduce.deterministic=false"])
    results["machine"]["load_avg_end"] = os.getloadavg()
    _write(results, out)
    print(f"data: {results['data']['source']}")
    print(_table(results["runs"]))
    failed = [r["name"] for r in results["runs"] if "error" in r] + (["plot"] if "error" in results["plot"] else [])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


def _write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2, default=float))
    tmp.replace(out)


if __name__ == "__main__":
    main()
