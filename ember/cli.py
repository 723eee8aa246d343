"""The `ember` command: one entry point, one subcommand per module (L9).

`ember launch -n 2 train.py` runs a script on N MPI processes (ember/distributed/launch.py);
`ember serve PATH` runs the model server (ember/serve/command.py).
Each subcommand's module loads only when it is asked for, so `ember --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module with a main(argv) -> int, one-line help)
COMMANDS = {
    "launch": ("ember.distributed.launch", "run a training script on N processes over MPI"),
    "serve": ("ember.serve.command", "serve models over KServe V2 and TF Serving REST"),
}


def _usage() -> str:
    lines = ["usage: ember COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`ember COMMAND --help` describes a command."]
    return "\n".join(lines)


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"ember: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
