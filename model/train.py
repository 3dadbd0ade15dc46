"""``stn-train``: train an ST-CNN (or the baseline CNN) on distorted MNIST and write its checkpoint and card.

    stn-train --config model/configs/rts_affine.json
    stn-train --model stcnn --transform affine --distortion rts --epochs 25 --out runs/rts_affine
    stn-train --resume runs/rts_affine/last.ckpt
    stn-train download --data-dir ~/mnist

Flags override the config file. Training distortions are drawn fresh each epoch (seeded by seed and epoch);
model selection uses the validation split of MNIST-train; the fixed MNIST-test set is scored once, at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from model import data as mnist
from model import distort
from model.card import refresh_baseline, write_card
from model.checkpoint import read_checkpoint, save_checkpoint, write_checkpoint
from model.nets import ModelConfig, build_model, count_params, full_config
from model.transforms import FAMILIES

log = logging.getLogger("stn-train")

TRAIN_DEFAULTS: dict[str, Any] = {
    "model": "stcnn",
    "transform": "affine",
    "distortion": "rts",
    "epochs": 25,
    "batch_size": 128,
    "optimizer": "adamw",
    "lr": 2e-3,
    "loc_lr_scale": 0.3,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "schedule": "onecycle",
    "label_smoothing": 0.0,
    "seed": 0,
    "device": "cpu",
    "threads": 0,
    "out": None,
    "data_dir": None,
    "limit_train": 0,
    "output_size": None,
    "baseline_run": None,
    "skip_test": False,
    "stop_after": 0,
    "eval_batch_size": 500,
    "channels_last": False,
    "pre_elastic": 0.0,
}


def parse_args(argv: list[str] | None = None) -> tuple[dict[str, Any], argparse.Namespace]:
    p = argparse.ArgumentParser(prog="stn-train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="JSON file of any of the options below")
    p.add_argument("--model", choices=["stcnn", "cnn"])
    p.add_argument("--transform", choices=list(FAMILIES))
    p.add_argument("--distortion", choices=list(distort.NAMES))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--lr", type=float)
    p.add_argument("--loc-lr-scale", type=float, help="learning-rate factor for the localisation net")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "none"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="cpu (default), cuda, or auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, help="run folder (default runs/<distortion>_<transform|cnn>)")
    p.add_argument("--data-dir", type=Path, help="MNIST folder (default $STN_DATA_DIR or ../shared/data/mnist)")
    p.add_argument("--limit-train", type=int, help="train on the first N training digits only (0: all)")
    p.add_argument("--output-size", type=int, nargs=2, metavar=("H", "W"), help="rectified size")
    p.add_argument("--baseline-run", type=Path, help="a finished baseline run to report beside this one")
    p.add_argument("--skip-test", action="store_true", default=None, help="do not score the test set")
    p.add_argument("--stop-after", type=int, help="stop this invocation after N epochs (resume later)")
    p.add_argument("--resume", type=Path, help="continue from a last.ckpt")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="train on channels-last tensors (same model, about 1.7x faster steps on a CPU; other "
                        "kernels, so not bitwise the weights of a run without it)")
    p.add_argument("--pre-elastic", type=float, metavar="P",
                   help="augmentation: a share P of the training digits first get the e distortion (Simard's "
                        "elastic field) before the run's own distortion (default 0)")
    args = p.parse_args(argv)
    return merge_options(p, args, TRAIN_DEFAULTS), args


def parse_options(prog: str, doc: str | None, defaults: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """A trainer's options: ``--config FILE`` and one flag per key of ``defaults`` (a list takes as many
    values as its default has), merged by ``merge_options``."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path)
    for k, v in defaults.items():
        if isinstance(v, list):
            p.add_argument("--" + k.replace("_", "-"), type=type(v[0]), nargs=len(v))
        else:
            p.add_argument("--" + k.replace("_", "-"), type=type(v))
    return merge_options(p, p.parse_args(argv), defaults)


def run_trainer(prog: str, doc: str | None, defaults: dict[str, Any],
                train: Callable[[dict[str, Any], str], dict[str, Any]], summary_keys: tuple[str, ...],
                argv: list[str] | None) -> None:
    """A trainer's command line: logging, its options (``parse_options``), ``train(opts, command)`` with the
    command as typed, then the summary's ``summary_keys`` printed as one JSON line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse_options(prog, doc, defaults, argv)
    summary = train(opts, prog + " " + shlex.join(argv))
    print(json.dumps({k: summary[k] for k in summary_keys}))  # noqa: T201 (CLI)


def merge_options(p: argparse.ArgumentParser, args: argparse.Namespace, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults``, then the ``--config`` JSON file (an unknown key is an error), then the flags given."""
    opts = dict(defaults)
    if args.config:
        file_opts = json.loads(args.config.read_text())
        unknown = set(file_opts) - set(opts)
        if unknown:
            p.error(f"{args.config}: unknown options {sorted(unknown)}")
        opts.update(file_opts)
    for key in defaults:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = str(value) if isinstance(value, Path) else value
    return opts


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def model_config(opts: dict[str, Any]) -> ModelConfig:
    size = distort.CANVAS[opts["distortion"]]
    cfg: dict[str, Any] = {"arch": opts["model"], "transform": opts["transform"], "input_size": [size, size],
                           "mean": mnist.MEAN, "std": mnist.STD}
    cfg["output_size"] = list(opts["output_size"]) if opts["output_size"] else [28, 28]
    return full_config(cfg)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, device: torch.device, batch: int) -> tuple[float, Tensor]:
    """Error rate and predictions on pixel-unit inputs ``x``."""
    model.eval()
    preds = []
    for i in range(0, x.shape[0], batch):
        xb = ((x[i:i + batch] - mnist.MEAN) / mnist.STD).to(device)
        preds.append(model(xb)[0].argmax(1).cpu())
    pred = torch.cat(preds)
    return float((pred != y).float().mean()), pred


def make_optimizer(model: nn.Module, opts: dict[str, Any]) -> torch.optim.Optimizer:
    loc = [p for n, p in model.named_parameters() if n.startswith("stn.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("stn.")]
    groups = [{"params": rest, "lr": opts["lr"]}]
    if loc:
        groups.append({"params": loc, "lr": opts["lr"] * opts["loc_lr_scale"]})
    if opts["optimizer"] == "sgd":
        return torch.optim.SGD(groups, momentum=opts["momentum"], weight_decay=opts["weight_decay"], nesterov=True)
    return torch.optim.AdamW(groups, weight_decay=opts["weight_decay"])


def make_schedule(opt: torch.optim.Optimizer, opts: dict[str, Any], steps: int) -> Any:
    if opts["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                   total_steps=steps, pct_start=0.2)
    if opts["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)


def hardware(device: torch.device) -> dict[str, Any]:
    hw: dict[str, Any] = {"device": str(device), "platform": platform.platform(), "cpu_count": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": str(torch.__version__),
                          "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                hw["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return hw


def train(opts: dict[str, Any], resume: Path | None = None, command: str | None = None) -> dict[str, Any]:
    """Train one model; return its card. The library entry point behind ``stn-train``."""
    if opts["threads"]:
        torch.set_num_threads(int(opts["threads"]))
    device = pick_device(opts["device"])
    name = opts["distortion"] + "_" + (opts["transform"] if opts["model"] == "stcnn" else "cnn")
    out = Path(opts["out"] or Path("runs") / name)
    out.mkdir(parents=True, exist_ok=True)
    data = mnist.load_mnist(opts["data_dir"])
    parts = distort.split(data)
    train_x, train_y = parts["train_images"], parts["train_labels"]
    if opts["limit_train"]:
        train_x, train_y = train_x[:opts["limit_train"]], train_y[:opts["limit_train"]]
    val_x, val_y = distort.val_set(opts["distortion"], data)

    torch.manual_seed(opts["seed"])
    cfg = model_config(opts)
    memory = torch.channels_last if opts["channels_last"] else torch.contiguous_format
    model = build_model(cfg).to(device, memory_format=memory)
    opt = make_optimizer(model, opts)
    steps_per_epoch = math.ceil(train_x.shape[0] / opts["batch_size"])
    sched = make_schedule(opt, opts, steps_per_epoch * opts["epochs"])
    history: list[dict[str, float]] = []
    start_epoch, best_val, elapsed, cpu_used = 0, math.inf, 0.0, 0.0
    if resume:
        ckpt = read_checkpoint(resume)
        model.load_state_dict(ckpt["state_dict"])
        ts = ckpt["train_state"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        start_epoch, best_val, history = ts["epoch"] + 1, ts["best_val"], ts["history"]
        elapsed, cpu_used = ts["wall_time_s"], ts["cpu_time_s"]
        log.info("resumed %s at epoch %d", resume, start_epoch)
    data_meta = {"dataset": f"mnist-{opts['distortion']}", "labels": mnist.LABELS, "mean": mnist.MEAN,
                 "std": mnist.STD, "polarity": "white_on_black", "input_size": list(cfg.input_size),
                 "checksums": data["checksums"]}
    log.info("%s: %d parameters, %d training digits, device %s", name, count_params(model), train_x.shape[0],
             device)

    end_epoch = opts["epochs"]
    if opts["stop_after"]:
        end_epoch = min(end_epoch, start_epoch + opts["stop_after"])
    for epoch in range(start_epoch, end_epoch):
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        g = torch.Generator().manual_seed(opts["seed"] * 100_003 + epoch)
        perm = torch.randperm(train_x.shape[0], generator=g)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{opts['epochs']}", file=sys.stderr,
                   mininterval=1.0 if sys.stderr.isatty() else 30.0, leave=False)
        for step in bar:
            idx = perm[step * opts["batch_size"]:(step + 1) * opts["batch_size"]]
            xb = distort.distort(opts["distortion"], train_x[idx], g, train_x, pre_elastic=opts["pre_elastic"])
            xb = ((xb - mnist.MEAN) / mnist.STD).to(device, memory_format=memory)
            yb = train_y[idx].to(device)
            logits = model(xb)[0]
            loss = F.cross_entropy(logits, yb, label_smoothing=opts["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += yb.shape[0]
            loss_sum += float(loss.detach()) * yb.shape[0]
            correct += int((logits.argmax(1) == yb).sum())
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}", refresh=False)
        bar.close()
        val_err, _ = evaluate(model, val_x, val_y, device, opts["eval_batch_size"])
        elapsed += time.perf_counter() - t0
        cpu_used += time.process_time() - c0
        history.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_error": 1 - correct / seen,
                        "val_error": val_err, "wall_time_s": elapsed})
        log.info("epoch %d/%d  loss %.4f  train err %.2f%%  val err %.2f%%  (%.0fs)", epoch + 1, opts["epochs"],
                 loss_sum / seen, 100 * (1 - correct / seen), 100 * val_err, elapsed)
        train_state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                       "best_val": min(best_val, val_err), "history": history, "wall_time_s": elapsed,
                       "cpu_time_s": cpu_used, "opts": opts}
        metrics = {"val_error": val_err, "epoch": epoch + 1, "test_error": None}
        if val_err < best_val:
            best_val = val_err
            save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics)
        save_checkpoint(out / "last.ckpt", model, cfg, data_meta, metrics, train_state=train_state)

    if end_epoch < opts["epochs"]:
        log.info("stopped after epoch %d of %d; continue with --resume %s", end_epoch, opts["epochs"],
                 out / "last.ckpt")
        return {"name": name, "test_error": None, "val_error": best_val, "params": count_params(model),
                "wall_time_s": round(elapsed, 1), "history": history, "stopped": True}
    best = read_checkpoint(out / "best.ckpt")
    model.load_state_dict(best["state_dict"])
    metrics = dict(best["metrics"])
    test = None
    if not opts["skip_test"]:
        test = distort.test_set(opts["distortion"], data)
        metrics["test_error"], _ = evaluate(model, test[0], test[1], device, opts["eval_batch_size"])
        log.info("test error %.2f%% on the fixed %s test set", 100 * metrics["test_error"], opts["distortion"])
    card = write_card(out, name=name, opts=opts, cfg=cfg, model=model, metrics=metrics, history=history,
                      data_meta=data_meta, hardware=hardware(device), wall_time_s=elapsed, cpu_time_s=cpu_used,
                      command=command, test=test, device=device)
    save_checkpoint(out / "best.ckpt", model, cfg, data_meta, metrics, card=card)
    return card


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["download"]:
        dp = argparse.ArgumentParser(prog="stn-train download", description="fetch MNIST from public mirrors")
        dp.add_argument("--data-dir", type=Path, required=True)
        folder = mnist.download(dp.parse_args(argv[1:]).data_dir)
        print(f"MNIST verified in {folder}")
        return
    if argv[:1] == ["card"]:
        cp = argparse.ArgumentParser(prog="stn-train card", description="re-point a finished run's card at "
                                     "a baseline run that finished after it")
        cp.add_argument("run", type=Path)
        cp.add_argument("--baseline-run", required=True)
        a = cp.parse_args(argv[1:])
        card = refresh_baseline(a.run, a.baseline_run)
        ckpt = read_checkpoint(a.run / "best.ckpt")
        write_checkpoint(a.run / "best.ckpt", {**ckpt, "card": card})
        print(f"{a.run}/card.md: baseline {card['baseline']}")
        return
    opts, args = parse_args(argv)
    if args.resume:
        saved = read_checkpoint(args.resume)["train_state"]
        if not saved:
            raise SystemExit(f"{args.resume} holds no training state (resume from last.ckpt)")
        opts = {**saved["opts"], "stop_after": opts["stop_after"] if args.stop_after else 0}
    command = "stn-train " + shlex.join(argv)
    card = train(opts, resume=args.resume, command=command)
    print(json.dumps({k: card[k] for k in ("name", "test_error", "val_error", "params", "wall_time_s")}))


if __name__ == "__main__":
    main()
