"""The subset of Caffe's `caffe.proto` the converter needs, built in Python.

No protoc at build time and no pycaffe: the message descriptors are declared
here as data and assembled into a `FileDescriptorProto`, registered in a
private descriptor pool (so another `caffe` package in the process cannot
clash with ours). Field numbers, types and defaults are those of BVLC Caffe's
`src/caffe/proto/caffe.proto`; a field we do not declare is kept as an unknown
field when parsing binary files, so a caffemodel written by a newer Caffe still
reads.

`message_class(name)` gives any declared message's class; `NetParameter` and
`V1LayerParameter` are the two the converter uses by name.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "double": _F.TYPE_DOUBLE, "float": _F.TYPE_FLOAT, "int32": _F.TYPE_INT32,
    "int64": _F.TYPE_INT64, "uint32": _F.TYPE_UINT32, "uint64": _F.TYPE_UINT64,
    "bool": _F.TYPE_BOOL, "string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES,
}
PACKAGE = "caffe"

# Enums: name -> [(value name, number)]. Nested enums are declared on their message.
_TOP_ENUMS = {"Phase": [("TRAIN", 0), ("TEST", 1)]}

_ENGINE = [("DEFAULT", 0), ("CAFFE", 1), ("CUDNN", 2)]

# Messages: name -> (fields, nested enums). A field is
# (label "o"/"r", type, name, number, default or None[, "packed"]).
# A type is a scalar name, a message name or an enum path ("Phase",
# "PoolingParameter.PoolMethod").
_MESSAGES = {
    "BlobShape": ([("r", "int64", "dim", 1, None, "packed")], {}),
    "BlobProto": ([
        ("o", "BlobShape", "shape", 7, None),
        ("r", "float", "data", 5, None, "packed"),
        ("r", "float", "diff", 6, None, "packed"),
        ("r", "double", "double_data", 8, None, "packed"),
        ("r", "double", "double_diff", 9, None, "packed"),
        ("o", "int32", "num", 1, 0),
        ("o", "int32", "channels", 2, 0),
        ("o", "int32", "height", 3, 0),
        ("o", "int32", "width", 4, 0),
    ], {}),
    "FillerParameter": ([
        ("o", "string", "type", 1, "constant"),
        ("o", "float", "value", 2, 0.0),
        ("o", "float", "min", 3, 0.0),
        ("o", "float", "max", 4, 1.0),
        ("o", "float", "mean", 5, 0.0),
        ("o", "float", "std", 6, 1.0),
        ("o", "int32", "sparse", 7, -1),
        ("o", "FillerParameter.VarianceNorm", "variance_norm", 8, "FAN_IN"),
    ], {"VarianceNorm": [("FAN_IN", 0), ("FAN_OUT", 1), ("AVERAGE", 2)]}),
    "NetState": ([
        ("o", "Phase", "phase", 1, "TEST"),
        ("o", "int32", "level", 2, 0),
        ("r", "string", "stage", 3, None),
    ], {}),
    "NetStateRule": ([
        ("o", "Phase", "phase", 1, None),
        ("o", "int32", "min_level", 2, None),
        ("o", "int32", "max_level", 3, None),
        ("r", "string", "stage", 4, None),
        ("r", "string", "not_stage", 5, None),
    ], {}),
    "ParamSpec": ([
        ("o", "string", "name", 1, None),
        ("o", "ParamSpec.DimCheckMode", "share_mode", 2, None),
        ("o", "float", "lr_mult", 3, 1.0),
        ("o", "float", "decay_mult", 4, 1.0),
    ], {"DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)]}),
    "NetParameter": ([
        ("o", "string", "name", 1, None),
        ("r", "string", "input", 3, None),
        ("r", "BlobShape", "input_shape", 8, None),
        ("r", "int32", "input_dim", 4, None),
        ("o", "bool", "force_backward", 5, False),
        ("o", "NetState", "state", 6, None),
        ("o", "bool", "debug_info", 7, False),
        ("r", "LayerParameter", "layer", 100, None),
        ("r", "V1LayerParameter", "layers", 2, None),
    ], {}),
    "ConvolutionParameter": ([
        ("o", "uint32", "num_output", 1, None),
        ("o", "bool", "bias_term", 2, True),
        ("r", "uint32", "pad", 3, None),
        ("r", "uint32", "kernel_size", 4, None),
        ("r", "uint32", "stride", 6, None),
        ("r", "uint32", "dilation", 18, None),
        ("o", "uint32", "pad_h", 9, 0),
        ("o", "uint32", "pad_w", 10, 0),
        ("o", "uint32", "kernel_h", 11, None),
        ("o", "uint32", "kernel_w", 12, None),
        ("o", "uint32", "stride_h", 13, None),
        ("o", "uint32", "stride_w", 14, None),
        ("o", "uint32", "group", 5, 1),
        ("o", "FillerParameter", "weight_filler", 7, None),
        ("o", "FillerParameter", "bias_filler", 8, None),
        ("o", "ConvolutionParameter.Engine", "engine", 15, "DEFAULT"),
        ("o", "int32", "axis", 16, 1),
        ("o", "bool", "force_nd_im2col", 17, False),
    ], {"Engine": _ENGINE}),
    "PoolingParameter": ([
        ("o", "PoolingParameter.PoolMethod", "pool", 1, "MAX"),
        ("o", "uint32", "pad", 4, 0),
        ("o", "uint32", "pad_h", 9, 0),
        ("o", "uint32", "pad_w", 10, 0),
        ("o", "uint32", "kernel_size", 2, None),
        ("o", "uint32", "kernel_h", 5, None),
        ("o", "uint32", "kernel_w", 6, None),
        ("o", "uint32", "stride", 3, 1),
        ("o", "uint32", "stride_h", 7, None),
        ("o", "uint32", "stride_w", 8, None),
        ("o", "PoolingParameter.Engine", "engine", 11, "DEFAULT"),
        ("o", "bool", "global_pooling", 12, False),
        ("o", "PoolingParameter.RoundMode", "round_mode", 13, "CEIL"),
    ], {"PoolMethod": [("MAX", 0), ("AVE", 1), ("STOCHASTIC", 2)], "Engine": _ENGINE,
        "RoundMode": [("CEIL", 0), ("FLOOR", 1)]}),
    "BatchNormParameter": ([
        ("o", "bool", "use_global_stats", 1, None),
        ("o", "float", "moving_average_fraction", 2, 0.999),
        ("o", "float", "eps", 3, 1e-5),
    ], {}),
    "ScaleParameter": ([
        ("o", "int32", "axis", 1, 1),
        ("o", "int32", "num_axes", 2, 1),
        ("o", "FillerParameter", "filler", 3, None),
        ("o", "bool", "bias_term", 4, False),
        ("o", "FillerParameter", "bias_filler", 5, None),
    ], {}),
    "ReLUParameter": ([
        ("o", "float", "negative_slope", 1, 0.0),
        ("o", "ReLUParameter.Engine", "engine", 2, "DEFAULT"),
    ], {"Engine": _ENGINE}),
    "EltwiseParameter": ([
        ("o", "EltwiseParameter.EltwiseOp", "operation", 1, "SUM"),
        ("r", "float", "coeff", 2, None),
        ("o", "bool", "stable_prod_grad", 3, True),
    ], {"EltwiseOp": [("PROD", 0), ("SUM", 1), ("MAX", 2)]}),
    "InnerProductParameter": ([
        ("o", "uint32", "num_output", 1, None),
        ("o", "bool", "bias_term", 2, True),
        ("o", "FillerParameter", "weight_filler", 3, None),
        ("o", "FillerParameter", "bias_filler", 4, None),
        ("o", "int32", "axis", 5, 1),
        ("o", "bool", "transpose", 6, False),
    ], {}),
    "SoftmaxParameter": ([
        ("o", "SoftmaxParameter.Engine", "engine", 1, "DEFAULT"),
        ("o", "int32", "axis", 2, 1),
    ], {"Engine": _ENGINE}),
    "ConcatParameter": ([
        ("o", "int32", "axis", 2, 1),
        ("o", "uint32", "concat_dim", 1, 1),
    ], {}),
    # scale_train is not in BVLC Caffe (a fork's extension); modelled because
    # prototxts from those forks use it and it changes the test-time output.
    "DropoutParameter": ([
        ("o", "float", "dropout_ratio", 1, 0.5),
        ("o", "bool", "scale_train", 2, True),
    ], {}),
    "InputParameter": ([("r", "BlobShape", "shape", 1, None)], {}),
    "LayerParameter": ([
        ("o", "string", "name", 1, None),
        ("o", "string", "type", 2, None),
        ("r", "string", "bottom", 3, None),
        ("r", "string", "top", 4, None),
        ("o", "Phase", "phase", 10, None),
        ("r", "float", "loss_weight", 5, None),
        ("r", "ParamSpec", "param", 6, None),
        ("r", "BlobProto", "blobs", 7, None),
        ("r", "bool", "propagate_down", 11, None),
        ("r", "NetStateRule", "include", 8, None),
        ("r", "NetStateRule", "exclude", 9, None),
        ("o", "BatchNormParameter", "batch_norm_param", 139, None),
        ("o", "ConcatParameter", "concat_param", 104, None),
        ("o", "ConvolutionParameter", "convolution_param", 106, None),
        ("o", "DropoutParameter", "dropout_param", 108, None),
        ("o", "EltwiseParameter", "eltwise_param", 110, None),
        ("o", "InnerProductParameter", "inner_product_param", 117, None),
        ("o", "InputParameter", "input_param", 143, None),
        ("o", "PoolingParameter", "pooling_param", 121, None),
        ("o", "ReLUParameter", "relu_param", 123, None),
        ("o", "ScaleParameter", "scale_param", 142, None),
        ("o", "SoftmaxParameter", "softmax_param", 125, None),
    ], {}),
    "V1LayerParameter": ([
        ("r", "string", "bottom", 2, None),
        ("r", "string", "top", 3, None),
        ("o", "string", "name", 4, None),
        ("r", "NetStateRule", "include", 32, None),
        ("r", "NetStateRule", "exclude", 33, None),
        ("o", "V1LayerParameter.LayerType", "type", 5, None),
        ("r", "BlobProto", "blobs", 6, None),
        ("r", "string", "param", 1001, None),
        ("r", "V1LayerParameter.DimCheckMode", "blob_share_mode", 1002, None),
        ("r", "float", "blobs_lr", 7, None),
        ("r", "float", "weight_decay", 8, None),
        ("r", "float", "loss_weight", 35, None),
        ("o", "ConcatParameter", "concat_param", 9, None),
        ("o", "ConvolutionParameter", "convolution_param", 10, None),
        ("o", "DropoutParameter", "dropout_param", 12, None),
        ("o", "EltwiseParameter", "eltwise_param", 24, None),
        ("o", "InnerProductParameter", "inner_product_param", 17, None),
        ("o", "PoolingParameter", "pooling_param", 19, None),
        ("o", "ReLUParameter", "relu_param", 30, None),
        ("o", "SoftmaxParameter", "softmax_param", 39, None),
    ], {"LayerType": [
        ("NONE", 0), ("ABSVAL", 35), ("ACCURACY", 1), ("ARGMAX", 30), ("BNLL", 2),
        ("CONCAT", 3), ("CONTRASTIVE_LOSS", 37), ("CONVOLUTION", 4), ("DATA", 5),
        ("DECONVOLUTION", 39), ("DROPOUT", 6), ("DUMMY_DATA", 32), ("EUCLIDEAN_LOSS", 7),
        ("ELTWISE", 25), ("EXP", 38), ("FLATTEN", 8), ("HDF5_DATA", 9), ("HDF5_OUTPUT", 10),
        ("HINGE_LOSS", 28), ("IM2COL", 11), ("IMAGE_DATA", 12), ("INFOGAIN_LOSS", 13),
        ("INNER_PRODUCT", 14), ("LRN", 15), ("MEMORY_DATA", 29),
        ("MULTINOMIAL_LOGISTIC_LOSS", 16), ("MVN", 34), ("POOLING", 17), ("POWER", 26),
        ("RELU", 18), ("SIGMOID", 19), ("SIGMOID_CROSS_ENTROPY_LOSS", 27), ("SILENCE", 36),
        ("SOFTMAX", 20), ("SOFTMAX_LOSS", 21), ("SPLIT", 22), ("SLICE", 33), ("TANH", 23),
        ("WINDOW_DATA", 24), ("THRESHOLD", 31)],
        "DimCheckMode": [("STRICT", 0), ("PERMISSIVE", 1)]}),
}


def _enum(name, values):
    enum = descriptor_pb2.EnumDescriptorProto(name=name)
    for value_name, number in values:
        enum.value.add(name=value_name, number=number)
    return enum


def _field(message, spec):
    label, type_name, name, number, default = spec[:5]
    field = message.field.add(name=name, number=number)
    field.label = _F.LABEL_REPEATED if label == "r" else _F.LABEL_OPTIONAL
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    else:
        root = type_name.split(".")[0]
        is_enum = type_name in _TOP_ENUMS or "." in type_name
        field.type = _F.TYPE_ENUM if is_enum else _F.TYPE_MESSAGE
        assert root in _MESSAGES or root in _TOP_ENUMS, type_name
        field.type_name = f".{PACKAGE}.{type_name}"
    if default is not None:
        if isinstance(default, bool):
            field.default_value = "true" if default else "false"
        elif isinstance(default, float):
            field.default_value = repr(default)
        else:
            field.default_value = str(default)
    if len(spec) > 5 and spec[5] == "packed":
        field.options.packed = True


def _file_descriptor():
    proto = descriptor_pb2.FileDescriptorProto(
        name="deeplab_resnet_kaffe/caffe.proto", package=PACKAGE, syntax="proto2")
    for name, values in _TOP_ENUMS.items():
        proto.enum_type.append(_enum(name, values))
    for name, (fields, enums) in _MESSAGES.items():
        message = proto.message_type.add(name=name)
        for enum_name, values in enums.items():
            message.enum_type.append(_enum(enum_name, values))
        for spec in fields:
            _field(message, spec)
    return proto


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def message_class(name):
    """The generated Python class of message `caffe.<name>`."""
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{PACKAGE}.{name}"))


NetParameter = message_class("NetParameter")
V1LayerParameter = message_class("V1LayerParameter")

# V1 layer type enum -> the type string of the current format.
V1_TYPE_NAMES = {
    "CONCAT": "Concat", "CONVOLUTION": "Convolution", "DROPOUT": "Dropout",
    "ELTWISE": "Eltwise", "INNER_PRODUCT": "InnerProduct", "POOLING": "Pooling",
    "RELU": "ReLU", "SOFTMAX": "Softmax", "DATA": "Data", "LRN": "LRN", "SPLIT": "Split",
    "SIGMOID": "Sigmoid", "TANH": "TanH", "FLATTEN": "Flatten", "SLICE": "Slice",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "ACCURACY": "Accuracy", "DECONVOLUTION": "Deconvolution",
}


def v1_type_name(number):
    """Type string for a V1 `LayerType` number (the enum name when we have no mapping)."""
    enum = V1LayerParameter.DESCRIPTOR.enum_types_by_name["LayerType"]
    value = enum.values_by_number.get(number)
    if value is None:
        return f"V1 type {number}"
    return V1_TYPE_NAMES.get(value.name, value.name)
