"""A `.caffemodel` as DeepLab parameters, converted in memory (no files written).

Used by `deeplab_resnet.checkpoint.load_weights`, so a caffemodel is accepted
anywhere a checkpoint is.
"""

from deeplab_resnet.errors import UserError


def read_caffemodel(path, variant, prototxt=None, new_head=False):
    """Converts a caffemodel to {parameter name: array} in the model's naming scheme.

    Args:
        path: the `.caffemodel`.
        variant: DeepLab variant the weights are for (picks the generated
            deploy prototxt when `prototxt` is None); None: the one whose
            layers the caffemodel has.
        prototxt: deploy prototxt of the caffemodel; default: the one
            `deeplab_resnet.deploy` generates for `variant`, with the class
            count read from the caffemodel's `fc1_voc12_c0` weights.
        new_head: the head will not be restored (`--not-restore-last`): a
            caffemodel without DeepLab's VOC head (e.g. a COCO-trained one with
            other head layers) is read for its backbone only.
    Returns:
        (params, num_classes); BatchNorm variances hold var + eps - 1e-5 (the
        model's eps is 1e-5); num_classes is None for a net without the
        DeepLab head (e.g. an ImageNet ResNet given with its own prototxt).
    Raises:
        UserError: unreadable file, or a caffemodel that does not fit the prototxt.
    """
    # Imported here: only caffemodel users need the converter.
    from deeplab_resnet import deploy
    from deeplab_resnet.model import DEFAULT_VARIANT, infer_variant
    from kaffe import convert, deeplab, reader
    from kaffe.errors import KaffeError

    model = reader.read_caffemodel(path)
    if prototxt is None:
        variant = variant or infer_variant(p.name for p in _layers(model)) or DEFAULT_VARIANT
        num_classes = _head_classes(model, path, required=not new_head)
        text = deploy.deploy_prototxt(variant, num_classes or 1, head=num_classes is not None)
        converted = convert.load_net(text=text, source=f"<generated {variant} deploy prototxt>")
    else:
        converted = convert.load_net(prototxt)
    # The weights go into a DeepLabResNet, which runs BatchNorm with eps 1e-5:
    # fold any other eps into the variances, whatever net the prototxt is.
    try:
        params = convert.read_weights(converted, path, model=model, fold_eps=deeplab.DEEPLAB_BN_EPS)
    except KaffeError as exc:
        if prototxt is not None:
            raise
        # E.g. an ImageNet ResNet (conv1 has a bias there): DeepLab's prototxt does not fit it.
        raise KaffeError(f"{exc}; if this is not a DeepLab caffemodel (e.g. an ImageNet ResNet), "
                         "give its own deploy prototxt with --prototxt") from None
    if converted.deeplab is not None:
        return params, converted.deeplab[1]
    head = params.get(f"{deeplab.HEAD_LAYER}/weights")
    return params, (int(head.shape[3]) if head is not None else None)


def _head_classes(model, path, required=True):
    """Output channels of the caffemodel's `fc1_voc12_c0`; None if absent and not `required`."""
    from kaffe import deeplab, transforms

    for proto in _layers(model):
        if proto.name == deeplab.HEAD_LAYER and len(proto.blobs):
            weights, _ = transforms.blob_array(proto.blobs[0], f"{path}: layer '{proto.name}' blob 0")
            return int(weights.shape[0])
    if not required:
        return None
    raise UserError(f"{path}: caffemodel has no '{deeplab.HEAD_LAYER}' layer, so it is not a "
                    "DeepLab model; give its deploy prototxt with --prototxt, or add "
                    "--not-restore-last to read its backbone only")


def _layers(model):
    """The layers of a parsed caffemodel, new (`layer`) and V1 (`layers`) ones."""
    return list(model.layer) + list(model.layers)
