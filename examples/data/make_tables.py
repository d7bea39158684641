"""Write the example tables from data scikit-learn ships (no download); run from anywhere.

* ``wine.csv`` and ``wine_test.csv``: the 178 wines of scikit-learn's ``load_wine`` (three
  cultivars of Piedmont; classes 0, 1, 2 are, in the original study, Barolo, Grignolino and
  Barbera), with an ``id`` column, the cultivar as a name, separated by ';' as spreadsheets in
  much of Europe write them.  30 wines (10 of each cultivar, chosen with seed 0) are the test
  table; the other 148 the training table.
* ``linnerud.csv``: the 20 athletes of ``load_linnerud``, three exercises (Chins, Situps,
  Jumps) and three body measurements (Weight, Waist, Pulse), comma-separated.

The files are committed; this script documents where they came from and rewrites them
byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_linnerud, load_wine

HERE = Path(__file__).resolve().parent
CULTIVARS = ("barolo", "grignolino", "barbera")


def _number(value: float) -> str:
    return f"{value:g}"


def write_wine() -> None:
    wine = load_wine()
    names = [name.replace("od280/od315_of_diluted_wines", "od280_od315")
             for name in wine.feature_names]
    rng = np.random.default_rng(0)
    test = np.sort(np.concatenate([rng.choice(np.flatnonzero(wine.target == k), 10,
                                              replace=False) for k in range(3)]))
    for path, rows in (("wine.csv", np.setdiff1d(np.arange(len(wine.target)), test)),
                       ("wine_test.csv", test)):
        lines = [";".join(["id", *names, "cultivar"])]
        for i in rows:
            lines.append(";".join([f"w{i + 1:03d}", *map(_number, wine.data[i]),
                                   CULTIVARS[wine.target[i]]]))
        (HERE / path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_linnerud() -> None:
    data = load_linnerud()
    lines = [",".join([*data.feature_names, *data.target_names])]
    for x, y in zip(data.data, data.target):
        lines.append(",".join(map(_number, (*x, *y))))
    (HERE / "linnerud.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    write_wine()
    write_linnerud()
