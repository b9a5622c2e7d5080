"""The project's default values, each named once (PASCAL VOC and DeepLab-v2's Caffe settings)."""

NUM_CLASSES = 21  # PASCAL VOC: 20 object classes and the background
IGNORE_LABEL = 255  # label value that is never scored (VOC's object borders)
VARIANT = "resnet101"  # the released DeepLab-v2 network
BN_EPS = 1e-5  # Caffe's BatchNorm epsilon, which the released models use
BN_MOMENTUM = 0.999  # Caffe's BatchNorm moving_average_fraction
# Per-channel mean of the released models' training images, B, G, R (0-255 scale).
IMG_MEAN_BGR = (104.00698793, 116.66876762, 122.67891434)
PAD_SIZE = 513  # DeepLab's test protocol pads VOC images to 513 x 513
INPUT_SIZE = 321  # the released nets: the deploy input_dim and the training crop side
