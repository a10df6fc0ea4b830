"""The `mnistkit` command (and `python -m mnistkit`): signal handling first, then the CLI.

The handlers go in before click and the commands are imported, so a Ctrl-C at any moment
after the interpreter starts ends in exit 130 (143 for SIGTERM) and one line.
"""

from __future__ import annotations

import sys


def main() -> None:
    from mnistkit import interrupts
    from mnistkit.errors import Interrupted

    interrupts.install()
    try:
        from mnistkit.cli import cli

        cli(prog_name="mnistkit")
    except Interrupted as stop:
        print(stop.line(), file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    finally:
        interrupts.uninstall()


if __name__ == "__main__":
    main()
