"""Train with ``python -m fastlift.train``'s flags, but with the loader's permutation (and the
bone cue's partner draws) taken from another seed: separates what the data order does from what
the networks' initialisation and the rotations (``--seed``) do.

    python bench/swap_data_order.py LOADER_SEED --seed 5 --out runs/s5-order0 [train flags...]
"""
from __future__ import annotations

import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    from fastlift.train import main as train_main
    from fastlift.training import engine
    loader_seed = int(argv[0])
    make_loader = engine.Trainer._make_loader

    def with_seed(self):
        loader = make_loader(self)
        loader.seed = loader_seed  # epochs and partners are drawn from it lazily
        return loader
    engine.Trainer._make_loader = with_seed
    return train_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
