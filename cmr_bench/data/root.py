"""Where the data lives: --data-root flag > $CMR_BENCH_DATA > the platform's user data dir."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "CMR_BENCH_DATA"


def data_root(flag: str | os.PathLike | None = None) -> Path:
    if flag:
        return Path(flag).expanduser().resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("cmr-bench")) / "data"


def dataset_dir(root: Path, name: str) -> Path:
    return root / name
