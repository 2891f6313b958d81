"""One "host" of the many-hosts test, run as its own process: ROUNDS backups of SRC into REPO
through the command line, the files changed between rounds (content from host_files).

s3_host_process.py REPO HOST SRC ROUNDS
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MiB = 1 << 20


def host_files(host: str, round_no: int) -> dict[str, bytes]:
    """What HOST's source holds in round ROUND: data every host shares, data of this host, data of
    this round only (garbage once its snapshot is forgotten), and small files."""
    per_host = random.Random(host)
    per_round = random.Random(f"{host}/{round_no}")
    return {
        "shared.bin": random.Random("shared").randbytes(2 * MiB),
        "host.bin": per_host.randbytes(MiB),
        "round.bin": per_round.randbytes(MiB + 300_000),
        "etc/small.conf": f"host {host} round {round_no}\n".encode(),
        "etc/note.txt": per_round.randbytes(5_000),
    }


def lay_down(src: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def main(repo: str, host: str, src: str, rounds: int) -> None:
    for round_no in range(rounds):
        lay_down(Path(src), host_files(host, round_no))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "shadowvault.cli.launch",
                "backup",
                "--repo",
                repo,
                "--provider",
                "none",
                "--host",
                host,
                "--tag",
                f"round={round_no}",
                src,
            ],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        if done.returncode != 0:
            sys.exit(f"{host} round {round_no}: exit {done.returncode}: {done.stderr.strip()}")
        print(f"{host} round {round_no} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
