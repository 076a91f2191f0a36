"""Classify one image with a `segen export format=onnx` file, using only its sidecar (no segen, no torch).

    python scripts/classify_onnx.py outputs/export/<run>/model.onnx image.png
"""
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

model, image = sys.argv[1], sys.argv[2]
meta = json.load(open(model + ".json"))
spec = meta["input"]
img = Image.open(image).convert("RGB" if spec["color"] == "RGB" else "L").resize(spec["trained_size"][::-1])
x = np.asarray(img, dtype=np.float32).reshape(*spec["trained_size"], -1).transpose(2, 0, 1) / 255
x = (x - np.array(spec["mean"], np.float32)[:, None, None]) / np.array(spec["std"], np.float32)[:, None, None]
logits = ort.InferenceSession(model).run(None, {spec["name"]: x[None]})[0][0]
print(meta["class_names"][int(logits.argmax())])
