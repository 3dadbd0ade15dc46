"""``stn-export CHECKPOINT --out DIR``: write a verified Triton model-repository entry (docs/export.md)."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import warnings
from collections.abc import Sequence

from export.onnx_export import ExportError, export_checkpoint
from export.triton import MAX_BATCH_SIZE, QUEUE_DELAY_US
from export.verify import N_REAL, Tolerances


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stn-export",
        description="Export a stn checkpoint to ONNX (opset 18, native GridSample), verify it against "
                    "PyTorch and write DIR/<name>/{config.pbtxt,1/model.onnx,card.json,card.md} "
                    "(+ DIR/<name>_fp16/).")
    p.add_argument("checkpoint", help="a stn-checkpoint/1 file, e.g. runs/rts_affine/best.ckpt")
    p.add_argument("--out", required=True, help="model repository folder (Triton layout)")
    p.add_argument("--name", help="model name (default: <dataset>_<transform>, e.g. mnist_rts_affine)")
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="skip the <name>_fp16 variant")
    p.add_argument("--data-dir", help="MNIST folder (default: $STN_DATA_DIR or ../shared/data/mnist)")
    p.add_argument("--no-data", dest="use_data", action="store_false",
                   help="skip the checks that need MNIST (real-image parity, test error)")
    p.add_argument("--skip-test-error", action="store_true",
                   help="compare the test error on --test-limit images only, not the full test set")
    p.add_argument("--test-limit", type=int, default=1000, help="images used with --skip-test-error")
    p.add_argument("--real-images", type=int, default=N_REAL, help="real test images in the parity check")
    p.add_argument("--max-batch-size", type=int, default=MAX_BATCH_SIZE, help="Triton max_batch_size")
    p.add_argument("--queue-delay-us", type=int, default=QUEUE_DELAY_US,
                   help="Triton dynamic_batching max_queue_delay_microseconds")
    p.add_argument("--tol-logits", type=float, default=Tolerances.logits)
    p.add_argument("--tol-params", type=float, default=Tolerances.params)
    p.add_argument("--tol-rectified", type=float, default=Tolerances.rectified)
    p.add_argument("--polarity-tie", type=float, default=Tolerances.polarity_tie,
                   help="a flipping skewness this near zero is a tie, its sample left out of the parity check")
    p.add_argument("--zoom-fill", type=float,
                   help="a number model: the service reads it a second time from a window on the digits, their "
                        "extent this share of the window's side (stn.zoom_fill; docs/service.md)")
    p.add_argument("--zoom-alone-below", type=float, default=0.5,
                   help="with --zoom-fill: the second reading alone answers where its window is under this "
                        "share of the photo's longer side (stn.zoom_alone_below)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime CPU threads")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("torch.onnx", "onnxscript", "onnx_ir"):
        # The exporter's own progress and its notes about optional torchvision ops.
        logging.getLogger(noisy).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="copyreg")
    import torch

    torch.set_num_threads(args.threads)
    command = "stn-export " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        result = export_checkpoint(
            args.checkpoint, args.out, name=args.name, fp16=args.fp16, use_data=args.use_data,
            data_dir=args.data_dir, test_limit=args.test_limit if args.skip_test_error else None,
            n_real=args.real_images,
            tol=Tolerances(args.tol_logits, args.tol_params, args.tol_rectified, args.polarity_tie),
            max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us, threads=args.threads,
            command=command, zoom=None if args.zoom_fill is None else (args.zoom_fill, args.zoom_alone_below))
    except (ExportError, FileNotFoundError, ValueError) as exc:
        print(f"stn-export: error: {exc}", file=sys.stderr)
        return 1
    exp = result.export
    summary = {
        "model": result.name, "entry": str(result.entry),
        "fp16_entry": str(result.fp16_entry) if result.fp16_entry else None,
        "opset": exp["opset"], "test_error": result.metadata["stn.test_error"],
        "max_abs": exp["parity"]["max_abs"], "argmax_agreement": exp["parity"]["argmax_agreement"],
        "test": exp["parity"]["test"],
        "fp16": {k: exp["fp16"][k] for k in ("max_abs", "argmax_agreement", "test_error")} if "fp16" in exp
        else None,
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
