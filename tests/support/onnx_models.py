"""Tiny synthetic ONNX models shaped like rembg's U2-Net, for failure-path tests.

Real-mask tests use rembg's real u2netp (../shared/models); these exist to
exercise loading, shape checks and runtime failures in milliseconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: rembg's U2-Net input name and size
INPUT_NAME = "input.1"
SIZE = 320
#: U2-Net has 7 side outputs d0..d6; rembg reads d0
N_OUTPUTS = 7
OPSET = 13


def write_u2net_shaped_onnx(
    path: str | os.PathLike[str], *, fail: bool = False, bad_shape: bool = False
) -> Path:
    """Write a U2-Net-shaped ONNX: ``input.1`` (N,3,320,320) f32 -> d0..d6 (N,1,320,320).

    Each output is ``Sigmoid(1x1 Conv(input))`` (a brightness map), so it runs
    in about a millisecond and gives a non-constant mask. ``bad_shape=True``
    makes every output 2-channel (N,2,320,320): loading must raise
    InvalidModelError. ``fail=True`` loads fine but raises at inference (a
    broadcast that only turns out wrong at run time), for runtime-failure paths
    (load it with ``warmup=False``, or the warm-up run raises).
    The batch dimension is dynamic (``N``).
    """
    out_ch = 2 if bad_shape else 1
    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, SIZE, SIZE])
    weight = numpy_helper.from_array(
        np.full((out_ch, 3, 1, 1), 4.0 / 3.0, dtype=np.float32), name="w"
    )
    bias = numpy_helper.from_array(np.full((out_ch,), -2.0, dtype=np.float32), name="b")
    initializers = [weight, bias]
    nodes = []
    source = INPUT_NAME
    if fail:
        # Add x to a (1,1,1,k) tensor whose k (321) depends on the data, so no
        # runtime can see the broadcast error before it runs: loads, then fails.
        initializers += [
            numpy_helper.from_array(np.array([1, 1, 1], dtype=np.int64), name="lead_dims"),
            numpy_helper.from_array(np.array([321], dtype=np.int64), name="k0"),
        ]
        nodes += [
            helper.make_node("ReduceMax", [INPUT_NAME], ["peak"], keepdims=0),
            helper.make_node("Sigmoid", ["peak"], ["squashed"]),
            helper.make_node("Floor", ["squashed"], ["zero_f"]),
            helper.make_node("Cast", ["zero_f"], ["zero_i"], to=TensorProto.INT64),
            helper.make_node("Unsqueeze", ["zero_i", "axis0"], ["zero_1"]),
            helper.make_node("Add", ["k0", "zero_1"], ["k"]),
            helper.make_node("Concat", ["lead_dims", "k"], ["bad_dims"], axis=0),
            helper.make_node("ConstantOfShape", ["bad_dims"], ["bad"]),
            helper.make_node("Add", [INPUT_NAME, "bad"], ["x_bad"]),
        ]
        initializers.append(numpy_helper.from_array(np.array([0], dtype=np.int64), name="axis0"))
        source = "x_bad"
    nodes.append(helper.make_node("Conv", [source, "w", "b"], ["logits"]))
    outputs = []
    for i in range(N_OUTPUTS):
        name = f"d{i}"
        nodes.append(helper.make_node("Sigmoid", ["logits"], [name]))
        outputs.append(
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", out_ch, SIZE, SIZE])
        )
    graph = helper.make_graph(nodes, "u2net_shaped", [x], outputs, initializer=initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="bg-removal-tests"
    )
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    onnx.checker.check_model(model)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, out)
    return out
