"""Print the shell command of one README section, so CI runs exactly what a new user runs.

usage: python scripts/readme_command.py "Set up and run"     # the install + main job command
       python scripts/readme_command.py "Tests"              # the test command

The command is the first ```bash block under the ``## <section>`` heading; a line ending in a
backslash continues on the next. Exits 2 with one line when the section or block is missing.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def section_command(text: str, section: str) -> str:
    """The first bash block under ``## section`` (up to the next ``## ``), as one string."""
    match = re.search(rf"^## {re.escape(section)}\b.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if match is None:
        raise LookupError(f"README has no '## {section}' section")
    block = re.search(r"^```bash\n(.*?)^```", match.group(1), re.M | re.S)
    if block is None:
        raise LookupError(f"README's '## {section}' section has no ```bash block")
    lines = [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        print(section_command(README.read_text(), argv[0]))
    except LookupError as exc:
        print(f"readme_command: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
