"""The ``lengthgen`` console script: one subcommand per stage.

Every module in ``lengthgen.stages`` is a stage. It defines ``NAME`` (the subcommand),
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``. Stages are thin: they
parse a config, call the library and write results.

Bad input of any stage (config, model, checkpoint, data, an impossible size) is a
:class:`lengthgen.errors.UserError`: printed here as one line ``lengthgen <stage>: <message>`` on
stderr, exit status 2, no traceback. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, stages


def _stage_modules():
    for info in sorted(pkgutil.iter_modules(stages.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{stages.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            yield mod


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lengthgen", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lengthgen {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for mod in _stage_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=(mod.__doc__ or mod.HELP).strip())
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from .errors import RunStopped, UserError, one_line

    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"lengthgen {args.stage}: {one_line(str(e))}", file=sys.stderr)
        return 2
    except RunStopped as e:  # SIGTERM / SIGUSR1 while training: checkpoint written, rerun resumes (train.stop)
        print(f"lengthgen {args.stage}: {e}", file=sys.stderr)
        return e.exit_code
    except FloatingPointError as e:  # a NaN/inf loss or logits (the checks' messages name the fix): valid input, failed run
        print(f"lengthgen {args.stage}: {one_line(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
