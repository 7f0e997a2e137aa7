"""``python -m bench.models --out DIR [--checkpoints 0,10,100] [overrides]`` — train the embedded CNN with checkpoints
along training (bench/models/embedded.py), for the network-quality experiment (TNNLS Fig. 7).
``python -m bench.models --ship [overrides]`` — retrain the embedded CNN and write it as the package's shipped
weights (bench/models/shipped/), printing the digest to keep in ``bench.models.embedded.SHIPPED``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import plugins
from ..errors import BenchError, exit_with_cli_error
from ..run.config import compose
from . import check_params
from .embedded import CHECKPOINTS_CSV, SHIPPED, ship_embedded_cnn, train_embedded_cnn


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.models --out DIR [--checkpoints 0,10,100] [overrides]`` — train the embedded CNN
    (settings from ``model.params``, default conf/model/embedded_cnn.yaml) on ``dataset`` with checkpoints."""
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=main.__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="folder for ckpt-<iteration>.pt, checkpoints.csv, training.json")
    what.add_argument("--ship", action="store_true",
                      help="retrain and write the shipped weights (bench/models/shipped/) for these settings")
    parser.add_argument("--checkpoints", default=None,
                        help="comma-separated iterations (0 = initialisation); default: 0 and ~12 log-spaced")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. dataset=cifar10 dataset.params.root=…")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:

        conf = compose(args.overrides)  # only the dataset and the model's training settings matter here
        model = conf["model"]
        kind = model.get("kind")
        vit = args.ship and kind == "embedded_vit"
        if kind != "embedded_cnn" and not vit:
            raise BenchError(f"python -m bench.models trains the embedded CNN (--ship: or the embedded ViT); model "
                             f"'{model.get('name')}' is of kind '{kind}'")
        params = dict(model.get("params") or {})
        check_params(kind, params)
        dataset = plugins.build("datasets", conf["dataset"], "dataset")
        if args.ship:
            from . import embedded_vit

            ship, registry, where = ((embedded_vit.ship_embedded_vit, embedded_vit.SHIPPED, "embedded_vit.py") if vit
                                     else (ship_embedded_cnn, SHIPPED, "embedded.py"))
            path, digest = ship(dataset, **params)
            key = path.stem.split("-", 1)[1]
            same = registry.get(key) == digest
            print(f"wrote {path} (SHA-256 {digest}); "
                  + ("the same as the shipped digest" if same else
                     f"set SHIPPED[{key!r}] = {digest!r} in bench/models/{where}"))
            return 0
        checkpoints = None if args.checkpoints is None else [int(c) for c in args.checkpoints.split(",") if c]
        rows = train_embedded_cnn(dataset, args.out, checkpoints, dataset_name=conf["dataset"]["name"], **params)
    except Exception as exc:  # user errors and Hydra's config errors: one line
        return exit_with_cli_error(exc)
    for r in rows:
        print(f"iteration {r['iteration']:>6}  epoch {r['epoch']:<7g} test accuracy {r['test_accuracy']:.4f}  "
              f"{r['file']}")
    print(f"checkpoints: {Path(args.out) / CHECKPOINTS_CSV}; evaluate one with model=checkpoint "
          f"model.params.dir={args.out} model.params.iteration=N")
    return 0




if __name__ == "__main__":
    sys.exit(main())
