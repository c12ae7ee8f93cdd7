"""Rewrites of ONNX graphs that Keras' converters write but onnxruntime cannot run, each
replaced by standard operators that compute the same thing (measured with keras 3.15.1,
tf2onnx 1.17.0, jax2onnx 0.17.1, onnxruntime 1.32.0):

- TensorFlow (tf2onnx): constants that the traced function captures (the Normalization
  layer's mean and variance) are left as extra graph inputs, which onnxruntime then asks
  the caller to feed; they become initializers holding their values.
- TensorFlow (tf2onnx): TF 2.21 computes the exact GELU with `Erfc`, which tf2onnx copies
  into the graph although ONNX has no such operator ("No Op registered for Erfc").
  Erfc(x) = 1 - Erf(x).
- JAX (jax2onnx): a 2-D max-pool on NHWC images is lowered to a MaxPool with a 4-D window
  (1, k, k, 1) over (N, H, W, C); onnxruntime's MaxPool takes 1 to 3 spatial dimensions
  ("Unsupported pooling size"). It becomes NHWC -> NCHW, a 2-D MaxPool, and back.
"""

import numpy as np


def fix_onnx_file(path, captured=None):
    """Applies every rewrite to the ONNX file at `path` in place; `captured` maps the names
    of captured constants to their numpy values. Returns how many inputs and nodes were
    rewritten (0 leaves the file untouched)."""
    import onnx

    model = onnx.load(str(path))
    rewritten = (inline_captured_inputs(model.graph, captured or {})
                 + replace_erfc(model.graph) + replace_nhwc_max_pool(model.graph))
    if rewritten:
        onnx.save(model, str(path))
    return rewritten


def replace_nodes(graph, rewrite):
    """Replaces each node for which `rewrite(node)` returns a list of nodes by that list, in
    place (which keeps the graph's topological order); returns the count replaced."""
    nodes, count = [], 0
    for node in graph.node:
        replacement = rewrite(node)
        if replacement is None:
            nodes.append(node)
        else:
            nodes.extend(replacement)
            count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def add_constant(graph, name, values, dtype):
    from onnx import numpy_helper

    if not any(initializer.name == name for initializer in graph.initializer):
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype), name))
    return name


def inline_captured_inputs(graph, captured):
    from onnx import numpy_helper

    inputs = [graph_input for graph_input in graph.input if graph_input.name not in captured]
    inlined = [graph_input.name for graph_input in graph.input if graph_input.name in captured]
    for name in inlined:
        graph.initializer.append(numpy_helper.from_array(np.asarray(captured[name]), name))
    if inlined:
        del graph.input[:]
        graph.input.extend(inputs)
    return len(inlined)


def replace_erfc(graph):
    from onnx import helper

    def rewrite(node):
        if node.op_type != "Erfc" or node.domain not in ("", "ai.onnx"):
            return None
        one = add_constant(graph, "kerasvit_erfc_one", 1.0, np.float32)
        erf = f"{node.output[0]}_erf"
        return [helper.make_node("Erf", [node.input[0]], [erf], name=f"{node.name}_erf"),
                helper.make_node("Sub", [one, erf], [node.output[0]], name=node.name)]

    return replace_nodes(graph, rewrite)


def replace_nhwc_max_pool(graph):
    """MaxPool over a (1, 1, N, H, W, C) tensor with window (1, kh, kw, 1) -> squeeze,
    NCHW transpose, MaxPool (kh, kw), transpose back, unsqueeze (same output shape)."""
    from onnx import helper

    # jax2onnx's pattern: the (N, H, W, C) input is unsqueezed twice in front of the pool.
    unsqueezed = {output for node in graph.node if node.op_type == "Unsqueeze"
                  for output in node.output}

    def rewrite(node):
        if node.op_type != "MaxPool" or len(node.output) != 1:
            return None
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        kernel = list(attributes.get("kernel_shape", []))
        if len(kernel) != 4:
            return None
        strides = list(attributes.get("strides", [1] * 4))
        dilations = list(attributes.get("dilations", [1] * 4))
        pads = list(attributes.get("pads", [0] * 8))
        # The batch and channel dimensions must be left alone: window, stride, dilation 1,
        # no padding.
        ones = (kernel[0], kernel[3], strides[0], strides[3], dilations[0], dilations[3])
        zeros = (pads[0], pads[3], pads[4], pads[7])
        if node.input[0] not in unsqueezed or set(ones) != {1} or any(zeros):
            return None
        axes = add_constant(graph, "kerasvit_pool_axes01", [0, 1], np.int64)
        base = node.name or node.output[0]
        squeezed, nchw, pooled, nhwc = (f"{base}_{part}" for part in
                                        ("nhwc_in", "nchw_in", "nchw_out", "nhwc_out"))
        pool_attributes = {"kernel_shape": kernel[1:3], "strides": strides[1:3],
                           "pads": [pads[1], pads[2], pads[5], pads[6]]}
        if dilations[1:3] != [1, 1]:
            pool_attributes["dilations"] = dilations[1:3]
        return [
            helper.make_node("Squeeze", [node.input[0], axes], [squeezed], name=f"{base}_sq"),
            helper.make_node("Transpose", [squeezed], [nchw], perm=[0, 3, 1, 2],
                             name=f"{base}_to_nchw"),
            helper.make_node("MaxPool", [nchw], [pooled], name=base, **pool_attributes),
            helper.make_node("Transpose", [pooled], [nhwc], perm=[0, 2, 3, 1],
                             name=f"{base}_to_nhwc"),
            helper.make_node("Unsqueeze", [nhwc, axes], [node.output[0]], name=f"{base}_unsq"),
        ]

    return replace_nodes(graph, rewrite)
