"""python -m revati.models_zoo NAME [DEST]: build a weightless model directory and print its path."""

from __future__ import annotations

import sys
from pathlib import Path

from revati.errors import RevatiError
from revati.models_zoo import model_dir, names, write_model_dir


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m revati.models_zoo NAME [DEST]\nnames: {', '.join(names())}")
        return 0 if argv else 2
    try:
        path = write_model_dir(argv[0], Path(argv[1])) if len(argv) > 1 else model_dir(argv[0])
    except RevatiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
