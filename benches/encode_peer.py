#!/usr/bin/env python3
"""transformers + torch peer for `setr bench encode`, and the maker of its model.

`make-model --out DIR`: a CLIPModel with the default CLIPConfig (the ViT-B/32 shapes:
vision 768 x 12 layers, patch 32, 224 px; text 512 x 12 layers; projection 512) and random
weights, saved with save_pretrained, plus the tokenizer of the tiny fixture CLIP and a
224 px preprocessor. Random weights time exactly like trained ones.

`time --model DIR --threads N --batches 1,8,32 --min-time S`: times get_image_features on
preprocessed pixels and get_text_features on token ids, float32, inference mode, N
threads; prints one JSON object {"image": {batch: seconds}, "text": {batch: seconds}}.
Dev/bench only: `pip install torch transformers`.
"""
import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

TEXT = "same dress but red and sleeveless with a thin belt"


def make_model(out: Path, fixture: Path):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig())
    model.save_pretrained(out, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]:
        shutil.copy(fixture / name, out / name)
    # The fixture tokenizer has model_max_length 16; the real CLIP's is 77.
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = 77
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        "size": {"shortest_edge": 224},
        "crop_size": {"height": 224, "width": 224},
        "resample": 3,
        "do_center_crop": True,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


def timed(fn, min_time):
    fn()  # warm up
    runs, start = 0, time.perf_counter()
    while True:
        fn()
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time and runs >= 3:
            return elapsed / runs


def time_model(model_dir: Path, threads: int, batches, min_time: float):
    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(model_dir)
    out = {"image": {}, "text": {}, "torch": torch.__version__, "threads": threads}
    with torch.inference_mode():
        for b in batches:
            pixels = torch.randn(b, 3, 224, 224)
            out["image"][b] = timed(lambda: model.get_image_features(pixel_values=pixels), min_time)
            ids = tok([TEXT] * b, padding=True, return_tensors="pt")
            out["text"][b] = timed(lambda: model.get_text_features(**ids), min_time)
    print(json.dumps(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-model")
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--fixture", default="tests/fixtures/models/clip-a", type=Path)
    t = sub.add_parser("time")
    t.add_argument("--model", required=True, type=Path)
    t.add_argument("--threads", type=int, required=True)
    t.add_argument("--batches", default="1,8,32")
    t.add_argument("--min-time", type=float, default=2.0)
    a = p.parse_args()
    if a.cmd == "make-model":
        make_model(a.out, a.fixture)
    else:
        time_model(a.model, a.threads, [int(b) for b in a.batches.split(",")], a.min_time)


if __name__ == "__main__":
    main()
