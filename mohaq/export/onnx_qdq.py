"""ONNX export with QuantizeLinear/DequantizeLinear around every quantized tensor.

The graph computes what the fake-quantized model computes, in float, with
each quantization written as ONNX QDQ so a runtime can fuse it into integer
kernels: weights, biases and recurrent vectors are integer initializers
(int8 up to 8 bits, int16 above) behind a DequantizeLinear (per-row scales use
``axis``); every activation, state and operator point is a QuantizeLinear ->
DequantizeLinear pair, with a Clip between them on the integer side when the
point has fewer bits than its container (e.g. 4 bits in int8). Recurrences are
``Scan`` loops over time, one per direction (direction 1 runs in reverse, the
padding mask carrying the state, as in the float layers), so any batch size
and sequence length runs. Opset 21 (int16 QuantizeLinear).

Inputs: ``features`` float32 ``(B, T, F)`` and ``lengths`` int64 ``(B,)``;
output: ``scores`` float32 ``(B, T, C)``.

Tolerance: onnxruntime reproduces the fake-quantized scores to float32
round-off (within 1e-4 of the largest score on the tests' small models)
except where a value lands on a quantizer's rounding boundary and the two
float computations round it to neighbouring levels; on the quickstart model
that leaves 99.98% of frame decisions equal at 8 bits and the largest score
difference under 2% of the largest score (benchmarks/results/integer_inference.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mohaq.export.program import ExportError, IntegerProgram

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "onnx is needed to export or score exported models: pip install 'mohaq[export]'"
    ) from error

OPSET = 21


class _Graph:
    """Nodes of one (sub)graph; constants live in the shared outer initializer list."""

    def __init__(
        self, program: IntegerProgram, prefix: str, shared: dict[str, Any] | None = None
    ) -> None:
        self.program = program
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.shared = (
            shared if shared is not None else {"initializers": [], "count": 0, "cache": {}}
        )

    def subgraph(self, prefix: str) -> _Graph:
        return _Graph(self.program, prefix, self.shared)

    def fresh(self, hint: str) -> str:
        self.shared["count"] += 1
        return f"{self.prefix}{hint}_{self.shared['count']}"

    def const(self, hint: str, array: np.ndarray, *, key: str | None = None) -> str:
        cache = self.shared["cache"]
        if key is not None and key in cache:
            return cache[key]
        name = self.fresh(hint)
        self.shared["initializers"].append(numpy_helper.from_array(np.asarray(array), name))
        if key is not None:
            cache[key] = name
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attributes: Any) -> Any:
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def scalar(self, value: float) -> str:
        return self.const("c", np.array(value, dtype=np.float32), key=f"float:{value!r}")

    def ints(self, values: list[int]) -> str:
        return self.const("i", np.array(values, dtype=np.int64), key=f"ints:{values}")

    # -- quantization ------------------------------------------------------------------
    def _integer_type(self, bits: int) -> type:
        return np.int8 if bits <= 8 else np.int16

    def qdq(self, x: str, name: str) -> str:
        """QuantizeLinear -> (Clip) -> DequantizeLinear of a run-time tensor at its point."""
        bits = self.program.bits(name)
        scale = self.program.scale(name)
        if scale.numel() != 1:
            raise ExportError(f"run-time tensor {name!r} needs one scale")
        dtype = self._integer_type(bits)
        s = self.const(
            f"{name}.scale", np.array(float(scale), dtype=np.float32), key=f"scale:{name}"
        )
        zero = self.const("zero", np.array(0, dtype=dtype), key=f"zero:{dtype.__name__}")
        q = self.op("QuantizeLinear", x, s, zero)
        if bits not in (8, 16):
            low = self.const("qmin", np.array(-(2 ** (bits - 1)), dtype=dtype), key=f"qmin:{bits}")
            high = self.const(
                "qmax", np.array(2 ** (bits - 1) - 1, dtype=dtype), key=f"qmax:{bits}"
            )
            q = self.op("Clip", q, low, high)
        return self.op("DequantizeLinear", q, s, zero)

    def dequantized(
        self,
        name: str,
        rows: slice | None = None,
        columns: slice | None = None,
        *,
        transpose: bool = False,
    ) -> str:
        """A stored integer tensor (rows/columns selected, optionally transposed) behind
        DequantizeLinear; per-row scales follow the rows."""
        values = self.program.values(name)
        scale = self.program.scale(name)
        if rows is not None:
            values = values[rows]
            scale = scale[rows] if scale.numel() > 1 else scale
        if columns is not None:
            values = values[:, columns]
        dtype = self._integer_type(self.program.bits(name))
        array = values.numpy().astype(dtype)
        axis = 0
        if transpose:
            array, axis = np.ascontiguousarray(array.T), 1
        q = self.const(name, array)
        s = self.const(f"{name}.scale", scale.numpy().astype(np.float32))
        zero = self.const(f"{name}.zero", np.zeros(scale.shape, dtype=dtype))
        attributes = {"axis": axis} if scale.numel() > 1 else {}
        return self.op("DequantizeLinear", q, s, zero, **attributes)


def _linear(g: _Graph, description: dict[str, Any], x: str) -> str:
    name = description["name"]
    y = g.op("MatMul", g.qdq(x, f"{name}.input"), g.dequantized(f"{name}.weight", transpose=True))
    if description["bias"]:
        y = g.op("Add", y, g.dequantized(f"{name}.bias"))
    return y


def _time_major(g: _Graph, x: str) -> str:
    return g.op("Transpose", x, perm=[1, 0, 2])


def _split_last(g: _Graph, x: str, sizes: list[int]) -> list[str]:
    return g.op("Split", x, g.ints(sizes), axis=-1, outputs=len(sizes))


def _value_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _scan(
    g: _Graph,
    body: _Graph,
    states: list[tuple[str, str, str]],
    scans: list[tuple[str, str, str]],
    outputs: list[str],
    reverse: bool,
    hint: str,
) -> list[str]:
    """A Scan over time. ``states``: (outer initial, body input, body output); ``scans``:
    (outer sequence, body input, dtype); ``outputs``: body scan outputs."""
    inputs = [helper.make_tensor_value_info(b, TensorProto.FLOAT, None) for _, b, _ in states]
    for _, body_name, kind in scans:
        element = TensorProto.BOOL if kind == "bool" else TensorProto.FLOAT
        inputs.append(helper.make_tensor_value_info(body_name, element, None))
    graph_outputs = [_value_info(out) for _, _, out in states] + [
        _value_info(out) for out in outputs
    ]
    graph = helper.make_graph(body.nodes, f"{hint}_body", inputs, graph_outputs)
    results = g.op(
        "Scan", *[s for s, _, _ in states], *[s for s, _, _ in scans], outputs=len(states) + len(outputs),
        body=graph, num_scan_inputs=len(scans),
        scan_input_directions=[int(reverse)] * len(scans), scan_output_directions=[int(reverse)] * len(outputs),
    )  # fmt: skip
    return results if isinstance(results, list) else [results]


def _zeros_state(g: _Graph, like_time_major: str, hidden: int) -> str:
    """A (B, H) float zero state, B taken from a (T, B, ...) tensor."""
    batch = g.op("Slice", g.op("Shape", like_time_major), g.ints([1]), g.ints([2]))
    shape = g.op("Concat", batch, g.ints([hidden]), axis=0)
    return g.op(
        "ConstantOfShape", shape, value=numpy_helper.from_array(np.array([0.0], dtype=np.float32))
    )


def _lerp(g: _Graph, start: str, end: str, weight: str) -> str:
    return g.op("Add", start, g.op("Mul", weight, g.op("Sub", end, start)))


def _finish(g: _Graph, per_direction: list[str], mask: str) -> str:
    """(T, B, H) per direction -> (B, T, D*H), zero at padded frames."""
    h = per_direction[0] if len(per_direction) == 1 else g.op("Concat", *per_direction, axis=-1)
    return g.op("Mul", g.op("Transpose", h, perm=[1, 0, 2]), mask)


def _sru(g: _Graph, d: dict[str, Any], x: str, masks: dict[str, str]) -> str:
    name, hidden, directions, matrices = d["name"], d["hidden"], d["directions"], d["matrices"]
    product = _linear(g, d["projection"], x) if d["projection"] else x
    product_q = _time_major(g, g.qdq(product, f"{name}.input"))
    alpha = g.scalar(d["alpha"])
    per_direction = []
    for direction in range(directions):
        rows = slice(direction * matrices * hidden, (direction + 1) * matrices * hidden)
        u = g.op("MatMul", product_q, g.dequantized(f"{name}.weight", rows, transpose=True))
        parts = _split_last(g, u, [hidden] * matrices)
        if d["highway"] == "matrix":
            highway = parts[3]
        else:
            source = product_q if d["highway"] == "product_input" else _time_major(g, x)
            highway = (
                _split_last(g, source, [hidden] * directions)[direction]
                if directions > 1
                else source
            )
        highway = g.op("Mul", highway, alpha)
        vectors = {
            v: g.dequantized(f"{name}.{v}", slice(direction, direction + 1))
            for v in ("v_forget", "v_reset", "b_forget", "b_reset")
        }
        forget = g.op("Add", parts[1], vectors["b_forget"])
        body = g.subgraph(f"{name}_d{direction}_")
        c, cand, fin, rin, hw, m = (
            body.fresh(n) for n in ("c", "cand", "forget", "reset", "hw", "mask")
        )
        f = body.op("Sigmoid", body.op("Add", fin, body.op("Mul", vectors["v_forget"], c)))
        c_new = body.qdq(_lerp(body, cand, c, f), f"{name}.c")
        c_new = body.op("Where", m, c_new, c)
        r = body.op(
            "Sigmoid",
            body.op(
                "Add",
                body.op("Add", rin, vectors["b_reset"]),
                body.op("Mul", vectors["v_reset"], c),
            ),
        )
        h = _lerp(body, hw, c_new, r)
        c_out = body.op("Identity", c_new)
        (_, out) = _scan(
            g, body, [(_zeros_state(g, product_q, hidden), c, c_out)],
            [(parts[0], cand, "float"), (forget, fin, "float"), (parts[2], rin, "float"),
             (highway, hw, "float"), (masks["bool"], m, "bool")],
            [h], reverse=direction == 1, hint=f"{name}_d{direction}",
        )  # fmt: skip
        per_direction.append(out)
    return _finish(g, per_direction, masks["batch_float"])


def _stepwise(g: _Graph, d: dict[str, Any], x: str, masks: dict[str, str]) -> str:
    name, hidden, directions, gates = d["name"], d["hidden"], d["directions"], d["gates"]
    operator, lstm = d["granularity"] == "operator", d["kind"] == "lstm"
    product = _linear(g, d["projection"], x) if d["projection"] else x
    xq = _time_major(g, g.qdq(product, d["input_point"]))
    rows_per_direction = gates * hidden
    input_size = None if operator else g.program.values(f"{name}.weight").shape[1] - hidden

    def weight(part: str, direction: int) -> str:
        rows = slice(direction * rows_per_direction, (direction + 1) * rows_per_direction)
        if operator:
            return g.dequantized(f"{name}.{part}", rows, transpose=True)
        columns = slice(0, input_size) if part == "w_ih" else slice(input_size, None)
        return g.dequantized(f"{name}.weight", rows, columns, transpose=True)

    def op(body: _Graph, point: str, value: str) -> str:
        return body.qdq(value, f"{name}.{point}") if operator else value

    per_direction = []
    for direction in range(directions):
        rows = slice(direction * rows_per_direction, (direction + 1) * rows_per_direction)
        ih = g.op(
            "Add",
            g.op("MatMul", xq, weight("w_ih", direction)),
            g.dequantized(f"{name}.bias_ih", rows),
        )
        ih = op(g, "ih", ih)
        w_hh = weight("w_hh", direction)
        b_hh = g.dequantized(f"{name}.bias_hh", rows)
        body = g.subgraph(f"{name}_d{direction}_")
        h, ih_t, m = body.fresh("h"), body.fresh("ih"), body.fresh("mask")
        c = body.fresh("c") if lstm else None
        h_in = body.qdq(h, f"{name}.h")
        hh = op(body, "hh", body.op("Add", body.op("MatMul", h_in, w_hh), b_hh))
        ih_parts = _split_last(body, ih_t, [hidden] * gates)
        hh_parts = _split_last(body, hh, [hidden] * gates)
        if not lstm:
            r = op(body, "r", body.op("Sigmoid", body.op("Add", ih_parts[0], hh_parts[0])))
            z = op(body, "z", body.op("Sigmoid", body.op("Add", ih_parts[1], hh_parts[1])))
            rhn = op(body, "rhn", body.op("Mul", r, hh_parts[2]))
            n = op(body, "n", body.op("Tanh", body.op("Add", ih_parts[2], rhn)))
            zn = op(body, "zn", body.op("Mul", body.op("Sub", body.scalar(1.0), z), n))
            h_new = body.op("Add", zn, op(body, "zh", body.op("Mul", z, h_in)))
            new_states = [(h, h_new)]
        else:
            pre = [body.op("Add", ih_parts[k], hh_parts[k]) for k in range(4)]
            i = op(body, "i", body.op("Sigmoid", pre[0]))
            f = op(body, "f", body.op("Sigmoid", pre[1]))
            gg = op(body, "g", body.op("Tanh", pre[2]))
            o = op(body, "o", body.op("Sigmoid", pre[3]))
            c_sum = body.op(
                "Add", op(body, "fc", body.op("Mul", f, c)), op(body, "ig", body.op("Mul", i, gg))
            )
            c_new = body.qdq(c_sum, f"{name}.c")
            h_new = op(body, "oc", body.op("Mul", o, op(body, "tanh_c", body.op("Tanh", c_new))))
            new_states = [(h, h_new), (c, c_new)]
        keep = body.op("Sub", body.scalar(1.0), m)
        carried = [
            body.op("Add", body.op("Mul", m, new), body.op("Mul", keep, old))
            for old, new in new_states
        ]
        out = body.op("Mul", m, carried[0])
        state_outputs = [body.op("Identity", value) for value in carried]
        zero = _zeros_state(g, xq, hidden)
        states = [(zero, old, new) for (old, _), new in zip(new_states, state_outputs, strict=True)]
        results = _scan(
            g, body, states, [(ih, ih_t, "float"), (masks["float"], m, "float")], [out],
            reverse=direction == 1, hint=f"{name}_d{direction}",
        )  # fmt: skip
        per_direction.append(results[-1])
    return _finish(g, per_direction, masks["batch_float"])


def _masks(g: _Graph) -> dict[str, str]:
    """Step masks from ``lengths``: (T, B, 1) bool and float for the loops, (B, T, 1) float."""
    steps = g.op("Slice", g.op("Shape", "features"), g.ints([1]), g.ints([2]))
    positions = g.op("Range", g.const("zero_i", np.array(0, dtype=np.int64)), g.op("Squeeze", steps, g.ints([0])),
                     g.const("one_i", np.array(1, dtype=np.int64)))  # fmt: skip
    valid = g.op(
        "Less", g.op("Unsqueeze", positions, g.ints([0])), g.op("Unsqueeze", "lengths", g.ints([1]))
    )
    time_major = g.op("Unsqueeze", g.op("Transpose", valid, perm=[1, 0]), g.ints([2]))  # (T, B, 1)
    batch_major = g.op("Unsqueeze", valid, g.ints([2]))
    return {
        "bool": time_major,
        "float": g.op("Cast", time_major, to=TensorProto.FLOAT),
        "batch_float": g.op("Cast", batch_major, to=TensorProto.FLOAT),
    }


def build_onnx(program: IntegerProgram) -> onnx.ModelProto:
    """The QDQ ONNX model of an integer program.

    Raises:
        ExportError: on a layer kind without an ONNX translation.
    """
    g = _Graph(program, "")
    masks = _masks(g)
    x = "features"
    for description in program.config["layers"][:-1]:
        if description["kind"] == "sru":
            x = _sru(g, description, x, masks)
        elif description["kind"] in ("gru", "lstm"):
            x = _stepwise(g, description, x, masks)
        else:
            raise ExportError(f"no ONNX translation of layer kind {description['kind']!r}")
    scores = g.op("Identity", _linear(g, program.config["layers"][-1], x))
    g.nodes[-1].output[0] = "scores"
    del scores
    model_config = program.config["model"]
    graph = helper.make_graph(
        g.nodes,
        "mohaq_qdq",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", "time", model_config["num_features"]]
            ),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"]),
        ],
        [
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, ["batch", "time", model_config["num_classes"]]
            )
        ],
        initializer=g.shared["initializers"],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="mohaq"
    )
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def write_onnx(program: IntegerProgram, path: str | Path) -> onnx.ModelProto:
    """Builds and saves the QDQ model; returns it."""
    model = build_onnx(program)
    onnx.save(model, str(path))
    return model


def onnx_session(model: str | Path | bytes) -> Any:
    """An onnxruntime CPU session that computes what the QDQ graph says.

    onnxruntime's extended graph optimizations fuse QuantizeLinear/
    DequantizeLinear pairs around a MatMul into its int8 kernels. On x86 CPUs
    without VNNI (AVX2 only) those multiply unsigned 8-bit activations by
    signed 8-bit weights with ``vpmaddubsw``, which saturates pairwise sums at
    16 bits (onnxruntime documents this; ``reduce_range`` is its mitigation):
    measured on an AVX2 EPYC, the SRU test model's scores moved by 0.75 for a
    largest score of 1.36, with 0 difference under the basic optimizations.
    Scoring what ships must be exact, so only the basic (constant folding,
    redundant node) optimizations run here.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source = model if isinstance(model, bytes) else str(model)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])
