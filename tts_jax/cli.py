"""The `tts-jax` command line. Each subcommand lives in its own module; this only dispatches.

Errors a user can cause are printed as one clear line (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from tts_jax.convert.tensor_files import CheckpointError


def _inspect(args: argparse.Namespace) -> int:
  from tts_jax.convert.voxcpm import describe_voxcpm, load_voxcpm

  pretrained = load_voxcpm(args.model, lora_path=args.lora, lora_alpha=args.lora_alpha)
  print(describe_voxcpm(pretrained))
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="tts-jax", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  inspect = sub.add_parser("inspect", help="import an official VoxCPM folder, verify every tensor, print a summary")
  inspect.add_argument("--model", required=True, help="VoxCPM model folder (config.json, weights, tokenizer)")
  inspect.add_argument("--lora", default=None, help="LoRA weights file or folder to merge")
  inspect.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha, if no lora_config.json gives it")
  inspect.set_defaults(run=_inspect)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    return args.run(args)
  except (CheckpointError, FileNotFoundError, ValueError) as e:
    print(f"tts-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
