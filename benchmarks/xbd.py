"""xBD subset real-data benchmark: damaged buildings (minor, major, destroyed) as change, 1.4-2.1 m.

Data: ``../shared/data/xbd_subset`` (31 pairs of 1024 x 1024 RGB from three disasters, A|B|label layout; 8 pairs
without damage); the run skips with a reason where it is absent. Nothing is copied into the repository.

Split (fixed, by image within each disaster, so that every event is seen in training; xBD images of one
disaster can neighbour each other, so the held-out figures are optimistic next to a split by event): held out
santa-rosa-wildfire 00000038 (17 % damaged), 00000159 (3.8 %), 00000285 (1.7 %), 00000071 (none);
hurricane-florence 00000364 (1.5 %), 00000377 (0.4 %); guatemala-volcano 00000003 (0.4 %). The other 24 pairs
train, tiled to 256 px without overlap; with the ``threshold`` lever santa-rosa-wildfire 00000217 and
hurricane-florence 00000480 are taken out of training as the validation split.

Budget and scoring as ``oscd.py`` (20 minutes on 2 cores; whole held-out images through a 512-px sliding window,
every pixel once). There is no published anchor for this subset; xBD's own baseline scores damage classes on the
full test set, which this is not.

    python benchmarks/xbd.py run --model fc_ef --minutes 20
    python benchmarks/xbd.py table
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realdata import Benchmark, main  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "xbd_subset"
HELDOUT = ["santa-rosa-wildfire_00000038", "santa-rosa-wildfire_00000159", "santa-rosa-wildfire_00000285",
           "santa-rosa-wildfire_00000071", "hurricane-florence_00000364", "hurricane-florence_00000377",
           "guatemala-volcano_00000003"]
VAL = ["santa-rosa-wildfire_00000217", "hurricane-florence_00000480"]


def _train_stems() -> list[str]:
    if not (DATA / "A").is_dir():
        return []
    return sorted(p.stem for p in (DATA / "A").iterdir() if p.stem not in HELDOUT)


BENCH = Benchmark(
    name="xbd", data=DATA, train=_train_stems(), heldout=HELDOUT, val=VAL, tile=256,
    split_note="Trained on the other 24 pairs (256-px tiles); by image within each disaster. 2 CPU threads.",
)

if __name__ == "__main__":
    sys.exit(main(BENCH))
