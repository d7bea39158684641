"""The ``derive`` command: parse the arguments, run the pipeline's stages, report.

Exit status: 0 success, 1 a check failed, 2 bad usage or a bad spec.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="derive",
        description="Derive backpropagation for a declared network with SymPy, prove it, "
                    "and generate a NumPy module (forward, backward, trainer).",
        epilog="Exit status: 0 success, 1 a check failed, 2 bad usage or spec.",
    )
    parser.add_argument("--spec", nargs="+", required=True, metavar="NET.yaml",
                        help="network spec(s) in YAML (see README.md for the format)")
    parser.add_argument("--out", default="generated", metavar="DIR",
                        help="folder for the generated <name>.py (default: generated/)")
    parser.add_argument("--check", action="store_true",
                        help="prove the derivation against SymPy's diff of the expanded loss "
                             "and check the written module by central finite differences")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a file at the target that this tool did not generate")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only problems")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import SpecError

    status = EXIT_OK
    for path in args.spec:
        try:
            status = max(status, _run(path, args))
        except SpecError as err:
            print(f"derive: {err}", file=sys.stderr)
            status = max(status, EXIT_USAGE)
        except KeyboardInterrupt:
            print("derive: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:  # output piped into a reader that closed early (| head)
            sys.stderr.close()
            return status
    return status


def _say(args, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def _run(path: str, args) -> int:
    """Every stage for one spec; returns its exit status."""
    from codegen.render import WriteRefused, write_module

    from .derivation import derive
    from .spec import load_spec

    started = time.perf_counter()
    spec = load_spec(path)
    derivation = derive(spec)
    try:
        target = write_module(derivation, args.out, force=args.force)
    except WriteRefused as err:
        print(f"derive: {path}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as err:
        print(f"derive: {path}: cannot write to {args.out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_USAGE
    sizes = "-".join(map(str, spec.layer_sizes))
    _say(args, f"{path}: {spec.name} ({sizes}, {spec.loss}) -> {target} "
               f"in {time.perf_counter() - started:.2f} s")
    if not args.check:
        return EXIT_OK
    return _check(derivation, target, args)


def _check(derivation, target: Path, args) -> int:
    from codegen.fdcheck import finite_difference_check, import_module_from

    from .proof import prove_spec

    proof = prove_spec(derivation.spec)
    print(proof.summary(), file=sys.stdout if proof.ok else sys.stderr, flush=True)
    fd = finite_difference_check(import_module_from(target))
    print(fd.summary(), file=sys.stdout if fd.ok else sys.stderr, flush=True)
    return EXIT_OK if proof.ok and fd.ok else EXIT_CHECK_FAILED
