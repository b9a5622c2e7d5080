"""Caffe deploy prototxt of a DeepLab-v2 network, generated from `model.architecture()`.

The text follows the released `deploy.prototxt`: old-style `input:`/`input_dim:`
declaration, then per convolution the Convolution, BatchNorm
(use_global_stats), Scale (bias_term) and in-place ReLU layers, `pool1` MAX
3x3/2 pad 1, each block's Eltwise (shortcut first, then branch2c) and its
`_relu`, and the ASPP head `fc1_voc12_c0..c3` summed by the Eltwise `fc1_voc12`.

Regenerate the committed files with
    python -m deeplab_resnet.deploy --model resnet101 --num-classes 21 --output misc/deploy.prototxt
"""


from deeplab_resnet.cli import ArgumentParser
from deeplab_resnet.model import DEFAULT_VARIANT, HEAD_PREFIX, VARIANTS, architecture

DEFAULT_INPUT_SIZE = 321


def _layer(name, type_, bottoms, tops, body=()):
    lines = ["layer {", f'  name: "{name}"', f'  type: "{type_}"']
    lines += [f'  bottom: "{b}"' for b in bottoms]
    lines += [f'  top: "{t}"' for t in tops]
    lines += ["  " + line for line in body]
    lines.append("}")
    return "\n".join(lines)


def _conv_layers(conv):
    body = ["convolution_param {", f"  num_output: {conv.out_channels}",
            f"  kernel_size: {conv.kernel}", f"  pad: {conv.pad}", f"  stride: {conv.stride}"]
    if conv.dilation != 1:
        body.append(f"  dilation: {conv.dilation}")
    body += [f"  bias_term: {'true' if conv.bias else 'false'}", "}"]
    out = [_layer(conv.name, "Convolution", [conv.bottom], [conv.name], body)]
    if conv.bn:
        out.append(_layer(conv.bn, "BatchNorm", [conv.name], [conv.name],
                          ["batch_norm_param {", "  use_global_stats: true", "}"]))
        out.append(_layer(conv.scale, "Scale", [conv.name], [conv.name],
                          ["scale_param {", "  bias_term: true", "}"]))
    if conv.relu:
        out.append(_layer(f"{conv.name}_relu", "ReLU", [conv.name], [conv.name]))
    return out


def deploy_prototxt(variant=DEFAULT_VARIANT, num_classes=21, input_size=DEFAULT_INPUT_SIZE,
                    head=True):
    """The deploy prototxt text of `architecture(variant, num_classes)`.

    Args:
        variant: a key of `model.VARIANTS`.
        num_classes: output channels of the head.
        input_size: height and width written in `input_dim` (Caffe reshapes to any size).
        head: include the ASPP head; without it the net ends at `res5c` (the
            backbone, for reading caffemodels whose head is not DeepLab's VOC one).
    """
    arch = architecture(variant, num_classes)
    header = (f'name: "DeepLab-v2 {variant}"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\n'
              f"input_dim: {input_size}\ninput_dim: {input_size}")
    layers = _conv_layers(arch.stem)
    kernel, stride, pad = arch.pool
    layers.append(_layer("pool1", "Pooling", [arch.stem.name], ["pool1"], [
        "pooling_param {", "  pool: MAX", f"  kernel_size: {kernel}", f"  stride: {stride}",
        f"  pad: {pad}", "}"]))
    for block in arch.blocks:
        if block.branch1 is not None:
            layers += _conv_layers(block.branch1)
            shortcut = block.branch1.name
        else:
            shortcut = block.bottom
        for conv in block.branch2:
            layers += _conv_layers(conv)
        layers.append(_layer(block.name, "Eltwise", [shortcut, block.branch2[-1].name], [block.name],
                             ["eltwise_param {", "  operation: SUM", "}"]))
        layers.append(_layer(f"{block.name}_relu", "ReLU", [block.name], [block.name]))
    if head:
        for conv in arch.head:
            layers += _conv_layers(conv)
        layers.append(_layer(HEAD_PREFIX, "Eltwise", [c.name for c in arch.head], [HEAD_PREFIX],
                             ["eltwise_param {", "  operation: SUM", "}"]))
    return header + "\n\n" + "\n\n".join(layers) + "\n"


MISC_FILES = {
    "misc/deploy.prototxt": ("resnet101", 21),
    "misc/deploy_resnet50.prototxt": ("resnet50", 21),
    "misc/deploy_resnet152.prototxt": ("resnet152", 21),
}


def main(argv=None):
    parser = ArgumentParser(description="Writes the Caffe deploy prototxt of a DeepLab variant.")
    parser.add_argument("--model", choices=sorted(VARIANTS), default=DEFAULT_VARIANT)
    parser.add_argument("--num-classes", type=int, default=21)
    parser.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE)
    parser.add_argument("--output", required=True, help="prototxt file to write")
    args = parser.parse_args(argv)
    if args.num_classes < 1 or args.input_size < 1:
        from deeplab_resnet.errors import UserError
        raise UserError("--num-classes and --input-size must be positive")
    from deeplab_resnet.utils import atomic_path
    text = deploy_prototxt(args.model, args.num_classes, args.input_size)
    with atomic_path(args.output) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    from deeplab_resnet.cli import run
    run(main)
